"""Heartbeats for activities that wait on something slow (a model, a tool)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import timedelta

from temporalio import activity

#: Longest gap between heartbeats: a stop (cancellation) reaches an activity only in the
#: answer to one of its heartbeats, so this bounds how long a stopped turn's call runs on.
MAX_BEAT_INTERVAL = timedelta(seconds=1)


@contextlib.asynccontextmanager
async def heartbeating(
    *details: object, latest: Callable[[], Sequence[object]] | None = None
) -> AsyncIterator[None]:
    """Heartbeat in the background while the body runs, a few times per heartbeat timeout
    (at least every `MAX_BEAT_INTERVAL`), with `details`, or what `latest()` returns.

    A worker that dies mid-call stops heartbeating, so Temporal retries the call on another
    worker after the heartbeat timeout instead of waiting out the whole start-to-close timeout.
    Without a heartbeat timeout on the activity this does nothing.
    """
    timeout = activity.info().heartbeat_timeout
    if not timeout:
        yield
        return
    interval = max(min(timeout / 3, MAX_BEAT_INTERVAL), timedelta(milliseconds=100)).total_seconds()

    async def beat() -> None:
        while True:
            activity.heartbeat(*(latest() if latest is not None else details))
            await asyncio.sleep(interval)

    task = asyncio.create_task(beat())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
