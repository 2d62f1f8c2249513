"""Perennial's agent entity against a plain hand-written Temporal entity, in one run.

    .venv/bin/python -m bench.bench_entity            # full run (~20 min on 2 shared cores)
    .venv/bin/python -m bench.bench_entity --quick    # scaled down (~2-3 min)

Starts its own embedded dev server (temp dir, free ports, SQLite in WAL mode) and its own
workers, measures Perennial and the baseline (`bench/raw_entity.py`) side by side on that
server, prints a table of figures with their ratio to the baseline and the issue's targets,
and saves everything as JSON under `bench/results/`. See `bench/README.md` for what each
figure means. Absolute numbers depend on the machine and its load; the ratios are the point.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
import traceback
import uuid
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import asdict, astuple, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

from temporalio.api.enums.v1 import EventType, WorkflowTaskFailedCause
from temporalio.client import Client, WithStartWorkflowOperation, WorkflowHistory
from temporalio.common import WorkflowIDConflictPolicy
from temporalio.service import RPCError, RPCStatusCode

from bench.agents import COMPACTING_NOTES, CompactingNotesAgent
from bench.harness import (
    RESULTS_DIR,
    ROOT,
    dev_server,
    environment,
    percentile,
    print_table,
    rss_mb,
    run_main,
    save_results,
    start_worker,
    stop_process,
)
from bench.raw_entity import RAW_TYPE
from bench.raw_worker import build_raw_worker
from bench.replay_history import replay_seconds, replayer, signals_in
from perennial.client import AgentHandle, Perennial, Settings
from perennial.client.server import DevServer
from perennial.worker import build_worker

#: Query / RPC timeout for single calls; phases have their own, longer deadlines.
CALL_TIMEOUT = 60.0
_TRANSIENT = {
    RPCStatusCode.UNAVAILABLE,
    RPCStatusCode.RESOURCE_EXHAUSTED,
    RPCStatusCode.DEADLINE_EXCEEDED,
    RPCStatusCode.ABORTED,
}


# --------------------------------------------------------------------------- scale


@dataclass
class Scale:
    asks: int = 200
    ask_warmup: int = 20
    messages_one: int = 2_000
    messages_many: int = 2_000
    fanout: int = 100
    create: int = 500
    long_messages: int = 10_000
    wake_rounds: int = 3
    #: Cache of the worker in the wake test: tiny, so creating a few agents evicts the old one.
    wake_cache: int = 4
    rss_agents: list[int] = field(default_factory=lambda: [1_000, 10_000])
    concurrency: int = 32
    #: Throughput measurements per side (new agents each time, order alternating).
    rounds: int = 2
    #: Timed replays per side of the recorded flood (the fastest counts).
    replays: int = 5


QUICK = Scale(
    asks=60,
    ask_warmup=10,
    messages_one=500,
    messages_many=500,
    create=100,
    long_messages=2_000,
    wake_rounds=2,
    rss_agents=[200, 1_000],
    rounds=1,
    replays=2,
)


# --------------------------------------------------------------------------- results


@dataclass
class Row:
    """One line of the table. `ratio` is perennial / raw. `target` bounds the ratio (or, with
    `target_on="perennial"`, the perennial figure itself, which is then already a ratio)."""

    phase: str
    metric: str
    perennial: float | None
    raw: float | None
    unit: str = ""
    target: float | None = None
    higher_is_better: bool = True
    target_on: str = "ratio"
    note: str = ""

    @property
    def ratio(self) -> float | None:
        if self.perennial is None or not self.raw:
            return None
        return self.perennial / self.raw

    @property
    def passed(self) -> bool | None:
        if self.target is None:
            return None
        value = self.ratio if self.target_on == "ratio" else self.perennial
        if value is None:
            return None
        return value >= self.target if self.higher_is_better else value <= self.target

    @property
    def target_text(self) -> str:
        if self.target is None:
            return ""
        subject = "ratio" if self.target_on == "ratio" else "perennial"
        return f"{subject} {'>=' if self.higher_is_better else '<='} {self.target:g}"

    def as_json(self) -> dict[str, Any]:
        return {**asdict(self), "ratio": self.ratio, "passed": self.passed}


@dataclass
class Report:
    rows: list[Row] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)

    def add(self, row: Row) -> None:
        self.rows.append(row)
        print(f"  {row.metric}: perennial={_fmt(row.perennial)} raw={_fmt(row.raw)} "
              f"ratio={_fmt(row.ratio, 2)} {_verdict(row.passed)}".rstrip(), flush=True)  # fmt: skip


def _fmt(value: float | None, digits: int | None = None) -> str:
    if value is None:
        return "-"
    if digits is None:
        digits = 0 if abs(value) >= 1_000 else 1 if abs(value) >= 10 else 2
    return f"{value:,.{digits}f}"


def _verdict(passed: bool | None) -> str:
    return "" if passed is None else "PASS" if passed else "FAIL"


def print_report(report: Report) -> None:
    header = ("metric", "perennial", "raw", "ratio", "target", "result")
    lines = [
        (
            f"{row.metric}" + (f" [{row.unit}]" if row.unit else ""),
            _fmt(row.perennial),
            _fmt(row.raw),
            _fmt(row.ratio, 2),
            row.target_text,
            _verdict(row.passed),
        )
        for row in report.rows
    ]
    print()
    print_table([header, *lines], align="<>>><<", rule=True)
    for row in report.rows:
        if row.note:
            print(f"  * {row.metric}: {row.note}")
    for phase, error in report.errors.items():
        print(f"  ! phase {phase} failed: {error}")
    print(flush=True)


# --------------------------------------------------------------------------- helpers


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def median(samples: list[float]) -> float:
    ordered = sorted(samples)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


async def bounded(count: int, concurrency: int, call: Callable[[int], Awaitable[None]]) -> None:
    """Run call(0..count-1) with at most `concurrency` in flight; fail fast on an error."""
    numbers = iter(range(count))

    async def lane() -> None:
        for i in numbers:
            await call(i)

    await asyncio.gather(*(lane() for _ in range(min(concurrency, count))))


class Retries:
    """Retries transient RPC failures (a flooded dev server can push back) and counts them."""

    def __init__(self) -> None:
        self.count = 0

    async def __call__(self, make: Callable[[], Awaitable[Any]], attempts: int = 6) -> Any:
        for attempt in range(attempts):
            try:
                return await make()
            except RPCError as err:
                if err.status not in _TRANSIENT or attempt == attempts - 1:
                    raise
                self.count += 1
                await asyncio.sleep(0.2 * 2**attempt)
        raise AssertionError("unreachable")


async def until(check: Callable[[], Awaitable[bool]], *, timeout: float, interval: float,
                what: str) -> None:  # fmt: skip
    """Poll an observable condition; errors while polling count as 'not yet'."""
    deadline = time.monotonic() + timeout
    last: BaseException | None = None
    while True:
        try:
            if await check():
                return
        except Exception as err:  # e.g. a query during a continue-as-new switch
            last = err
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not reached within {timeout:.0f}s (last error: {last})")
        await asyncio.sleep(interval)


# --------------------------------------------------------------------------- the two sides


class Side(Protocol):
    label: str

    async def send(self, name: str, text: str, message_id: str) -> None: ...
    async def ask(self, name: str, text: str) -> None: ...
    async def count(self, name: str) -> int: ...
    def workflow_id(self, name: str) -> str: ...


class PerennialSide:
    """Through Perennial's own client, one handle per agent: a handle's first `send` / `ask`
    is signal-with-start / update-with-start, later ones plain signals and updates."""

    def __init__(self, perennial: Perennial, settings: Settings, agent_type: str = "notes"):
        self.label = "perennial"
        self._p = Perennial(perennial.client, settings)
        self._type = agent_type
        self._handles: dict[str, AgentHandle] = {}

    def agent(self, name: str) -> AgentHandle:
        handle = self._handles.get(name)
        if handle is None:
            handle = self._handles[name] = self._p.agent(self._type, name)
        return handle

    def workflow_id(self, name: str) -> str:
        return self.agent(name).id

    async def send(self, name: str, text: str, message_id: str) -> None:
        await self.agent(name).send(text, id=message_id)

    async def ask(self, name: str, text: str) -> None:
        await self.agent(name).ask(text, timeout=CALL_TIMEOUT)

    async def count(self, name: str) -> int:
        view = await asyncio.wait_for(self.agent(name).state_view(), CALL_TIMEOUT)
        return int(view.state["counter"])  # type: ignore[arg-type]


class RawSide:
    """The baseline through the bare Temporal client. `with_start=True`: the same calls as
    Perennial's client makes (signal-with-start, update-with-start, USE_EXISTING); False:
    a plain signal / update to a workflow that already exists."""

    def __init__(self, client: Client, task_queue: str, *, with_start: bool) -> None:
        self.label = "raw" if with_start else "raw-plain"
        self._client = client
        self._queue = task_queue
        self._with_start = with_start

    def workflow_id(self, name: str) -> str:
        return f"{RAW_TYPE}/{name}"

    async def send(self, name: str, text: str, message_id: str) -> None:
        if self._with_start:
            await self._client.start_workflow(
                RAW_TYPE,
                id=self.workflow_id(name),
                task_queue=self._queue,
                id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
                start_signal="message",
                start_signal_args=[text],
            )
        else:
            await self._client.get_workflow_handle(self.workflow_id(name)).signal("message", text)

    async def ask(self, name: str, text: str) -> None:
        if self._with_start:
            start = WithStartWorkflowOperation(
                RAW_TYPE,
                id=self.workflow_id(name),
                task_queue=self._queue,
                id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
            )
            call = self._client.execute_update_with_start_workflow(
                "ask", text, start_workflow_operation=start, result_type=str
            )
        else:
            handle = self._client.get_workflow_handle(self.workflow_id(name))
            call = handle.execute_update("ask", text, result_type=str)
        await asyncio.wait_for(call, CALL_TIMEOUT)

    async def count(self, name: str) -> int:
        handle = self._client.get_workflow_handle(self.workflow_id(name))
        state = await handle.query("state", rpc_timeout=timedelta(seconds=CALL_TIMEOUT))
        return int(state["count"])


# --------------------------------------------------------------------------- measurements


async def timed_ask(side: Side, name: str, text: str) -> float:
    started = time.perf_counter()
    await side.ask(name, text)
    return time.perf_counter() - started


async def wait_applied(side: Side, expected: dict[str, int], *, timeout: float,
                       interval: float = 0.05) -> None:  # fmt: skip
    """Until every agent's state shows at least its expected count. Agents are checked one
    after the other and never again once done, so polling adds little load."""
    deadline = time.monotonic() + timeout
    for name, want in expected.items():

        async def done(name: str = name, want: int = want) -> bool:
            return await side.count(name) >= want

        await until(done, timeout=max(1.0, deadline - time.monotonic()), interval=interval,
                    what=f"{side.label} {name} applied {want}")  # fmt: skip


class CpuMeter:
    """CPU seconds used so far by this process (the client and the in-process workers) and
    by the dev server. CPU per operation moves far less than wall time when other jobs share
    the machine, so it shows where a difference comes from."""

    def __init__(self) -> None:
        self.server_pid: int | None = None
        #: Workers in their own processes, counted with this one as "local".
        self.worker_pids: list[int] = []

    def read(self) -> tuple[float, float]:
        server = cpu_seconds(self.server_pid) if self.server_pid else 0.0
        workers = sum(cpu_seconds(pid) for pid in self.worker_pids)
        return time.process_time() + workers, server


CPU = CpuMeter()


@dataclass
class Flood:
    messages: int
    seconds: float
    accept_seconds: float
    retries: int
    cpu_local: float = 0.0
    cpu_server: float = 0.0

    @property
    def rate(self) -> float:
        return self.messages / self.seconds

    def __add__(self, other: Flood) -> Flood:
        return Flood(*(a + b for a, b in zip(astuple(self), astuple(other), strict=True)))

    def summary(self) -> dict[str, float]:
        return asdict(self) | {
            "rate": self.rate,
            "cpu_local_ms_per_msg": self.cpu_local * 1000 / self.messages,
            "cpu_server_ms_per_msg": self.cpu_server * 1000 / self.messages,
        }


async def flood(side: Side, names: list[str], total: int, *, concurrency: int,
                timeout: float, base: dict[str, int] | None = None) -> Flood:  # fmt: skip
    """`total` messages spread round-robin over `names`, timed from the first send until
    every state shows them all applied."""
    retry = Retries()
    expected = {name: (base or {}).get(name, 0) for name in names}
    for i in range(total):
        expected[names[i % len(names)]] += 1
    run = uuid.uuid4().hex[:8]

    async def send(i: int) -> None:
        await retry(lambda: side.send(names[i % len(names)], f"note {i}", f"{run}-{i}"))

    cpu_local, cpu_server = CPU.read()
    started = time.perf_counter()
    await asyncio.wait_for(bounded(total, concurrency, send), timeout)
    accepted = time.perf_counter()
    await wait_applied(side, expected, timeout=timeout)
    finished = time.perf_counter()
    local, server = CPU.read()
    return Flood(total, finished - started, accepted - started, retry.count,
                 local - cpu_local, server - cpu_server)  # fmt: skip


async def create_by_ask(side: Side, names: list[str], concurrency: int, *,
                        timeout: float) -> tuple[float, int]:  # fmt: skip
    """Create one agent per name with a first `ask` (update-with-start); each call returns
    once the agent has applied it. Returns (seconds, transient retries)."""
    retry = Retries()

    async def create(i: int) -> None:
        await retry(lambda: side.ask(names[i], "hello"))

    started = time.perf_counter()
    await asyncio.wait_for(bounded(len(names), concurrency, create), timeout)
    return time.perf_counter() - started, retry.count


async def run_histories(client: Client, workflow_id: str) -> list[WorkflowHistory]:
    """Every run of a workflow, oldest first: from the latest run back along the
    continue-as-new links (the visibility API may not list the newest run yet)."""
    histories: list[WorkflowHistory] = []
    run_id: str | None = None
    while True:
        history = await client.get_workflow_handle(workflow_id, run_id=run_id).fetch_history()
        histories.append(history)
        started = history.events[0].workflow_execution_started_event_attributes
        run_id = started.continued_execution_run_id or None
        if run_id is None:
            return histories[::-1]


def save_histories(histories: dict[str, list[WorkflowHistory]], stamp: str) -> str:
    """Write each run's history as `bench/results/replay-<stamp>-<side>-<run>.json` (the
    format of tests/histories); returns the glob that finds them."""
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    for label, runs in histories.items():
        for index, history in enumerate(runs):
            doc = {"workflow_id": history.workflow_id, "history": json.loads(history.to_json())}
            path = RESULTS_DIR / f"replay-{stamp}-{label}-{index}.json"
            path.write_text(json.dumps(doc))
    return str((RESULTS_DIR / f"replay-{stamp}-*.json").relative_to(ROOT))


class Bench:
    def __init__(
        self, args: argparse.Namespace, scale: Scale, server: DevServer, settings: Settings
    ) -> None:
        self.args = args
        self.scale = scale
        self.report = Report()
        self.server = server
        self.settings = settings
        self.tmp = settings.state_dir  # the server's temp dir; the workers' logs go there too
        self.perennial: Perennial
        self.client: Client

    def queue(self, kind: str, **updates: Any) -> Settings:
        return self.settings.model_copy(update={"task_queue": unique(f"bench-{kind}"), **updates})

    # ------------------------------------------------------------------ phases

    async def phase_ask(self) -> None:
        """Sequential asks to one warm agent, interleaved with the baseline's update."""
        s = self.scale
        sp, sr = self.queue("ask-p"), self.queue("ask-r")
        sides: list[Side] = [
            PerennialSide(self.perennial, sp),
            RawSide(self.client, sr.task_queue, with_start=False),
            RawSide(self.client, sr.task_queue, with_start=True),
        ]
        labels = [side.label for side in sides]
        async with build_worker(self.client, sp), build_raw_worker(self.client, sr):
            names = {label: unique("ask") for label in labels}
            await sides[2].ask(names["raw-plain"], "hello")  # the plain side needs it to exist
            for side in sides:
                await side.ask(names[side.label], "hello")
            for i in range(s.ask_warmup):
                for side in sides:
                    await side.ask(names[side.label], f"warm {i}")
            samples: dict[str, list[float]] = {label: [] for label in labels}
            cpu = {label: [0.0, 0.0] for label in labels}
            for i in range(s.asks):
                for side in sides[i % 3 :] + sides[: i % 3]:  # no side always goes first
                    local, server = CPU.read()
                    samples[side.label].append(await timed_ask(side, names[side.label], f"q {i}"))
                    after = CPU.read()
                    cpu[side.label][0] += after[0] - local
                    cpu[side.label][1] += after[1] - server
        ms = {k: [v * 1000 for v in vals] for k, vals in samples.items()}
        cpu_ms = {k: [v * 1000 / s.asks for v in vals] for k, vals in cpu.items()}
        self.report.details["ask_ms"] = {
            k: {"p50": percentile(v, 50), "p95": percentile(v, 95), "n": len(v),
                "cpu_local_ms": cpu_ms[k][0], "cpu_server_ms": cpu_ms[k][1]}
            for k, v in ms.items()
        }  # fmt: skip
        p = ms["perennial"]
        for label, what in (("raw-plain", "raw update"), ("raw", "raw update-with-start")):
            for q in (50, 95):
                self.report.add(Row("ask", f"ask round-trip p{q} vs {what}", percentile(p, q),
                                    percentile(ms[label], q), "ms", 1.3,
                                    higher_is_better=False))  # fmt: skip
        self.report.add(Row("ask", "CPU per ask, client+worker (vs raw update)",
                            cpu_ms["perennial"][0], cpu_ms["raw-plain"][0], "ms"))  # fmt: skip
        self.report.add(Row("ask", "CPU per ask, server (vs raw update)",
                            cpu_ms["perennial"][1], cpu_ms["raw-plain"][1], "ms"))  # fmt: skip

    async def phase_throughput(self) -> None:
        """Signals into 1 and into `fanout` warm agents, until all are applied, each worker
        in its own process (as deployed: `perennial worker`), so the client's flood and a
        worker do not share one interpreter."""
        sp, sr = self.queue("tput-p"), self.queue("tput-r")
        perennial = await self.spawn_worker("perennial", sp)
        raw = await self.spawn_worker("raw", sr)
        CPU.worker_pids = [perennial.pid, raw.pid]
        try:
            await self._throughput(sp, sr, key="", where_suffix="")
        finally:
            CPU.worker_pids = []
            for proc in (perennial, raw):
                await stop_process(proc, grace=30)

    async def phase_throughput_inline(self) -> None:
        """The same, with both workers in the benchmark's own process: the client's flood
        and the worker share one interpreter (and one GIL), which costs the side whose
        workflow code does more per message the most."""
        sp, sr = self.queue("tput-ip"), self.queue("tput-ir")
        async with build_worker(self.client, sp), build_raw_worker(self.client, sr):
            await self._throughput(sp, sr, key="_inline", where_suffix=", worker in process")

    async def _throughput(self, sp: Settings, sr: Settings, *, key: str, where_suffix: str) -> None:
        """Each round uses new agents; the order of the sides is reversed every other round."""
        s = self.scale
        creator = RawSide(self.client, sr.task_queue, with_start=True)
        sides: list[Side] = [
            PerennialSide(self.perennial, sp),
            RawSide(self.client, sr.task_queue, with_start=True),
            RawSide(self.client, sr.task_queue, with_start=False),
        ]
        for agents, total in ((1, s.messages_one), (s.fanout, s.messages_many)):
            results: dict[str, Flood] = {}
            for round_ in range(s.rounds):
                for side in sides if round_ % 2 == 0 else sides[::-1]:
                    names = [unique(f"tput{agents}") for _ in range(agents)]
                    warm = creator if side.label == "raw-plain" else side
                    await create_by_ask(warm, names, s.concurrency, timeout=600)
                    result = await flood(side, names, total, concurrency=s.concurrency,
                                         timeout=600, base={name: 1 for name in names})  # fmt: skip
                    if agents == 1:
                        failures = await self._task_failures(side.workflow_id(names[0]))
                        self.report.details.setdefault(f"task_failures_1{key}", []).append(
                            {"side": side.label, "rate": result.rate, "causes": failures})
                        print(f"  {side.label} into 1 agent: {result.rate:.0f} msg/s, failed "
                              f"workflow tasks {failures or 'none'}", flush=True)  # fmt: skip
                    prior = results.get(side.label)
                    results[side.label] = result if prior is None else prior + result
            self.report.details[f"throughput_{agents}{key}"] = {
                k: v.summary() for k, v in results.items()
            }
            where = ("1 agent" if agents == 1 else f"{agents} agents") + where_suffix
            p = results["perennial"]
            for label, what in (("raw", "signal-with-start"), ("raw-plain", "plain signal")):
                self.report.add(Row("throughput", f"messages/s into {where} (vs raw {what})",
                                    p.rate, results[label].rate, "msg/s", 0.8))  # fmt: skip
            ps, rs = p.summary(), results["raw"].summary()
            self.report.add(Row("throughput", f"CPU per message into {where}, client+worker",
                                ps["cpu_local_ms_per_msg"], rs["cpu_local_ms_per_msg"], "ms"))  # fmt: skip
            self.report.add(Row("throughput", f"CPU per message into {where}, server",
                                ps["cpu_server_ms_per_msg"], rs["cpu_server_ms_per_msg"], "ms"))  # fmt: skip

    async def phase_replay(self) -> None:
        """Worker CPU per message of the workflow code alone. One flood into one agent per
        side is recorded; its history (every run of it) is then replayed in this process,
        where nothing else runs meanwhile: no server, no client, no other worker sharing the
        cores. The fastest of `replays` replays per side counts (sides alternating). Replay
        runs the same code as the live worker (signal handlers and turns), so this is the
        worker's cost per message without the machine's noise."""
        s = self.scale
        sp, sr = self.queue("replay-p"), self.queue("replay-r")
        creator = RawSide(self.client, sr.task_queue, with_start=True)
        sides: list[Side] = [
            PerennialSide(self.perennial, sp),
            RawSide(self.client, sr.task_queue, with_start=False),
        ]
        histories: dict[str, list[WorkflowHistory]] = {}
        async with build_worker(self.client, sp), build_raw_worker(self.client, sr):
            for side in sides:
                name = unique("replay")
                warm = creator if side.label == "raw-plain" else side
                await create_by_ask(warm, [name], 1, timeout=600)
                await flood(side, [name], s.messages_one, concurrency=s.concurrency,
                            timeout=600, base={name: 1})  # fmt: skip
                histories[side.label] = await run_histories(self.client, side.workflow_id(name))
        saved = save_histories(histories, f"{datetime.now(UTC):%Y%m%dT%H%M%SZ}")
        print(f"  histories saved for bench/replay_history.py: {saved}", flush=True)
        player = replayer()  # every agent type and the baseline, as the workers have them
        for runs in histories.values():  # once untimed: imports, first sandbox
            await replay_seconds(player, runs)
        best = {label: float("inf") for label in histories}
        for _ in range(s.replays):
            for label, runs in histories.items():
                best[label] = min(best[label], await replay_seconds(player, runs))
        per_msg = {label: best[label] * 1000 / signals_in(histories[label]) for label in best}
        self.report.details["replay"] = {
            label: {"cpu_ms_per_msg": per_msg[label], "signals": signals_in(histories[label]),
                    "runs": len(histories[label]), "replays": s.replays}
            for label in best
        }  # fmt: skip
        self.report.add(Row("replay", f"worker CPU per message, replaying a {s.messages_one:,}"
                            "-message flood into 1 agent", per_msg["perennial"],
                            per_msg["raw-plain"], "ms"))  # fmt: skip

    async def phase_create(self) -> None:
        """New ids: signal-with-start (until every state shows its message) and
        update-with-start (each call returns once its message is applied)."""
        s = self.scale
        sp, sr = self.queue("new-p"), self.queue("new-r")
        async with build_worker(self.client, sp), build_raw_worker(self.client, sr):
            rates: dict[str, dict[str, float]] = {"signal": {}, "update": {}}
            for side in (PerennialSide(self.perennial, sp),
                         RawSide(self.client, sr.task_queue, with_start=True)):  # fmt: skip
                names = [unique("new") for _ in range(s.create)]
                result = await flood(side, names, s.create, concurrency=s.concurrency, timeout=600)
                rates["signal"][side.label] = result.rate
                names = [unique("new") for _ in range(s.create)]
                seconds, _ = await create_by_ask(side, names, s.concurrency, timeout=600)
                rates["update"][side.label] = s.create / seconds
        self.report.details["create_per_s"] = rates
        self.report.add(Row("create", "agents created/s (signal-with-start, until applied)",
                            rates["signal"]["perennial"], rates["signal"]["raw"], "/s", 0.8))  # fmt: skip
        self.report.add(Row("create", "agents created/s (update-with-start)",
                            rates["update"]["perennial"], rates["update"]["raw"], "/s", 0.8))  # fmt: skip

    async def phase_wake(self) -> None:
        """An agent that has lived through `long_messages` messages, evicted from the worker
        cache: how long does its first `ask` take, against a brand-new agent's first `ask`?"""
        s = self.scale
        sp = self.queue("wake-p", max_cached_workflows=s.wake_cache)
        sr = self.queue("wake-r", max_cached_workflows=s.wake_cache)
        perennial = PerennialSide(self.perennial, sp, agent_type=COMPACTING_NOTES)
        raw = RawSide(self.client, sr.task_queue, with_start=True)
        details: dict[str, Any] = {}
        async with build_worker(self.client, sp), build_raw_worker(self.client, sr):
            long_p, long_r = unique("long"), unique("long")
            for side, name in ((perennial, long_p), (raw, long_r)):
                result = await flood(side, [name], s.long_messages, concurrency=s.concurrency,
                                     timeout=900)  # fmt: skip
                details[f"{side.label}_flood"] = result.summary()
                print(f"  {side.label}: {s.long_messages} messages applied in "
                      f"{result.seconds:.1f}s ({result.rate:.0f}/s)", flush=True)  # fmt: skip
            idle_since = time.perf_counter()
            details["perennial_idle_compaction"] = await self._wait_idle_compaction(
                perennial.agent(long_p)
            )
            details["perennial_idle_compaction_after_s"] = time.perf_counter() - idle_since
            for side, name in ((perennial, long_p), (raw, long_r)):
                details[f"{side.label}_runs"] = await self._runs(side.workflow_id(name))
            fresh: dict[str, list[float]] = {"perennial": [], "raw": []}
            woken: dict[str, list[float]] = {"perennial": [], "raw": []}
            for round_ in range(s.wake_rounds):
                for side, name in ((perennial, long_p), (raw, long_r)):
                    # Brand-new agents on the same tiny-cache worker: their first ask is the
                    # "fresh" figure, and creating more of them than the cache holds evicts
                    # the long-lived agent (least recently used).
                    for _ in range(s.wake_cache + 1):
                        fresh[side.label].append(await timed_ask(side, unique("fresh"), "hi"))
                    woken[side.label].append(await timed_ask(side, name, f"wake {round_}"))
                    print(f"  {side.label} round {round_ + 1}: evicted ask "
                          f"{woken[side.label][-1] * 1000:.0f} ms, fresh median "
                          f"{median(fresh[side.label]) * 1000:.0f} ms", flush=True)  # fmt: skip
        details["fresh_ms"] = {k: [x * 1000 for x in v] for k, v in fresh.items()}
        details["evicted_ms"] = {k: [x * 1000 for x in v] for k, v in woken.items()}
        self.report.details["wake"] = details
        f = {k: median(v) * 1000 for k, v in fresh.items()}
        w = {k: median(v) * 1000 for k, v in woken.items()}
        n = f"{s.long_messages:,}"
        self.report.add(Row("wake", "first ask, brand-new agent (median)", f["perennial"],
                            f["raw"], "ms"))  # fmt: skip
        self.report.add(Row("wake", f"first ask, evicted after {n} msgs (median)",
                            w["perennial"], w["raw"], "ms"))  # fmt: skip
        runs_p, runs_r = details["perennial_runs"], details["raw_runs"]
        self.report.add(Row(
            "wake", "evicted / brand-new (each side's own ratio)",
            w["perennial"] / f["perennial"], w["raw"] / f["raw"], "x", 2.0,
            higher_is_better=False, target_on="perennial",
            note=(f"history replayed on wake: perennial {runs_p['current_events']} events, "
                  f"{runs_p['current_bytes'] / 1024:,.0f} KB (run {runs_p['runs']} of its life; "
                  f"{runs_p['total_events']:,} events in all runs), raw "
                  f"{runs_r['current_events']:,} events, {runs_r['current_bytes'] / 1024:,.0f} KB"
                  f" (1 run)"),
        ))  # fmt: skip
        self.report.add(Row("wake", f"messages/s into 1 agent, {n}-message flood",
                            details["perennial_flood"]["rate"], details["raw_flood"]["rate"],
                            "msg/s"))  # fmt: skip

    async def _wait_idle_compaction(self, agent: AgentHandle) -> bool:
        """Until the agent's last event is its idle continue-as-new (the events query is
        answered by the new run, so the switch is complete). If the flood ended just after a
        continue-as-new, the run is too short to be compacted: then it is already short.
        Returns whether the idle compaction happened."""
        handle = self.client.get_workflow_handle(agent.id)
        happened = False

        async def compacted() -> bool:
            nonlocal happened
            page = await asyncio.wait_for(agent.events(after=0, limit=1000), CALL_TIMEOUT)
            last = page.events[-1] if page.events else None
            if last is not None and last.kind == "continued_as_new":
                happened = last.reason == "idle compaction"
                if happened:
                    return True
            view = await agent.state_view()
            short = (await handle.describe()).history_length < (
                CompactingNotesAgent.compact_min_history_events
            )
            return short and not view.busy and not view.inbox

        await until(compacted, timeout=180, interval=0.25, what="idle compaction")
        return happened

    async def _runs(self, workflow_id: str) -> dict[str, int]:
        runs = [e async for e in self.client.list_workflows(f"WorkflowId = '{workflow_id}'")]
        current = await self.client.get_workflow_handle(workflow_id).describe()
        closed = sum(e.history_length for e in runs if e.run_id != current.run_id)
        info = current.raw_description.workflow_execution_info
        return {
            "runs": len(runs),
            "current_events": current.history_length,
            "current_bytes": info.history_size_bytes,
            "total_events": closed + current.history_length,
        }

    async def _task_failures(self, workflow_id: str) -> dict[str, int]:
        """Failed workflow tasks over all runs of one workflow, by cause: what a collapsed
        flood figure is made of (FORCE_CLOSE_COMMAND: >100 signals piled up behind a task;
        UNHANDLED_COMMAND: a continue-as-new raced by new messages)."""
        causes: dict[str, int] = {}
        async for run in self.client.list_workflows(f"WorkflowId = '{workflow_id}'"):
            handle = self.client.get_workflow_handle(workflow_id, run_id=run.run_id)
            async for event in handle.fetch_history_events():
                if event.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED:
                    cause = WorkflowTaskFailedCause.Name(
                        event.workflow_task_failed_event_attributes.cause
                    ).removeprefix("WORKFLOW_TASK_FAILED_CAUSE_")
                    causes[cause] = causes.get(cause, 0) + 1
        return causes

    async def phase_rss(self) -> None:
        """Worker RSS with N idle agents, each worker alone in its own process."""
        s = self.scale
        measured: dict[str, dict[str, Any]] = {}
        for kind in ("perennial", "raw"):
            measured[kind] = await self._rss_one(kind)
        self.report.details["rss"] = measured
        p, r = measured["perennial"], measured["raw"]
        self.report.add(Row("rss", "worker RSS, 1 agent (baseline)", p["rss_mb"]["1"],
                            r["rss_mb"]["1"], "MB"))  # fmt: skip
        for n in s.rss_agents:
            self.report.add(Row("rss", f"worker RSS, {n:,} idle agents", p["rss_mb"][str(n)],
                                r["rss_mb"][str(n)], "MB"))  # fmt: skip
        top = str(max(s.rss_agents))
        self.report.add(Row("rss", f"RSS per idle agent (at {int(top):,})",
                            p["kb_per_agent"], r["kb_per_agent"], "KB"))  # fmt: skip
        self.report.add(Row("rss", "worker CPU per new agent", p["cpu_ms_per_agent"],
                            r["cpu_ms_per_agent"], "ms"))  # fmt: skip
        self.report.add(Row("rss", "agents created/s (update-with-start, worker process)",
                            p["create_per_s"], r["create_per_s"], "/s", 0.8))  # fmt: skip

    async def _rss_one(self, kind: str) -> dict[str, Any]:
        s = self.scale
        cache = max(s.rss_agents) + 100  # every idle agent stays cached: the worst case
        settings = self.queue(f"rss-{kind[0]}", max_cached_workflows=cache)
        side = self.side(kind, settings)
        proc = await self.spawn_worker(kind, settings)
        try:
            out: dict[str, Any] = {"rss_mb": {"1": await settled_rss_mb(proc.pid)}}
            created, cpu_start, seconds, retries = 1, cpu_seconds(proc.pid), 0.0, 0
            for target in s.rss_agents:
                names = [unique("rss") for _ in range(target - created)]
                took, retried = await create_by_ask(side, names, s.concurrency, timeout=1800)
                seconds, retries, created = seconds + took, retries + retried, target
                out["rss_mb"][str(target)] = await settled_rss_mb(proc.pid)
                print(f"  {kind}: {target:,} idle agents, worker RSS "
                      f"{out['rss_mb'][str(target)]:.0f} MB", flush=True)  # fmt: skip
            top = max(s.rss_agents)
            out["kb_per_agent"] = (out["rss_mb"][str(top)] - out["rss_mb"]["1"]) * 1024 / (top - 1)
            out["cpu_ms_per_agent"] = (cpu_seconds(proc.pid) - cpu_start) * 1000 / (top - 1)
            out["create_per_s"] = (top - 1) / seconds
            out["retries"] = retries
            out["shutdown_s"] = await stop_process(proc)
            return out
        except BaseException:
            await stop_process(proc, grace=5)
            self.print_worker_log(kind)
            raise

    def side(self, kind: str, settings: Settings) -> Side:
        if kind == "perennial":
            return PerennialSide(self.perennial, settings)
        return RawSide(self.client, settings.task_queue, with_start=True)

    async def spawn_worker(self, kind: str, settings: Settings) -> subprocess.Popen[bytes]:
        """A worker (`perennial` or `raw`) in its own process, configured by environment
        like `python worker.py`; returns once it has answered a first `ask`."""
        proc = start_worker(
            settings,
            module=None if kind == "perennial" else "bench.raw_worker",
            log=self.tmp / f"worker-{kind}.log",
            PERENNIAL_LOG_FORMAT="json",
        )
        try:
            await self.side(kind, settings).ask(unique("up"), "hello")
        except BaseException:
            await stop_process(proc, grace=5)
            self.print_worker_log(kind)
            raise
        return proc

    def print_worker_log(self, kind: str) -> None:
        tail = (self.tmp / f"worker-{kind}.log").read_text(errors="replace")[-2000:]
        print(f"  {kind} worker log (tail):\n{tail}", file=sys.stderr)

    # ------------------------------------------------------------------ driver

    PHASES: dict[str, tuple[str, float]] = {
        "ask": ("phase_ask", 600),
        "throughput": ("phase_throughput", 1_200),
        "throughput_inline": ("phase_throughput_inline", 1_200),
        "replay": ("phase_replay", 600),
        "create": ("phase_create", 1_200),
        "wake": ("phase_wake", 1_800),
        "rss": ("phase_rss", 3_600),
    }

    async def run(self, phases: Iterable[str]) -> None:
        self.perennial = await Perennial.connect(self.settings)
        self.client = self.perennial.client
        process = self.server._process  # DevServer has no public pid; the bench needs one
        CPU.server_pid = process.pid if process else None
        for phase in phases:
            method, timeout = self.PHASES[phase]
            print(f"== {phase}", flush=True)
            started = time.perf_counter()
            try:
                await asyncio.wait_for(getattr(self, method)(), timeout)
            except Exception as err:
                self.report.errors[phase] = f"{type(err).__name__}: {err}"
                traceback.print_exc()
            self.report.details.setdefault("phase_seconds", {})[phase] = round(
                time.perf_counter() - started, 1
            )


