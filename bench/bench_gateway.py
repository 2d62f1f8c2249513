"""The gateway (HTTP, WebSocket) against the Python client it wraps, on one server, in one run.

    .venv/bin/python -m bench.bench_gateway            # full run (~4 min on 2 shared cores)
    .venv/bin/python -m bench.bench_gateway --quick    # scaled down (under a minute)

Starts its own embedded dev server, one worker in its own process (`python worker.py`, as
deployed) and, for each phase, a fresh gateway in its own process (`python -m
perennial.client.cli gateway --port P`, configured by TEMPORAL_ADDRESS and
PERENNIAL_TASK_QUEUE, as deployed). This process is the load generator: the Python client,
httpx clients with kept-alive connections and WebSocket clients. Phases:

    ask         sequential `ask` round trips on `notes` agents: client, HTTP, WebSocket (and,
                to tell where a difference comes from, the client with a new handle per ask,
                and the client on an agent a socket follows)
    commit      commit-to-socket latency of a state change made by the client
    fanout      1,000 sockets over 100 agents: gateway RSS, fan-out latency, one watcher each
    throughput  messages/s into 100 agents: client `send` vs HTTP POST .../messages (and the
                client with a new handle per send: signal-with-start, as the gateway sends)

Prints a table with each figure, the issue's target and whether it is met, and saves the
table and every raw figure as JSON under bench/results/. See bench/README.md ("The gateway").
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import resource
import subprocess
import sys
import time
import traceback
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
from temporalio.api.enums.v1 import EventType
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from bench.bench_entity import Retries, bounded, cpu_seconds, unique, wait_applied
from bench.harness import (
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
from perennial.client import AgentHandle, Perennial, Settings
from perennial.client.server import DevServer, free_port

CALL_TIMEOUT = 60.0
#: Target 1: a gateway ask round trip within this factor of the client's, plus this many ms.
ASK_FACTOR, ASK_SLACK_MS = 1.2, 3.0
#: Target 2: a committed change reaches the socket within this many ms.
COMMIT_MS = 50.0
#: Target 4: the gateway's message rate at least this fraction of the client's.
RATE_FACTOR = 0.8


# --------------------------------------------------------------------------- scale


@dataclass
class Scale:
    asks: int = 200
    ask_warmup: int = 20
    #: Asks per path per pass in the CPU blocks of phase ask, and the passes (0: none).
    cpu_asks: int = 100
    cpu_passes: int = 2
    commits: int = 100
    fan_agents: int = 100
    sockets_per_agent: int = 10
    messages: int = 3_000
    msg_agents: int = 100
    concurrency: int = 64
    #: Throughput rounds per side (new agents each, order alternating).
    rounds: int = 2
    #: Also flood through the client with a new handle per send (signal-with-start).
    flood_fresh: bool = True


QUICK = Scale(
    asks=30, ask_warmup=10, cpu_passes=0, commits=30, fan_agents=30, messages=300, flood_fresh=False
)


# --------------------------------------------------------------------------- results


@dataclass
class Row:
    """One line of the table: a gateway figure, the client's from the same run if there is
    one, the target as text and whether it is met (None: no target, or undecided)."""

    figure: str
    gateway: float | None
    client: float | None = None
    unit: str = ""
    target: str = ""
    met: bool | None = None
    verdict: str = ""

    @property
    def ratio(self) -> float | None:
        return self.gateway / self.client if self.gateway is not None and self.client else None

    def result(self) -> str:
        if self.verdict:
            return self.verdict
        return "" if self.met is None else "met" if self.met else "NOT MET"


@dataclass
class Report:
    rows: list[Row] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)

    def add(self, row: Row) -> None:
        self.rows.append(row)
        client = f" client={_fmt(row.client)}" if row.client is not None else ""
        print(f"  {row.figure}: {_fmt(row.gateway)}{client} {row.unit} {row.result()}".rstrip(),
              flush=True)  # fmt: skip


def _fmt(value: float | None, digits: int | None = None) -> str:
    if value is None:
        return "-"
    if digits is None:
        digits = 0 if abs(value) >= 1_000 else 1 if abs(value) >= 10 else 2
    return f"{value:,.{digits}f}"


def print_report(report: Report) -> None:
    header = ("figure", "gateway", "client", "ratio", "target", "result")
    lines = [
        (f"{row.figure}" + (f" [{row.unit}]" if row.unit else ""), _fmt(row.gateway),
         _fmt(row.client), _fmt(row.ratio, 2), row.target, row.result())
        for row in report.rows
    ]  # fmt: skip
    print()
    print_table([header, *lines], align="<>>><<", rule=True)
    for phase, error in report.errors.items():
        print(f"  ! phase {phase} failed: {error}")
    print(flush=True)


def ms_stats(samples: list[float]) -> dict[str, float]:
    """p50 / p95 / max of samples in seconds, in ms."""
    ms = [s * 1000 for s in samples]
    return {"p50": percentile(ms, 50), "p95": percentile(ms, 95), "max": max(ms), "n": len(ms)}


# --------------------------------------------------------------------------- processes


class GatewayProcess:
    """`perennial gateway` in its own process, as deployed, on a free port."""

    def __init__(self, settings: Settings, log: Path, log_level: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.ws_url = f"ws://127.0.0.1:{self.port}"
        self.log = log
        environ = dict(os.environ)
        environ.update(
            TEMPORAL_ADDRESS=settings.address,
            PERENNIAL_TASK_QUEUE=settings.task_queue,
            PERENNIAL_LOG_FORMAT="json",
            PERENNIAL_LOG_LEVEL=log_level,
        )
        command = [
            sys.executable,
            "-m",
            "perennial.client.cli",
            "gateway",
            "--port",
            str(self.port),
        ]
        with log.open("ab") as out:
            self.proc = subprocess.Popen(
                command, cwd=ROOT, env=environ, stdout=out, stderr=out, start_new_session=True
            )

    @property
    def pid(self) -> int:
        return self.proc.pid

    async def ready(self, timeout: float = 90.0) -> None:
        """Until /health says 200 (Temporal answers and the worker polls)."""
        deadline = time.monotonic() + timeout
        async with httpx.AsyncClient(base_url=self.url, timeout=5) as http:
            while True:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"the gateway exited with {self.proc.returncode}")
                with contextlib.suppress(httpx.HTTPError):
                    if (await http.get("/health")).status_code == 200:
                        return
                if time.monotonic() > deadline:
                    raise TimeoutError(f"the gateway was not healthy within {timeout:.0f}s")
                await asyncio.sleep(0.2)

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-2000:]


class CpuClock:
    """CPU seconds used by each process that serves a call: this one (the load generator and
    the client), the gateway, the worker, the dev server."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = pids

    def read(self) -> dict[str, float]:
        out = {name: cpu_seconds(pid) for name, pid in self.pids.items()}
        out["bench"] = time.process_time()
        return out

    @staticmethod
    def diff(after: dict[str, float], before: dict[str, float]) -> dict[str, float]:
        return {k: after[k] - before[k] for k in after}


