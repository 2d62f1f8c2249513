"""The agent's WebSocket: its state and every change, its events, and requests.

Server to client: `state` on connect (version 0 and state null while the agent does not
exist), then a `patch` (RFC 6902) per committed version, or a `state` when that is smaller;
`event` for each event after `?after=` (live ones only without it); `events_missed` when
events left the agent's bounded log before they were sent. Replies to requests: `reply`
(ask), `accepted` (send), `result` (call), `stopped` (stop), `error`, each with the request's
`id`.

Client to server: `{"type": "ask"|"send"|"call"|"stop", "id", ...}`. The `id` is also the message
id, so a request resent after a reconnect is applied once. `on_busy` on ask and send says what
the message does if a turn is running (see `workflows.turn_control`).

A streamed ask (`"stream": true`) is answered as it is written: a frame per item, the item's
JSON as is (`delta`, `restart`, `tool_call`, `tool_result`, each with the ask's `id` and its
`position`), then the same `reply` frame as an unstreamed ask (with its `position` added), or
an `error`. After a reconnect, the same ask with `"resume": "<position token>"` (from the last
item's position: offset.step.attempt.chars) goes on after that item. `{"type": "stop",
"reason"?, "turn"?}` stops the running turn (only if it is the ask `turn`) and is answered
`{"type": "stopped", "stopped", "turn", "version"}`; the stopped ask gets a `TurnStopped` error.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from typing import TYPE_CHECKING, Annotated, Any, Literal

import structlog
from fastapi import WebSocket, WebSocketDisconnect
from pydantic import BaseModel, ConfigDict, Field, JsonValue, TypeAdapter, ValidationError

from perennial.client.gateway.auth import Forbidden, Principal, Unauthorized
from perennial.client.gateway.errors import classify
from perennial.client.gateway.hub import AgentWatcher, Subscriber, SubscriberTooSlow, follow
from perennial.client.gateway.models import MAX_WAIT_SECONDS
from perennial.client.gateway.streams import paced_stream, resume_position
from perennial.workflows.errors import (
    AgentBusy,
    InvalidRequest,
    UnknownAgentType,
    UsageError,
    summarize,
)
from perennial.workflows.messages import BusyPolicy

if TYPE_CHECKING:
    from perennial.client.agents import AgentHandle
    from perennial.client.gateway.app import Gateway

log = structlog.get_logger("perennial.gateway")

#: Requests one socket may have waiting at once; more get an AgentBusy error.
MAX_IN_FLIGHT = 16

#: Close codes: the HTTP status in the 4000 range, 1013 for a client too slow to keep up.
_CLOSE = {Unauthorized: 4401, Forbidden: 4403, UnknownAgentType: 4404}
_TOO_SLOW = 1013
_GOING_AWAY = 1001


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str = Field(default_factory=lambda: str(uuid.uuid4()), min_length=1, max_length=200)


class SocketAsk(_Request):
    type: Literal["ask"]
    text: str
    sender: str | None = None
    data: JsonValue = None
    timeout: float = Field(default=60.0, gt=0, le=MAX_WAIT_SECONDS)
    on_busy: BusyPolicy | None = None
    #: Answer with the turn's items as they come, then the reply.
    stream: bool = False
    #: A streamed ask asked again after a reconnect: the last item's position token.
    resume: str | None = Field(default=None, max_length=100)


class SocketSend(_Request):
    type: Literal["send"]
    text: str
    sender: str | None = None
    data: JsonValue = None
    on_busy: BusyPolicy | None = None


class SocketCall(_Request):
    type: Literal["call"]
    method: str
    args: dict[str, JsonValue] = {}
    sender: str | None = None
    timeout: float = Field(default=60.0, gt=0, le=MAX_WAIT_SECONDS)


class SocketStop(_Request):
    """Stop the running turn (only if it is `turn`, an ask's id, when given)."""

    type: Literal["stop"]
    reason: str | None = None
    turn: str | None = None


_Requests = SocketAsk | SocketSend | SocketCall | SocketStop
SocketRequest = Annotated[_Requests, Field(discriminator="type")]
_REQUEST: TypeAdapter[_Requests] = TypeAdapter(SocketRequest)


async def serve_socket(gateway: Gateway, websocket: WebSocket, agent_type: str, name: str) -> None:
    """Serve one socket until either side closes it."""
    try:
        principal = gateway.principal(websocket)
        agent = gateway.agent(principal, "read", agent_type, name)
        after = _after(websocket.query_params.get("after"))
    except UsageError as err:
        await websocket.accept()
        code = next((c for cls, c in _CLOSE.items() if isinstance(err, cls)), 4400)
        await websocket.close(code, reason=f"{type(err).__name__}: {err}"[:120])
        return
    await websocket.accept()
    async with gateway.hub.use(agent_type, name) as watcher:
        session = _Session(gateway, websocket, principal, agent, watcher)
        await session.run(after)


def _after(raw: str | None) -> int | None:
    if raw is None:
        return None
    if not raw.isdigit():
        raise InvalidRequest("after must be a non-negative integer (an event offset)")
    return int(raw)


class _Session:
    def __init__(
        self, gateway: Gateway, websocket: WebSocket, principal: Principal,
        agent: AgentHandle, watcher: AgentWatcher,
    ) -> None:  # fmt: skip
        self.gateway = gateway
        self.websocket = websocket
        self.principal = principal
        self.agent = agent
        self.watcher = watcher
        self._send_lock = asyncio.Lock()
        self._in_flight: set[asyncio.Task[None]] = set()

    async def run(self, after: int | None) -> None:
        pump = asyncio.create_task(self._pump(after))
        reader = asyncio.create_task(self._read())
        closing = asyncio.create_task(self.gateway.closing.wait())
        try:
            done, _ = await asyncio.wait(
                {pump, reader, closing}, return_when=asyncio.FIRST_COMPLETED
            )
            if closing in done:
                await self._close(_GOING_AWAY, "the gateway is shutting down")
            elif pump in done and isinstance(pump.exception(), SubscriberTooSlow):
                await self._close(_TOO_SLOW, "too slow to keep up: reconnect with ?after=")
        finally:
            for task in (pump, reader, closing, *self._in_flight):
                task.cancel()
            await asyncio.gather(pump, reader, closing, *self._in_flight, return_exceptions=True)

    async def _pump(self, after: int | None) -> None:
        subscriber = Subscriber(events=True, state=True)
        frames = follow(self.watcher, subscriber, after=after)
        try:
            async for frame in frames:
                await self._send(frame.data)
        finally:
            await frames.aclose()

    async def _read(self) -> None:
        with contextlib.suppress(WebSocketDisconnect):
            while True:
                text = await self.websocket.receive_text()
                if len(self._in_flight) >= MAX_IN_FLIGHT:
                    await self._error(_request_id(text), AgentBusy(
                        f"{MAX_IN_FLIGHT} requests already wait on this socket, the most it "
                        "takes; resend this one (same id) when one is answered"
                    ))  # fmt: skip
                    continue
                task = asyncio.create_task(self._answer(text))
                self._in_flight.add(task)
                task.add_done_callback(self._in_flight.discard)

    async def _answer(self, text: str) -> None:
        request_id = _request_id(text)
        try:
            request = _REQUEST.validate_json(text)
            request_id = request.id
            self.gateway.auth.authorize(
                self.principal, "write", self.agent.agent_type, self.agent.name
            )
            if isinstance(request, SocketAsk) and request.stream:
                await self._stream(request)
            else:
                await self._send(json.dumps(await self._perform(request)))
        except ValidationError as err:
            await self._error(request_id, InvalidRequest(f"bad request: {summarize(err)}"))
        except Exception as err:  # every failure is answered, typed, on the socket
            await self._error(request_id, err)

    async def _perform(self, request: _Requests) -> dict[str, Any]:
        hub, agent = self.gateway.hub, self.agent
        kind, name = agent.agent_type, agent.name
        if isinstance(request, SocketAsk):
            if request.resume is not None:
                raise InvalidRequest("`resume` goes with a streamed ask (`stream`: true)")
            reply = await hub.paced(kind, name, request.id, lambda: agent.ask(
                request.text, sender=request.sender, id=request.id, data=request.data,
                timeout=request.timeout, on_busy=request.on_busy,
            ))  # fmt: skip
            return {"type": "reply", **reply.model_dump(mode="json")}
        if isinstance(request, SocketSend):
            await hub.paced(kind, name, request.id, lambda: agent.send(
                request.text, sender=request.sender, id=request.id, data=request.data,
                on_busy=request.on_busy,
            ), until_applied=True)  # fmt: skip
            return {"type": "accepted", "id": request.id}
        if isinstance(request, SocketStop):
            stopped = await agent.stop(reason=request.reason, turn=request.turn)
            return {"type": "stopped", "id": request.id, **stopped.model_dump(mode="json")}
        result = await hub.paced(kind, name, request.id, lambda: agent.call(
            request.method, request.args, id=request.id, sender=request.sender,
            timeout=request.timeout,
        ))  # fmt: skip
        return {"type": "result", **result.model_dump(mode="json")}

    async def _stream(self, request: SocketAsk) -> None:
        """A frame per item of the turn, the reply frame last (its error raised after)."""
        agent = self.agent
        resume = resume_position(request.resume, message_id=request.id)
        items = paced_stream(self.gateway.hub, agent, request.id, lambda: agent.ask_stream(
            request.text, sender=request.sender, id=request.id, data=request.data,
            timeout=request.timeout, on_busy=request.on_busy, resume=resume,
        ))  # fmt: skip
        try:
            async for item in items:
                await self._send(item.model_dump_json())
        finally:
            await items.aclose()

    async def _error(self, request_id: str | None, err: Exception) -> None:
        status, body, _ = classify(err)
        message: dict[str, Any] = {"type": "error", "error": {**body["error"], "status": status}}
        if request_id is not None:
            message["id"] = request_id
        await self._send(json.dumps(message))

    async def _send(self, text: str) -> None:
        async with self._send_lock:
            await self.websocket.send_text(text)

    async def _close(self, code: int, reason: str) -> None:
        with contextlib.suppress(Exception):  # the client may be gone already
            await self.websocket.close(code, reason=reason)


def _request_id(text: str) -> str | None:
    """The `id` of a request, if it has a readable one (to answer even a bad request)."""
    try:
        value = json.loads(text).get("id")
    except (ValueError, AttributeError):
        return None
    return value if isinstance(value, str) and 0 < len(value) <= 200 else None


__all__ = ["SocketAsk", "SocketCall", "SocketRequest", "SocketSend", "SocketStop", "serve_socket"]
