"""The travel planner's HTTP service, served by Perennial's gateway (its `gateway_routes` hook).

    POST /chat     {"message", "sessionId"?, "id"?, "timeout"?}
                   -> {"sessionId", "id", "reply", "version", "session"}: opens the session
                   (created if needed, its expiry pushed back), asks its conversation and
                   answers. A repeated `id` is applied once and gets the first reply.
    POST /message  {"message", "sessionId"?, "id"?} -> 202 {"sessionId", "id"}: the same, but
                   only queued; the answer shows in GET /state.
    GET  /state?sessionId=   the session, its transcript (and summary), the trip, the
                   itinerary, notices, the bookings waiting for approval and the reminders.
    GET  /health   the gateway's own: Temporal reachable and a worker polling.
    GET  /travel/  the planner's page: chat, and the trip and itinerary updating live.

Every route checks the caller like the gateway's own routes (write on the session and its
conversation to chat, read to see the state), and answers errors the same way:
`{"error": {"type", "message"}}` (404 `SessionNotFound`, 409 `SessionExpired`, 400
`InvalidRequest`, 504 `AskTimedOut`, ...).
"""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import FileResponse, JSONResponse, RedirectResponse
from pydantic import BaseModel, ConfigDict, Field

from examples.travel.shared import SESSION_ID_PATTERN, SessionExpired, SessionNotFound
from perennial.client import AgentHandle, AgentNotFound, TurnFailed
from perennial.client.gateway.extensions import GatewayContext

STATIC = Path(__file__).with_name("static")
#: The longest /chat waits for the conversation's answer.
MAX_WAIT_SECONDS = 300.0

SessionId = Annotated[str, Field(pattern=SESSION_ID_PATTERN)]
MessageId = Annotated[str, Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_.:-]+$")]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class ChatBody(_Body):
    """A message from the traveller. Without a session id a new session starts."""

    message: str = Field(min_length=1, max_length=8000)
    session_id: SessionId | None = Field(default=None, alias="sessionId")
    #: A retried request with the same id is applied once.
    id: MessageId | None = None
    timeout: float = Field(default=180.0, gt=0, le=MAX_WAIT_SECONDS)


class MessageBody(_Body):
    message: str = Field(min_length=1, max_length=8000)
    session_id: SessionId | None = Field(default=None, alias="sessionId")
    id: MessageId | None = None


class ChatReply(_Body):
    session_id: str = Field(serialization_alias="sessionId")
    id: str
    reply: str | None
    #: The conversation's state version after this message.
    version: int
    session: dict[str, Any]


class Queued(_Body):
    session_id: str = Field(serialization_alias="sessionId")
    id: str


