"""The SQL database per agent: what a turn pays for it, next to a plain `notes` agent.

    .venv/bin/python -m bench.bench_sql            # 10,000 rows (~1 MB), 200 asks per side
    .venv/bin/python -m bench.bench_sql --quick    # 1,000 rows, 40 asks per side

Starts its own dev server and a worker process (with bench/sql_agents.py), then measures:

* `ask` p50/p95 of an agent whose database holds the rows, one row inserted per turn, against
  `notes` (target: at most 1.5x), asks interleaved so both see the same machine load;
* the worker's CPU per turn for each (blocks of asks, the worker's own process);
* history bytes per turn with a one-row change, at 100 rows and at the full size (it must not
  grow with the database: no turn copies it);
* in-process, the part alone: a one-row turn, a rollback and its rebuild, what
  continue-as-new carries (bytes and time), at both sizes.

Prints a table and saves JSON under bench/results/. Figures go to bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

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
from bench.sql_agents import SQL_ROWS, SQL_ROWS_SWITCHING
from perennial.client import AgentHandle, Perennial
from perennial.workflows.messages import SqlCarried
from perennial.workflows.sql import SqlDatabase, SqlLimits
from perennial.workflows.versions import Versions


@dataclass
class Scale:
    rows: int = 10_000
    small_rows: int = 100
    asks: int = 200
    warmup: int = 20
    part_turns: int = 2_000


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process, from /proc/<pid>/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def timed_ask(agent: AgentHandle, text: str) -> float:
    started = time.perf_counter()
    await agent.ask(text, timeout=60)
    return time.perf_counter() - started


async def history_bytes(perennial: Perennial, agent: AgentHandle) -> tuple[int, int]:
    """(events, bytes) of the agent's current run."""
    history = await perennial.client.get_workflow_handle(agent.id).fetch_history()
    return len(history.events), sum(event.ByteSize() for event in history.events)


async def fill(agent: AgentHandle, rows: int) -> None:
    """Rows in turns of at most 2,000 (a turn runs inside one workflow task)."""
    done = 0
    while done < rows:
        step = min(2_000, rows - done)
        await agent.ask(f"fill {step}", timeout=120)
        done += step


# --------------------------------------------------------------------------- end to end


