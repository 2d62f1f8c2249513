"""Chaos with a ledger: a mixed load on N agents served by W worker processes, while a chaos
loop SIGKILLs a random worker every 20-40 s and restarts the dev server once; at the end a
ledger proves from the agents' own state and the benchmark's records that nothing was lost or
applied twice.

    .venv/bin/python -m bench.chaos                      # 1,000 agents, 3 workers, 10 minutes
    .venv/bin/python -m bench.chaos --quick              # 100 agents, 2 workers, 2 minutes
    .venv/bin/python -m bench.chaos --agents 50 --workers 2 --minutes 1 --sticky-timeout 1

The load (agent types in `bench/chaos_agents.py`): messages (signals, each with its own id,
re-sent with the same id until accepted), asks, one-shot alarms and recurring schedules, child
tasks, LLM turns on the scripted model (a `ScriptedLLM` server in this process) and tool calls
that need approval, decided by the load generator a few seconds after they were asked for.

The ledger, from each agent's state and the benchmark's records:
- every message whose send or ask was accepted is applied exactly once (its id appears once in
  the agent's `applied`); one whose outcome is unknown at most once; a failed turn's never;
- every due time of a recurring schedule is covered once, with no gap (an alarm stands for its
  due time and the `missed` ones folded into it), up to the end of the load; every accepted
  one-shot fires once, at its due time;
- every child started is reported to its parent once, completed;
- every decision is applied once by its agent; every approved call ran with one idempotency
  key (`call_id`) and no rejected or undecided one ran (the scripted server counts each run);
- no workflow task failure left (the last workflow task of every agent completed; task
  failures in every run of a sample, by cause) and no agent stuck (each answers a final ask).

Exit status 1 if the ledger finds a violation (or the run could not finish), else 0.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import platform
import random
import re
import signal
import socket
import subprocess
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import temporalio
from temporalio.api.common.v1 import WorkflowExecution
from temporalio.api.enums.v1 import EventType, TimeoutType, WorkflowTaskFailedCause
from temporalio.api.history.v1 import HistoryEvent
from temporalio.api.workflowservice.v1 import GetWorkflowExecutionHistoryReverseRequest
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.runtime import LoggingConfig, Runtime, TelemetryConfig, TelemetryFilter

from bench.chaos_agents import (
    LEDGER,
    LEDGER_SHORT,
    LLM,
    LLM_SHORT,
    LOOKUP_TOOL,
    PAY_TOOL,
    SPAWN,
    ChaosLLMState,
    LedgerState,
)
from bench.harness import (
    ROOT,
    dev_server,
    percentile,
    print_table,
    run_main,
    save_results,
    source_digest,
    start_worker,
    stop_process,
)
from perennial.client import (
    AgentHandle,
    AlreadyDecided,
    Perennial,
    Settings,
    TurnFailed,
    UsageError,
)
from perennial.client.connection import connect
from perennial.client.server import DevServer
from perennial.testing import ScriptedLLM, eventually
from perennial.testing.scripted_llm import Reply, Request, call, text, tool_calls
from perennial.workflows.messages import PendingApproval

T = TypeVar("T")

APP_MODULE = "bench.chaos_agents"
#: The SDK core's own retry warnings flood the output while the server restarts.
_QUIET_CORE = LoggingConfig(filter=TelemetryFilter(core_level="ERROR", other_level="ERROR"))
TICK = "tick"  # the recurring schedule's id

# --------------------------------------------------------------------------- configuration


@dataclass(frozen=True)
class Rates:
    """Operations per second the load generator issues, by kind."""

    message: float = 8.0  # signals into ledger agents
    ask: float = 3.0  # asks to ledger agents
    child: float = 1.0  # `spawn` messages to parents: a child task each
    oneshot: float = 1.0  # one-shot alarms on ledger agents
    llm: float = 1.0  # asks to LLM agents (a text answer, or a plain tool call first)
    approval: float = 0.3  # asks to LLM agents whose answer is a call that needs approval

    def scaled(self, factor: float) -> Rates:
        return Rates(**{k: v * factor for k, v in asdict(self).items()})


@dataclass(frozen=True)
class ChaosConfig:
    agents: int = 1000
    workers: int = 3
    #: Seconds of load (the chaos runs during it).
    duration: float = 600.0
    rates: Rates = Rates()
    #: Shares of the agents: LLM agents; of the ledger agents, parents (children go to them),
    #: agents with short runs (frequent continue-as-new), and agents with a recurring alarm.
    llm_share: float = 0.1
    parent_share: float = 0.1
    short_share: float = 0.3
    alarm_share: float = 0.05
    alarm_every: float = 5.0
    #: One-shot alarms fall due this long after they are set.
    oneshot_after: tuple[float, float] = (3.0, 15.0)
    #: Seconds between chaos events; a killed worker is restarted at once or (half the time)
    #: after `restart_delay`; at most `max_kills` kills (None: no limit).
    kill_every: tuple[float, float] = (20.0, 40.0)
    restart_delay: tuple[float, float] = (2.0, 8.0)
    max_kills: int | None = None
    server_restart: bool = True
    #: The workers' sticky-queue schedule-to-start timeout (the product's default is 10 s).
    sticky_timeout: float = 10.0
    #: A person decides a requested approval this long after the ask returned; share rejected.
    decide_after: tuple[float, float] = (2.0, 10.0)
    reject_share: float = 0.2
    #: Seconds the approval tool's backend takes per call (a kill inside it retries it).
    pay_seconds: float = 0.05
    #: Recovery probes: agents found cached on the victim among `probe_scan` sampled ones.
    probes: int = 8
    probe_scan: int = 40
    #: Agents whose every run's history is scanned for task failures (None: all).
    history_sample: int | None = 100
    #: An operation is retried (same id) until this deadline; one attempt's ask timeout.
    op_deadline: float = 180.0
    attempt_timeout: float = 60.0
    retry_delay: float = 0.5
    max_in_flight: int = 64
    #: Waiting, after the load, for every record to be applied.
    settle_timeout: float = 300.0
    final_ask_timeout: float = 120.0
    concurrency: int = 16
    seed: int | None = None


QUICK = ChaosConfig(
    agents=100,
    workers=2,
    duration=120.0,
    rates=Rates().scaled(0.5),
    alarm_share=0.1,
    history_sample=None,
)


# --------------------------------------------------------------------------- what the bench saw


@dataclass
class OpStats:
    issued: int = 0
    accepted: int = 0
    uncertain: int = 0
    turn_failed: int = 0
    refused: int = 0
    skipped: int = 0
    retried: int = 0
    errors: Counter[str] = field(default_factory=Counter)


@dataclass
class Sent:
    """Message ids sent to one agent, by what the sender knows of them."""

    accepted: set[str] = field(default_factory=set)
    uncertain: set[str] = field(default_factory=set)
    failed: set[str] = field(default_factory=set)  # the ask said TurnFailed

    def all(self) -> set[str]:
        return self.accepted | self.uncertain | self.failed


@dataclass
class OneShot:
    agent: str
    schedule_id: str
    due: datetime | None  # None: the outcome of the request is unknown


@dataclass
class DecisionRecord:
    agent: str
    approval_id: str
    ref: str
    approve: bool
    certain: bool
    drained: bool


@dataclass
class Violation:
    check: str
    agent: str
    detail: str

    def __str__(self) -> str:
        return f"[{self.check}] {self.agent}: {self.detail}"


async def gather_limited(coros: Iterable[Awaitable[T]], limit: int) -> list[T]:
    semaphore = asyncio.Semaphore(limit)

    async def one(coro: Awaitable[T]) -> T:
        async with semaphore:
            return await coro

    return await asyncio.gather(*(one(c) for c in coros))


# --------------------------------------------------------------------------- the model


def model_reply(request: Request) -> Reply:
    """The scripted model: `pay REF` asks for the approval tool, `lookup Q` for the plain
    tool; tool results and decisions get a short text."""
    last = request.messages[-1] if request.messages else {}
    role, content = last.get("role"), str(last.get("content") or "")
    if role == "user" and content.startswith("pay "):
        return tool_calls(call(PAY_TOOL, ref=content.split()[1], amount=1))
    if role == "user" and content.startswith("lookup "):
        return tool_calls(call(LOOKUP_TOOL, query=content.removeprefix("lookup ")))
    if role == "tool":
        waiting = content.startswith("waiting for approval")
        return text("a person must approve it" if waiting else "looked it up")
    if content.startswith("[approval"):
        return text("noted the decision")
    return text("ok")


# --------------------------------------------------------------------------- workers


class Fleet:
    """W worker processes (`python worker.py`), each restartable and killable."""

    def __init__(self, settings: Settings, count: int, log_dir: Path, sticky: float) -> None:
        self._settings = settings
        self._log_dir = log_dir
        self._env = {"PERENNIAL_APP": APP_MODULE, "PERENNIAL_STICKY_TIMEOUT_SECONDS": f"{sticky:g}"}
        self.procs: list[subprocess.Popen[bytes] | None] = [None] * count
        self._killed: set[int] = set()
        self.unexpected_exits: list[dict[str, Any]] = []
        self.starts = 0

    def start(self, index: int) -> None:
        log = self._log_dir / f"worker-{index}.log"
        self.procs[index] = start_worker(self._settings, log=log, **self._env)
        self.starts += 1

    def identity(self, index: int) -> str:
        proc = self.procs[index]
        assert proc is not None
        return f"{proc.pid}@{socket.gethostname()}"

    def kill(self, index: int) -> int:
        proc = self.procs[index]
        assert proc is not None
        self._killed.add(proc.pid)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        self.procs[index] = None
        return proc.pid

    async def watch(self, since: float) -> None:
        """Restart a worker that exited without being killed (and record it)."""
        while True:
            for index, proc in enumerate(self.procs):
                if proc is not None and proc.poll() is not None and proc.pid not in self._killed:
                    self.unexpected_exits.append(
                        {
                            "worker": index,
                            "pid": proc.pid,
                            "code": proc.returncode,
                            "at": round(time.monotonic() - since, 1),
                        }
                    )
                    self.start(index)
            await asyncio.sleep(1.0)

    async def stop_all(self) -> None:
        await asyncio.gather(*(stop_process(p, grace=30) for p in self.procs if p is not None))

    def logs(self) -> list[Path]:
        return sorted(self._log_dir.glob("worker-*.log"))


# --------------------------------------------------------------------------- the run


class ChaosRun:
    """One chaos run against `server` (which it restarts once), described by `config`."""

    def __init__(
        self, config: ChaosConfig, server: DevServer, settings: Settings, work_dir: Path
    ) -> None:
        self.cfg = config
        self.server = server
        self.settings = settings.model_copy(
            update={"app": (APP_MODULE,), "sticky_timeout_seconds": config.sticky_timeout}
        )
        self.work_dir = work_dir
        self.rng = random.Random(config.seed)
        self._seq = itertools.count(1)
        self.stats: dict[str, OpStats] = defaultdict(OpStats)
        self.sent: dict[str, Sent] = defaultdict(Sent)
        self.latencies: dict[str, list[tuple[float, float]]] = defaultdict(list)
        self.oneshots: list[OneShot] = []
        self.ticks: dict[str, datetime] = {}  # agent id -> first due time of its `tick`
        self.pay_refs: dict[str, str] = {}  # ref -> agent id, for accepted `pay` asks
        self.decisions: dict[str, DecisionRecord] = {}
        self.approvals_not_found = 0
        self.kills: list[dict[str, Any]] = []
        self.restart: dict[str, Any] | None = None
        self.disruptions: list[tuple[float, float]] = []
        self.final: dict[str, Any] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self.t0 = time.monotonic()

    # ------------------------------------------------------------------ agents

    def _build_population(self, perennial: Perennial) -> None:
        cfg = self.cfg
        n_llm = max(1, round(cfg.agents * cfg.llm_share))
        n_ledger = max(2, cfg.agents - n_llm)
        n_short = round(n_ledger * cfg.short_share)
        self.ledger = [
            perennial.agent(LEDGER_SHORT if i < n_short else LEDGER, f"l{i:05d}")
            for i in range(n_ledger)
        ]
        self.rng.shuffle(self.ledger)
        self.parents = self.ledger[: max(1, round(n_ledger * cfg.parent_share))]
        n_alarm = max(1, round(n_ledger * cfg.alarm_share))
        self.alarmed = self.ledger[-n_alarm:]
        self.llm_agents = [
            perennial.agent(LLM_SHORT if i % 2 else LLM, f"m{i:05d}") for i in range(n_llm)
        ]
        self.handles: dict[str, AgentHandle] = {a.id: a for a in [*self.ledger, *self.llm_agents]}

    def _id(self, prefix: str) -> str:
        return f"{prefix}-{next(self._seq)}"

    def now(self) -> float:
        return time.monotonic() - self.t0

    # ------------------------------------------------------------------ the whole run

    async def run(self) -> dict[str, Any]:
        cfg = self.cfg
        with ScriptedLLM() as llm:
            llm.respond = model_reply
            llm.tool(LOOKUP_TOOL, result=lambda args: f"found {args.get('query')}")
            llm.tool(PAY_TOOL, result=lambda args: f"paid {args.get('ref')}", delay=cfg.pay_seconds)
            self.llm = llm
            settings = self.settings.model_copy(update={"openai_base_url": llm.url})
            self.fleet = Fleet(settings, cfg.workers, self.work_dir, cfg.sticky_timeout)
            watcher: asyncio.Task[None] | None = None
            try:
                for index in range(cfg.workers):
                    self.fleet.start(index)
                quiet = Runtime(telemetry=TelemetryConfig(logging=_QUIET_CORE))
                perennial = Perennial(await connect(settings, runtime=quiet), settings)
                self.client = perennial.client
                self._build_population(perennial)
                setup = await self._setup()
                watcher = asyncio.create_task(self.fleet.watch(self.t0))
                load = await self._load()
                settle = await self._settle()
                ledger = await self._ledger()
                histories = await self._histories()
            finally:
                if watcher is not None:
                    watcher.cancel()
                await self.fleet.stop_all()
        return self._results(setup, load, settle, ledger, histories)

    # ------------------------------------------------------------------ setup

    async def _setup(self) -> dict[str, Any]:
        """Create every agent with a first ask, then the recurring schedules."""
        started = time.monotonic()
        self.t0 = started
        await gather_limited(
            (
                self._deliver("create", a, "hello", f"init-{a.name}", ask=True)
                for a in self.handles.values()
            ),
            self.cfg.concurrency,
        )

        async def tick(agent: AgentHandle) -> None:
            for _ in range(20):
                try:
                    result = await agent.schedule(TICK, "tick", every_seconds=self.cfg.alarm_every)
                except Exception:  # noqa: BLE001 - the server is still warming up: again
                    await asyncio.sleep(1.0)
                    continue
                self.ticks[agent.id] = result.schedule.next_due
                return

        await gather_limited((tick(a) for a in self.alarmed), self.cfg.concurrency)
        return {
            "seconds": round(time.monotonic() - started, 1),
            "created": self.stats["create"].accepted,
            "schedules": len(self.ticks),
        }

    # ------------------------------------------------------------------ the load

    async def _load(self) -> dict[str, Any]:
        cfg = self.cfg
        self.t0 = time.monotonic()
        self.load_started = datetime.now(UTC)
        stopping = asyncio.Event()
        ops: dict[str, Callable[[], Awaitable[None]]] = {
            "message": self._op_message,
            "ask": self._op_ask,
            "child": self._op_child,
            "oneshot": self._op_oneshot,
            "llm": self._op_llm,
            "approval": self._op_approval,
        }
        rates = asdict(cfg.rates)
        pacers = [
            asyncio.create_task(self._pace(kind, rates[kind], op, stopping))
            for kind, op in ops.items()
            if rates[kind] > 0
        ]
        chaos = asyncio.create_task(self._chaos(stopping))
        await asyncio.sleep(cfg.duration)
        stopping.set()
        self.load_seconds = self.now()
        self.load_ended = datetime.now(UTC)
        await asyncio.gather(*pacers)
        await chaos  # an event in progress finishes
        while self._tasks:  # operations in flight finish (each has a deadline)
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
        return {
            "seconds": round(self.load_seconds, 1),
            "drained_seconds": round(self.now() - self.load_seconds, 1),
        }

    async def _pace(
        self, kind: str, rate: float, op: Callable[[], Awaitable[None]], stopping: asyncio.Event
    ) -> None:
        """Issue `op` `rate` times a second (Poisson arrivals) until `stopping`."""
        due = time.monotonic()
        while not stopping.is_set():
            due += self.rng.expovariate(rate)
            if await _stopped(stopping, due - time.monotonic()):
                return
            if len(self._tasks) >= self.cfg.max_in_flight:
                self.stats[kind].skipped += 1
                continue
            self._spawn(op())

    def _spawn(self, coro: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _deliver(
        self, kind: str, agent: AgentHandle, text: str, mid: str, *, ask: bool
    ) -> str:
        """Send (signal) or ask, retried with the same id until accepted or the deadline:
        'accepted', 'turn_failed' (asks), 'refused' (a usage error) or 'uncertain'."""
        stats, sent = self.stats[kind], self.sent[agent.id]
        stats.issued += 1
        started = time.monotonic()
        deadline = started + self.cfg.op_deadline
        attempts = 0
        while True:
            attempts += 1
            try:
                if ask:
                    await agent.ask(text, id=mid, timeout=self.cfg.attempt_timeout)
                else:
                    await agent.send(text, id=mid)
                break
            except TurnFailed:
                sent.failed.add(mid)
                stats.turn_failed += 1
                return "turn_failed"
            except UsageError as err:
                stats.refused += 1
                stats.errors[type(err).__name__] += 1
                return "refused"
            except Exception as err:  # noqa: BLE001 - outcome unknown: the same id again
                stats.errors[type(err).__name__] += 1
                if time.monotonic() > deadline:
                    sent.uncertain.add(mid)
                    stats.uncertain += 1
                    return "uncertain"
                await asyncio.sleep(self.cfg.retry_delay)
        sent.accepted.add(mid)
        stats.accepted += 1
        stats.retried += attempts > 1
        if ask:
            self.latencies[kind].append((started - self.t0, time.monotonic() - started))
        return "accepted"

    async def _op_message(self) -> None:
        await self._deliver("message", self.rng.choice(self.ledger), "m", self._id("m"), ask=False)

    async def _op_ask(self) -> None:
        await self._deliver("ask", self.rng.choice(self.ledger), "q", self._id("a"), ask=True)

    async def _op_child(self) -> None:
        parent = self.rng.choice(self.parents)
        mid = self._id("c")
        await self._deliver("child", parent, f"{SPAWN}{parent.name}.{mid}", mid, ask=False)

    async def _op_llm(self) -> None:
        mid = self._id("t")
        words = f"lookup {mid}" if self.rng.random() < 0.5 else f"hello {mid}"
        await self._deliver("llm", self.rng.choice(self.llm_agents), words, mid, ask=True)

    async def _op_oneshot(self) -> None:
        agent = self.rng.choice(self.ledger)
        sid = self._id("o")
        stats = self.stats["oneshot"]
        stats.issued += 1
        try:
            result = await agent.schedule(
                sid, "once", after_seconds=self.rng.uniform(*self.cfg.oneshot_after)
            )
        except Exception as err:  # noqa: BLE001 - not retried: a replaced one-shot could fire twice
            stats.errors[type(err).__name__] += 1
            stats.uncertain += 1
            self.oneshots.append(OneShot(agent.id, sid, None))
            return
        stats.accepted += 1
        self.oneshots.append(OneShot(agent.id, sid, result.schedule.next_due))

    async def _op_approval(self) -> None:
        agent = self.rng.choice(self.llm_agents)
        mid = self._id("p")
        ref = f"r{mid}"
        if await self._deliver("approval", agent, f"pay {ref}", mid, ask=True) != "accepted":
            return
        self.pay_refs[ref] = agent.id
        await asyncio.sleep(self.rng.uniform(*self.cfg.decide_after))  # a person reads it
        pending = await self._pending_approvals(agent)
        found = [a for a in pending or [] if _ref_of(a) == ref]
        if not found:
            self.approvals_not_found += 1  # decided in the drain, if it is there then
            return
        approve = self.rng.random() >= self.cfg.reject_share
        await self._decide(agent, found[0], approve=approve, drained=False)

    async def _pending_approvals(self, agent: AgentHandle) -> list[PendingApproval] | None:
        deadline = time.monotonic() + self.cfg.op_deadline
        while time.monotonic() < deadline:
            try:
                return await agent.approvals()
            except Exception:  # noqa: BLE001 - a worker or the server is down: again
                await asyncio.sleep(self.cfg.retry_delay)
        return None

    async def _decide(
        self, agent: AgentHandle, approval: PendingApproval, *, approve: bool, drained: bool
    ) -> None:
        stats = self.stats["decide"]
        stats.issued += 1
        deadline = time.monotonic() + self.cfg.op_deadline
        attempts, certain = 0, False
        while time.monotonic() < deadline:
            attempts += 1
            try:
                await agent.decide(approval.approval_id, approve=approve, decided_by="chaos")
                certain = True
                break
            except AlreadyDecided:
                # Ours, if an earlier attempt of this call got through; else someone else's.
                certain = attempts > 1
                if not certain:
                    stats.errors["AlreadyDecided on first attempt"] += 1
                break
            except Exception as err:  # noqa: BLE001 - outcome unknown: decide again
                stats.errors[type(err).__name__] += 1
                await asyncio.sleep(self.cfg.retry_delay)
        stats.accepted += certain
        stats.uncertain += not certain
        self.decisions[approval.approval_id] = DecisionRecord(
            agent=agent.id,
            approval_id=approval.approval_id,
            ref=_ref_of(approval),
            approve=approve,
            certain=certain,
            drained=drained,
        )

    # ------------------------------------------------------------------ the chaos

    def _chaos_plan(self) -> list[tuple[float, str]]:
        cfg = self.cfg
        plan: list[tuple[float, str]] = []
        at, kills, restart_pending = 0.0, 0, cfg.server_restart
        while True:
            at += self.rng.uniform(*cfg.kill_every)
            if at > cfg.duration - 5:
                return plan
            if restart_pending and at >= cfg.duration / 2:
                plan.append((at, "restart"))
                restart_pending = False
            elif cfg.max_kills is None or kills < cfg.max_kills:
                plan.append((at, "kill"))
                kills += 1

    async def _chaos(self, stopping: asyncio.Event) -> None:
        for at, what in self._chaos_plan():
            if await _stopped(stopping, at - self.now()):
                return  # an event that falls due late (the last one took long) is dropped
            if what == "kill":
                await self._kill()
            else:
                await self._restart_server()

    async def _kill(self) -> None:
        cfg = self.cfg
        index = self.rng.randrange(cfg.workers)
        identity = self.fleet.identity(index)
        probes = await self._cached_on(identity)
        killed_at, killed_wall = time.monotonic(), datetime.now(UTC)
        pid = self.fleet.kill(index)
        delay = 0.0 if self.rng.random() < 0.5 else self.rng.uniform(*cfg.restart_delay)

        async def restart() -> None:
            await asyncio.sleep(delay)
            self.fleet.start(index)

        restarting = asyncio.create_task(restart())
        answered = await asyncio.gather(*(self._probe(a, killed_at) for a in probes))
        await restarting
        times = [t for t in answered if t is not None]
        recovered = max(times) if times else 0.0
        self.disruptions.append((killed_at - self.t0, killed_at - self.t0 + recovered))
        after_death = await gather_limited(
            (self._tasks_after_death(a.id, identity, killed_wall) for a in probes),
            self.cfg.concurrency,
        )
        self.kills.append(
            {
                "at": round(killed_at - self.t0, 1),
                "worker": index,
                "pid": pid,
                "restart_after": round(delay, 1),
                "probes": len(probes),
                "unanswered": len(answered) - len(times),
                "recovery_max": round(recovered, 2) if times else None,
                "recovery_p50": round(percentile(times, 50), 2) if times else None,
                "recovery_each": [
                    [a.id, None if t is None else round(t, 2)]
                    for a, t in zip(probes, answered, strict=True)
                ],
                # Probe agents with a workflow task that timed out start-to-close after the
                # kill (it was running on the killed worker, or the server handed it to the
                # killed worker's poll after the kill: a WorkflowTaskStarted by its identity):
                # it waits out the task timeout (10 s), whatever the sticky timeout.
                "probes_with_start_to_close_timeout": sum(1 for _, n in after_death if n),
                "probes_with_task_started_on_dead_worker": sum(1 for n, _ in after_death if n),
            }
        )

    async def _tasks_after_death(
        self, agent: str, identity: str, killed: datetime
    ) -> tuple[int, int]:
        """In the agent's newest events: workflow tasks started by the killed worker after
        it died, and workflow tasks that timed out start-to-close after the kill."""
        try:
            events = await _newest_events(self.client, self.settings.namespace, agent)
        except Exception:  # noqa: BLE001 - evidence only
            return 0, 0
        after = [e for e in events if e.event_time.ToDatetime(tzinfo=UTC) > killed]
        started = sum(
            1
            for e in after
            if e.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_STARTED
            and e.workflow_task_started_event_attributes.identity == identity
        )
        timed_out = sum(
            1
            for e in after
            if e.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_TIMED_OUT
            and e.workflow_task_timed_out_event_attributes.timeout_type
            == TimeoutType.TIMEOUT_TYPE_START_TO_CLOSE
        )
        return started, timed_out

    async def _probe(self, agent: AgentHandle, since: float) -> float | None:
        outcome = await self._deliver("probe", agent, "probe", self._id("probe"), ask=True)
        return time.monotonic() - since if outcome == "accepted" else None

    async def _cached_on(self, identity: str) -> list[AgentHandle]:
        """Ledger agents whose last workflow task ran on the worker `identity` (so they are
        in its cache, and their next task goes to its sticky queue)."""
        sample = self.rng.sample(self.ledger, min(self.cfg.probe_scan, len(self.ledger)))
        owners = await gather_limited(
            (_last_task_identity(self.client, self.settings.namespace, a.id) for a in sample),
            self.cfg.concurrency,
        )
        return [a for a, owner in zip(sample, owners, strict=True) if owner == identity][
            : self.cfg.probes
        ]

    async def _restart_server(self) -> None:
        """Stop the dev server and start it on the same db file and port. Probes: asks sent
        while it is down (retried by the client until answered: the outage a caller sees),
        and asks sent once it is healthy again (the workers' own recovery)."""
        picked = self.rng.sample(self.ledger, min(2 * self.cfg.probes, len(self.ledger)))
        during, after = picked[::2], picked[1::2]
        started = time.monotonic()
        await self.server.stop()
        stopped = time.monotonic() - started
        answering = [asyncio.create_task(self._probe(a, started)) for a in during]
        await self.server.start()
        healthy = time.monotonic()
        fresh = await asyncio.gather(*(self._probe(a, healthy) for a in after))
        answered = await asyncio.gather(*answering)
        times = [t for t in answered if t is not None]
        fresh_times = [t for t in fresh if t is not None]
        outage = max(times) if times else None
        up = healthy - started
        self.disruptions.append((started - self.t0, started - self.t0 + (outage or up)))
        self.restart = {
            "at": round(started - self.t0, 1),
            "stop_seconds": round(stopped, 2),
            "healthy_after": round(up, 2),
            "probes": len(during),
            "unanswered": len(answered) - len(times) + len(fresh) - len(fresh_times),
            "asks_answer_after": round(outage, 2) if outage is not None else None,
            "asks_p50": round(percentile(times, 50), 2) if times else None,
            "asks_each": [None if t is None else round(t, 2) for t in answered],
            "fresh_probes": len(after),
            "fresh_asks_max": round(max(fresh_times), 2) if fresh_times else None,
            "fresh_asks_p50": round(percentile(fresh_times, 50), 2) if fresh_times else None,
        }

    # ------------------------------------------------------------------ after the load

    async def _settle(self) -> dict[str, Any]:
        """Decide every approval left pending, ask every agent once more (a stuck agent does
        not answer), then wait until everything accepted is applied."""
        started = time.monotonic()
        pendings = await gather_limited(
            (self._pending_approvals(a) for a in self.llm_agents), self.cfg.concurrency
        )
        await gather_limited(
            (
                self._decide(a, p, approve=True, drained=True)
                for a, pending in zip(self.llm_agents, pendings, strict=True)
                for p in pending or []
                if p.approval_id not in self.decisions or not self.decisions[p.approval_id].certain
            ),
            self.cfg.concurrency,
        )
        final = await gather_limited(
            (self._final_ask(a) for a in self.handles.values()), self.cfg.concurrency
        )
        answered = [t for t in final if t is not None]
        self.final = {
            "asked": len(final),
            "answered": len(answered),
            "unanswered": [
                a.id for a, t in zip(self.handles.values(), final, strict=True) if t is None
            ],
            "p50": _round(percentile(answered, 50)) if answered else None,
            "max": _round(max(answered)) if answered else None,
        }
        self.states: dict[str, Any] = {}
        converged = True
        try:
            await eventually(self._converged, timeout=self.cfg.settle_timeout)
        except AssertionError:
            converged = False
        # One fresh read of every agent: what the ledger checks (a late double shows too).
        handles = list(self.handles.values())
        for agent, state in zip(
            handles,
            await gather_limited((_read_state(a) for a in handles), self.cfg.concurrency),
            strict=True,
        ):
            if state is not None:
                self.states[agent.id] = state
        return {"seconds": round(time.monotonic() - started, 1), "converged": converged}

    async def _final_ask(self, agent: AgentHandle) -> float | None:
        started = time.monotonic()
        try:
            await asyncio.wait_for(
                agent.ask("final", id=f"final-{agent.name}"), self.cfg.final_ask_timeout
            )
        except TurnFailed:
            self.sent[agent.id].failed.add(f"final-{agent.name}")
            return time.monotonic() - started
        except Exception:  # noqa: BLE001 - stuck (or unreachable): the ledger says so
            self.sent[agent.id].uncertain.add(f"final-{agent.name}")
            return None
        self.sent[agent.id].accepted.add(f"final-{agent.name}")
        return time.monotonic() - started

    async def _converged(self) -> bool:
        """Read the state of every agent that has not applied everything yet."""
        waiting = [a for a in self.handles.values() if not self._settled(a.id)]
        states = await gather_limited((_read_state(a) for a in waiting), self.cfg.concurrency)
        for agent, state in zip(waiting, states, strict=True):
            if state is not None:
                self.states[agent.id] = state
        return all(self._settled(a.id) for a in waiting)

    def _settled(self, agent: str) -> bool:
        state = self.states.get(agent)
        if state is None:
            return False
        if not self.sent[agent].accepted <= set(state.applied):
            return False
        if isinstance(state, ChaosLLMState):
            wanted = {
                d.approval_id for d in self.decisions.values() if d.agent == agent and d.certain
            }
            return wanted <= set(state.decisions)
        assert isinstance(state, LedgerState)
        reported = {r.split(" ")[0] for r in state.reports}
        if not set(state.spawned) <= reported:
            return False
        fired = {a.schedule_id for a in state.alarms}
        if any(
            o.agent == agent and o.due is not None and o.schedule_id not in fired
            for o in self.oneshots
        ):
            return False
        first = self.ticks.get(agent)
        if first is not None:
            ticks = [a for a in state.alarms if a.schedule_id == TICK]
            return bool(ticks) and ticks[-1].due_at >= self.load_ended
        return True

    # ------------------------------------------------------------------ the ledger

    async def _ledger(self) -> dict[str, Any]:
        violations: list[Violation] = []
        figures: dict[str, Any] = {}
        missing = [a for a in self.handles if a not in self.states]
        violations += [Violation("state", a, "its state could not be read") for a in missing]
        figures["messages"] = check_messages(self.states, self.sent, violations)
        figures["alarms"] = check_alarms(
            self.states,
            self.ticks,
            self.oneshots,
            self.cfg.alarm_every,
            self.load_ended,
            violations,
        )
        figures["children"] = check_children(self.states, violations)
        pending = await gather_limited(
            (self._pending_approvals(a) for a in self.llm_agents), self.cfg.concurrency
        )
        for agent, left in zip(self.llm_agents, pending, strict=True):
            for approval in left or []:
                violations.append(
                    Violation(
                        "approvals",
                        agent.id,
                        f"{approval.approval_id} still pending after the drain",
                    )
                )
        figures["approvals"] = check_approvals(
            self.states, self.decisions, self.pay_refs, self.llm.tool_hits, violations
        )
        figures["approvals"]["pay_asks_without_approval_found"] = self.approvals_not_found
        for agent in self.final["unanswered"]:
            violations.append(
                Violation(
                    "stuck",
                    agent,
                    f"no answer to the final ask within {self.cfg.final_ask_timeout:g}s",
                )
            )
        for exit_ in self.fleet.unexpected_exits:
            violations.append(
                Violation("worker", f"worker {exit_['worker']}", f"exited on its own: {exit_}")
            )
        return {"figures": figures, "violations": violations}

    async def _histories(self) -> dict[str, Any]:
        """The last workflow task of every agent completed; every run of a sample of agents
        scanned for workflow task failures (by cause); every child completed."""
        cfg = self.cfg
        agents = list(self.handles)
        lasts = await gather_limited(
            (_last_task_outcome(self.client, self.settings.namespace, a) for a in agents),
            cfg.concurrency,
        )
        violations: list[Violation] = []
        for agent, outcome in zip(agents, lasts, strict=True):
            if outcome != "completed":
                violations.append(Violation("history", agent, f"last workflow task: {outcome}"))
        sample = (
            agents
            if cfg.history_sample is None
            else self.rng.sample(agents, min(cfg.history_sample, len(agents)))
        )
        scans = await gather_limited((_scan_runs(self.client, a) for a in sample), cfg.concurrency)
        causes: Counter[str] = Counter()
        timeouts: Counter[str] = Counter()
        runs = 0
        for agent, scan in zip(sample, scans, strict=True):
            runs += scan["runs"]
            timeouts.update(scan["task_timeouts"])
            causes.update(scan["failures"])
            for cause in scan["failures"]:
                if cause not in SERVER_RECOVERED_CAUSES:
                    violations.append(Violation("history", agent, f"workflow task failed: {cause}"))
        children = sorted(
            {c for s in self.states.values() if isinstance(s, LedgerState) for c in s.spawned}
        )
        statuses = await gather_limited(
            (_status(self.client, c) for c in children), cfg.concurrency
        )
        open_children = Counter(s for s in statuses if s != "COMPLETED")
        for child, status in zip(children, statuses, strict=True):
            if status != "COMPLETED":
                violations.append(Violation("children", child, f"child workflow is {status}"))
        return {
            "agents_checked": len(agents),
            "last_task_completed": sum(1 for o in lasts if o == "completed"),
            "sampled": len(sample),
            "runs": runs,
            "task_timeouts": dict(timeouts),
            "task_failures": dict(causes),
            "children_checked": len(children),
            "children_not_completed": dict(open_children),
            "violations": violations,
            "worker_logs": scan_worker_logs(self.fleet.logs()),
        }

    # ------------------------------------------------------------------ figures

    def _results(
        self,
        setup: dict[str, Any],
        load: dict[str, Any],
        settle: dict[str, Any],
        ledger: dict[str, Any],
        histories: dict[str, Any],
    ) -> dict[str, Any]:
        cfg = self.cfg
        seconds = self.load_seconds
        rates = asdict(cfg.rates)
        ops = {
            kind: {
                "target_per_s": rates.get(kind),
                "issued": s.issued,
                "accepted": s.accepted,
                "accepted_per_s": round(s.accepted / seconds, 2) if kind in rates else None,
                "uncertain": s.uncertain,
                "turn_failed": s.turn_failed,
                "refused": s.refused,
                "skipped": s.skipped,
                "retried": s.retried,
                "errors": dict(s.errors),
            }
            for kind, s in sorted(self.stats.items())
        }
        violations = [*ledger["violations"], *histories.pop("violations")]
        return {
            "config": {**asdict(cfg), "rates": rates},
            "setup": setup,
            "load": load,
            "settle": settle,
            "ops": ops,
            "latency": {
                kind: _latency(self.latencies[kind], self.disruptions)
                for kind in ("ask", "llm", "approval", "create")
            },
            "kills": self.kills,
            "server_restart": self.restart,
            "final_asks": self.final,
            "worker_starts": self.fleet.starts,
            "unexpected_worker_exits": self.fleet.unexpected_exits,
            "tool_executions": dict(self.llm.executions_by_tool()),
            "tool_retries": [
                {
                    "tool": h.name,
                    "ref": h.arguments.get("ref"),
                    "attempt": h.arguments.get("attempt"),
                    "at": round(h.at - self.t0, 1),
                }
                for h in self.llm.tool_hits
                if int(h.arguments.get("attempt", 1)) > 1
            ],
            "model_requests": len(self.llm.completions),
            "ledger": ledger["figures"],
            "histories": histories,
            "violations": [str(v) for v in violations],
        }


async def _stopped(stopping: asyncio.Event, seconds: float) -> bool:
    """Wait up to `seconds` for `stopping`; True if it is set. (`wait_for` with a timeout of
    0 raises TimeoutError even when the event is set: its wait never got to run.)"""
    if seconds > 0 and not stopping.is_set():
        try:
            await asyncio.wait_for(stopping.wait(), seconds)
        except TimeoutError:
            pass
    return stopping.is_set()


def _round(value: float) -> float:
    return round(value, 3)


def _latency(
    samples: list[tuple[float, float]], disruptions: list[tuple[float, float]]
) -> dict[str, Any]:
    """p50/p95/p99/max of every call, and of the calls that were not in flight during a
    disruption (from a kill or the server restart until its probes answered again)."""
    if not samples:
        return {"count": 0}
    every = [s for _, s in samples]
    calm = [s for at, s in samples if not any(at <= hi and at + s >= lo for lo, hi in disruptions)]
    return {
        "count": len(every),
        "p50": _round(percentile(every, 50)),
        "p95": _round(percentile(every, 95)),
        "p99": _round(percentile(every, 99)),
        "max": _round(max(every)),
        "calm_count": len(calm),
        "calm_p50": _round(percentile(calm, 50)) if calm else None,
        "calm_p95": _round(percentile(calm, 95)) if calm else None,
        "samples": [[round(at, 2), round(s, 3)] for at, s in samples],
    }


def _ref_of(approval: PendingApproval) -> str:
    try:
        return str(json.loads(approval.arguments).get("ref"))
    except (ValueError, AttributeError):
        return "?"


# --------------------------------------------------------------------------- ledger checks


def check_messages(
    states: dict[str, Any], sent: dict[str, Sent], violations: list[Violation]
) -> dict[str, int]:
    """Every accepted id applied once; an uncertain one at most once; a failed turn's never;
    nothing applied that nobody sent."""
    figures = Counter[str]()

    def flag(agent: str, detail: str) -> None:
        violations.append(Violation("messages", agent, detail))

    for agent, state in states.items():
        applied = Counter(state.applied)
        mine = sent.get(agent, Sent())
        figures["accepted"] += len(mine.accepted)
        figures["uncertain"] += len(mine.uncertain)
        figures["turn_failed"] += len(mine.failed)
        for mid in mine.accepted:
            figures["accepted_applied_once"] += applied[mid] == 1
            if applied[mid] == 0:
                figures["lost"] += 1
                flag(agent, f"accepted {mid} never applied (lost)")
        for mid in mine.uncertain:
            figures["uncertain_applied"] += applied[mid] == 1
        for mid in mine.failed:
            if applied[mid]:
                flag(agent, f"{mid}: its turn failed, yet applied")
        for mid, count in applied.items():
            if count > 1:
                figures["doubled"] += 1
                flag(agent, f"{mid} applied {count} times")
            if mid not in mine.all():
                flag(agent, f"{mid} applied but never sent")
    return dict(figures)


def check_alarms(
    states: dict[str, Any],
    ticks: dict[str, datetime],
    oneshots: list[OneShot],
    every: float,
    load_ended: datetime,
    violations: list[Violation],
) -> dict[str, int]:
    """Recurring: the alarms cover the grid first_due + k*every without a gap or a repeat, up
    to the end of the load. One-shots: each accepted one fired once, at its due time; no
    alarm that nobody set."""
    figures = Counter[str]()
    step = timedelta(seconds=every)
    for agent, first in ticks.items():
        state = states.get(agent)
        if state is not None:
            records = [a for a in state.alarms if a.schedule_id == TICK]
            figures.update(_check_grid(agent, records, first, step, load_ended, violations))
    figures.update(_check_oneshots(states, oneshots, violations))
    return dict(figures)


def _check_grid(
    agent: str,
    records: list[Any],
    first: datetime,
    step: timedelta,
    load_ended: datetime,
    violations: list[Violation],
) -> Counter[str]:
    expected = first
    for record in records:
        if record.first_due_at != expected:
            what = "a gap before" if record.first_due_at > expected else "a due time again at"
            detail = f"{what} {record.first_due_at} (expected {expected})"
            violations.append(Violation("alarms", agent, detail))
        if record.due_at != record.first_due_at + record.missed * step:
            violations.append(Violation("alarms", agent, f"alarm {record} is off the grid"))
        expected = record.due_at + step
    covered = [r.first_due_at + k * step for r in records for k in range(r.missed + 1)]
    return Counter(
        recurring_alarms_applied=len(records),
        recurring_due_times_covered=len(covered),
        recurring_folded_alarms=sum(1 for r in records if r.missed),
        recurring_due_times_expected_by_load_end=(
            int((load_ended - first) / step) + 1 if load_ended >= first else 0
        ),
        recurring_due_times_covered_by_load_end=sum(1 for due in covered if due <= load_ended),
    )


def _check_oneshots(
    states: dict[str, Any], oneshots: list[OneShot], violations: list[Violation]
) -> Counter[str]:
    figures = Counter[str]()

    def flag(agent: str, detail: str) -> None:
        violations.append(Violation("alarms", agent, detail))

    for shot in oneshots:
        state = states.get(shot.agent)
        if state is None:
            continue
        fired = [a for a in state.alarms if a.schedule_id == shot.schedule_id]
        if shot.due is None:
            figures["oneshots_uncertain"] += 1
            if len(fired) > 1:
                flag(shot.agent, f"one-shot {shot.schedule_id} fired {len(fired)} times")
        elif len(fired) != 1:
            flag(shot.agent, f"one-shot {shot.schedule_id} fired {len(fired)} times")
        elif fired[0].due_at != shot.due or fired[0].missed:
            flag(shot.agent, f"one-shot {shot.schedule_id} fired as {fired[0]}, due {shot.due}")
        else:
            figures["oneshots_fired_once"] += 1
        figures["oneshots_accepted"] += shot.due is not None
    known = {(o.agent, o.schedule_id) for o in oneshots}
    for agent, state in states.items():
        if isinstance(state, LedgerState):
            for sid in {a.schedule_id for a in state.alarms} - {TICK}:
                if (agent, sid) not in known:
                    flag(agent, f"alarm {sid} fired but nobody set it")
    return figures


def check_children(states: dict[str, Any], violations: list[Violation]) -> dict[str, int]:
    """Every child started is reported once, completed; no report for a child not started."""
    figures = Counter[str]()

    def flag(agent: str, detail: str) -> None:
        violations.append(Violation("children", agent, detail))

    for agent, state in states.items():
        if not isinstance(state, LedgerState):
            continue
        spawned = Counter(state.spawned)
        reports = Counter(r.split(" ")[0] for r in state.reports)
        statuses = {r.split(" ")[0]: r.split(" ", 1)[1] for r in state.reports}
        figures["spawned"] += len(spawned)
        for child, count in spawned.items():
            if count > 1:
                flag(agent, f"{child} started {count} times")
            if reports[child] != 1:
                flag(agent, f"{child} reported {reports[child]} times")
            elif statuses[child] != "completed":
                flag(agent, f"{child} reported {statuses[child]}")
            else:
                figures["reported_once_completed"] += 1
        for child in reports:
            if child not in spawned:
                flag(agent, f"report from {child}, which it never started")
    return dict(figures)


def check_approvals(
    states: dict[str, Any],
    decisions: dict[str, DecisionRecord],
    pay_refs: dict[str, str],
    tool_hits: list[Any],
    violations: list[Violation],
) -> dict[str, int]:
    """Each decision applied once by its agent; an approved call ran under one idempotency key
    (a retried attempt after a lost one reuses it); a rejected or undecided call never ran."""
    figures = Counter[str]()

    def flag(agent: str, detail: str) -> None:
        violations.append(Violation("approvals", agent, detail))

    runs: dict[str, list[tuple[str, int]]] = defaultdict(list)
    for hit in tool_hits:
        if hit.name == PAY_TOOL:
            args = hit.arguments
            runs[str(args.get("ref"))].append(
                (str(args.get("call_id")), int(args.get("attempt", 0)))
            )
    for record in decisions.values():
        state = states.get(record.agent)
        applied = Counter(state.decisions)[record.approval_id] if state is not None else 0
        executions = runs.get(record.ref, [])
        keys = {key for key, _ in executions}
        figures["decided"] += 1
        figures["approved" if record.approve else "rejected"] += 1
        figures["drained"] += record.drained
        figures["executions"] += len(executions)
        figures["retried_attempts"] += sum(1 for _, attempt in executions if attempt > 1)
        if applied > 1 or (applied == 0 and record.certain):
            flag(record.agent, f"decision {record.approval_id} applied {applied} times")
        repeated = [k for k, n in Counter(executions).items() if n > 1]
        if repeated:
            flag(record.agent, f"{record.ref}: the same attempt ran twice: {repeated}")
        if record.approve and record.certain and len(keys) != 1:
            flag(record.agent, f"approved {record.ref} ran under {len(keys)} keys: {executions}")
        elif record.approve and record.certain:
            figures["approved_ran_once"] += 1
        elif not record.approve and executions:
            flag(record.agent, f"rejected {record.ref} ran: {executions}")
    decided_refs = {d.ref for d in decisions.values()}
    for ref, executions in runs.items():
        if ref not in decided_refs:
            flag(pay_refs.get(ref, "?"), f"{ref} ran without a decision: {executions}")
    return dict(figures)


#: Workflow task failures the server causes under load and the agent recovers from.
SERVER_RECOVERED_CAUSES = frozenset(
    {
        "WORKFLOW_TASK_FAILED_CAUSE_FORCE_CLOSE_COMMAND",
        "WORKFLOW_TASK_FAILED_CAUSE_UNHANDLED_COMMAND",
    }
)

_WT_CLOSED = {
    EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED: "completed",
    EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED: "failed",
    EventType.EVENT_TYPE_WORKFLOW_TASK_TIMED_OUT: "timed out",
}
_RUN_CLOSED = {
    EventType.EVENT_TYPE_WORKFLOW_EXECUTION_FAILED: "run failed",
    EventType.EVENT_TYPE_WORKFLOW_EXECUTION_TERMINATED: "run terminated",
    EventType.EVENT_TYPE_WORKFLOW_EXECUTION_TIMED_OUT: "run timed out",
    EventType.EVENT_TYPE_WORKFLOW_EXECUTION_CANCELED: "run cancelled",
}


async def _newest_events(client: Client, namespace: str, workflow_id: str) -> list[HistoryEvent]:
    request = GetWorkflowExecutionHistoryReverseRequest(
        namespace=namespace,
        execution=WorkflowExecution(workflow_id=workflow_id),
        maximum_page_size=100,
    )
    response = await client.workflow_service.get_workflow_execution_history_reverse(request)
    return list(response.history.events)


async def _last_task_identity(client: Client, namespace: str, workflow_id: str) -> str | None:
    try:
        events = await _newest_events(client, namespace, workflow_id)
    except Exception:  # noqa: BLE001 - not a probe then
        return None
    for event in events:
        if event.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED:
            return event.workflow_task_completed_event_attributes.identity
        if event.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_STARTED:
            return event.workflow_task_started_event_attributes.identity
    return None


async def _last_task_outcome(client: Client, namespace: str, workflow_id: str) -> str:
    """How the newest closed workflow task of the current run ended (read again for a while
    when one is in flight or just failed: a task failing for good keeps failing)."""
    outcome = "unknown"
    for _ in range(10):
        try:
            events = await _newest_events(client, namespace, workflow_id)
        except Exception as err:  # noqa: BLE001
            outcome = f"unreadable ({type(err).__name__})"
            await asyncio.sleep(1.0)
            continue
        if events and events[0].event_type in _RUN_CLOSED:
            return _RUN_CLOSED[events[0].event_type]
        outcome = next(
            (_WT_CLOSED[e.event_type] for e in events if e.event_type in _WT_CLOSED),
            "no closed workflow task in the newest 100 events",
        )
        if outcome == "completed":
            return outcome
        await asyncio.sleep(1.0)  # a failed or timed-out task may be retried by now
    return outcome


async def _scan_runs(client: Client, workflow_id: str) -> dict[str, Any]:
    """Every run of an agent (following continue-as-new): how many, workflow task failures by
    cause, workflow task timeouts (a killed worker's sticky tasks)."""
    failures: list[str] = []
    timeouts: Counter[str] = Counter()
    runs = 0
    latest = [e async for e in client.get_workflow_handle(workflow_id).fetch_history_events()]
    started = latest[0].workflow_execution_started_event_attributes
    run_id: str | None = started.first_execution_run_id
    while run_id:
        handle = client.get_workflow_handle(workflow_id, run_id=run_id)
        events = [e async for e in handle.fetch_history_events()]
        runs += 1
        run_id = None
        for e in events:
            if e.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED:
                cause = e.workflow_task_failed_event_attributes.cause
                failures.append(WorkflowTaskFailedCause.Name(cause))
            elif e.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_TIMED_OUT:
                kind = e.workflow_task_timed_out_event_attributes.timeout_type
                timeouts[TimeoutType.Name(kind).removeprefix("TIMEOUT_TYPE_")] += 1
            elif e.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_CONTINUED_AS_NEW:
                run_id = e.workflow_execution_continued_as_new_event_attributes.new_execution_run_id
    return {"runs": runs, "failures": failures, "task_timeouts": timeouts}


async def _status(client: Client, workflow_id: str) -> str:
    try:
        status = (await client.get_workflow_handle(workflow_id).describe()).status
    except Exception as err:  # noqa: BLE001
        return f"unreadable ({type(err).__name__})"
    return status.name if isinstance(status, WorkflowExecutionStatus) else str(status)


async def _read_state(agent: AgentHandle) -> Any:
    try:
        return (await agent.state()).state
    except Exception:  # noqa: BLE001 - not readable right now: read again later
        return None


_LOG_PATTERNS = {
    "tracebacks": re.compile(r"Traceback"),
    "nondeterminism": re.compile(r"[Nn]ondetermin"),
    "task_not_found": re.compile(r"Task not found"),
    "failed_activation": re.compile(r"Failed activation|Failed handling activation"),
    "error_lines": re.compile(r"\[error|\bERROR\b|\"level\": ?\"error\""),
}


def scan_worker_logs(paths: list[Path]) -> dict[str, Any]:
    """Counts of notable lines in the workers' logs, and a few examples."""
    counts: Counter[str] = Counter()
    examples: dict[str, str] = {}
    for path in paths:
        for line in path.read_text(errors="replace").splitlines():
            for name, pattern in _LOG_PATTERNS.items():
                if pattern.search(line):
                    counts[name] += 1
                    examples.setdefault(name, line[:300])
    return {"counts": dict(counts), "examples": examples}


# --------------------------------------------------------------------------- report


def print_report(results: dict[str, Any]) -> None:
    cfg = results["config"]
    load = results["load"]
    print(
        f"\nchaos: {cfg['agents']} agents, {cfg['workers']} worker processes, "
        f"{load['seconds']:.0f} s of load, sticky timeout {cfg['sticky_timeout']:g} s, "
        f"setup {results['setup']['seconds']:.0f} s, settle {results['settle']['seconds']:.0f} s"
    )
    rows = [
        [
            "operation",
            "target/s",
            "accepted/s",
            "accepted",
            "uncertain",
            "failed turn",
            "retried",
            "skipped",
        ]
    ]
    for kind, op in results["ops"].items():
        rows.append(
            [
                kind,
                f"{op['target_per_s']:.2f}" if op["target_per_s"] is not None else "-",
                f"{op['accepted_per_s']:.2f}" if op["accepted_per_s"] is not None else "-",
                str(op["accepted"]),
                str(op["uncertain"]),
                str(op["turn_failed"]),
                str(op["retried"]),
                str(op["skipped"]),
            ]
        )
    print()
    print_table(rows, align="<>>>>>>>", rule=True)
    alarms = results["ledger"].get("alarms", {})
    print(
        f"recurring alarms applied: {alarms.get('recurring_alarms_applied', 0)} "
        f"({alarms.get('recurring_alarms_applied', 0) / load['seconds']:.2f}/s); tool runs: "
        f"{results['tool_executions']}; model requests: {results['model_requests']}"
    )
    print()
    rows = [["latency (s)", "count", "p50", "p95", "p99", "max", "calm: count", "p50", "p95"]]
    for kind, lat in results["latency"].items():
        if lat.get("count"):
            figures = [lat[k] for k in ("p50", "p95", "p99", "max", "calm_p50", "calm_p95")]
            cells = ["-" if f is None else f"{f:.3f}" for f in figures]
            rows.append([kind, str(lat["count"]), *cells[:4], str(lat["calm_count"]), *cells[4:]])
    print_table(rows, align="<>>>>>>>>", rule=True)
    print("(calm: calls not in flight during a kill or the restart, until its probes answered)")
    print()
    rows = [["disruption", "at (s)", "detail", "probes", "answered again after (s)"]]
    for kill in results["kills"]:
        rows.append(
            [
                f"kill worker {kill['worker']}",
                f"{kill['at']:.0f}",
                f"restarted after {kill['restart_after']:.1f} s",
                str(kill["probes"]),
                "-"
                if kill["recovery_max"] is None
                else f"max {kill['recovery_max']:.2f}, p50 {kill['recovery_p50']:.2f}"
                + (f", {kill['unanswered']} unanswered" if kill["unanswered"] else "")
                + (
                    f"; {kill['probes_with_start_to_close_timeout']} waited out a task timeout"
                    f" ({kill['probes_with_task_started_on_dead_worker']} started after the kill)"
                    if kill["probes_with_start_to_close_timeout"]
                    else ""
                ),
            ]
        )
    restart = results["server_restart"]
    if restart:
        rows.append(
            [
                "server restart",
                f"{restart['at']:.0f}",
                f"stop {restart['stop_seconds']:.1f} s, healthy after {restart['healthy_after']:.1f} s",
                str(restart["probes"]),
                "-"
                if restart["asks_answer_after"] is None
                else f"max {restart['asks_answer_after']:.2f}, p50 {restart['asks_p50']:.2f}",
            ]
        )
        if restart["fresh_asks_max"] is not None:
            rows.append(
                [
                    "  asks sent once healthy",
                    "",
                    "(timed from healthy)",
                    str(restart["fresh_probes"]),
                    f"max {restart['fresh_asks_max']:.2f}, p50 {restart['fresh_asks_p50']:.2f}",
                ]
            )
    print_table(rows, align="<><>>", rule=True)
    final = results["final_asks"]
    print(
        f"\nfinal asks: {final['answered']}/{final['asked']} answered "
        f"(p50 {final['p50']} s, max {final['max']} s)"
    )
    hist = results["histories"]
    print(
        f"histories: last workflow task completed for {hist['last_task_completed']}/"
        f"{hist['agents_checked']} agents; {hist['sampled']} agents scanned over "
        f"{hist['runs']} runs: task failures {hist['task_failures'] or 'none'}, "
        f"task timeouts {hist['task_timeouts']}; children completed "
        f"{hist['children_checked'] - sum(hist['children_not_completed'].values())}/"
        f"{hist['children_checked']}"
    )
    logs = hist["worker_logs"]["counts"]
    print(f"worker logs: {logs or 'nothing notable'}")
    print("\nledger:")
    for name, figures in results["ledger"].items():
        print(f"  {name}: " + ", ".join(f"{k} {v}" for k, v in sorted(figures.items())))
    violations = results["violations"]
    if violations:
        print(f"\nLEDGER: {len(violations)} VIOLATION(S)")
        for line in violations[:50]:
            print(f"  {line}")
        if len(violations) > 50:
            print(f"  ... and {len(violations) - 50} more (in the results file)")
    else:
        print(
            "\nLEDGER: PASS (nothing lost, nothing applied twice, no task failure left, "
            "no agent stuck)"
        )


# --------------------------------------------------------------------------- main


async def run_chaos(
    config: ChaosConfig, server: DevServer, settings: Settings, work_dir: Path
) -> dict[str, Any]:
    """One chaos run on `server` (restarted once, on the same db file and port)."""
    return await ChaosRun(config, server, settings, work_dir).run()


def _parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.chaos", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--agents", type=int)
    parser.add_argument("--workers", type=int)
    parser.add_argument("--minutes", type=float)
    parser.add_argument("--quick", action="store_true", help="100 agents, 2 workers, 2 minutes")
    parser.add_argument("--rate", type=float, help="scale every operation rate by this factor")
    parser.add_argument("--sticky-timeout", type=float, help="seconds (the product default: 10)")
    parser.add_argument("--kill-every", help="LO,HI seconds between chaos events (20,40)")
    parser.add_argument("--no-server-restart", action="store_true")
    parser.add_argument("--pay-seconds", type=float, help="the approval tool's duration (0.05)")
    parser.add_argument("--history-sample", type=int, help="agents whose every run is scanned")
    parser.add_argument("--seed", type=int)
    parser.add_argument("--out", type=Path)
    return parser.parse_args()