def gateway_routes(context: GatewayContext) -> APIRouter:
    """The planner's routes (see the module docstring)."""
    router = APIRouter(tags=["travel planner"])

    async def open_session(request: Request, session_id: str, message_id: str) -> dict[str, Any]:
        session = context.agent(request, "write", "session", session_id)
        call_id = f"open-{message_id}"  # a retried message opens the session once
        try:
            opened = await context.paced(
                session, call_id, lambda: session.call("open", {}, id=call_id)
            )
        except TurnFailed as failed:
            if failed.error_type == SessionExpired.__name__:
                raise SessionExpired(f"session {session_id} has ended; start a new one") from None
            raise
        return opened.result  # type: ignore[return-value]

    @router.post("/chat", response_model=ChatReply, response_model_by_alias=True)
    async def chat(request: Request, body: ChatBody) -> JSONResponse:
        """Ask the session's conversation; the session is created if needed."""
        session_id = body.session_id or uuid.uuid4().hex
        message_id = body.id or uuid.uuid4().hex
        conversation = context.agent(request, "write", "conversation", session_id)
        session = await open_session(request, session_id, message_id)
        answer = await context.paced(conversation, message_id, lambda: conversation.ask(
            body.message, id=message_id, sender="traveller", timeout=body.timeout,
        ))  # fmt: skip
        reply = ChatReply(session_id=session_id, id=answer.id, reply=answer.reply,
                          version=answer.version, session=session)  # fmt: skip
        return JSONResponse(reply.model_dump(mode="json", by_alias=True))

    @router.post("/message", status_code=202, response_model=Queued)
    async def message(request: Request, body: MessageBody) -> JSONResponse:
        """Queue a message into the session's conversation; the answer shows in /state."""
        session_id = body.session_id or uuid.uuid4().hex
        message_id = body.id or uuid.uuid4().hex
        conversation = context.agent(request, "write", "conversation", session_id)
        await open_session(request, session_id, message_id)
        await context.paced(conversation, message_id, lambda: conversation.send(
            body.message, id=message_id, sender="traveller"
        ))  # fmt: skip
        queued = Queued(session_id=session_id, id=message_id)
        return JSONResponse(queued.model_dump(by_alias=True), status_code=202)

    @router.get("/state")
    async def state(
        request: Request,
        session_id: Annotated[str, Query(alias="sessionId", pattern=SESSION_ID_PATTERN)],
    ) -> JSONResponse:
        """Everything the planner knows about a session, from its agents' states."""
        handles = {kind: context.agent(request, "read", kind, session_id)
                   for kind in ("session", "conversation", "travel")}  # fmt: skip
        try:
            session = (await handles["session"].state_view()).model_dump(mode="json")
        except AgentNotFound:
            raise SessionNotFound(f"no session {session_id!r}") from None
        conversation, travel, approvals, reminders = await asyncio.gather(
            _state(handles["conversation"]), _state(handles["travel"]),
            _or_empty(handles["travel"].approvals()), _or_empty(handles["travel"].schedules()),
        )  # fmt: skip
        return JSONResponse(_session_view(session_id, session, conversation, travel,
                                          approvals, reminders))  # fmt: skip

    @router.get("/travel", include_in_schema=False)
    async def page_root() -> RedirectResponse:
        return RedirectResponse("/travel/")

    assets = {path.name: path for path in STATIC.iterdir() if path.is_file()}

    @router.get("/travel/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(assets["index.html"])

    @router.get("/travel/{asset}", include_in_schema=False)
    async def asset(asset: str) -> FileResponse:
        found = assets.get(asset)
        if found is None:
            raise AgentNotFound(f"no file {asset[:100]!r} in the planner's page")
        return FileResponse(found)

    return router


async def _state(agent: AgentHandle) -> dict[str, Any] | None:
    """The agent's state view as JSON (None while it does not exist)."""
    try:
        return (await agent.state_view()).model_dump(mode="json")
    except AgentNotFound:
        return None


async def _or_empty(read: Any) -> list[dict[str, Any]]:
    try:
        return [item.model_dump(mode="json") for item in await read]
    except AgentNotFound:
        return []


def _session_view(
    session_id: str,
    session: dict[str, Any],
    conversation: dict[str, Any] | None,
    travel: dict[str, Any] | None,
    approvals: list[dict[str, Any]],
    reminders: list[dict[str, Any]],
) -> dict[str, Any]:
    talk = (conversation or {}).get("state") or {}
    plan = (travel or {}).get("state") or {}
    return {
        "sessionId": session_id,
        "session": session["state"],
        "transcript": talk.get("transcript", []),
        "summary": talk.get("summary"),
        "trip": plan.get("trip"),
        "itinerary": plan.get("itinerary", []),
        "notices": plan.get("notices", []),
        "approvals": approvals,
        "reminders": reminders,
        "versions": {
            "session": session["version"],
            "conversation": (conversation or {}).get("version", 0),
            "travel": (travel or {}).get("version", 0),
        },
    }


__all__ = ["ChatBody", "ChatReply", "MessageBody", "Queued", "gateway_routes"]
