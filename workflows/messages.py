"""Boundary types: what crosses the wire between callers, agent workflows and activities.

This module is imported by the client, the workflows (inside the Temporal sandbox) and the
activities, so it holds pydantic models only: no I/O, no clocks, no Temporal imports.

These models are durable contracts. A long-lived agent's history holds old payloads for months:
add fields only with defaults; never rename or retype one.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, JsonValue, field_validator

#: Default cap on the text of one message; agent types may lower or raise it.
MAX_TEXT_CHARS = 32_768
#: How much of a message or reply text an event keeps (the inbox keeps the whole text).
EVENT_PREVIEW_CHARS = 280


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


# --------------------------------------------------------------------------- messages


class Message(_Model):
    """One message into an agent's inbox (signal `message`, update `ask`)."""

    text: str = Field(min_length=1)
    sender: str | None = None
    id: str | None = Field(default=None, min_length=1, max_length=200)
    data: JsonValue | None = None

    @field_validator("text")
    @classmethod
    def _not_blank(cls, text: str) -> str:
        if not text.strip():
            raise ValueError("text must not be blank")
        return text


class AskReply(_Model):
    """What `ask` returns: the agent's reply and the state version it produced."""

    id: str
    reply: str | None
    version: int


# --------------------------------------------------------------------------- wakes
# Everything that can wake an agent goes through one inbox and one loop.


class MessageWake(_Model):
    kind: Literal["message"] = "message"
    message: Message
    #: True when a caller waits for the reply (update `ask`), False for signal `message`.
    awaited: bool = False
    received_at: datetime


class RollbackWake(_Model):
    kind: Literal["rollback"] = "rollback"
    request_id: str
    to_version: int
    received_at: datetime
    awaited: bool = True


Wake = Annotated[MessageWake | RollbackWake, Field(discriminator="kind")]


# --------------------------------------------------------------------------- events
# The agent's event log: bounded, offset-addressed, followable. Offsets start at 1 and keep
# increasing across continue-as-new, so `after=0` means "from the beginning".


class _Event(_Model):
    offset: int
    at: datetime


class ReceivedEvent(_Event):
    kind: Literal["received"] = "received"
    message_id: str
    sender: str | None = None
    text: str
    awaited: bool = False


class TurnEvent(_Event):
    kind: Literal["turn"] = "turn"
    message_id: str
    version: int
    reply: str | None = None


class TurnFailedEvent(_Event):
    kind: Literal["turn_failed"] = "turn_failed"
    message_id: str
    error_type: str
    error: str
    #: The version the state was restored to.
    version: int


class RolledBackEvent(_Event):
    kind: Literal["rolled_back"] = "rolled_back"
    to_version: int
    version: int


class RejectedEvent(_Event):
    """A signal whose payload was not a valid message (signals cannot be refused, so the
    rejection is recorded here instead)."""

    kind: Literal["rejected"] = "rejected"
    error: str


class ContinuedAsNewEvent(_Event):
    kind: Literal["continued_as_new"] = "continued_as_new"
    reason: str
    carried_wakes: int


Event = Annotated[
    ReceivedEvent
    | TurnEvent
    | TurnFailedEvent
    | RolledBackEvent
    | RejectedEvent
    | ContinuedAsNewEvent,
    Field(discriminator="kind"),
]


def preview(text: str | None) -> str | None:
    """Shorten a text for the event log (the inbox keeps the whole text)."""
    if text is None or len(text) <= EVENT_PREVIEW_CHARS:
        return text
    return text[: EVENT_PREVIEW_CHARS - 1] + "…"


# --------------------------------------------------------------------------- requests


class EventsQuery(_Model):
    """Query `events`: events with offset > `after`, oldest first."""

    after: int = Field(default=0, ge=0)
    limit: int | None = Field(default=None, ge=1, le=1000)


class WaitEventsRequest(_Model):
    """Update `wait_events`: long-poll until events after `after` exist, or the timeout."""

    after: int = Field(default=0, ge=0)
    timeout_seconds: float | None = Field(default=None, gt=0, le=600)
    limit: int | None = Field(default=None, ge=1, le=1000)


class EventsPage(_Model):
    events: list[Event]
    #: Pass this as `after` to continue where this page ended.
    next_after: int
    #: Oldest offset still retained; events before it were dropped from the bounded log.
    oldest_offset: int
    #: How many requested events were already dropped (0 unless the reader fell behind).
    missed: int = 0


class RollbackRequest(_Model):
    """Update `rollback`: restore a kept version (this is itself a new version)."""

    version: int = Field(ge=0)
    id: str | None = Field(default=None, min_length=1, max_length=200)


class RollbackResult(_Model):
    restored_version: int
    version: int


class StateView(_Model):
    """Query `state`: the last committed state and its version."""

    version: int
    state: dict[str, JsonValue]
    versions_kept: list[int] = []
    busy: bool = False
    inbox: int = 0


# --------------------------------------------------------------------------- continue-as-new


class Snapshot(_Model):
    version: int
    state: dict[str, JsonValue]


class SeenMessage(_Model):
    id: str
    reply: str | None
    version: int


class AgentStart(_Model):
    """The agent workflow's input: empty for a new agent, the carried state after
    continue-as-new. Every field has a default, so `{}` starts an agent from the CLI."""

    snapshots: list[Snapshot] = []
    inbox: list[Wake] = []
    seen: list[SeenMessage] = []
    events: list[Event] = []
    next_offset: int = Field(default=1, ge=1)
    #: How many runs this agent has had before this one.
    generation: int = 0