# --------------------------------------------------------------------------- processes


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process (all its threads), from /proc/<pid>/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def settled_rss_mb(pid: int, *, timeout: float = 20.0) -> float:
    """RSS once it stops moving (the worker finishes what it was doing, then idles)."""
    samples: list[float] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        samples.append(rss_mb(pid))
        recent = samples[-4:]
        if len(recent) == 4 and max(recent) - min(recent) <= max(1.0, 0.01 * max(recent)):
            break
        await asyncio.sleep(0.5)
    return samples[-1]


# --------------------------------------------------------------------------- entry point


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.bench_entity",
        description="Perennial's agent entity against a plain Temporal entity workflow.",
    )
    parser.add_argument("--quick", action="store_true", help="scaled-down run (~3 min)")
    parser.add_argument("--phases", default=",".join(Bench.PHASES),
                        help=f"comma-separated subset of {','.join(Bench.PHASES)}")  # fmt: skip
    parser.add_argument("--asks", type=int, help="timed asks per side")
    parser.add_argument("--messages", type=int, help="messages per throughput flood")
    parser.add_argument("--create", type=int, help="new agents per creation measurement")
    parser.add_argument("--long-messages", type=int, help="lifetime messages before the wake test")
    parser.add_argument("--rss-agents", help="idle agent counts for RSS, e.g. 1000,10000")
    parser.add_argument("--concurrency", type=int, help="calls in flight while flooding")
    parser.add_argument("--replays", type=int, help="timed replays per side (phase replay)")
    parser.add_argument("--out", type=Path, help="JSON results file (default: bench/results/)")
    return parser.parse_args(argv)


