"""The Perennial worker: every agent workflow type and every activity, on one task queue.

Run it with `perennial worker` (or `python worker.py`). Several workers may run at once on the
same task queue; that is how Perennial scales.
"""

from __future__ import annotations

import asyncio
import signal

import structlog
from temporalio.client import Client
from temporalio.worker import Worker
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

from client.connection import connect, ensure_search_attributes
from client.logging import configure_logging
from client.process import exit_process
from client.settings import Settings
from workflows.registry import AGENT_TYPES

log = structlog.get_logger("perennial.worker")

#: Modules the workflow sandbox imports once and shares, instead of re-importing per run:
#: they are deterministic (pure data types), and pydantic is expensive to import.
_PASSTHROUGH = ("pydantic", "pydantic_core", "annotated_types", "workflows.messages",
                "workflows.errors", "structlog")  # fmt: skip


def build_worker(client: Client, settings: Settings) -> Worker:
    """A worker for every registered agent type on `settings.task_queue`."""
    return Worker(
        client,
        task_queue=settings.task_queue,
        workflows=list(AGENT_TYPES.values()),
        activities=[],
        workflow_runner=SandboxedWorkflowRunner(
            restrictions=SandboxRestrictions.default.with_passthrough_modules(*_PASSTHROUGH)
        ),
        max_cached_workflows=settings.max_cached_workflows,
        sticky_queue_schedule_to_start_timeout=settings.sticky_timeout,
    )


async def run_worker(settings: Settings, *, stop: asyncio.Event | None = None) -> None:
    """Connect, make sure the search attributes exist, and run until `stop` is set
    (or SIGINT / SIGTERM when no event is given)."""
    client = await connect(settings)
    try:
        added = await ensure_search_attributes(client, settings.namespace)
        if added:
            log.info("registered search attributes", added=added)
    except Exception as err:  # e.g. Temporal Cloud: the operator API needs other credentials
        log.warning("could not check search attributes; register them by hand", error=str(err))
    stop = stop or stop_on_signals()
    worker = build_worker(client, settings)
    log.info("worker started", task_queue=settings.task_queue, address=settings.address,
             agent_types=sorted(AGENT_TYPES))  # fmt: skip
    async with worker:
        await stop.wait()
    log.info("worker stopped")


def stop_on_signals() -> asyncio.Event:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    return stop


def main() -> None:
    settings = Settings.from_env()
    configure_logging(fmt=settings.log_format, level=settings.log_level)
    if settings.embedded:
        settings = settings.model_copy(update={"temporal_address": settings.address})
    try:
        asyncio.run(run_worker(settings))
    except KeyboardInterrupt:
        exit_process(130)
    exit_process(0)


if __name__ == "__main__":
    main()
