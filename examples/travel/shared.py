"""What the travel planner's agents and its HTTP service share: session ids, the message that
ends a session's agents, and the planner's errors. No I/O: imported by workflow code.

Every session has one agent of each type, all named like the session: `session/{id}`,
`conversation/{id}`, `travel/{id}`, `scraper/{id}`, `trip_notes/{id}`.

Ending a session. When the session agent expires (or is closed) it sends its conversation a
message whose `data` is a `SessionEnded`; each agent that receives one from the agent that
started it empties its state, cancels its schedules, passes the message on to the agents it
started itself, and refuses later messages with `SessionClosed` (the scraper is not told: it
only caches pages, for a while). Nothing is deleted from
Temporal: the workflows stay, idle and empty, and their old histories go with the namespace's
retention.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from perennial import Message, UsageError
from perennial.client import AgentNotFound, AgentStopped

#: A session id: what the service accepts and what names each session's agents.
SESSION_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,99}$"


class SessionClosed(UsageError):
    """The session has ended (expired or closed): its agents take no more messages."""


class SessionExpired(AgentStopped):
    """The session expired or was closed; start a new one (HTTP 409)."""


class SessionNotFound(AgentNotFound):
    """No session of that id (HTTP 404)."""


class SessionEnded(BaseModel):
    """`data` of the message that tells an agent its session is over."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["session_ended"] = "session_ended"
    session_id: str = Field(min_length=1, max_length=100)
    reason: Literal["expired", "closed"] = "expired"

    def message_text(self) -> str:
        return f"session {self.session_id} {self.reason}: forget it"


def session_ended(message: Message, *, from_agents: tuple[str, ...]) -> SessionEnded | None:
    """The `SessionEnded` a message carries, if it comes from one of `from_agents` (agent ids:
    only the agent that started this one may end it)."""
    data = message.data
    if not isinstance(data, dict) or data.get("kind") != "session_ended":
        return None
    if message.sender not in {f"agent:{agent}" for agent in from_agents}:
        return None
    try:
        return SessionEnded.model_validate(data)
    except ValidationError:
        return None


__all__ = [
    "SESSION_ID_PATTERN",
    "SessionClosed",
    "SessionEnded",
    "SessionExpired",
    "SessionNotFound",
    "session_ended",
]
