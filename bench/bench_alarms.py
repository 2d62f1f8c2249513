"""Alarm fire lateness: Perennial alarms against raw `workflow.sleep` timers, in one run.

    .venv/bin/python -m bench.bench_alarms                        # 200 alarms, 2 rounds a side
    .venv/bin/python -m bench.bench_alarms --alarms 50 --rounds 1

Starts its own embedded dev server (temp dir, free ports, SQLite in WAL mode) and an in-process
worker for each side, configured alike. In each round, N agents (`notes`, one alarm each) or N
raw workflows (`bench/raw_timer.py`) that already exist and are cached on the worker are all
told the same due time T, a whole second a few seconds ahead. Rounds alternate sides.

Lateness is read from each workflow's history afterwards, so measuring adds no load:

    handled  T -> the workflow task that applied the alarm completed (the agent has acted)
    started  T -> that task started (the agent's `workflow.now()`, i.e. AlarmWake.fired_at)
    timer    T -> the server fired the timer

Target (issue 4): handled p95 within 1.2x raw p95 + 50 ms. Results are also saved as JSON under
bench/results/.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from temporalio.api.enums.v1 import EventType
from temporalio.api.history.v1 import HistoryEvent
from temporalio.client import Client
from temporalio.worker import Worker

from bench.harness import (
    dev_server,
    environment,
    percentile,
    print_table,
    run_main,
    save_results,
)
from bench.raw_timer import RAW_TIMER_TYPE, RawTimer
from perennial.client import Perennial
from perennial.worker import build_worker, workflow_runner

ALARM_ID = "bench"
#: Target of issue 4: Perennial's p95 within this factor of raw's, plus this many seconds.
TARGET_FACTOR, TARGET_SLACK = 1.2, 0.050


@dataclass
class Lateness:
    """Seconds late, one value per alarm."""

    handled: list[float] = field(default_factory=list)
    started: list[float] = field(default_factory=list)
    timer: list[float] = field(default_factory=list)

    def extend(self, other: Lateness) -> None:
        self.handled += other.handled
        self.started += other.started
        self.timer += other.timer


async def limited(calls: Iterable[Callable[[], Awaitable[Any]]], concurrency: int) -> list[Any]:
    gate = asyncio.Semaphore(concurrency)

    async def one(call: Callable[[], Awaitable[Any]]) -> Any:
        async with gate:
            return await call()

    return await asyncio.gather(*(one(c) for c in calls))


def lead(args: argparse.Namespace, warm_up_seconds: float) -> timedelta:
    """How far ahead to set T: `--lead`, or more when the machine is slow (setting N alarms
    takes about as long as the N warm-up calls just did)."""
    return timedelta(seconds=max(args.lead, 1.5 * warm_up_seconds + 1.0))


def next_whole_second(after: datetime) -> datetime:
    return (after + timedelta(seconds=1)).replace(microsecond=0)


# --------------------------------------------------------------------------- histories


def _summary(event: HistoryEvent) -> str:
    data = event.user_metadata.summary.data
    return json.loads(data) if data else ""


def _at(event: HistoryEvent) -> datetime:
    return event.event_time.ToDatetime(tzinfo=UTC)


def lateness_of(events: list[HistoryEvent], due: datetime, summary_prefix: str) -> Lateness:
    """When the alarm timer (the one whose summary starts with `summary_prefix`) fired, and
    when the workflow task after it started and completed, as seconds after `due`."""
    timers = {
        e.event_id
        for e in events
        if e.event_type == EventType.EVENT_TYPE_TIMER_STARTED
        and _summary(e).startswith(summary_prefix)
    }
    fired = next(
        i
        for i, e in enumerate(events)
        if e.event_type == EventType.EVENT_TYPE_TIMER_FIRED
        and e.timer_fired_event_attributes.started_event_id in timers
    )
    after = events[fired + 1 :]
    started = next(e for e in after if e.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_STARTED)
    done = next(e for e in after if e.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED)
    return Lateness(
        handled=[(_at(done) - due).total_seconds()],
        started=[(_at(started) - due).total_seconds()],
        timer=[(_at(events[fired]) - due).total_seconds()],
    )


async def collect(
    client: Client, workflow_ids: list[str], due: datetime, summary_prefix: str
) -> Lateness:
    """Wait until every workflow has handled its alarm, then read the lateness of each."""
    deadline = time.monotonic() + 120
    pending = list(workflow_ids)
    total = Lateness()
    while pending:
        if time.monotonic() > deadline:
            raise RuntimeError(f"{len(pending)} alarms were not handled within 120 s")
        still: list[str] = []
        for workflow_id in pending:
            handle = client.get_workflow_handle(workflow_id)
            events = [e async for e in handle.fetch_history_events()]
            try:
                total.extend(lateness_of(events, due, summary_prefix))
            except StopIteration:  # not fired or not handled yet
                still.append(workflow_id)
        pending = still
        if pending:
            await asyncio.sleep(0.5)
    return total


# --------------------------------------------------------------------------- the two sides


async def perennial_round(perennial: Perennial, args: argparse.Namespace) -> Lateness:
    agents = [perennial.agent("notes", f"alarm-bench-{uuid.uuid4().hex[:8]}") for _ in range(args.alarms)]  # fmt: skip
    # Create the agents (and get them into the worker's cache) before the measurement.
    started = time.monotonic()
    await limited([lambda a=a: a.ask("warm up") for a in agents], args.concurrency)
    due = next_whole_second(datetime.now(UTC) + lead(args, time.monotonic() - started))
    await limited(
        [lambda a=a: a.schedule(ALARM_ID, "bench alarm", at=due) for a in agents],
        args.concurrency,
    )
    if datetime.now(UTC) >= due - timedelta(seconds=0.5):
        raise RuntimeError(f"scheduling took too long for T; raise --lead (now {args.lead}s)")
    await asyncio.sleep((due - datetime.now(UTC)).total_seconds() + 1.0)
    return await collect(perennial.client, [a.id for a in agents], due, f"alarm {ALARM_ID}:")


async def raw_round(client: Client, args: argparse.Namespace, task_queue: str) -> Lateness:
    ids = [f"raw-timer-{uuid.uuid4().hex[:8]}" for _ in range(args.alarms)]
    handles = await limited(
        [
            lambda i=i: client.start_workflow(RAW_TIMER_TYPE, id=i, task_queue=task_queue)
            for i in ids
        ],
        args.concurrency,
    )
    # Like the agents' warm-up: every workflow has run its first task and is cached.
    started = time.monotonic()
    await limited([lambda h=h: h.execute_update("ready") for h in handles], args.concurrency)
    due = next_whole_second(datetime.now(UTC) + lead(args, time.monotonic() - started))
    await limited(
        [lambda h=h: h.execute_update("set_alarm", due) for h in handles], args.concurrency
    )
    if datetime.now(UTC) >= due - timedelta(seconds=0.5):
        raise RuntimeError(f"setting alarms took too long for T; raise --lead (now {args.lead}s)")
    await asyncio.sleep((due - datetime.now(UTC)).total_seconds() + 1.0)
    return await collect(client, ids, due, "raw alarm")


# --------------------------------------------------------------------------- run and report


def report(
    results: dict[str, Lateness], rounds: dict[str, list[Lateness]], n: int
) -> dict[str, Any]:
    def ms(values: list[float], q: float) -> float:
        return round(percentile(values, q) * 1000, 1)

    print(f"\nAlarm fire lateness, {n} alarms due at the same second (ms after the due time)")
    table = [("", "p50", "p95", "max")]
    for measure in ("handled", "started", "timer"):
        for side in ("raw", "perennial"):
            values = getattr(results[side], measure)
            table.append((f"{side:10} {measure}", *(str(ms(values, q)) for q in (50, 95, 100))))
    print_table(table, align="<>>>", widths=(34, 9, 9, 9), sep="")
    for side in ("raw", "perennial"):
        per_round = ", ".join(
            f"p50 {ms(r.handled, 50)} / p95 {ms(r.handled, 95)}" for r in rounds[side]
        )
        print(f"  {side} handled by round: {per_round}")
    raw95 = percentile(results["raw"].handled, 95)
    ours95 = percentile(results["perennial"].handled, 95)
    target = TARGET_FACTOR * raw95 + TARGET_SLACK
    verdict = "met" if ours95 <= target else "NOT met"
    print(
        f"\nhandled p95: perennial {ours95 * 1000:.1f} ms, raw {raw95 * 1000:.1f} ms "
        f"(ratio {ours95 / raw95 if raw95 > 0 else float('inf'):.2f}); target "
        f"<= {TARGET_FACTOR} x raw + {TARGET_SLACK * 1000:.0f} ms = {target * 1000:.1f} ms: {verdict}"
    )
    return {
        "alarms": n,
        "results": {side: asdict(value) for side, value in results.items()},
        "p95_handled_ms": {"raw": raw95 * 1000, "perennial": ours95 * 1000},
        "target_ms": target * 1000,
        "target_met": ours95 <= target,
    }


async def amain(args: argparse.Namespace) -> int:
    measured_on = environment()
    own_server = dev_server("perennial-bench-alarms-", task_queue="bench-alarms")
    async with own_server as (server, settings):
        perennial = await Perennial.connect(settings)
        client = perennial.client
        raw_queue = "bench-raw-timers"
        raw_worker = Worker(
            client,
            task_queue=raw_queue,
            workflows=[RawTimer],
            workflow_runner=workflow_runner(),
            max_cached_workflows=settings.max_cached_workflows,
            sticky_queue_schedule_to_start_timeout=settings.sticky_timeout,
        )
        print(f"server {server.address}; {args.alarms} alarms, {args.rounds} round(s) a side")
        results = {"raw": Lateness(), "perennial": Lateness()}
        rounds: dict[str, list[Lateness]] = {"raw": [], "perennial": []}
        async with build_worker(client, settings), raw_worker:
            for i in range(args.rounds):
                order = ("raw", "perennial") if i % 2 == 0 else ("perennial", "raw")
                for side in order:
                    if side == "raw":
                        measured = await raw_round(client, args, raw_queue)
                    else:
                        measured = await perennial_round(perennial, args)
                    rounds[side].append(measured)
                    results[side].extend(measured)
                    print(
                        f"round {i + 1} {side:9}: handled p50 "
                        f"{percentile(measured.handled, 50) * 1000:.1f} ms, p95 "
                        f"{percentile(measured.handled, 95) * 1000:.1f} ms",
                        flush=True,
                    )
        summary = report(results, rounds, args.alarms)
    path = save_results("alarms", summary | {"environment": measured_on})
    print(f"saved {path}")
    return 0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--alarms", type=int, default=200, help="alarms per round (200)")
    parser.add_argument("--rounds", type=int, default=2, help="rounds per side (2)")
    parser.add_argument("--lead", type=float, default=3.0, help="least seconds to T (3)")
    parser.add_argument("--concurrency", type=int, default=32, help="set-up calls in flight")
    return parser.parse_args(argv)


def main() -> None:
    run_main(amain, parse_args)


if __name__ == "__main__":
    main()
