"""A streamed ask through the gateway, as Server-Sent Events or as socket frames.

The turn's items (`delta`, `restart`, `tool_call`, `tool_result`, then `reply`) come from
`AgentHandle.ask_stream`; the ask is paced by the hub like any other (counted while it runs),
and its error comes after the items before it. Over SSE each item is one event,
`event: <type>`, `id: <position token>`, `data: <item JSON>`; an error is `event: error` with
the usual error body (and its HTTP status), and ends the stream. A client that lost the stream
asks again with the same message id and its last event id (`Last-Event-ID`, or the socket's
`resume`): nothing is applied twice, nothing delivered is repeated.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from typing import TYPE_CHECKING, TypeVar

from fastapi.responses import StreamingResponse

from perennial.client.agents import AgentHandle, known_agent_class
from perennial.client.gateway.errors import classify
from perennial.workflows.errors import InvalidMessage, InvalidRequest, parse_input
from perennial.workflows.messages import Message, StreamItem, StreamPosition

if TYPE_CHECKING:
    from perennial.client.gateway.app import Gateway
    from perennial.client.gateway.hub import Hub
    from perennial.client.gateway.models import AskBody

T = TypeVar("T")

#: Headers of every SSE response (no proxy buffering: items are sent as they come).
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
KEEPALIVE = ": keepalive\n\n"

_END = object()


def resume_position(token: str | None, *, message_id: str | None) -> StreamPosition | None:
    """The position a client resumes from (None: from the start); InvalidRequest for a token
    that is not one, or a resume without the message id it belongs to."""
    if token is None or not token.strip():
        return None
    if not message_id:
        raise InvalidRequest("resuming a stream needs the message `id` of the ask it follows")
    try:
        return StreamPosition.parse(token)
    except ValueError as err:
        raise InvalidRequest(f"cannot resume the stream: {err}") from None


def check_message(agent: AgentHandle, body: AskBody, message_id: str) -> None:
    """Refuse a bad message before its stream starts (a 400, not an error event after a 200)."""
    raw = {"text": body.text, "sender": body.sender, "id": message_id, "data": body.data,
           "on_busy": body.on_busy}  # fmt: skip
    message = parse_input(Message, raw, error=InvalidMessage)
    known_agent_class(agent.agent_type).check_message(message, agent.agent_type)


async def with_keepalives(
    source: AsyncIterator[T], seconds: float, *, until: asyncio.Event
) -> AsyncGenerator[T | None, None]:
    """`source`'s items, and None after each `seconds` without one (time for a keepalive),
    until `source` ends or `until` is set (the gateway is shutting down). The wait for an
    item is never cancelled: cancelling an async generator mid-item would close it."""
    pending: asyncio.Future[T] | None = None
    closing = asyncio.ensure_future(until.wait())
    try:
        while True:
            if pending is None:
                pending = asyncio.ensure_future(anext(source))
            done, _ = await asyncio.wait(
                {pending, closing}, timeout=seconds, return_when=asyncio.FIRST_COMPLETED
            )
            if closing in done:
                return
            if not done:
                yield None
                continue
            finished, pending = pending, None
            try:
                item = finished.result()
            except StopAsyncIteration:
                return
            yield item
    finally:
        closing.cancel()
        if pending is not None:
            pending.cancel()
            await asyncio.wait({pending})
            if not pending.cancelled():
                pending.exception()  # retrieved: the stream is being closed anyway
        aclose = getattr(source, "aclose", None)
        if aclose is not None:
            await aclose()


async def paced_stream(
    hub: Hub, agent: AgentHandle, message_id: str, items: Callable[[], AsyncIterator[StreamItem]]
) -> AsyncGenerator[StreamItem, None]:
    """`items()` read in a task the hub paces (TooManyUnapplied when the agent is too far
    behind), handed on as they come; the ask's error after the items before it. Closing
    this stream stops reading (the turn goes on)."""
    queue: asyncio.Queue[object] = asyncio.Queue()  # bounded by the turn's own items

    async def pump() -> None:
        async for item in items():
            queue.put_nowait(item)

    async def run() -> None:
        try:
            await hub.paced(agent.agent_type, agent.name, message_id, pump)
        finally:
            queue.put_nowait(_END)

    task = asyncio.create_task(run(), name=f"stream {agent.id} {message_id}")
    try:
        while (item := await queue.get()) is not _END:
            yield item  # type: ignore[misc]
        await task  # raises the ask's error
    finally:
        task.cancel()
        await asyncio.wait({task})
        if not task.cancelled():
            task.exception()  # raised above, or the reader left early: retrieved either way


def sse_event(item: StreamItem) -> str:
    return f"event: {item.type}\nid: {item.position.token()}\ndata: {item.model_dump_json()}\n\n"


def sse_error(err: Exception) -> str:
    status, body, _ = classify(err)
    body["error"]["status"] = status
    return f"event: error\ndata: {json.dumps(body)}\n\n"


async def _sse_turn(
    items: AsyncIterator[StreamItem], *, closing: asyncio.Event, keepalive: float
) -> AsyncIterator[str]:
    paced = with_keepalives(items, keepalive, until=closing)
    try:
        async for item in paced:
            yield KEEPALIVE if item is None else sse_event(item)
    except Exception as err:  # every failure is answered, typed, as the stream's last event
        yield sse_error(err)
    finally:
        await paced.aclose()  # stops reading the turn (it goes on)


def ask_events(
    gateway: Gateway, agent: AgentHandle, body: AskBody, *, last_event_id: str | None,
    keepalive: float,
) -> StreamingResponse:  # fmt: skip
    """`POST .../ask` with `Accept: text/event-stream`: the turn as SSE. A bad message or
    resume token is refused here, before the stream starts."""
    resume = resume_position(last_event_id, message_id=body.id)
    message_id = body.id or str(uuid.uuid4())
    check_message(agent, body, message_id)
    items = paced_stream(gateway.hub, agent, message_id, lambda: agent.ask_stream(
        body.text, sender=body.sender, id=message_id, data=body.data, timeout=body.timeout,
        on_busy=body.on_busy, resume=resume,
    ))  # fmt: skip
    events = _sse_turn(items, closing=gateway.closing, keepalive=keepalive)
    return StreamingResponse(events, media_type="text/event-stream", headers=SSE_HEADERS)


__all__ = [
    "SSE_HEADERS",
    "ask_events",
    "check_message",
    "paced_stream",
    "resume_position",
    "sse_error",
    "sse_event",
    "with_keepalives",
]
