"""The travel planner (examples/travel) as deployed: its HTTP service on the gateway, a worker,
sessions coming in at once.

    .venv/bin/python -m bench.bench_travel            # full run (~3 min on 2 shared cores)
    .venv/bin/python -m bench.bench_travel --quick    # scaled down (~1 min)

Starts its own embedded dev server, the local provider server and the scripted model (in this
process: threads), one worker and one gateway, each in its own process as deployed (`python
worker.py`, `python -m perennial.client.cli gateway`, both with `PERENNIAL_APP=examples.travel`).
The scripted model answers every call after a fixed delay (`--model-ms`), so what the figures
add to it is Perennial's own cost. A /chat is: the session agent opened (a call), the
conversation asked (two model calls around a `route_to`), the travel agent asked by the
conversation (one model call) and its answer relayed: 3 model calls.

Phases:
    chat       /chat from C sessions at once (C = 10, then 100): sessions/s, and /chat
               latency p50/p95 (new sessions, then a second message to each: warm agents)
    rss        the worker's RSS per session: settled RSS before and after the sessions above
    recovery   a worker SIGKILLed while a plan waits for the model: seconds from the kill
               until the /chat answers, with a new worker started at once

Prints a table and saves it, with every raw figure, under bench/results/. See bench/README.md
("The travel planner").
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx

from bench.bench_entity import cpu_seconds
from bench.bench_gateway import settled_rss_mb
from bench.harness import (
    ROOT,
    dev_server,
    environment,
    percentile,
    print_table,
    run_main,
    save_results,
    start_worker,
    stop_process,
)
from examples.travel.provider_server import ProviderServer
from examples.travel.tests.planner_model import PlannerModel
from perennial.client import Settings
from perennial.client.server import free_port
from perennial.testing import ScriptedLLM, text

APP = "examples.travel"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="scaled down")
    parser.add_argument("--concurrency", default="10,100", help="sessions at once, per round")
    parser.add_argument("--model-ms", type=float, default=50.0, help="the scripted model's delay")
    parser.add_argument("--phases", default="chat,rss,recovery")
    parser.add_argument("--out", type=Path, help="results file (default: bench/results/)")
    return parser.parse_args(argv)


class Gateway:
    """The gateway in its own process, serving the planner."""

    def __init__(self, settings: Settings, env: dict[str, str], log: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        environ = dict(os.environ) | env | {
            "TEMPORAL_ADDRESS": settings.address, "PERENNIAL_TASK_QUEUE": settings.task_queue,
            "PERENNIAL_APP": APP, "PERENNIAL_LOG_LEVEL": "WARNING",
        }  # fmt: skip
        with log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "perennial.client.cli", "gateway", "--port", str(self.port)],
                cwd=ROOT, env=environ, stdout=out, stderr=out, start_new_session=True,
            )  # fmt: skip

    async def healthy(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        async with httpx.AsyncClient(base_url=self.url, timeout=5) as http:
            while True:
                with contextlib.suppress(httpx.HTTPError):
                    if (await http.get("/health")).status_code == 200:
                        return
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("the gateway did not become healthy")
                await asyncio.sleep(0.2)


async def chat(http: httpx.AsyncClient, session: str, message: str) -> float:
    """One /chat (retried on 429, the edge's backpressure); its latency in ms."""
    started = time.perf_counter()
    for _ in range(50):
        answer = await http.post("/chat", json={"message": message, "sessionId": session})
        if answer.status_code != 429:
            break
        await asyncio.sleep(float(answer.headers.get("retry-after", "1")))
    if answer.status_code != 200 or not (answer.json()["reply"] or "").startswith("travel: "):
        raise RuntimeError(f"/chat failed: {answer.status_code} {answer.text[:300]}")
    return (time.perf_counter() - started) * 1000


async def chat_round(http: httpx.AsyncClient, sessions: list[str], message: str) -> dict[str, Any]:
    started = time.perf_counter()
    latencies = await asyncio.gather(*(chat(http, s, message) for s in sessions))
    wall = time.perf_counter() - started
    return {
        "sessions": len(sessions), "seconds": round(wall, 2),
        "sessions_per_s": round(len(sessions) / wall, 2),
        "p50_ms": round(percentile(latencies, 50), 1), "p95_ms": round(percentile(latencies, 95), 1),
        "max_ms": round(max(latencies), 1),
    }  # fmt: skip


class Bench:
    def __init__(self, args: argparse.Namespace, settings: Settings, tmp: Path) -> None:
        self.args = args
        self.settings = settings
        self.tmp = tmp
        self.rows: list[list[str]] = [["figure", "value", "note"]]
        self.details: dict[str, Any] = {}
        self.errors: dict[str, str] = {}

    @contextlib.asynccontextmanager
    async def stack(self) -> AsyncIterator[tuple[ScriptedLLM, PlannerModel, dict[str, str]]]:
        with ScriptedLLM() as llm, ProviderServer() as providers:
            model = PlannerModel(llm, delay=self.args.model_ms / 1000)
            env = providers.env() | {"OPENAI_BASE_URL": llm.url, "PERENNIAL_APP": APP}
            yield llm, model, env

    def worker(self, env: dict[str, str]) -> subprocess.Popen[bytes]:
        return start_worker(self.settings, log=self.tmp / "worker.log", **env)

    async def run(self, phases: list[str]) -> None:
        async with self.stack() as (llm, model, env):
            worker = self.worker(env)
            gateway = Gateway(self.settings, env, self.tmp / "gateway.log")
            self.worker_pid, self.gateway_pid = worker.pid, gateway.proc.pid
            try:
                await gateway.healthy()
                async with httpx.AsyncClient(base_url=gateway.url, timeout=300,
                                             limits=httpx.Limits(max_connections=200)) as http:  # fmt: skip
                    await chat(http, f"warm-{uuid.uuid4().hex[:6]}", "warm up")
                    if "chat" in phases or "rss" in phases:
                        await self.chat_and_rss(http, worker, phases)
                    if "recovery" in phases:
                        worker = await self.recovery(http, llm, model, worker, env)
            finally:
                await stop_process(gateway.proc, grace=20)
                await stop_process(worker, grace=30)

    async def measured_round(
        self, http: httpx.AsyncClient, sessions: list[str], message: str
    ) -> dict[str, Any]:
        """A chat round, with each process's CPU over it, per chat."""
        pids = {"worker": self.worker_pid, "gateway": self.gateway_pid}
        before = {name: cpu_seconds(pid) for name, pid in pids.items()}
        result = await chat_round(http, sessions, message)
        for name, pid in pids.items():
            spent = cpu_seconds(pid) - before[name]
            result[f"{name}_cpu_ms_per_chat"] = round(spent * 1000 / len(sessions), 1)
        return result

    async def chat_and_rss(
        self, http: httpx.AsyncClient, worker: subprocess.Popen[bytes], phases: list[str]
    ) -> None:
        levels = [int(c) for c in self.args.concurrency.split(",")]
        if self.args.quick:
            levels = [min(c, 30) for c in levels]
        before = await settled_rss_mb(worker.pid)
        created = 1  # the warm-up session
        for level in levels:
            sessions = [f"s{level}-{i}-{uuid.uuid4().hex[:6]}" for i in range(level)]
            new = await self.measured_round(http, sessions, "plan a trip")
            warm = await self.measured_round(http, sessions, "and a second message")
            created += level
            self.details[f"chat_{level}"] = {"new": new, "warm": warm}
            model = 3 * self.args.model_ms
            cpu = " / ".join(f"{r['worker_cpu_ms_per_chat']:.0f}" for r in (new, warm))
            gw = " / ".join(f"{r['gateway_cpu_ms_per_chat']:.0f}" for r in (new, warm))
            self.rows += [
                [f"{level} at once: sessions/s (new)", f"{new['sessions_per_s']:.1f}",
                 f"CPU per chat new / warm: worker {cpu} ms, gateway {gw} ms"],
                [f"{level} at once: /chat p50 / p95 (new)", f"{new['p50_ms']:.0f} / {new['p95_ms']:.0f} ms",
                 f"model: {model:.0f} ms of it"],
                [f"{level} at once: /chat p50 / p95 (warm)", f"{warm['p50_ms']:.0f} / {warm['p95_ms']:.0f} ms",
                 f"model: {model:.0f} ms of it"],
            ]  # fmt: skip
        if "rss" in phases:
            after = await settled_rss_mb(worker.pid)
            per = (after - before) * 1024 / max(1, created - 1)
            self.details["rss"] = {"before_mb": before, "after_mb": after, "sessions": created}
            self.rows.append(["worker RSS per session", f"{per:.0f} KiB",
                              f"{before:.0f} -> {after:.0f} MiB, 3 agents a session"])  # fmt: skip

    async def recovery(
        self, http: httpx.AsyncClient, llm: ScriptedLLM, model: PlannerModel,
        worker: subprocess.Popen[bytes], env: dict[str, str],
    ) -> subprocess.Popen[bytes]:  # fmt: skip
        session = f"crash-{uuid.uuid4().hex[:6]}"
        model.script("travel", text("(held: the worker dies)", hold=True))
        seen = model.seen["travel"]
        asking = asyncio.create_task(chat(http, session, "plan it, then crash"))
        await llm.wait_for(lambda: model.seen["travel"] > seen, timeout=60)
        os.killpg(worker.pid, 9)
        worker.wait()
        killed = time.perf_counter()
        llm.release()
        worker = self.worker(env)
        await asking
        seconds = time.perf_counter() - killed
        self.details["recovery"] = {"seconds": round(seconds, 2)}
        self.rows.append(["recovery after a worker kill", f"{seconds:.1f} s",
                          "kill mid-plan -> /chat answered (new worker started at once)"])  # fmt: skip
        return worker


async def amain(args: argparse.Namespace) -> int:
    phases = [p.strip() for p in args.phases.split(",") if p.strip()]
    env_before = environment()
    print(f"phases: {', '.join(phases)}; concurrency {args.concurrency}; model "
          f"{args.model_ms:g} ms per call{'; quick' if args.quick else ''}", flush=True)  # fmt: skip
    started = time.perf_counter()
    import tempfile

    with tempfile.TemporaryDirectory(prefix="perennial-bench-travel-") as tmp:
        async with dev_server("perennial-bench-travel-srv-", max_cached_workflows=2_000,
                              log_level="WARNING") as (_, settings):  # fmt: skip
            bench = Bench(
                args, settings.model_copy(update={"task_queue": "bench-travel"}), Path(tmp)
            )
            try:
                await bench.run(phases)
            except Exception as err:  # report what was measured before the failure
                bench.errors[type(err).__name__] = str(err)[:500]
                tail = (Path(tmp) / "worker.log").read_text(errors="replace")[-1500:]
                print(f"failed: {err}\nworker log:\n{tail}", file=sys.stderr)
    print_table(bench.rows, align="<><", rule=True)
    out = save_results("travel", {
        "command": " ".join([Path(sys.executable).name, "-m", "bench.bench_travel", *sys.argv[1:]]),
        "environment": env_before | {"loadavg_after": os.getloadavg()},
        "seconds": round(time.perf_counter() - started, 1),
        "model_ms": args.model_ms,
        "rows": bench.rows, "details": bench.details, "errors": bench.errors,
    }, out=args.out)  # fmt: skip
    print(f"results saved to {out.relative_to(ROOT) if out.is_relative_to(ROOT) else out}")
    return 1 if bench.errors else 0


def main() -> None:
    run_main(amain, parse_args)


if __name__ == "__main__":
    main()
