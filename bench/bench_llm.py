"""LLM agents: what the agent loop costs, and that history stays bounded. Prints figures.

    .venv/bin/python -m bench.bench_llm            # ~3 minutes on 2 cores
    .venv/bin/python -m bench.bench_llm --quick    # scaled down (~1 minute)

Starts its own embedded dev server (temp dir, free ports) and a scripted Chat Completions
server (perennial.testing.scripted_llm) that answers at once, then measures:

1. `ask` round-trip of a one-step turn, against a raw Temporal update running one activity
   that makes the same Chat Completions call (and the same with update-with-start);
   target <= 1.3x. Perennial is measured twice: as configured (a request this small travels
   inline) and with the request read by the `llm_context` query, as larger ones are.
2. History bytes added by turn 1 and by turn 200 of one conversation with same-sized
   messages; target: within 2x (the model activity reads the conversation by query, so its
   input is a fixed-size reference).
3. Worker RSS (a `python worker.py` subprocess) during 100 concurrent turns on 100 agents,
   with a model that takes 1 s to answer.
"""

from __future__ import annotations

import argparse
import asyncio
import compileall
import os
import statistics
import sys
import time
import uuid
from dataclasses import dataclass

from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WithStartWorkflowOperation
from temporalio.common import WorkflowIDConflictPolicy

from bench.harness import (
    ROOT,
    dev_server,
    percentile,
    rss_mb,
    run_main,
    start_worker,
    stop_process,
)
from bench.llm_raw import RAW_TYPE, build_raw_llm_worker
from perennial.client import Perennial, Settings
from perennial.testing.scripted_llm import ScriptedLLM, text, usage
from perennial.worker import build_worker


@dataclass
class Scale:
    asks: int = 100
    warmup: int = 10
    turns: int = 200
    concurrent: int = 100
    message_chars: int = 400


QUICK = Scale(asks=30, warmup=5, turns=200, concurrent=50)


def _unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