async def settled_rss_mb(pid: int, *, timeout: float = 20.0) -> float:
    """RSS once it stops moving."""
    samples: list[float] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        samples.append(rss_mb(pid))
        recent = samples[-4:]
        if len(recent) == 4 and max(recent) - min(recent) <= max(0.5, 0.005 * max(recent)):
            break
        await asyncio.sleep(0.5)
    return samples[-1]


# --------------------------------------------------------------------------- the socket


class AgentSocket:
    """One WebSocket on one agent. A reader task stamps every frame on arrival: the first
    arrival of each state version (`state` / `patch`), the `at` of each `turn` event, and
    the replies to this socket's requests."""

    def __init__(self, connection: ClientConnection) -> None:
        self.connection = connection
        #: (version, wall-clock arrival) of each state / patch frame, in arrival order.
        self.versions: list[tuple[int, float]] = []
        #: version -> the turn event's `at` (epoch seconds) and its frame's arrival.
        self.turns: dict[int, tuple[float, float]] = {}
        self._replies: dict[str, asyncio.Future[tuple[float, dict[str, Any]]]] = {}
        self._waiters: list[tuple[int, asyncio.Future[float]]] = []
        self.reader = asyncio.create_task(self._read())

    #: Offer permessage-deflate (as browsers do) or not: `--ws-compression`.
    compression: str | None = "deflate"

    @classmethod
    async def open(cls, url: str) -> AgentSocket:
        # No client pings: a browser sends none either (the server pings every 20 s).
        return cls(await connect(url, ping_interval=None, open_timeout=60, max_size=None,
                                 compression=cls.compression))  # fmt: skip

    async def _read(self) -> None:
        with contextlib.suppress(ConnectionClosed):
            async for raw in self.connection:
                arrived = time.time()
                frame = json.loads(raw)
                kind = frame["type"]
                if kind in ("state", "patch"):
                    self._on_version(frame["version"], arrived)
                elif kind == "event":
                    event = frame["event"]
                    if event["kind"] == "turn":
                        at = datetime.fromisoformat(event["at"]).timestamp()
                        self.turns[event["version"]] = (at, arrived)
                elif "id" in frame:
                    future = self._replies.pop(frame["id"], None)
                    if future is not None and not future.done():
                        future.set_result((arrived, frame))

    def _on_version(self, version: int, arrived: float) -> None:
        self.versions.append((version, arrived))
        for waiter in [w for w in self._waiters if w[0] <= version]:
            self._waiters.remove(waiter)
            if not waiter[1].done():
                waiter[1].set_result(arrived)

    async def version_at_least(self, version: int, timeout: float = 30.0) -> float:
        """The arrival of the first frame with a version >= `version` (the gateway coalesces
        versions committed before one state read)."""
        for seen, arrived in self.versions:
            if seen >= version:
                return arrived
        future: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        self._waiters.append((version, future))
        return await asyncio.wait_for(future, timeout)

    async def request(self, **fields: Any) -> tuple[float, dict[str, Any]]:
        """Send a request; its reply's arrival (wall clock) and the reply."""
        future: asyncio.Future[tuple[float, dict[str, Any]]] = (
            asyncio.get_running_loop().create_future()
        )
        self._replies[fields["id"]] = future
        await self.connection.send(json.dumps(fields))
        return await asyncio.wait_for(future, CALL_TIMEOUT)

    async def close(self) -> None:
        await self.connection.close()
        await self.reader