async def latency_and_cpu(perennial: Perennial, worker_pid: int, scale: Scale) -> dict[str, Any]:
    notes = perennial.agent("notes", f"bench-notes-{os.getpid()}")
    rows = perennial.agent(SQL_ROWS, f"bench-rows-{os.getpid()}")
    await fill(rows, scale.rows)
    size = (
        await rows.sql("SELECT page_count * page_size FROM pragma_page_count, pragma_page_size")
    ).rows[0][0]
    for n in range(scale.warmup):
        await notes.ask(f"warm {n}")
        await rows.ask(f"warm {n}")
    latency: dict[str, list[float]] = {"notes": [], "sql": []}
    for n in range(scale.asks):  # interleaved: both see the same load
        latency["notes"].append(await timed_ask(notes, f"note {n}"))
        latency["sql"].append(await timed_ask(rows, f"row {n}"))
    cpu: dict[str, float] = {"notes": 0.0, "sql": 0.0}
    for _ in range(2):  # blocks, twice each, so a drift in load falls on both
        for side, agent in (("notes", notes), ("sql", rows)):
            before = cpu_seconds(worker_pid)
            for n in range(scale.asks // 2):
                await agent.ask(f"cpu {n}")
            cpu[side] += cpu_seconds(worker_pid) - before
    per_turn = {side: cpu[side] / scale.asks * 1000 for side in cpu}
    return {
        "db_bytes": size,
        "ask_p50_ms": {s: percentile(v, 50) * 1000 for s, v in latency.items()},
        "ask_p95_ms": {s: percentile(v, 95) * 1000 for s, v in latency.items()},
        "worker_cpu_ms_per_turn": per_turn,
    }


async def history_per_turn(perennial: Perennial, scale: Scale) -> dict[int, float]:
    found: dict[int, float] = {}
    for rows in (scale.small_rows, scale.rows):
        agent = perennial.agent(SQL_ROWS, f"bench-history-{rows}-{os.getpid()}")
        await fill(agent, rows)
        events, before = await history_bytes(perennial, agent)
        turns = 50
        for n in range(turns):
            await agent.ask(f"history {n}")
        events_after, after = await history_bytes(perennial, agent)
        assert events_after > events, "the run continued as new during the measurement"
        found[rows] = (after - before) / turns
    return found


async def continue_as_new(perennial: Perennial, scale: Scale) -> dict[str, float]:
    """An agent with the full database continues as new: what its next run's input weighs."""
    agent = perennial.agent(SQL_ROWS_SWITCHING, f"bench-switch-{os.getpid()}")
    await fill(agent, scale.rows)
    handle = perennial.client.get_workflow_handle(agent.id)
    first_run = (await handle.describe()).run_id
    n = 0
    while (await handle.describe()).run_id == first_run:
        n += 1
        await agent.ask(f"switch {n}")
        if n % 10 == 0:
            await asyncio.sleep(1.5)  # a pause: the switch waits for one between messages
    started = (await handle.fetch_history()).events[0]
    payload = started.workflow_execution_started_event_attributes.input.payloads[0]
    found = await agent.sql("SELECT count(*) FROM items")
    return {"input_bytes": len(payload.data), "rows_after": found.rows[0][0], "asks": n}


# --------------------------------------------------------------------------- the part alone


class _Ctx:
    def __init__(self, versions: Versions) -> None:
        self.versions = versions

    @property
    def version(self) -> int:
        return self.versions.version


def _part(carried: SqlCarried | None = None, snapshots: Any = None) -> tuple[SqlDatabase, Versions]:
    versions = Versions(keep=10, max_bytes=1 << 30, snapshots=snapshots or [])
    if versions.empty:
        versions.commit("{}")
    limits = SqlLimits(max_bytes=8 << 20, max_log_bytes=256 << 10, max_carried_bytes=4 << 20,
                       max_steps=50_000_000)  # fmt: skip
    return SqlDatabase(
        _Ctx(versions), carried or SqlCarried(), versions=versions, limits=limits
    ), versions  # type: ignore[arg-type]


def _turn(db: SqlDatabase, versions: Versions, *statements: tuple[str, tuple[Any, ...]]) -> None:
    db.begin_turn()
    for query, params in statements:
        db.execute(query, params)
    db.commit_turn()
    db.end_turn(failed=False)
    versions.commit("{}")


def part_figures(rows: int, turns: int) -> dict[str, float]:
    db, versions = _part()
    _turn(
        db,
        versions,
        ("CREATE TABLE items(id INTEGER PRIMARY KEY, name TEXT, body TEXT, qty INT)", ()),
    )
    body = "note: " + " ".join(f"w{k}" for k in range(14))
    statements = [("INSERT INTO items(name, body, qty) VALUES (?, ?, ?)", (f"item {n}", body, n))
                  for n in range(rows)]  # fmt: skip
    _turn(db, versions, *statements)
    insert = "INSERT INTO items(name, body, qty) VALUES (?, ?, ?)"
    started = time.perf_counter()
    for n in range(turns):
        _turn(db, versions, (insert, (f"one {n}", "x", 1)))
    turn_us = (time.perf_counter() - started) / turns * 1e6
    started = time.perf_counter()
    for _ in range(turns):  # a turn that does not touch the database
        db.begin_turn()
        db.end_turn(failed=False)
    untouched_us = (time.perf_counter() - started) / turns * 1e6

    started = time.perf_counter()
    carried = db.carry()
    carry_ms = (time.perf_counter() - started) * 1000
    carried_bytes = len(carried.base or "") + len(carried.log or "")
    started = time.perf_counter()
    alone = db.carried_at(versions.version)  # the alternative: the current database alone
    current_only = len(alone.base or "")
    current_only_ms = (time.perf_counter() - started) * 1000
    started = time.perf_counter()
    again = carried  # the next run reuses an untouched carry as it came
    nxt, nxt_versions = _part(again, versions.snapshots())
    _turn(nxt, nxt_versions, (insert, ("first of the run", "x", 1)))
    first_touch_ms = (time.perf_counter() - started) * 1000

    target = nxt_versions.kept()[0]
    started = time.perf_counter()
    version = nxt_versions.commit("{}")
    nxt.restore(target, version=version)
    _turn(nxt, nxt_versions, ("SELECT count(*) FROM items", ()))
    rollback_ms = (time.perf_counter() - started) * 1000
    return {
        "db_bytes": nxt.size_bytes,
        "one_row_turn_us": turn_us,
        "untouched_turn_us": untouched_us,
        "carry_ms": carry_ms,
        "carried_bytes": carried_bytes,
        "carry_current_only_ms": current_only_ms,
        "carried_current_only_bytes": current_only,
        "first_touch_after_carry_ms": first_touch_ms,
        "rollback_and_rebuild_ms": rollback_ms,
    }


# --------------------------------------------------------------------------- entry point


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.bench_sql", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--quick", action="store_true", help="1,000 rows, 40 asks per side")
    parser.add_argument("--out", type=Path, help="where to save the JSON results")
    return parser.parse_args(argv)


