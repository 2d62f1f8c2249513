"""The Perennial worker: every agent workflow type and every activity, on one task queue.

Run it with `perennial worker` (or `python worker.py`). Several workers may run at once on the
same task queue; that is how Perennial scales.
"""

from __future__ import annotations

import asyncio
import compileall
import contextlib
import gc
import signal
import sys
from pathlib import Path

import structlog
from temporalio.client import Client
from temporalio.worker import Worker
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

import perennial.workflows
from perennial import sdk_internals
from perennial.activities import build_activities
from perennial.client.app import app_passthrough_modules, load_app
from perennial.client.connection import connect, ensure_search_attributes
from perennial.client.logging import configure_logging
from perennial.client.process import exit_process
from perennial.client.settings import Settings
from perennial.client.telemetry import metrics_runtime, setup_tracing
from perennial.workflows.registry import agent_types

log = structlog.get_logger("perennial.worker")

#: Modules the workflow sandbox imports once and shares, instead of re-importing them for
#: every new or evicted agent (that cost several times raw Temporal's CPU and memory per
#: agent: docs/decisions.md). The price: the sandbox's runtime checks do not run inside
#: passed-through code, so Perennial's own determinism is guarded by the ruff ban list
#: (workflows/.ruff.toml) and the replay tests instead; an application's agent modules stay
#: sandboxed.
_PASSTHROUGH = ("pydantic", "pydantic_core", "annotated_types", "structlog", "perennial")


def workflow_runner(settings: Settings | None = None) -> SandboxedWorkflowRunner:
    """The sandboxed runner every agent type runs in: Perennial's framework modules passed
    through, and (setting `lean_runner`) the lean runner of `perennial.sdk_internals`."""
    passthrough = (*_PASSTHROUGH, *app_passthrough_modules(settings))  # the app's, if it asks
    restrictions = SandboxRestrictions.default.with_passthrough_modules(*passthrough)
    return sdk_internals.runner(restrictions, lean=settings.lean_runner if settings else True)


def settle_heap() -> None:
    """Collect, then freeze what survives start-up (imports, the sandbox's validation of
    every agent type), so that the cyclic garbage collector never scans it again: a full
    collection under a flood otherwise pauses the worker long enough for the server to
    force-close the flooded agent's workflow task (docs/decisions.md). Call once per process,
    after building workers."""
    gc.collect()
    gc.freeze()


def _precompile_workflow_modules() -> None:
    """Write bytecode for every module the workflow sandbox imports.

    The sandbox re-imports workflow modules for every new workflow run; without .pyc files
    (PYTHONDONTWRITEBYTECODE is set, or the tree was never imported) each of those imports
    compiles from source, for every new agent. Best effort: a read-only install that pip
    already compiled needs nothing.
    """
    files = {Path(sys.modules[cls.__module__].__file__ or "") for cls in agent_types().values()}
    files |= set(Path(perennial.workflows.__file__).parent.rglob("*.py"))
    for path in files:
        if path.suffix == ".py":
            with contextlib.suppress(OSError):
                compileall.compile_file(path, quiet=2)


def build_worker(client: Client, settings: Settings) -> Worker:
    """A worker for every registered agent type on `settings.task_queue`."""
    _precompile_workflow_modules()
    return Worker(
        client,
        task_queue=settings.task_queue,
        workflows=list(agent_types().values()),
        activities=build_activities(settings),
        workflow_runner=workflow_runner(settings),
        max_cached_workflows=settings.max_cached_workflows,
        sticky_queue_schedule_to_start_timeout=settings.sticky_timeout,
        # A streaming model call's progress travels in its heartbeats (see StreamProgress).
        max_heartbeat_throttle_interval=settings.stream_interval,
        # An update over the server's payload limit cannot be refused without echoing it
        # back: with the SDK's own check, that failed the agent's workflow tasks for seconds;
        # without it the server drops the update alone and the agent is undisturbed.
        disable_payload_error_limit=True,
    )


async def run_worker(settings: Settings, *, stop: asyncio.Event | None = None) -> None:
    """Connect, make sure the search attributes exist, and run until `stop` is set
    (or SIGINT / SIGTERM when no event is given)."""
    # The metrics endpoint belongs to the runtime, so the runtime comes before the client.
    # Tracing reaches the worker through the client's interceptors (the SDK's way).
    runtime = metrics_runtime(settings)
    tracing = setup_tracing(settings)
    client = await connect(settings, tracing=tracing, runtime=runtime)
    if runtime is not None:
        where = f"{settings.metrics_host}:{settings.metrics_port}"
        log.info("serving metrics", url=f"http://{where}/metrics")
    try:
        added = await ensure_search_attributes(client, settings.namespace)
        if added:
            log.info("registered search attributes", added=added)
    except Exception as err:  # e.g. Temporal Cloud: the operator API needs other credentials
        log.warning("could not check search attributes; register them by hand", error=str(err))
    stop = stop or stop_on_signals()
    load_app(settings)  # an application's agent types and tools
    worker = build_worker(client, settings)
    settle_heap()
    log.info("worker started", task_queue=settings.task_queue, address=settings.address,
             agent_types=sorted(agent_types()))  # fmt: skip
    async with worker:
        await stop.wait()
    log.info("worker stopped")
    if tracing is not None:
        tracing.shutdown()  # the process ends in os._exit, past the provider's own exit flush


def stop_on_signals() -> asyncio.Event:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    return stop


def main() -> None:
    settings = Settings.from_env()
    configure_logging(
        fmt=settings.log_format,
        level=settings.log_level,
        secrets=settings.secrets,
    )
    if settings.embedded:
        settings = settings.model_copy(update={"temporal_address": settings.address})
    try:
        asyncio.run(run_worker(settings))
    except KeyboardInterrupt:
        exit_process(130)
    exit_process(0)


if __name__ == "__main__":
    main()