class Bench:
    def __init__(self, scale: Scale, llm: ScriptedLLM, settings: Settings) -> None:
        """`settings`: the dev server's, with the model endpoint at `llm`."""
        self.scale = scale
        self.llm = llm
        self.settings = settings
        self.figures: list[tuple[str, str]] = []

    def queue(self) -> Settings:
        return self.settings.model_copy(update={"task_queue": _unique("bench-llm")})

    def say(self, label: str, value: str) -> None:
        self.figures.append((label, value))
        print(f"  {label:64} {value}", flush=True)

    # ------------------------------------------------------------------ 1. round-trip

    async def round_trip(self, perennial: Perennial, client: Client) -> None:
        s = self.scale
        self.llm.respond = lambda request: text("ok", usage=usage(20, 1))
        settings = self.queue()
        raw_queue = _unique("bench-raw")
        async with (
            build_worker(client, settings),
            build_raw_llm_worker(client, raw_queue, self.llm.url),
        ):
            agent = Perennial(client, settings).agent("bench_llm", _unique("rt"))
            raw_id = _unique("raw")
            raw = await client.start_workflow(RAW_TYPE, id=raw_id, task_queue=raw_queue)
            raw_ws_id = _unique("raw-ws")

            async def raw_with_start(text_: str) -> str:
                start = WithStartWorkflowOperation(
                    RAW_TYPE,
                    id=raw_ws_id,
                    task_queue=raw_queue,
                    id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
                )
                return await client.execute_update_with_start_workflow(
                    "ask", text_, start_workflow_operation=start, result_type=str
                )

            by_query = Perennial(client, settings).agent("bench_llm_by_query", _unique("rtq"))
            sides = {
                "perennial ask": lambda t: agent.ask(t),
                "perennial ask, request read by query": lambda t: by_query.ask(t),
                "raw update": lambda t: raw.execute_update("ask", t, result_type=str),
                "raw update-with-start": raw_with_start,
            }
            samples: dict[str, list[float]] = {name: [] for name in sides}
            names = list(sides)
            for i in range(s.warmup + s.asks):
                shift = i % len(names)
                for name in names[shift:] + names[:shift]:  # no side always goes first
                    started = time.perf_counter()
                    await sides[name](f"question {i}")
                    if i >= s.warmup:
                        samples[name].append((time.perf_counter() - started) * 1000)
            await raw.signal("stop")
            await client.get_workflow_handle(raw_ws_id).signal("stop")
        p50 = {name: statistics.median(v) for name, v in samples.items()}
        print(f"\n1. ask round-trip of a one-step turn ({s.asks} sequential asks per side)")
        for name, v in samples.items():
            self.say(f"{name} p50 / p95", f"{p50[name]:.1f} ms / {percentile(v, 95):.1f} ms")
        for side in ("perennial ask", "perennial ask, request read by query"):
            for base in ("raw update", "raw update-with-start"):
                ratio = p50[side] / p50[base]
                verdict = "ok" if ratio <= 1.3 else "over target"
                self.say(f"{side} / {base} p50 (<= 1.3x)", f"{ratio:.2f}x {verdict}")

    # ------------------------------------------------------------------ 2. history bytes

    async def history(self, perennial: Perennial, client: Client) -> None:
        s = self.scale
        reply = "r" * s.message_chars
        self.llm.respond = lambda request: text(reply, usage=usage(100, 100))
        settings = self.queue()
        measure = {1, 2, 10, 50, 100, 150, s.turns}
        added: dict[int, tuple[int, int, int]] = {}
        async with build_worker(client, settings):
            agent = Perennial(client, settings).agent("bench_llm_chat", _unique("history"))
            handle = client.get_workflow_handle(agent.id)
            for turn in range(1, s.turns + 1):
                message = f"turn {turn:04d} " + "m" * (s.message_chars - 10)
                if turn not in measure:
                    await agent.ask(message)
                    continue
                before = await _history_ids(handle) if turn > 1 else (None, 0)
                await agent.ask(message)
                run_id, events = await _history_events(handle)
                if before[0] not in (None, run_id):
                    # Continued as new in between: measure the next turn instead.
                    measure.add(turn + 1)
                    continue
                new = [
                    e
                    for e in events
                    if e.event_id > before[1]
                    and e.event_type != EventType.EVENT_TYPE_WORKFLOW_EXECUTION_STARTED
                ]
                llm_input = sum(
                    len(e.activity_task_scheduled_event_attributes.input.payloads[0].data)
                    for e in new
                    if e.HasField("activity_task_scheduled_event_attributes")
                )
                added[turn] = (sum(e.ByteSize() for e in new), len(new), llm_input)
            view = await agent.state_view()
        context_chars = sum(len(str(item.get("content") or "")) for item in view.state["context"])
        print(f"\n2. history bytes added per turn ({s.message_chars}-char messages and replies)")
        for turn, (size, count, llm_input) in sorted(added.items()):
            self.say(
                f"turn {turn}",
                f"{size} bytes in {count} events (model activity input {llm_input} bytes)",
            )
        first, last = added[min(added)], added[max(added)]
        ratio = last[0] / first[0]
        verdict = "ok" if ratio <= 2 else "over target"
        self.say(
            f"turn {max(added)} / turn {min(added)} (target within 2x)", f"{ratio:.2f}x {verdict}"
        )
        self.say(
            f"conversation held by the agent at turn {s.turns}",
            f"{len(view.state['context'])} items, {context_chars} chars (never in history)",
        )

    # ------------------------------------------------------------------ 3. RSS

    async def rss(self, perennial: Perennial) -> None:
        s = self.scale
        self.llm.respond = lambda request: text("ok", usage=usage(20, 1), delay=1.0)
        settings = self.queue()
        proc = start_worker(settings, PERENNIAL_APP="bench.llm_raw")
        try:
            handles = [
                Perennial(perennial.client, settings).agent("bench_llm", _unique("rss"))
                for _ in range(s.concurrent)
            ]
            await handles[0].ask("warm up", timeout=60)
            idle = rss_mb(proc.pid)
            peak = idle
            done = asyncio.Event()

            async def sample() -> None:
                nonlocal peak
                while not done.is_set():
                    peak = max(peak, rss_mb(proc.pid))
                    await asyncio.sleep(0.05)

            sampler = asyncio.create_task(sample())
            started = time.perf_counter()
            await asyncio.gather(*(h.ask("hello", timeout=120) for h in handles))
            elapsed = time.perf_counter() - started
            done.set()
            await sampler
            after = rss_mb(proc.pid)
        finally:
            await stop_process(proc, grace=30)
        print(f"\n3. worker RSS during {s.concurrent} concurrent turns (model answers in 1 s)")
        self.say("worker RSS before (1 agent warm)", f"{idle:.1f} MiB")
        self.say("worker RSS peak during the turns", f"{peak:.1f} MiB")
        self.say("worker RSS after", f"{after:.1f} MiB")
        self.say(f"{s.concurrent} concurrent turns took", f"{elapsed:.2f} s")

    # ------------------------------------------------------------------ run

    async def run(self) -> None:
        perennial = await Perennial.connect(self.settings)
        client = perennial.client
        await self.round_trip(perennial, client)
        await self.history(perennial, client)
        await self.rss(perennial)


async def _history_events(handle) -> tuple[str, list]:  # type: ignore[no-untyped-def]
    description = await handle.describe()
    history = await handle.fetch_history()
    return description.run_id, list(history.events)


async def _history_ids(handle) -> tuple[str, int]:  # type: ignore[no-untyped-def]
    run_id, events = await _history_events(handle)
    return run_id, events[-1].event_id if events else 0


async def amain(args: argparse.Namespace) -> int:
    # The workflow sandbox re-imports agent modules for every new workflow: with bytecode
    # writing off (PYTHONDONTWRITEBYTECODE) each import would compile from source, which no
    # deployment does. Compile once, as an install would.
    for package in ("workflows", "activities", "client", "bench", "tests"):
        compileall.compile_dir(ROOT / package, quiet=2)
    print(f"bench_llm on {os.cpu_count()} cores, python {sys.version.split()[0]}", flush=True)
    scale = QUICK if args.quick else Scale()
    with ScriptedLLM() as llm:
        own_server = dev_server(
            "perennial-bench-llm-", log_level="WARNING", openai_base_url=llm.url
        )
        async with own_server as (_, settings):
            await Bench(scale, llm, settings).run()
    return 0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="scaled down")
    return parser.parse_args(argv)


def main() -> None:
    run_main(amain, parse_args)


if __name__ == "__main__":
    main()


__all__ = ["Bench"]