def scale_from(args: argparse.Namespace) -> Scale:
    scale = QUICK if args.quick else Scale()
    if args.asks:
        scale.asks = args.asks
    if args.messages:
        scale.messages_one = scale.messages_many = args.messages
    if args.create:
        scale.create = args.create
    if args.long_messages:
        scale.long_messages = args.long_messages
    if args.rss_agents:
        scale.rss_agents = sorted(int(n) for n in args.rss_agents.split(",") if n.strip())
    if args.concurrency:
        scale.concurrency = args.concurrency
    if args.replays:
        scale.replays = args.replays
    return scale


async def amain(args: argparse.Namespace) -> int:
    scale = scale_from(args)
    phases = [p.strip() for p in args.phases.split(",") if p.strip()]
    unknown = [p for p in phases if p not in Bench.PHASES]
    if unknown:
        print(f"unknown phase(s): {', '.join(unknown)}", file=sys.stderr)
        return 2
    env_before = environment()
    shown = {k: v for k, v in env_before.items() if k != "git_uncommitted"}
    shown["uncommitted_files"] = len(env_before["git_uncommitted"])
    print(f"scale: {asdict(scale)}\nphases: {', '.join(phases)}\nenvironment: {shown}",
          flush=True)  # fmt: skip
    started = time.perf_counter()
    interrupted = False
    server_settings = {"max_cached_workflows": 5_000, "log_level": "WARNING"}
    async with dev_server("perennial-bench-", **server_settings) as (server, settings):
        bench = Bench(args, scale, server, settings)
        try:
            await bench.run(phases)
        except asyncio.CancelledError:  # Ctrl-C: still print and save what was measured
            interrupted = True
            bench.report.errors["interrupted"] = "stopped by the user"
    report = bench.report
    print_report(report)
    out = save_results("entity", {
        "command": " ".join([Path(sys.executable).name, "-m", "bench.bench_entity",
                             *sys.argv[1:]]),  # fmt: skip
        "scale": asdict(scale),
        "phases": phases,
        "environment": env_before | {"loadavg_after": os.getloadavg()},
        "seconds": round(time.perf_counter() - started, 1),
        "rows": [row.as_json() for row in report.rows],
        "details": report.details,
        "errors": report.errors,
    }, out=args.out)  # fmt: skip
    print(f"results saved to {out.relative_to(ROOT) if out.is_relative_to(ROOT) else out}")
    if interrupted:
        raise KeyboardInterrupt
    return 1 if report.errors else 0


def main() -> None:
    run_main(amain, parse_args)


if __name__ == "__main__":
    main()
