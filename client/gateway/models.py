"""The gateway's request and response bodies (its OpenAPI schema is built from these)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, JsonValue

from perennial.client.agents import AgentSummary
from perennial.workflows.messages import BusyPolicy

#: The longest an HTTP or socket `ask`/`call` waits for the agent's reply.
MAX_WAIT_SECONDS = 300.0


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class MessageBody(_Body):
    """A message into the agent's inbox. `id` makes a retry safe: a repeated id is applied
    once (the gateway makes one up when it is missing)."""

    text: str
    sender: str | None = None
    id: str | None = None
    data: JsonValue = None
    #: What it does if a turn is running when it arrives (None: the agent type's policy).
    on_busy: BusyPolicy | None = None


class AskBody(MessageBody):
    #: Seconds to wait for the reply (504 after it, the message still applied later).
    timeout: float = Field(default=60.0, gt=0, le=MAX_WAIT_SECONDS)


class CallBody(_Body):
    """A call of one of the agent type's callable methods."""

    args: dict[str, JsonValue] = {}
    id: str | None = None
    sender: str | None = None
    timeout: float = Field(default=60.0, gt=0, le=MAX_WAIT_SECONDS)


class RollbackBody(_Body):
    version: int


class StopBody(_Body):
    """Stop the running turn (only if it is `turn`, the message id of its ask, when given)."""

    reason: str | None = None
    turn: str | None = None


class ForkBody(_Body):
    """A new agent of the same type, `name`, from this one's state at `version` (default:
    the current one); `with_schedules` copies its schedules too."""

    name: str
    version: int | None = Field(default=None, ge=0)
    with_schedules: bool = False


class DecideBody(_Body):
    approve: bool
    comment: str | None = None
    #: Who decides; defaults to the name of the caller's token (or "gateway" when open).
    decided_by: str | None = None


class Accepted(BaseModel):
    id: str


class AgentList(BaseModel):
    agents: list[AgentSummary]


class Health(BaseModel):
    status: str
    temporal: str
    workers: int
    reason: str | None = None


class MethodInfo(BaseModel):
    name: str
    description: str | None = None
    parameters: dict[str, Any]
    returns: dict[str, Any]


class AgentTypeInfo(BaseModel):
    name: str
    description: str | None = None
    callable_methods: list[MethodInfo] = []


class AgentTypes(BaseModel):
    types: list[AgentTypeInfo]


class ErrorDetail(BaseModel):
    model_config = ConfigDict(extra="allow")

    type: str
    message: str


class ErrorBody(BaseModel):
    error: ErrorDetail


__all__ = [
    "Accepted",
    "AgentList",
    "AgentTypeInfo",
    "AgentTypes",
    "AskBody",
    "CallBody",
    "DecideBody",
    "ErrorBody",
    "ForkBody",
    "Health",
    "MessageBody",
    "MethodInfo",
    "RollbackBody",
    "StopBody",
]
