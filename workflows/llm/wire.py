"""Boundary types of the LLM layer: the conversation, model calls and tool calls.

Light on purpose (pydantic only, no I/O, no Temporal imports): the agent workflow, the
activities and the client all import it, and the worker passes it through the sandbox.

These models are durable contracts: a running agent's history and state hold them for months.
Add fields only with defaults; never rename or retype one.

The model activity does not receive the conversation as its input. Its input (`ModelCall`) is
a reference: the agent's workflow and run id, a call id, and a digest of the request. The
activity reads the request (`ModelRequest`) with the `llm_context` query on the waiting
workflow, and checks the digest. So the history bytes a model call adds are those of the
reference and of the model's response, whatever the length of the conversation. (A request
smaller than a fixed cap, like the first message of a conversation, travels inline and saves
the query's round trip; the cap keeps the bound.)
"""

from __future__ import annotations

import hashlib
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, JsonValue

from perennial.workflows.messages import TokenUsage

#: Name of the query the model activity reads its request with.
LLM_CONTEXT_QUERY = "llm_context"
#: Activity type of the model call.
MODEL_ACTIVITY = "llm_complete"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


# --------------------------------------------------------------------------- conversation


class ToolCall(_Model):
    """One function call the model asked for; `arguments` is JSON text exactly as it came."""

    id: str
    name: str
    arguments: str = "{}"


class SystemItem(_Model):
    role: Literal["system"] = "system"
    content: str


class UserItem(_Model):
    role: Literal["user"] = "user"
    content: str
    #: The message id that brought this text in (not sent to the model).
    message_id: str | None = None


class AssistantItem(_Model):
    role: Literal["assistant"] = "assistant"
    content: str | None = None
    tool_calls: list[ToolCall] = []


class ToolItem(_Model):
    role: Literal["tool"] = "tool"
    tool_call_id: str
    content: str
    #: The tool's name (not sent to the model; for people reading the state).
    name: str | None = None


ChatItem = Annotated[SystemItem | UserItem | AssistantItem | ToolItem, Field(discriminator="role")]


def item_chars(item: SystemItem | UserItem | AssistantItem | ToolItem) -> int:
    """The size of an item, in characters, as the context window counts it."""
    size = len(item.content or "")
    if isinstance(item, AssistantItem):
        size += sum(len(call.name) + len(call.arguments) for call in item.tool_calls)
    return size


# --------------------------------------------------------------------------- model call


class FunctionSchema(_Model):
    name: str
    description: str = ""
    parameters: dict[str, JsonValue]


class ToolDefinition(_Model):
    """A tool as the Chat Completions API receives it (`tools=[...]`)."""

    type: Literal["function"] = "function"
    function: FunctionSchema


class ModelSettings(_Model):
    """Sampling settings of an agent type; `None` leaves the server's default."""

    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, gt=0, le=1)
    max_tokens: int | None = Field(default=None, ge=1)
    seed: int | None = None
    stop: list[str] | None = None
    parallel_tool_calls: bool | None = None
    tool_choice: Literal["auto", "none", "required"] | None = None
    #: Extra JSON fields for servers that take more (sent as they are).
    extra_body: dict[str, JsonValue] | None = None
    #: Stream the answer (`stream=True`): callers of `ask_stream` see it as it is written
    #: (see `StreamProgress`). What enters history is the same either way.
    stream: bool = True


class ModelRequest(_Model):
    """Everything the model call sends, read by the activity through the `llm_context` query."""

    #: None: the worker's default model (`OPENAI_MODEL`).
    model: str | None = None
    messages: list[ChatItem]
    tools: list[ToolDefinition] = []
    settings: ModelSettings = ModelSettings()

    def digest(self) -> str:
        """A fingerprint of the request; workflow and activity compute it the same way."""
        return digest(self.model_dump_json())


def digest(body: str) -> str:
    """The fingerprint of a request's JSON (`ModelRequest.digest`)."""
    return hashlib.sha256(body.encode()).hexdigest()


class ContextQuery(_Model):
    """Input of query `llm_context`: which model call's request to return."""

    call_id: str