def config_from(args: argparse.Namespace) -> ChaosConfig:
    config = QUICK if args.quick else ChaosConfig()
    updates: dict[str, Any] = {}
    if args.agents is not None:
        updates["agents"] = args.agents
    if args.workers is not None:
        updates["workers"] = args.workers
    if args.minutes is not None:
        updates["duration"] = args.minutes * 60
    if args.rate is not None:
        updates["rates"] = config.rates.scaled(args.rate)
    if args.sticky_timeout is not None:
        updates["sticky_timeout"] = args.sticky_timeout
    if args.kill_every is not None:
        lo, hi = (float(x) for x in args.kill_every.split(","))
        updates["kill_every"] = (lo, hi)
    if args.pay_seconds is not None:
        updates["pay_seconds"] = args.pay_seconds
    if args.no_server_restart:
        updates["server_restart"] = False
    if args.history_sample is not None:
        updates["history_sample"] = args.history_sample
    if args.seed is not None:
        updates["seed"] = args.seed
    return replace(config, **updates)


def _environment() -> dict[str, Any]:
    """What was measured (the harness's `environment()` without its git calls)."""
    return {
        "source": str(ROOT),
        "source_digest": source_digest(),
        "python": platform.python_version(),
        "temporalio": temporalio.__version__,
        "cpus": os.cpu_count(),
        "loadavg_at_end": os.getloadavg(),
        "platform": platform.platform(),
    }


async def amain(args: argparse.Namespace) -> int:
    config = config_from(args)
    with tempfile.TemporaryDirectory(prefix="chaos-logs-") as logs:
        async with dev_server("perennial-chaos-", task_queue="chaos") as (server, settings):
            try:
                results = await run_chaos(config, server, settings, Path(logs))
            except Exception as err:
                print(f"chaos run failed: {type(err).__name__}: {err}")
                raise
    results["environment"] = _environment()
    print_report(results)
    path = save_results("chaos", results, out=args.out)
    print(f"\nresults: {path}")
    return 1 if results["violations"] else 0


if __name__ == "__main__":
    run_main(amain, _parse_args)
