"""A worker for the baseline workflow only, configured exactly like Perennial's worker (same
sandbox runner and passthrough modules, same cache and sticky settings, the same start-up
heap freeze), so that the two differ only in the workflow code. `python -m bench.raw_worker`
runs it from the same environment variables as `python worker.py` (TEMPORAL_ADDRESS,
PERENNIAL_TASK_QUEUE, PERENNIAL_MAX_CACHED_WORKFLOWS, ...) until SIGINT / SIGTERM."""

from __future__ import annotations

import asyncio

from temporalio.client import Client
from temporalio.worker import Worker

from bench.raw_entity import RawEntity
from perennial.client.connection import connect
from perennial.client.settings import Settings
from perennial.worker import settle_heap, stop_on_signals, workflow_runner


def build_raw_worker(client: Client, settings: Settings) -> Worker:
    return Worker(
        client,
        task_queue=settings.task_queue,
        workflows=[RawEntity],
        activities=[],
        workflow_runner=workflow_runner(),
        max_cached_workflows=settings.max_cached_workflows,
        sticky_queue_schedule_to_start_timeout=settings.sticky_timeout,
    )


async def _run(settings: Settings) -> None:
    client = await connect(settings)
    stop = stop_on_signals()
    worker = build_raw_worker(client, settings)
    settle_heap()
    async with worker:
        await stop.wait()


def main() -> None:
    asyncio.run(_run(Settings.from_env()))


if __name__ == "__main__":
    main()