class ModelCall(_Model):
    """Input of the model activity: a reference to the request, never the request itself."""

    agent_id: str
    run_id: str
    call_id: str
    digest: str
    step: int = Field(ge=1)
    model: str | None = None
    #: Size of the request (for people reading the history; the request stays in the workflow).
    messages: int = 0
    chars: int = 0
    #: A small request travels inline instead (at most the agent type's
    #: `inline_request_max_bytes`, so history per call stays bounded by a constant).
    request: ModelRequest | None = None
    #: The wake (message id, alarm key, ...) whose turn makes this call: stream readers
    #: find their turn's model call by it.
    turn: str | None = None


class ModelResponse(_Model):
    """What the model activity returns (this is what enters history: O(response))."""

    message: AssistantItem
    usage: TokenUsage = TokenUsage()
    finish_reason: str | None = None
    #: The model that answered, as the server reported it.
    model: str
    attempt: int = 1
    duration_ms: int = 0
    #: What the call cost by the worker's price table (None: the model has no price there).
    cost_usd: float | None = None


class StreamProgress(_Model):
    """The heartbeat detail of a streaming model call: everything written so far.

    Deltas never enter history: the activity heartbeats this (throttled by the worker), the
    server keeps only the newest, and readers (`AgentHandle.ask_stream`, the gateway) read it
    from the pending activity and diff by length. Cumulative, so a reader that missed some
    heartbeats loses nothing; a new attempt starts again from empty text."""

    turn: str | None = None
    step: int = 1
    #: The activity attempt that wrote it (the server keeps a failed attempt's last details
    #: until the next attempt heartbeats: readers must not take them for the new one's).
    attempt: int = 1
    text: str = ""
    #: Tool calls as far as they have been written (arguments may be incomplete JSON).
    tool_calls: list[ToolCall] = []


#: Name of the query that returns a running (or the last) turn's model answers, step by step.
TURN_STEPS_QUERY = "turn_steps"


class TurnStepsQuery(_Model):
    turn: str = Field(min_length=1, max_length=200)


class TurnSteps(_Model):
    """The model's answers in a turn so far, one per step (what stream readers complete a
    step's text and tool calls from once the step's call has returned)."""

    turn: str
    steps: list[AssistantItem] = []


class ModelFailure(StrEnum):
    """Stable `ApplicationError.type`s of the model activity."""

    # Retryable: Temporal retries them (honouring `retry-after`).
    RATE_LIMITED = "ModelRateLimited"  # 429
    SERVER_ERROR = "ModelServerError"  # 5xx
    TIMEOUT = "ModelTimeout"  # 408, or no response in time
    CONFLICT = "ModelConflict"  # 409
    CONNECTION = "ModelConnectionError"  # could not reach the server
    CONTEXT_UNAVAILABLE = "ModelContextUnavailable"  # the llm_context query failed
    CONTEXT_MISMATCH = "ModelContextMismatch"  # the request's digest did not match
    INVALID_RESPONSE = "ModelInvalidResponse"  # the server's answer was not a completion
    # Non-retryable: the same request cannot succeed.
    BAD_REQUEST = "ModelBadRequest"  # 400, 422, other 4xx
    AUTHENTICATION = "ModelAuthenticationFailed"  # 401, 403
    NOT_FOUND = "ModelNotFound"  # 404 (unknown model or path)
    NOT_CONFIGURED = "ModelNotConfigured"  # no endpoint or key configured on the worker

    @property
    def retryable(self) -> bool:
        return self in _RETRYABLE


_RETRYABLE = {
    ModelFailure.RATE_LIMITED,
    ModelFailure.SERVER_ERROR,
    ModelFailure.TIMEOUT,
    ModelFailure.CONFLICT,
    ModelFailure.CONNECTION,
    ModelFailure.CONTEXT_UNAVAILABLE,
    ModelFailure.CONTEXT_MISMATCH,
    ModelFailure.INVALID_RESPONSE,
}


class ModelFailureDetail(_Model):
    """The detail attached to a model activity failure."""

    status_code: int | None = None
    attempt: int = 1


# --------------------------------------------------------------------------- tool activities


class ToolActivityInput(_Model):
    """Input of an activity tool: arguments already validated against the tool's schema."""

    agent_id: str
    call_id: str
    arguments: dict[str, JsonValue] = {}


class ToolActivityResult(_Model):
    """What an activity tool returns: the text the model sees."""

    content: str
    #: True when the tool reported a failure to the model (`ToolError`).
    is_error: bool = False
    attempt: int = 1


class ToolFailureDetail(_Model):
    """The detail attached to an activity tool's failure (which attempt failed)."""

    attempt: int = 1