async def amain(args: argparse.Namespace) -> int:
    scale = Scale(rows=1_000, asks=40, warmup=5, part_turns=300) if args.quick else Scale()
    print(f"scale: {asdict(scale)}", flush=True)
    part = {rows: part_figures(rows, scale.part_turns) for rows in (scale.small_rows, scale.rows)}
    async with dev_server("perennial-bench-sql-", log_level="WARNING") as (_, settings):
        settings = settings.model_copy(update={"task_queue": "bench-sql"})
        worker = start_worker(settings, PERENNIAL_APP="bench.sql_agents")
        try:
            perennial = await Perennial.connect(settings)
            await perennial.agent("notes", "bench-ready").ask("ready?", timeout=120)
            end_to_end = await latency_and_cpu(perennial, worker.pid, scale)
            history = await history_per_turn(perennial, scale)
            switch = await continue_as_new(perennial, scale)
        finally:
            await stop_process(worker)
    report(scale, part, end_to_end, history)
    print(
        f"\ncontinue-as-new with {scale.rows:,} rows: next run's input {switch['input_bytes']:,} "
        f"bytes; {switch['rows_after']:,} rows after it"
    )
    out = save_results("sql", {
        "command": " ".join([Path(sys.executable).name, "-m", "bench.bench_sql", *sys.argv[1:]]),
        "scale": asdict(scale),
        "environment": environment(),
        "part": part,
        "end_to_end": end_to_end,
        "history_bytes_per_turn": history,
        "continue_as_new": switch,
    }, out=args.out)  # fmt: skip
    print(f"results saved to {out.relative_to(ROOT) if out.is_relative_to(ROOT) else out}")
    return 0


def report(scale: Scale, part: dict[int, dict[str, float]], e2e: dict[str, Any],
           history: dict[int, float]) -> None:  # fmt: skip
    p50, p95, cpu = e2e["ask_p50_ms"], e2e["ask_p95_ms"], e2e["worker_cpu_ms_per_turn"]
    ratio = p50["sql"] / p50["notes"]
    rows = [
        ("figure", "notes", f"sql, {scale.rows:,} rows", "ratio", "target"),
        ("ask p50 (ms)", f"{p50['notes']:.1f}", f"{p50['sql']:.1f}", f"{ratio:.2f}x", "<= 1.5x"),
        ("ask p95 (ms)", f"{p95['notes']:.1f}", f"{p95['sql']:.1f}",
         f"{p95['sql'] / p95['notes']:.2f}x", ""),
        ("worker CPU per turn (ms)", f"{cpu['notes']:.2f}", f"{cpu['sql']:.2f}",
         f"{cpu['sql'] / cpu['notes']:.2f}x", ""),
    ]  # fmt: skip
    print(f"\nend to end (database {e2e['db_bytes'] / 1e6:.2f} MB)")
    print_table(rows, align="<>>>>", rule=True)
    small, large = scale.small_rows, scale.rows
    print("\nhistory bytes per turn, one row inserted")
    print_table([("rows", "bytes per turn"), (f"{small:,}", f"{history[small]:.0f}"),
                 (f"{large:,}", f"{history[large]:.0f}")], align=">>", rule=True)  # fmt: skip
    print("\nthe part alone (in process)")
    names = list(part[small])
    print_table([("figure", f"{small:,} rows", f"{large:,} rows"),
                 *((name, f"{part[small][name]:.1f}", f"{part[large][name]:.1f}") for name in names)],
                align="<>>", rule=True)  # fmt: skip


def main() -> None:
    run_main(amain, parse_args)


if __name__ == "__main__":
    main()