# --------------------------------------------------------------------------- the bench


class Bench:
    def __init__(
        self, args: argparse.Namespace, scale: Scale, server: DevServer, settings: Settings
    ) -> None:
        self.args = args
        self.scale = scale
        self.report = Report()
        self.server = server
        self.settings = settings
        self.tmp = settings.state_dir  # the server's temp dir; the logs go there too
        self.perennial: Perennial
        self.worker: subprocess.Popen[bytes]
        self.server_pid = server._process.pid if server._process else 0  # no public pid

    @contextlib.asynccontextmanager
    async def gateway(self, phase: str) -> AsyncIterator[GatewayProcess]:
        """A fresh gateway process for one phase (so one phase's watchers, memory and
        connections do not carry into the next)."""
        gw = GatewayProcess(self.settings, self.tmp / f"gateway-{phase}.log", self.args.gateway_log)
        try:
            await gw.ready()
            yield gw
        except BaseException:
            print(f"  gateway log (tail):\n{gw.tail()}", file=sys.stderr)
            raise
        finally:
            await stop_process(gw.proc, grace=15)

    def cpu(self, gw: GatewayProcess) -> CpuClock:
        return CpuClock({"gateway": gw.pid, "worker": self.worker.pid, "server": self.server_pid})

    # ------------------------------------------------------------------ 1. ask

    async def phase_ask(self) -> None:
        """Sequential asks on one warm agent per path, interleaved, rotating the order."""
        async with (
            self.gateway("ask") as gw,
            httpx.AsyncClient(base_url=gw.url, timeout=CALL_TIMEOUT) as http,
        ):
            names = {p: unique(f"ask-{p}") for p in ("client", "fresh", "watched", "http", "ws")}
            kept = self.perennial.agent("notes", names["client"])
            await kept.ask("hello", timeout=CALL_TIMEOUT)  # creates it; later asks: plain updates
            await self.perennial.agent("notes", names["fresh"]).ask("hello", timeout=CALL_TIMEOUT)
            watched = self.perennial.agent("notes", names["watched"])
            await watched.ask("hello", timeout=CALL_TIMEOUT)
            await _http_ask(http, names["http"], "hello")
            socket = await AgentSocket.open(f"{gw.ws_url}/agents/notes/{names['ws']}/ws")
            # Followed by a socket that sends nothing: the watcher's cost without the transport.
            follower = await AgentSocket.open(f"{gw.ws_url}/agents/notes/{names['watched']}/ws")
            try:
                await _ws_ask(socket, "hello")
                await follower.version_at_least(1)

                async def client(text: str) -> None:
                    await kept.ask(text, timeout=CALL_TIMEOUT)

                async def client_watched(text: str) -> None:
                    await watched.ask(text, timeout=CALL_TIMEOUT)

                async def fresh(text: str) -> None:
                    # What the gateway does per request: a new handle, so update-with-start.
                    await self.perennial.agent("notes", names["fresh"]).ask(
                        text, timeout=CALL_TIMEOUT
                    )

                async def over_http(text: str) -> None:
                    await _http_ask(http, names["http"], text)

                async def over_ws(text: str) -> None:
                    await _ws_ask(socket, text)

                paths: list[tuple[str, Callable[[str], Awaitable[None]]]] = [
                    ("client", client), ("http", over_http), ("ws", over_ws), ("fresh", fresh),
                    ("watched", client_watched),
                ]  # fmt: skip
                samples, cpu = await self._ask_rounds(paths, self.cpu(gw))
            finally:
                await socket.close()
                await follower.close()
        self._report_ask(samples, cpu)

    async def _ask_rounds(
        self, paths: list[tuple[str, Callable[[str], Awaitable[None]]]], clock: CpuClock
    ) -> tuple[dict[str, list[float]], dict[str, dict[str, float]]]:
        """Warm-up, then `asks` rounds of one ask per path (each one's seconds), then the CPU
        per ask of each path, path by path."""
        s = self.scale
        for i in range(s.ask_warmup):
            for _, call in paths:
                await call(f"warm {i}")
        samples: dict[str, list[float]] = {p: [] for p, _ in paths}
        for i in range(s.asks):
            turn = i % len(paths)
            for label, call in paths[turn:] + paths[:turn]:  # no path always first
                started = time.perf_counter()
                await call(f"q {i}")
                samples[label].append(time.perf_counter() - started)
        # Interleaved, a call's after-work (the watcher's next long poll and state read)
        # would land in the next path's window: so per path, a block of asks and a pause
        # (what the processes burn idle in it is small next to the block's work), the
        # blocks in reverse order in every other pass.
        if not s.cpu_passes:
            return samples, {}
        totals: dict[str, dict[str, float]] = {p: {} for p, _ in paths}
        for pass_ in range(s.cpu_passes):
            for label, call in paths if pass_ % 2 == 0 else paths[::-1]:
                before = clock.read()
                for i in range(s.cpu_asks):
                    await call(f"cpu {i}")
                await asyncio.sleep(1.0)
                for k, v in CpuClock.diff(clock.read(), before).items():
                    totals[label][k] = totals[label].get(k, 0.0) + v
        count = s.cpu_asks * s.cpu_passes
        return samples, {p: {k: v / count for k, v in used.items()} for p, used in totals.items()}

    def _report_ask(
        self, samples: dict[str, list[float]], cpu: dict[str, dict[str, float]]
    ) -> None:
        stats = {p: ms_stats(v) for p, v in samples.items()}
        cpu_ms = {p: {k: v * 1000 for k, v in c.items()} for p, c in cpu.items()}
        self.report.details["ask"] = {"ms": stats, "cpu_ms_per_ask": cpu_ms,
                                      "samples_ms": {p: [x * 1000 for x in v]
                                                     for p, v in samples.items()}}  # fmt: skip
        client = stats["client"]
        for label, what in (("http", "HTTP POST .../ask"), ("ws", "WebSocket ask")):
            for q in ("p50", "p95"):
                limit = ASK_FACTOR * client[q] + ASK_SLACK_MS
                self.report.add(Row(f"ask {q}, {what}", stats[label][q], client[q], "ms",
                                    f"<= {ASK_FACTOR}x client + {ASK_SLACK_MS:g} ms "
                                    f"({limit:.1f})", stats[label][q] <= limit))  # fmt: skip
        for q in ("p50", "p95"):
            self.report.add(Row(f"ask {q}, client with a new handle per ask", stats["fresh"][q],
                                client[q], "ms"))  # fmt: skip
            self.report.add(Row(f"ask {q}, client on an agent a socket follows",
                                stats["watched"][q], client[q], "ms"))  # fmt: skip
        if not cpu_ms:
            return
        backend = {p: c["worker"] + c["server"] for p, c in cpu_ms.items()}
        for label in ("http", "ws", "fresh", "watched"):
            self.report.add(Row(f"CPU per ask, all processes ({label})",
                                sum(cpu_ms[label].values()), sum(cpu_ms["client"].values()),
                                "ms"))  # fmt: skip
            self.report.add(Row(f"CPU per ask, worker + server ({label})", backend[label],
                                backend["client"], "ms"))  # fmt: skip
        for label in ("http", "ws"):
            self.report.add(Row(f"CPU per ask, gateway process ({label})",
                                cpu_ms[label]["gateway"], None, "ms"))  # fmt: skip
        self.report.add(Row("CPU per ask, this process (client's own call)",
                            cpu_ms["client"]["bench"], None, "ms"))  # fmt: skip

    # ------------------------------------------------------------------ 2. commit to socket

    async def phase_commit(self) -> None:
        """A socket on an agent; the client asks; per version, the socket frame's arrival
        against the turn event's `at` (before the commit) and the reply's arrival (after it)."""
        s = self.scale
        name = unique("commit")
        agent = self.perennial.agent("notes", name)
        await agent.ask("hello", timeout=CALL_TIMEOUT)
        upper: list[float] = []
        lower: list[float] = []
        event_upper: list[float] = []
        async with self.gateway("commit") as gw:
            socket = await AgentSocket.open(f"{gw.ws_url}/agents/notes/{name}/ws")
            try:
                await socket.version_at_least(1)
                for i in range(s.ask_warmup // 2):
                    reply = await agent.ask(f"warm {i}", timeout=CALL_TIMEOUT)
                    await socket.version_at_least(reply.version)
                for i in range(s.commits):
                    reply = await agent.ask(f"c {i}", timeout=CALL_TIMEOUT)
                    replied = time.time()
                    arrived = await socket.version_at_least(reply.version)
                    at, event_arrived = socket.turns[reply.version]
                    upper.append(arrived - at)
                    lower.append(arrived - replied)
                    event_upper.append(event_arrived - at)
            finally:
                await socket.close()
        without_turn = sum(1 for v, _ in socket.versions[1:] if v not in socket.turns)
        up, low, ev = ms_stats(upper), ms_stats(lower), ms_stats(event_upper)
        self.report.details["commit"] = {
            "frame_minus_turn_at_ms": up, "frame_minus_reply_ms": low,
            "event_frame_minus_turn_at_ms": ev, "frames_without_own_turn": without_turn,
            "samples_upper_ms": [x * 1000 for x in upper],
            "samples_lower_ms": [x * 1000 for x in lower],
        }  # fmt: skip
        for q in ("p50", "p95"):
            verdict = "met" if up[q] <= COMMIT_MS else "NOT MET" if low[q] > COMMIT_MS else (
                "undecided")  # fmt: skip
            self.report.add(Row(f"commit->socket {q}, upper bound (frame - turn.at)", up[q],
                                None, "ms", f"<= {COMMIT_MS:g} ms", verdict=verdict))  # fmt: skip
            self.report.add(Row(f"commit->socket {q}, lower bound (frame - ask reply)", low[q],
                                None, "ms"))  # fmt: skip
        self.report.add(Row("turn event frame p50 (frame - turn.at)", ev["p50"], None, "ms"))

    # ------------------------------------------------------------------ 3. fan-out

    async def phase_fanout(self) -> None:
        """`fan_agents` agents, `sockets_per_agent` sockets each, on one gateway process."""
        s = self.scale
        total = s.fan_agents * s.sockets_per_agent
        raise_open_files(4 * total + 1024)
        names = [unique("fan") for _ in range(s.fan_agents)]
        agents = {name: self.perennial.agent("notes", name) for name in names}
        retry = Retries()
        await bounded(len(names), 32, lambda i: retry(
            lambda: agents[names[i]].ask("hello", timeout=CALL_TIMEOUT)))  # fmt: skip
        details: dict[str, Any] = {"agents": s.fan_agents, "sockets": total}
        sockets: dict[str, list[AgentSocket]] = {name: [] for name in names}
        async with self.gateway("fanout") as gw:
            try:
                # Warm: imports and first-use allocations are not counted as per-socket cost.
                warm = unique("fan-warm")
                await self.perennial.agent("notes", warm).ask("hello", timeout=CALL_TIMEOUT)
                probe = await AgentSocket.open(f"{gw.ws_url}/agents/notes/{warm}/ws")
                await probe.version_at_least(1)
                await probe.close()
                await asyncio.sleep(5.5)  # its watcher lingers 5 s (hub.LINGER_SECONDS), then stops
                details["rss_before_mb"] = await settled_rss_mb(gw.pid)
                started = time.perf_counter()
                await self._open_sockets(gw, names, sockets, first=True)
                details["rss_one_per_agent_mb"] = await settled_rss_mb(gw.pid)
                await self._open_sockets(gw, names, sockets, first=False)
                details["connect_s"] = time.perf_counter() - started
                details["rss_after_mb"] = await settled_rss_mb(gw.pid)
                print(f"  {total} sockets open in {details['connect_s']:.1f}s; gateway RSS "
                      f"{details['rss_before_mb']:.1f} -> {details['rss_after_mb']:.1f} MB",
                      flush=True)  # fmt: skip
                details["wait_events_in_flight"] = await self._waiters_per_agent(names)
                clock = self.cpu(gw)
                before = clock.read()
                details["sequential"] = await self._fan_sequential(agents, sockets)
                middle = clock.read()
                details["burst"] = await self._fan_burst(agents, sockets)
                used = {"sequential": CpuClock.diff(middle, before),
                        "burst": CpuClock.diff(clock.read(), middle)}  # fmt: skip
                details["cpu_ms_per_change"] = {
                    part: {k: v * 1000 / len(names) for k, v in cpu.items()}
                    for part, cpu in used.items()
                }
                details["wait_events_in_flight_after"] = await self._waiters_per_agent(names)
                details["rss_end_mb"] = rss_mb(gw.pid)
            finally:
                await asyncio.gather(*(sock.close() for group in sockets.values()
                                       for sock in group), return_exceptions=True)  # fmt: skip
        self.report.details["fanout"] = details
        before, mid, after = (details[k] for k in ("rss_before_mb", "rss_one_per_agent_mb",
                                                   "rss_after_mb"))  # fmt: skip
        per_socket_kb = (after - mid) * 1024 / (total - s.fan_agents)
        self.report.add(Row("gateway RSS before sockets", before, None, "MB"))
        self.report.add(Row(f"gateway RSS, {total:,} sockets on {s.fan_agents} agents", after,
                            None, "MB"))  # fmt: skip
        self.report.add(Row("RSS per socket (all sockets)", (after - before) * 1024 / total, None,
                            "KB"))  # fmt: skip
        self.report.add(Row("RSS per extra socket on a watched agent", per_socket_kb, None, "KB"))
        self.report.add(Row("RSS per agent (1st socket + watcher)",
                            (mid - before) * 1024 / s.fan_agents, None, "KB"))  # fmt: skip
        seq = details["sequential"]
        for q in ("p50", "p95"):
            self.report.add(Row(f"fan-out {q}: all {s.sockets_per_agent} sockets, from ask reply",
                                seq["from_reply_ms"][q], None, "ms"))  # fmt: skip
            self.report.add(Row(f"fan-out {q}: all {s.sockets_per_agent} sockets, from turn.at",
                                seq["from_turn_at_ms"][q], None, "ms"))  # fmt: skip
        self.report.add(Row("fan-out p50: turn event frame (before the state read), from "
                            "turn.at", seq["event_frame_from_turn_at_ms"]["p50"], None, "ms"))  # fmt: skip
        self.report.add(Row("fan-out p95: first to last socket of an agent",
                            seq["spread_ms"]["p95"], None, "ms"))  # fmt: skip
        cpu = details["cpu_ms_per_change"]["sequential"]
        self.report.add(Row(f"gateway CPU per change ({s.sockets_per_agent} sockets)",
                            cpu["gateway"], None, "ms"))  # fmt: skip
        burst = details["burst"]
        self.report.add(Row(f"burst: {s.fan_agents} agents changed at once, last ask reply after",
                            burst["last_reply_s"] * 1000, None, "ms"))  # fmt: skip
        self.report.add(Row(f"burst: ... all {total:,} sockets updated after",
                            burst["all_s"] * 1000, None, "ms"))  # fmt: skip
        flight = details["wait_events_in_flight"]
        one_each = flight["max"] == 1 and flight["agents_with_none"] == 0
        self.report.add(Row("wait_events in flight per agent (max; 1 = one watcher)",
                            flight["max"], None, "", "1 per agent", one_each))  # fmt: skip

    async def _open_sockets(self, gw: GatewayProcess, names: list[str],
                            sockets: dict[str, list[AgentSocket]], *, first: bool) -> None:  # fmt: skip
        """The first socket of every agent (first=True), or the rest; 50 handshakes at a time,
        each socket counted open once its initial state arrived."""
        wanted = 1 if first else self.scale.sockets_per_agent
        todo = [name for name in names for _ in range(wanted - len(sockets[name]))]

        async def one(i: int) -> None:
            sock = await AgentSocket.open(f"{gw.ws_url}/agents/notes/{todo[i]}/ws")
            sockets[todo[i]].append(sock)
            await sock.version_at_least(1)

        await bounded(len(todo), 50, one)

    async def _fan_sequential(self, agents: dict[str, AgentHandle],
                              sockets: dict[str, list[AgentSocket]]) -> dict[str, Any]:  # fmt: skip
        """One change per agent, one agent at a time: until all its sockets have the frame."""
        from_reply: list[float] = []
        from_at: list[float] = []
        event_from_at: list[float] = []
        spread: list[float] = []
        for name, agent in agents.items():
            reply = await agent.ask("change", timeout=CALL_TIMEOUT)
            replied = time.time()
            group = sockets[name]
            arrivals = await asyncio.gather(*(s.version_at_least(reply.version) for s in group))
            at, event_arrived = next(s.turns[reply.version] for s in group
                                     if reply.version in s.turns)  # fmt: skip
            from_reply.append(max(arrivals) - replied)
            from_at.append(max(arrivals) - at)
            event_from_at.append(event_arrived - at)
            spread.append(max(arrivals) - min(arrivals))
        return {"from_reply_ms": ms_stats(from_reply), "from_turn_at_ms": ms_stats(from_at),
                "event_frame_from_turn_at_ms": ms_stats(event_from_at),
                "spread_ms": ms_stats(spread)}  # fmt: skip

    async def _fan_burst(self, agents: dict[str, AgentHandle],
                         sockets: dict[str, list[AgentSocket]]) -> dict[str, Any]:  # fmt: skip
        """Every agent changed at once: until every socket has its agent's new version."""
        started = time.time()
        per_agent: list[float] = []
        replies: list[float] = []

        async def change(name: str) -> float:
            reply = await agents[name].ask("burst", timeout=CALL_TIMEOUT)
            replied = time.time()
            replies.append(replied)
            arrivals = await asyncio.gather(
                *(s.version_at_least(reply.version) for s in sockets[name])
            )
            per_agent.append(max(arrivals) - replied)
            return max(arrivals)

        last = max(await asyncio.gather(*(change(name) for name in agents)))
        return {"all_s": last - started, "last_reply_s": max(replies) - started,
                "from_reply_ms": ms_stats(per_agent)}  # fmt: skip

    async def _waiters_per_agent(self, names: list[str]) -> dict[str, Any]:
        """`wait_events` updates accepted and not completed, per agent, from the history: one
        per agent means one follower long-polls it (10 followers would hold the 3 slots an
        agent allows and poll the rest). Read once the sockets are quiet."""
        await asyncio.sleep(1.0)
        counts: list[int] = []
        for name in names:
            handle = self.perennial.client.get_workflow_handle(f"notes/{name}")
            open_: set[str] = set()
            async for event in handle.fetch_history_events():
                if event.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_ACCEPTED:
                    attrs = event.workflow_execution_update_accepted_event_attributes
                    if attrs.accepted_request.input.name == "wait_events":
                        open_.add(attrs.protocol_instance_id)
                elif event.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_COMPLETED:
                    open_.discard(
                        event.workflow_execution_update_completed_event_attributes.meta.update_id
                    )
            counts.append(len(open_))
        return {"min": min(counts), "max": max(counts),
                "agents_with_none": sum(1 for c in counts if c == 0),
                "agents_with_more_than_one": sum(1 for c in counts if c > 1)}  # fmt: skip

    # ------------------------------------------------------------------ 4. throughput

    async def phase_throughput(self) -> None:
        """The same number of messages into `msg_agents` new agents per side, `concurrency`
        in flight, timed from the first send until every agent's state shows them all."""
        s = self.scale
        sides = ("client", "http", "fresh") if s.flood_fresh else ("client", "http")
        results: dict[str, list[dict[str, float]]] = {side: [] for side in sides}
        async with self.gateway("throughput") as gw, contextlib.AsyncExitStack() as stack:
            # One client per lane, one kept-alive connection each: one client with a pool of
            # `concurrency` connections scans the pool per request (httpcore), which cost this
            # process more CPU per message than the gateway spent.
            lanes = [await stack.enter_async_context(httpx.AsyncClient(
                base_url=gw.url, timeout=CALL_TIMEOUT, limits=httpx.Limits(max_connections=1)))
                for _ in range(s.concurrency)]  # fmt: skip
            clock = self.cpu(gw)
            await asyncio.sleep(3.0)  # the last phase's agents publish 2-4 s after their turns
            for round_ in range(s.rounds):
                for side in sides if round_ % 2 == 0 else sides[::-1]:
                    result = await self._flood(side, lanes, clock)
                    results[side].append(result)
                    print(f"  {side} round {round_ + 1}: {result['rate']:.0f} msg/s "
                          f"(429s: {result['refused']})", flush=True)  # fmt: skip
        summary = {}
        for side, rounds in results.items():
            messages = sum(r["messages"] for r in rounds)
            seconds = sum(r["seconds"] for r in rounds)
            cpu = {k: sum(r["cpu"][k] for r in rounds) * 1000 / messages
                   for k in rounds[0]["cpu"]}  # fmt: skip
            summary[side] = {"rate": messages / seconds, "cpu_ms_per_msg": cpu, "rounds": rounds}
        self.report.details["throughput"] = summary
        c, h, f = summary["client"], summary["http"], summary.get("fresh")
        self.report.add(Row(f"messages/s into {s.msg_agents} agents (HTTP vs client send)",
                            h["rate"], c["rate"], "msg/s", f">= {RATE_FACTOR}x client",
                            h["rate"] >= RATE_FACTOR * c["rate"]))  # fmt: skip
        if f is not None:
            self.report.add(Row("messages/s, client with a new handle per send", f["rate"],
                                c["rate"], "msg/s"))  # fmt: skip
        self.report.add(Row("CPU per message, all processes", sum(h["cpu_ms_per_msg"].values()),
                            sum(c["cpu_ms_per_msg"].values()), "ms"))  # fmt: skip
        for proc in ("gateway", "worker", "server", "bench"):
            self.report.add(Row(f"CPU per message, {proc}", h["cpu_ms_per_msg"][proc],
                                c["cpu_ms_per_msg"][proc], "ms"))  # fmt: skip
        for proc in ("worker", "server") if f is not None else ():
            self.report.add(Row(f"CPU per message, {proc} (new handle per send)",
                                f["cpu_ms_per_msg"][proc], c["cpu_ms_per_msg"][proc], "ms"))  # fmt: skip

    async def _flood(
        self, side: str, lanes: list[httpx.AsyncClient], clock: CpuClock
    ) -> dict[str, Any]:
        s = self.scale
        names = [unique(f"tput-{side}") for _ in range(s.msg_agents)]
        agents = {name: self.perennial.agent("notes", name) for name in names}
        retry = Retries()
        refused = 0

        async def create(i: int) -> None:  # through the side's own path
            if side != "http":
                await retry(lambda: agents[names[i]].ask("hello", timeout=CALL_TIMEOUT))
            else:
                await _http_ask(lanes[i % len(lanes)], names[i], "hello")

        await bounded(len(names), len(lanes), create)
        run = uuid.uuid4().hex[:8]
        numbers = iter(range(s.messages))

        async def lane(http: httpx.AsyncClient) -> None:
            for i in numbers:
                await send(i, http)

        async def send(i: int, http: httpx.AsyncClient) -> None:
            nonlocal refused
            name, text, message_id = names[i % len(names)], f"note {i}", f"{run}-{i}"
            if side == "client":
                await retry(lambda: agents[name].send(text, id=message_id))
                return
            if side == "fresh":  # what the gateway does per request: signal-with-start
                agent = self.perennial.agent("notes", name)
                await retry(lambda: agent.send(text, id=message_id))
                return
            while True:
                response = await http.post(f"/agents/notes/{name}/messages",
                                           json={"text": text, "id": message_id})  # fmt: skip
                if response.status_code != 429:
                    break
                refused += 1
                await asyncio.sleep(float(response.headers.get("Retry-After", "1")))
            if response.status_code != 202:
                raise RuntimeError(f"POST messages: {response.status_code} {response.text[:300]}")

        expected = {name: 1 for name in names}
        for i in range(s.messages):
            expected[names[i % len(names)]] += 1
        checker = _Counter(agents)
        before = clock.read()
        started = time.perf_counter()
        await asyncio.wait_for(asyncio.gather(*(lane(http) for http in lanes)), 600)
        accepted = time.perf_counter()
        await wait_applied(checker, expected, timeout=600)
        seconds = time.perf_counter() - started
        return {"messages": s.messages, "seconds": seconds, "accept_seconds": accepted - started,
                "rate": s.messages / seconds, "refused": refused, "retries": retry.count,
                "cpu": CpuClock.diff(clock.read(), before)}  # fmt: skip

    # ------------------------------------------------------------------ driver

    PHASES: dict[str, tuple[str, float]] = {
        "ask": ("phase_ask", 600),
        "commit": ("phase_commit", 300),
        "fanout": ("phase_fanout", 900),
        "throughput": ("phase_throughput", 900),
    }

    async def run(self, phases: list[str]) -> None:
        self.perennial = await Perennial.connect(self.settings)
        self.worker = start_worker(self.settings, log=self.tmp / "worker.log",
                                   PERENNIAL_LOG_FORMAT="json")  # fmt: skip
        try:
            await self.perennial.agent("notes", unique("up")).ask("hello", timeout=120)
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
        finally:
            await stop_process(self.worker, grace=30)


class _Counter:
    """What `wait_applied` polls: an agent's `counter` from its state query."""

    label = "state"

    def __init__(self, agents: dict[str, AgentHandle]) -> None:
        self._agents = agents

    async def count(self, name: str) -> int:
        view = await asyncio.wait_for(self._agents[name].state_view(), CALL_TIMEOUT)
        return int(view.state["counter"])  # type: ignore[arg-type]


async def _http_ask(http: httpx.AsyncClient, name: str, text: str) -> dict[str, Any]:
    response = await http.post(f"/agents/notes/{name}/ask", json={"text": text})
    if response.status_code != 200:
        raise RuntimeError(f"POST ask: {response.status_code} {response.text[:300]}")
    return response.json()  # type: ignore[no-any-return]


async def _ws_ask(socket: AgentSocket, text: str) -> dict[str, Any]:
    _, reply = await socket.request(type="ask", id=str(uuid.uuid4()), text=text)
    if reply["type"] != "reply":
        raise RuntimeError(f"socket ask: {reply}")
    return reply


def raise_open_files(needed: int) -> None:
    """Sockets are files: raise the soft limit (the gateway inherits it) up to the hard one."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < needed:
        wanted = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))


# --------------------------------------------------------------------------- entry point


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.bench_gateway",
        description="The gateway (HTTP, WebSocket) against the Python client, in one run.",
    )
    parser.add_argument("--quick", action="store_true", help="scaled-down run (under a minute)")
    parser.add_argument("--phases", default=",".join(Bench.PHASES),
                        help=f"comma-separated subset of {','.join(Bench.PHASES)}")  # fmt: skip
    parser.add_argument("--asks", type=int, help="timed asks per path")
    parser.add_argument("--commits", type=int, help="timed changes in phase commit")
    parser.add_argument("--agents", type=int, help="agents in phase fanout")
    parser.add_argument("--sockets-per-agent", type=int, help="sockets per agent in phase fanout")
    parser.add_argument("--messages", type=int, help="messages per flood (phase throughput)")
    parser.add_argument("--concurrency", type=int, help="sends in flight (phase throughput)")
    parser.add_argument("--rounds", type=int, help="floods per side (phase throughput)")
    parser.add_argument(
        "--gateway-log",
        default="INFO",
        help="the gateway's log level (INFO, as deployed: a line per request)",
    )
    parser.add_argument("--ws-compression", choices=("deflate", "none"), default="deflate",
                        help="whether sockets offer permessage-deflate (browsers do)")  # fmt: skip
    parser.add_argument("--out", type=Path, help="JSON results file (default: bench/results/)")
    return parser.parse_args(argv)


def scale_from(args: argparse.Namespace) -> Scale:
    scale = QUICK if args.quick else Scale()
    for arg, attr in (("asks", "asks"), ("commits", "commits"), ("agents", "fan_agents"),
                      ("sockets_per_agent", "sockets_per_agent"), ("messages", "messages"),
                      ("concurrency", "concurrency"), ("rounds", "rounds")):  # fmt: skip
        if getattr(args, arg):
            setattr(scale, attr, getattr(args, arg))
    return scale


async def amain(args: argparse.Namespace) -> int:
    scale = scale_from(args)
    AgentSocket.compression = None if args.ws_compression == "none" else "deflate"
    phases = [p.strip() for p in args.phases.split(",") if p.strip()]
    unknown = [p for p in phases if p not in Bench.PHASES]
    if unknown:
        print(f"unknown phase(s): {', '.join(unknown)}", file=sys.stderr)
        return 2
    env_before = environment()
    shown = {k: v for k, v in env_before.items() if k != "git_uncommitted"}
    shown["uncommitted_files"] = len(env_before["git_uncommitted"])
    print(f"scale: {asdict(scale)}\nphases: {', '.join(phases)}\nws compression: "
          f"{args.ws_compression}\nenvironment: {shown}", flush=True)  # fmt: skip
    started = time.perf_counter()
    interrupted = False
    server_settings = {"max_cached_workflows": 2_000, "log_level": "WARNING"}
    async with dev_server("perennial-bench-gw-", **server_settings) as (server, settings):
        bench = Bench(args, scale, server, settings.model_copy(
            update={"task_queue": unique("bench-gw")}))  # fmt: skip
        try:
            await bench.run(phases)
        except asyncio.CancelledError:  # Ctrl-C: still print and save what was measured
            interrupted = True
            bench.report.errors["interrupted"] = "stopped by the user"
    report = bench.report
    print_report(report)
    out = save_results("gateway", {
        "command": " ".join([Path(sys.executable).name, "-m", "bench.bench_gateway",
                             *sys.argv[1:]]),  # fmt: skip
        "scale": asdict(scale),
        "phases": phases,
        "ws_compression": args.ws_compression,
        "environment": env_before | {"loadavg_after": os.getloadavg()},
        "seconds": round(time.perf_counter() - started, 1),
        "rows": [asdict(row) | {"ratio": row.ratio, "result": row.result()}
                 for row in report.rows],  # fmt: skip
        "details": report.details,
        "errors": report.errors,
    }, out=args.out)  # fmt: skip
    print(f"results saved to {out.relative_to(ROOT) if out.is_relative_to(ROOT) else out}")
    print(f"took {time.perf_counter() - started:.0f}s")
    if interrupted:
        raise KeyboardInterrupt
    return 1 if report.errors else 0


def main() -> None:
    run_main(amain, parse_args)


if __name__ == "__main__":
    main()
