"""Replay saved histories and print the worker's CPU per message of workflow code alone.

    .venv/bin/python -m bench.replay_history bench/results/replay-*-perennial-*.json
    valgrind --tool=cachegrind --cache-sim=no .venv/bin/python -m bench.replay_history FILE

Phase `replay` of `bench_entity.py` saves the histories it replays (one file per run, in the
format of `tests/histories/`). Under valgrind the instruction count is exact and the machine's
load does not move it: run once with `--replays 0` (start-up and one untimed replay) and once
with `--replays N`; the difference divided by N is one replay's instructions.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from pathlib import Path

from temporalio.api.enums.v1 import EventType
from temporalio.client import WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer

from bench.raw_entity import RawEntity
from perennial.client.replay import load_history as load
from perennial.worker import workflow_runner
from perennial.workflows.registry import agent_types


def replayer() -> Replayer:
    """Every agent type and the baseline, with the worker's runner and data converter."""
    return Replayer(
        workflows=[*agent_types().values(), RawEntity],
        workflow_runner=workflow_runner(),
        data_converter=pydantic_data_converter,
    )


async def replay_seconds(replayer: Replayer, histories: list[WorkflowHistory]) -> float:
    """CPU seconds of this process to replay `histories` (raises if a replay fails)."""
    started = time.process_time()
    for history in histories:
        await replayer.replay_workflow(history)
    return time.process_time() - started


def signals_in(histories: list[WorkflowHistory]) -> int:
    signaled = EventType.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED
    return sum(1 for history in histories for event in history.events
               if event.event_type == signaled)  # fmt: skip


async def _main(paths: list[Path], replays: int) -> None:
    histories = [load(path) for path in paths]
    player = replayer()
    await replay_seconds(player, histories)  # untimed: imports, first sandbox
    if replays < 1:
        return
    best = min([await replay_seconds(player, histories) for _ in range(replays)])
    signals = signals_in(histories)
    print(f"{len(histories)} run(s), {signals} signals: fastest of {replays} replays "
          f"{best * 1000:.0f} ms CPU, {best * 1e6 / max(1, signals):.0f} us per message")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="+", type=Path, help="saved histories (one agent's runs)")
    parser.add_argument("--replays", type=int, default=5, help="timed replays (0: none)")
    args = parser.parse_args()
    asyncio.run(_main(args.paths, args.replays))


if __name__ == "__main__":
    main()
