"""Heartbeats for activities that wait on something slow (a model, a tool)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import timedelta

from temporalio import activity


@contextlib.asynccontextmanager
async def heartbeating(*details: object) -> AsyncIterator[None]:
    """Heartbeat in the background while the body runs, a few times per heartbeat timeout.

    A worker that dies mid-call stops heartbeating, so Temporal retries the call on another
    worker after the heartbeat timeout instead of waiting out the whole start-to-close timeout.
    Without a heartbeat timeout on the activity this does nothing.
    """
    timeout = activity.info().heartbeat_timeout
    if not timeout:
        yield
        return
    interval = max(timeout / 3, timedelta(milliseconds=100)).total_seconds()

    async def beat() -> None:
        while True:
            activity.heartbeat(*details)
            await asyncio.sleep(interval)

    task = asyncio.create_task(beat())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
