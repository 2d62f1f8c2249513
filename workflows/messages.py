"""Boundary types: what crosses the wire between callers, agent workflows and activities.

This module is imported by the client, the workflows (inside the Temporal sandbox) and the
activities, so it holds pydantic models only: no I/O, no clocks, no Temporal imports.

These models are durable contracts. A long-lived agent's history holds old payloads for months:
add fields only with defaults; never rename or retype one.
"""

from __future__ import annotations

import base64
import json
from datetime import date, datetime
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    JsonValue,
    StringConstraints,
    field_validator,
    model_validator,
)
from pydantic_core import to_json

#: Default cap on the text of one message; agent types may lower or raise it.
MAX_TEXT_CHARS = 32_768
#: How much of a message or reply text an event keeps (the inbox keeps the whole text).
EVENT_PREVIEW_CHARS = 280


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


# --------------------------------------------------------------------------- names and ids
# Every id that reaches a Temporal command (a workflow id to signal, a timer summary) is
# bounded and printable before it is accepted: a workflow id over the server's limit fails the
# workflow task that uses it, and the input that caused it stays in history for good.

_PRINTABLE = r"^[^\x00-\x1f\x7f]+$"
#: An agent type: a workflow type name (no "/", which separates it from the agent's name).
AgentTypeName = Annotated[
    str, StringConstraints(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_.:-]+$")
]
#: An agent's name (the part of its workflow id after the type).
AgentName = Annotated[str, StringConstraints(min_length=1, max_length=200, pattern=_PRINTABLE)]
#: An agent's workflow id, `{type}/{name}`.
AgentId = Annotated[
    str,
    StringConstraints(max_length=301, pattern=r"^[A-Za-z0-9_.:-]{1,100}/[^\x00-\x1f\x7f]{1,200}$"),
]
#: A caller-chosen id: message, request, schedule, approval, correlation and task ids.
RequestId = Annotated[str, StringConstraints(min_length=1, max_length=200, pattern=_PRINTABLE)]
#: A capability: a secret an agent issued for one conversation with another agent (an ask,
#: a child's task, an observation) that the other side must present to be believed. Drawn
#: from the workflow's seeded random generator; never returned by a query.
Token = Annotated[str, StringConstraints(min_length=32, max_length=32, pattern=r"^[0-9a-f]+$")]
#: A text another agent sent back (a reply, a child's result, an error).
ReportText = Annotated[str, StringConstraints(max_length=MAX_TEXT_CHARS)]
#: A callable method's name: an ASCII identifier (what `callable_method` accepts).
MethodName = Annotated[
    str, StringConstraints(min_length=1, max_length=100, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
]


# --------------------------------------------------------------------------- messages


class ReplyTo(_Model):
    """Set on a message one agent asks another (`ask_agent`): the receiving agent signals
    `agent_reply` with its answer to `asker_id`, naming `correlation_id` and `token`."""

    asker_id: AgentId
    correlation_id: RequestId
    #: The asker accepts an answer only with this token.
    token: Token | None = None


class MethodCall(_Model):
    """Set on a message that calls one of the agent type's callable methods
    (`perennial.callable_method`): the turn runs the method instead of `on_message`."""

    method: MethodName
    #: The arguments by parameter name, as JSON; validated against the method's signature.
    args: dict[str, JsonValue] = {}


#: What happens to a message that arrives while the agent is running a turn (see
#: `workflows.turn_control`): wait its turn; stop the running turn and go next; join the
#: running turn at its next model or tool step; become one turn with the other messages
#: queued meanwhile; or be refused (`TurnInProgress`).
BusyPolicy = Literal["queue", "interrupt", "steer", "merge", "reject"]


class Message(_Model):
    """One message into an agent's inbox (signal `message`, update `ask`)."""

    text: str = Field(min_length=1)
    sender: str | None = Field(default=None, max_length=400)
    id: RequestId | None = None
    data: JsonValue | None = None
    reply_to: ReplyTo | None = None
    #: A method call: its turn's reply is the method's result as JSON text.
    call: MethodCall | None = None
    #: What to do if a turn is running when it arrives (None: the agent type's policy).
    on_busy: BusyPolicy | None = None

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


class CallRequest(_Model):
    """Update `call`: call a callable method; it is applied as a turn, like a message (a
    repeated `id` gets the first call's result without applying it again)."""

    method: MethodName
    args: dict[str, JsonValue] = {}
    id: RequestId | None = None
    sender: str | None = Field(default=None, max_length=400)

    def as_message(self) -> Message:
        """The message that carries this call through the inbox (its text labels it)."""
        return Message(
            text=f"call {self.method}",
            sender=self.sender,
            id=self.id,
            call=MethodCall(method=self.method, args=self.args),
        )


class CallReply(_Model):
    """What update `call` returns: the method's result as JSON and the version it produced."""

    id: str
    method: str
    result: JsonValue
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


class AlarmWake(_Model):
    """A schedule fell due. Recurring schedules that missed several due times (no worker was
    running, or the agent was busy) fire once, with the count of the times they missed."""

    kind: Literal["alarm"] = "alarm"
    schedule_id: str
    payload: str
    #: The due time this alarm is for (the latest one, when earlier ones were missed).
    due_at: datetime
    #: When the agent took the alarm in; `fired_at - due_at` is how late it was.
    fired_at: datetime
    #: Earlier due times of the same schedule that passed unfired and are folded into this one
    #: alarm (counted up to `MISSED_COUNT_LIMIT`).
    missed: int = 0
    #: The earliest due time this alarm stands for (`due_at` unless some were missed).
    first_due_at: datetime | None = None
    created_by: str | None = None

    @property
    def key(self) -> str:
        """Identifies this firing in the event log (as the turn's message id)."""
        return f"alarm:{self.schedule_id}@{self.due_at.isoformat()}"

    def as_message(self) -> Message:
        """The alarm as a message from sender `alarm:<schedule id>` whose text is the payload:
        what an agent type that only implements `on_message` receives."""
        return Message(
            text=self.payload,
            sender=f"alarm:{self.schedule_id}",
            id=self.key,
            data={
                "schedule_id": self.schedule_id,
                "due_at": self.due_at.isoformat(),
                "fired_at": self.fired_at.isoformat(),
                "missed": self.missed,
            },
        )


# Sub-agents (workflows/children.py): a parent starts a child agent with a task; the child
# reports how the task went with signal `child_finished` to its parent's workflow id.

#: How a child's task ended.
ChildStatus = Literal["completed", "failed", "cancelled", "terminated", "timed_out"]


class TaskAssignment(_Model):
    """A spawned child's task, in its start input (and carried until it is reported)."""

    #: The parent's workflow id: the child reports to whatever run of it is current.
    parent_id: AgentId
    task_id: RequestId
    message: Message
    #: "task": the child completes once it has answered; "named": it answers, reports and
    #: lives on as an ordinary agent.
    mode: Literal["task", "named"] = "task"
    #: The parent believes a report of this task only with this token.
    token: Token | None = None


class ChildRecord(_Model):
    """A child agent whose task is in flight (query `children`; carried across
    continue-as-new)."""

    child_id: str
    agent_type: str
    name: str
    task_id: str
    task: str
    mode: Literal["task", "named"] = "task"
    started_at: datetime


class ChildInFlight(ChildRecord):
    """A child's task as its parent keeps it (carried across continue-as-new): the record
    the `children` query shows, and the token a report must carry."""

    token: Token


class ChildReport(_Model):
    """Signal `child_finished`: a child tells its parent how its task ended."""

    child_id: AgentId
    task_id: RequestId
    status: ChildStatus
    result: ReportText | None = None
    error: ReportText | None = None
    error_type: str | None = Field(default=None, max_length=200)
    #: The token of the task (from the child's `TaskAssignment`).
    token: Token | None = None


class ChildFinishedWake(_Model):
    kind: Literal["child_finished"] = "child_finished"
    child: ChildRecord
    report: ChildReport
    received_at: datetime

    @property
    def key(self) -> str:
        """Identifies this wake's turn in the event log."""
        return f"child:{self.child.child_id}:{self.child.task_id}"

    def as_message(self) -> Message:
        """The report as a message from sender `child:<child id>`: what an agent type that
        only implements `on_message` receives."""
        report = self.report
        text = report.result if report.status == "completed" else report.error
        return Message(
            text=f"[child {self.child.child_id} {report.status}] {text or '(no text)'}",
            sender=f"child:{self.child.child_id}",
            id=self.key,
            data={
                "child_id": self.child.child_id,
                "task_id": self.child.task_id,
                "status": report.status,
                "result": report.result,
                "error": report.error,
                "error_type": report.error_type,
            },
        )


# Agents talking to agents (workflows/messaging.py): `send_to_agent` delivers a message by
# signal-with-start through an activity; `ask_agent` also sets `reply_to`, and the answer comes
# back as signal `agent_reply`, or the ask times out.


class AgentDelivery(_Model):
    """Input of the `deliver_message` activity: signal-with-start one agent's `message`."""

    agent_type: str
    name: str
    task_queue: str
    message: Message
    sender_id: str


class PendingAsk(_Model):
    """An `ask_agent` waiting for its answer (query `asks`; carried across continue-as-new)."""

    correlation_id: str
    target_id: str
    question: str
    asked_at: datetime
    #: When the ask times out (None: never).
    deadline: datetime | None = None


class AskInFlight(PendingAsk):
    """An `ask_agent` as the asker keeps it (carried across continue-as-new): what query
    `asks` shows, and the token an answer must carry."""

    token: Token


class AgentReply(_Model):
    """Signal `agent_reply`: the answer to an `ask_agent`."""

    correlation_id: RequestId
    from_id: AgentId
    status: Literal["answered", "failed"]
    reply: ReportText | None = None
    error: ReportText | None = None
    error_type: str | None = Field(default=None, max_length=200)
    #: The token from the question's `reply_to`.
    token: Token | None = None


class AgentReplyWake(_Model):
    kind: Literal["agent_reply"] = "agent_reply"
    ask: PendingAsk
    #: "timed_out": no answer came before the ask's deadline (`error_type` AskAgentTimedOut).
    status: Literal["answered", "failed", "timed_out"]
    reply: str | None = None
    error: str | None = None
    error_type: str | None = None
    received_at: datetime

    @property
    def key(self) -> str:
        return f"reply:{self.ask.correlation_id}"

    def as_message(self) -> Message:
        """The answer as a message from sender `agent:<target id>`."""
        body = self.reply if self.status == "answered" else self.error
        return Message(
            text=f"[{self.status} by {self.ask.target_id}] {body or '(no text)'}",
            sender=f"agent:{self.ask.target_id}",
            id=self.key,
            data={
                "correlation_id": self.ask.correlation_id,
                "target_id": self.ask.target_id,
                "status": self.status,
                "reply": self.reply,
                "error": self.error,
                "error_type": self.error_type,
            },
        )


# People in the loop (workflows/approvals.py): a call that needs approval waits as a pending
# approval; update `decide` (or its deadline) turns it into an `approval` wake.


class PendingApproval(_Model):
    """A call waiting for a person (query `approvals`; carried across continue-as-new)."""

    approval_id: str
    #: What is to be approved: the tool's name, and its arguments as JSON text.
    tool: str
    arguments: str
    call_id: str | None = None
    #: The turn that asked for it.
    message_id: str | None = None
    requested_at: datetime
    #: When it is rejected on its own if nobody decided (None: never).
    deadline: datetime | None = None


class DecideRequest(_Model):
    """Update `decide`: approve or reject a pending approval. The first decision wins."""

    approval_id: str = Field(min_length=1, max_length=200)
    approve: bool
    comment: str | None = Field(default=None, max_length=4000)
    decided_by: str | None = Field(default=None, min_length=1, max_length=200)


class Decision(_Model):
    """What update `decide` returns, and what the approval wake carries."""

    approval_id: str
    approved: bool
    comment: str | None = None
    decided_by: str | None = None
    decided_at: datetime
    #: True when nobody decided before the deadline (an automatic rejection).
    by_deadline: bool = False


class ApprovalWake(_Model):
    kind: Literal["approval"] = "approval"
    approval: PendingApproval
    decision: Decision
    received_at: datetime

    @property
    def key(self) -> str:
        return f"approval:{self.approval.approval_id}"

    def as_message(self) -> Message:
        """The decision as a message from sender `approval:<approval id>`."""
        d = self.decision
        verdict = "approved" if d.approved else "rejected"
        return Message(
            text=f"[{verdict}: {self.approval.tool}] {d.comment or '(no comment)'}",
            sender=f"approval:{self.approval.approval_id}",
            id=self.key,
            data={
                "approval_id": self.approval.approval_id,
                "tool": self.approval.tool,
                "arguments": self.approval.arguments,
                "approved": d.approved,
                "comment": d.comment,
                "decided_by": d.decided_by,
                "by_deadline": d.by_deadline,
            },
        )


# Observing another agent (workflows/observing.py): the observer signals `subscribe` to the
# observed agent, which signals `peer_changed` back, at most once per debounce window.


class SubscribeRequest(_Model):
    """Signal `subscribe`: `subscriber_id` wants `peer_changed` signals from this agent. The
    observed agent believes it only once the subscriber confirms `token` (query
    `confirm_subscription`, asked by an activity), so nobody can subscribe someone else."""

    subscriber_id: AgentId
    #: "state": on new state versions; "events": on any new event in the log.
    watch: Literal["state", "events"] = "state"
    #: Changes within this many seconds are reported once.
    debounce_seconds: float = Field(default=2.0, ge=0.05, le=86_400)
    token: Token | None = None


class UnsubscribeRequest(_Model):
    """Signal `unsubscribe` (with the subscription's token)."""

    subscriber_id: AgentId
    token: Token | None = None


class Subscription(_Model):
    """An observation, as the observer keeps it (`peer_id`) and the observed agent keeps it
    (`subscriber_id`); both sides carry theirs across continue-as-new. What the
    `subscriptions` query shows; the token stays inside the agent (`Observation`)."""

    subscriber_id: str
    watch: Literal["state", "events"] = "state"
    debounce_seconds: float = 2.0
    peer_id: str
    since: datetime
    #: The observed agent's version / event offset last reported to the subscriber.
    reported_version: int = 0
    reported_offset: int = 0


class Observation(Subscription):
    """A subscription with its token, as carried across continue-as-new."""

    token: Token


class SubscriptionCheck(_Model):
    """Query `confirm_subscription`: does this agent want `peer_changed` from `peer_id`, under
    `token`? (Answers yes or no; reveals nothing.)"""

    peer_id: AgentId
    token: Token


class SubscriberCheck(_Model):
    """Input of the `confirm_subscriber` activity: ask `subscriber_id` the `check`."""

    subscriber_id: AgentId
    check: SubscriptionCheck


class PeerChange(_Model):
    """Signal `peer_changed`: the observed agent changed."""

    peer_id: AgentId
    version: int = Field(ge=0)
    last_offset: int = Field(ge=0)
    changed_at: datetime
    #: The observation's token: an observer ignores a change without it.
    token: Token | None = None


class PeerChangedWake(_Model):
    kind: Literal["peer_changed"] = "peer_changed"
    change: PeerChange
    #: How many `peer_changed` signals this one wake stands for (it coalesces those that
    #: arrived while it waited in the inbox).
    signals: int = 1
    received_at: datetime

    @property
    def key(self) -> str:
        return f"peer:{self.change.peer_id}@{self.change.last_offset}"

    def as_message(self) -> Message:
        """The change as a message from sender `peer:<peer id>`."""
        change = self.change
        return Message(
            text=f"[{change.peer_id} changed] now at version {change.version}",
            sender=f"peer:{change.peer_id}",
            id=self.key,
            data={
                "peer_id": change.peer_id,
                "version": change.version,
                "last_offset": change.last_offset,
                "signals": self.signals,
            },
        )


Wake = Annotated[
    MessageWake
    | RollbackWake
    | AlarmWake
    | ChildFinishedWake
    | AgentReplyWake
    | ApprovalWake
    | PeerChangedWake,
    Field(discriminator="kind"),
]


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


class TurnStoppedEvent(_Event):
    """A running turn was stopped (`stop`, or a message whose policy is `interrupt`)."""

    kind: Literal["turn_stopped"] = "turn_stopped"
    message_id: str
    #: Who stopped it: "stop" (a stop request) or the interrupting message's id.
    by: str
    reason: str | None = None
    #: True: the turn's work so far was kept as a new version; False: rolled back.
    kept: bool
    version: int


class SteeredEvent(_Event):
    """A message that arrived mid-turn joined the running turn (policy `steer`)."""

    kind: Literal["steered"] = "steered"
    message_id: str
    steered_id: str


class MergedEvent(_Event):
    """Messages queued during a turn became one turn (policy `merge`)."""

    kind: Literal["merged"] = "merged"
    message_id: str
    merged_ids: list[str]


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


class TokenUsage(_Model):
    """Tokens one model call used (or a sum of them)."""

    prompt_tokens: int = Field(default=0, ge=0)
    completion_tokens: int = Field(default=0, ge=0)
    total_tokens: int = Field(default=0, ge=0)

    def __add__(self, other: TokenUsage) -> TokenUsage:
        return TokenUsage(
            prompt_tokens=self.prompt_tokens + other.prompt_tokens,
            completion_tokens=self.completion_tokens + other.completion_tokens,
            total_tokens=self.total_tokens + other.total_tokens,
        )


# LLM budgets (workflows/llm/budget.py): limits on what an agent's model calls spend, and the
# ledger that counts it. The ledger is not part of the agent's state: spend is real even when
# a turn fails and is rolled back.

#: The limits a budget may set, as `BudgetExceeded.limit` and `budget_exceeded` events name them.
BudgetLimit = Literal["tokens_per_day", "tokens_total", "cost_per_day_usd", "cost_total_usd"]


class Budget(_Model):
    """Limits on an LLM agent's model calls; None: no limit. Days are UTC days. Tokens are
    prompt and completion tokens together; cost is priced by the worker's price table
    (`PERENNIAL_PRICES_FILE`)."""

    tokens_per_day: int | None = Field(default=None, ge=0)
    tokens_total: int | None = Field(default=None, ge=0)
    cost_per_day_usd: float | None = Field(default=None, ge=0, allow_inf_nan=False)
    cost_total_usd: float | None = Field(default=None, ge=0, allow_inf_nan=False)


class Spend(_Model):
    """What model calls spent (over a day, or an agent's life)."""

    prompt_tokens: int = Field(default=0, ge=0)
    completion_tokens: int = Field(default=0, ge=0)
    total_tokens: int = Field(default=0, ge=0)
    cost_usd: float = Field(default=0.0, ge=0)
    model_calls: int = Field(default=0, ge=0)
    #: Calls whose model has no price in the worker's price table (their cost is not counted).
    unpriced_calls: int = Field(default=0, ge=0)


class BudgetCarried(_Model):
    """The budget ledger an LLM agent carries across continue-as-new."""

    life: Spend = Spend()
    #: The UTC day `today` counts (None: nothing spent yet).
    day: date | None = None
    today: Spend = Spend()
    #: This agent's own budget (update `set_budget`); None: its agent type's.
    budget: Budget | None = None


class BudgetRemaining(_Model):
    """What is left of each limit (None: that limit is not set)."""

    tokens_today: int | None = None
    tokens_total: int | None = None
    cost_today_usd: float | None = None
    cost_total_usd: float | None = None


class UsageReport(_Model):
    """Query `usage` (also `StateView.usage` and the answer of update `set_budget`): what an
    LLM agent's model calls spent, the budget in force and what is left of it."""

    #: The UTC day `today` counts (the agent's clock: its last workflow task).
    day: date
    today: Spend = Spend()
    life: Spend = Spend()
    budget: Budget = Budget()
    #: Where the budget in force comes from: the agent type, or this agent (`set_budget`).
    budget_source: Literal["type", "agent"] = "type"
    remaining: BudgetRemaining = BudgetRemaining()
    #: The first limit already reached (model calls are refused), if any.
    exceeded: BudgetLimit | None = None


class SetBudgetRequest(_Model):
    """Update `set_budget`: this agent's own budget, replacing its agent type's budget whole;
    None goes back to the agent type's."""

    budget: Budget | None = None


# LLM agents (workflows/llm): the brief's built-in collections. A run is one turn (from
# `run_started` to `turn` / `turn_failed`); a step is one model call; texts are what the model
# said; tool calls are what it did; errors are what went wrong. The inbox is `received`.


class RunStartedEvent(_Event):
    kind: Literal["run_started"] = "run_started"
    message_id: str
    model: str | None = None


class StepEvent(_Event):
    """One model call of a run, with the tokens it used."""

    kind: Literal["step"] = "step"
    message_id: str
    step: int
    model: str
    usage: TokenUsage = TokenUsage()
    finish_reason: str | None = None
    #: Names of the tools the model asked for, in its order.
    tool_calls: list[str] = []
    duration_ms: int = 0
    attempts: int = 1
    #: What the call cost by the worker's price table (None: its model has no price).
    cost_usd: float | None = None


class TextEvent(_Event):
    kind: Literal["text"] = "text"
    message_id: str
    step: int
    text: str


class ToolCallEvent(_Event):
    kind: Literal["tool_call"] = "tool_call"
    message_id: str
    step: int
    call_id: str
    name: str
    arguments: str
    result: str
    ok: bool = True
    #: "workflow" (ran inside the agent, deterministically) or "activity".
    runs_in: Literal["workflow", "activity"] = "workflow"
    duration_ms: int = 0
    attempts: int = 1


class ErrorEvent(_Event):
    """What made a run fail (followed by `turn_failed`), with the tokens the run had used."""

    kind: Literal["error"] = "error"
    message_id: str
    step: int | None = None
    error_type: str
    error: str
    usage: TokenUsage = TokenUsage()


class BudgetExceededEvent(_Event):
    """A model call was refused: the agent reached a limit of its budget (the run fails with
    `BudgetExceeded` next, and its turn is rolled back)."""

    kind: Literal["budget_exceeded"] = "budget_exceeded"
    message_id: str
    limit: BudgetLimit
    spent: float
    allowed: float


class SummaryEvent(_Event):
    """Older exchanges were about to leave the context window: a model call summarised them
    (with the previous summary) into the agent's `summary`, which every later request
    carries. `ok` False: that call failed; `fallback` says what happened then ("fail": the
    turn failed and nothing was lost; "drop": the exchanges were dropped unsummarised)."""

    kind: Literal["summary"] = "summary"
    message_id: str
    #: Context items and exchanges summarised (and removed from the context).
    items: int
    exchanges: int
    #: Characters of the new summary.
    chars: int = 0
    model: str | None = None
    usage: TokenUsage = TokenUsage()
    cost_usd: float | None = None
    duration_ms: int = 0
    ok: bool = True
    error: str | None = None
    fallback: Literal["fail", "drop"] | None = None
    #: The start of the new summary.
    summary: str | None = None


class ScheduledEvent(_Event):
    """A schedule was created, or replaced one with the same id."""

    kind: Literal["scheduled"] = "scheduled"
    schedule_id: str
    #: How it falls due, for people: "in 30s", "every 60s", "cron '0 9 * * *' Europe/Paris".
    timing: str
    payload: str
    next_due: datetime
    created_by: str | None = None
    replaced: bool = False
    #: Why, when the agent did it on its own: "restored: the turn that changed it failed".
    reason: str | None = None


class ScheduleCancelledEvent(_Event):
    kind: Literal["schedule_cancelled"] = "schedule_cancelled"
    schedule_id: str
    #: Why, when the agent did it on its own: "undone: the turn that created it failed".
    reason: str | None = None


class AlarmEvent(_Event):
    """A schedule fell due and its alarm entered the inbox (the turn that applies it follows,
    as a `turn` or `turn_failed` event whose message id is `alarm:<id>@<due time>`)."""

    kind: Literal["alarm"] = "alarm"
    schedule_id: str
    payload: str
    due_at: datetime
    fired_at: datetime
    missed: int = 0
    #: When the schedule falls due next; None when it is done (one-shots after firing).
    next_due: datetime | None = None


class ChildStartedEvent(_Event):
    """This agent started a child agent with a task."""

    kind: Literal["child_started"] = "child_started"
    child_id: str
    task_id: str
    mode: Literal["task", "named"] = "task"
    task: str


class ChildFinishedEvent(_Event):
    """A child's task ended (the turn that applies it follows, message id
    `child:<child id>:<task id>`)."""

    kind: Literal["child_finished"] = "child_finished"
    child_id: str
    task_id: str
    status: ChildStatus
    result: str | None = None
    error: str | None = None


class SentToAgentEvent(_Event):
    """This agent sent a message to another (`ask_agent` sets the correlation id)."""

    kind: Literal["sent_to_agent"] = "sent_to_agent"
    target_id: str
    message_id: str
    text: str
    correlation_id: str | None = None


class AgentReplyEvent(_Event):
    """An answer to this agent's `ask_agent` arrived (or the ask timed out); the turn that
    applies it follows, message id `reply:<correlation id>`."""

    kind: Literal["agent_reply"] = "agent_reply"
    correlation_id: str
    from_id: str
    status: Literal["answered", "failed", "timed_out"]
    reply: str | None = None
    error: str | None = None


class ApprovalRequestedEvent(_Event):
    kind: Literal["approval_requested"] = "approval_requested"
    approval_id: str
    tool: str
    arguments: str
    deadline: datetime | None = None


class ApprovalDecidedEvent(_Event):
    """A pending approval was decided (the turn that applies it follows, message id
    `approval:<approval id>`)."""

    kind: Literal["approval_decided"] = "approval_decided"
    approval_id: str
    approved: bool
    comment: str | None = None
    decided_by: str | None = None
    by_deadline: bool = False


class PeerChangedEvent(_Event):
    """An agent this one observes changed (the turn that applies it follows, message id
    `peer:<peer id>@<offset>`)."""

    kind: Literal["peer_changed"] = "peer_changed"
    peer_id: str
    version: int
    last_offset: int


class SubscriptionEvent(_Event):
    """An observation began or ended; `role` says from which side."""

    kind: Literal["subscription"] = "subscription"
    role: Literal["observer", "observed"]
    peer_id: str
    active: bool


class ForkedEvent(_Event):
    """The first event of an agent forked from another (`perennial fork`): its state started
    as the source's state at `version`."""

    kind: Literal["forked"] = "forked"
    source_id: str
    version: int
    #: Schedules copied from the source (`--with-schedules`).
    schedules: int = 0


class ImportedEvent(_Event):
    """The first event of an agent imported from an export file (`perennial import`)."""

    kind: Literal["imported"] = "imported"
    source_id: str
    version: int
    exported_at: datetime | None = None
    schedules: int = 0


Event = Annotated[
    ReceivedEvent
    | TurnEvent
    | TurnFailedEvent
    | TurnStoppedEvent
    | SteeredEvent
    | MergedEvent
    | RolledBackEvent
    | RejectedEvent
    | ContinuedAsNewEvent
    | RunStartedEvent
    | StepEvent
    | TextEvent
    | ToolCallEvent
    | ErrorEvent
    | ScheduledEvent
    | ScheduleCancelledEvent
    | AlarmEvent
    | ChildStartedEvent
    | ChildFinishedEvent
    | SentToAgentEvent
    | AgentReplyEvent
    | ApprovalRequestedEvent
    | ApprovalDecidedEvent
    | PeerChangedEvent
    | SubscriptionEvent
    | BudgetExceededEvent
    | SummaryEvent
    | ForkedEvent
    | ImportedEvent,
    Field(discriminator="kind"),
]


def clip(text: str | None) -> str | None:
    """A text another agent is sent back (a reply, a result, an error), cut to what
    `ReportText` accepts, so the signal carrying it is never refused."""
    return text if text is None or len(text) <= MAX_TEXT_CHARS else text[:MAX_TEXT_CHARS]


def preview(text: str | None) -> str | None:
    """Shorten a text for the event log (the inbox keeps the whole text)."""
    if text is None or len(text) <= EVENT_PREVIEW_CHARS:
        return text
    return text[: EVENT_PREVIEW_CHARS - 1] + "…"


# --------------------------------------------------------------------------- turn streams
# What a caller streaming a turn receives (`AgentHandle.ask_stream`, the gateway's SSE and
# socket frames), each tagged with the turn's id (the message id).


class StreamPosition(_Model):
    """Where a stream reader is: resume from here after a reconnect (nothing repeated)."""

    #: Events of the agent's log already handled.
    offset: int = Field(default=0, ge=0)
    step: int = Field(default=0, ge=0)
    attempt: int = Field(default=0, ge=0)
    #: Characters of that step's text already delivered.
    chars: int = Field(default=0, ge=0)

    def token(self) -> str:
        """Compact form (an SSE event id)."""
        return f"{self.offset}.{self.step}.{self.attempt}.{self.chars}"

    @classmethod
    def parse(cls, token: str) -> StreamPosition:
        """From `token()`; ValueError when it is not one."""
        parts = token.strip().split(".")
        if len(parts) != 4 or not all(part.isdigit() for part in parts):
            raise ValueError(f"not a stream position: {token[:40]!r}")
        offset, step, attempt, chars = (int(part) for part in parts)
        return cls(offset=offset, step=step, attempt=attempt, chars=chars)


class _StreamItem(_Model):
    #: The turn's id: the message id of the ask.
    id: str
    position: StreamPosition


class DeltaItem(_StreamItem):
    """More of the answer's text, as the model writes it."""

    type: Literal["delta"] = "delta"
    step: int
    text: str


class RestartItem(_StreamItem):
    """The model call of `step` is being retried (its worker died, the server failed): text
    delivered for that step so far is void; the new attempt's text follows from its start."""

    type: Literal["restart"] = "restart"
    step: int
    attempt: int


class ToolCallItem(_StreamItem):
    """The model asked for a tool (it runs now)."""

    type: Literal["tool_call"] = "tool_call"
    step: int
    call_id: str
    name: str
    arguments: str


class ToolResultItem(_StreamItem):
    """A tool finished (`result` is shortened like the event log's)."""

    type: Literal["tool_result"] = "tool_result"
    step: int
    call_id: str
    name: str
    ok: bool
    result: str


class ReplyItem(_StreamItem):
    """The turn's answer (the whole text, as `ask` returns it): the stream's last item."""

    type: Literal["reply"] = "reply"
    reply: str | None
    version: int


StreamItem = Annotated[
    DeltaItem | RestartItem | ToolCallItem | ToolResultItem | ReplyItem,
    Field(discriminator="type"),
]


# --------------------------------------------------------------------------- requests


class EventsQuery(_Model):
    """Query `events`: events with offset > `after`, oldest first."""

    after: int = Field(default=0, ge=0)
    limit: int | None = Field(default=None, ge=1, le=1000)


class WaitEventsRequest(_Model):
    """Update `wait_events`: long-poll until events after `after` exist, or the timeout."""

    after: int = Field(default=0, ge=0)
    #: At most 60 s: a waiting update holds one of the workflow's few in-flight update slots.
    timeout_seconds: float | None = Field(default=None, gt=0, le=60)
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
    id: RequestId | None = None


class StopRequest(_Model):
    """Update `stop`: stop the turn the agent is running, if any."""

    reason: str | None = Field(default=None, max_length=400)
    #: Stop only if this wake's turn is the one running (a stop meant for a turn that already
    #: ended must not stop the next one).
    turn: RequestId | None = None


class StopResult(_Model):
    """What `stop` returns: whether a turn was stopped, which one, and the version after."""

    stopped: bool
    turn: str | None = None
    version: int


class SendReceipt(_Model):
    """What update `send` returns: the message is in the inbox (or was already applied or
    queued under its id, `queued` False), and will be applied in its turn."""

    id: str
    queued: bool


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
    #: Offset of the newest event in the log (0: none yet): where a follower starts.
    last_event_offset: int = 0
    #: The wake (message id, alarm key, ...) whose turn is running, if any.
    turn: str | None = None
    #: An LLM agent's model usage and budget (None for agents that call no model).
    usage: UsageReport | None = None


# --------------------------------------------------------------------------- schedules

#: The ways to say when a schedule falls due; a request sets exactly one of them.
TIMING_FIELDS = ("after_seconds", "at", "every_seconds", "cron")
#: Longest delay or interval accepted (about 100 years).
MAX_SCHEDULE_SECONDS = 3_200_000_000


class ScheduleRequest(_Model):
    """Update `schedule`: create the schedule `id`, or replace the one with that id.

    Exactly one timing field: `after_seconds` (once, that long from now); `at` (once, at an
    ISO-8601 time; one without an offset is read in `timezone`, else UTC); `every_seconds`
    (recurring, the first time that long from now); `cron` (recurring: 5 fields, or 6 with
    seconds last, read in `timezone`, else UTC). When an alarm falls due, the agent is woken
    with `payload` (for an LLM agent, the action text it acts on).
    """

    id: str = Field(min_length=1, max_length=200)
    payload: str = Field(min_length=1)
    after_seconds: float | None = Field(default=None, gt=0, le=MAX_SCHEDULE_SECONDS)
    at: datetime | None = None
    every_seconds: float | None = Field(default=None, gt=0, le=MAX_SCHEDULE_SECONDS)
    cron: str | None = Field(default=None, min_length=1, max_length=200)
    timezone: str | None = Field(default=None, min_length=1, max_length=64)
    #: Who asked for it ("client", "cli", "model", a person's name); kept with the schedule.
    created_by: str | None = Field(default=None, min_length=1, max_length=200)

    @field_validator("id", "payload")
    @classmethod
    def _not_blank_field(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be blank")
        return value

    @model_validator(mode="after")
    def _one_timing(self) -> ScheduleRequest:
        given = [name for name in TIMING_FIELDS if getattr(self, name) is not None]
        if len(given) != 1:
            found = ", ".join(given) if given else "none"
            raise ValueError(f"give exactly one of {', '.join(TIMING_FIELDS)} (got {found})")
        if self.timezone is not None and self.cron is None and self.at is None:
            raise ValueError("timezone applies only to cron and at")
        return self

    @property
    def kind(self) -> Literal["after", "at", "every", "cron"]:
        if self.after_seconds is not None:
            return "after"
        if self.at is not None:
            return "at"
        if self.every_seconds is not None:
            return "every"
        return "cron"

    @property
    def recurring(self) -> bool:
        return self.every_seconds is not None or self.cron is not None


class Schedule(ScheduleRequest):
    """One pending schedule of an agent: what query `schedules` lists and continue-as-new
    carries. Its due times are absolute (UTC), so a new run or a returning worker fires each
    due time once."""

    created_at: datetime
    #: When it falls due next.
    next_due: datetime
    #: The last due time it fired for (None until it first fires).
    last_fired_due: datetime | None = None
    #: How many alarms it has raised (missed due times folded into one count once).
    fired: int = 0


class ScheduleResult(_Model):
    """What update `schedule` returns."""

    schedule: Schedule
    #: True when a schedule with this id existed and was replaced.
    replaced: bool = False


class CancelScheduleRequest(_Model):
    """Update `cancel_schedule`."""

    id: str = Field(min_length=1, max_length=200)


class ScheduleList(_Model):
    """Query `schedules`: the pending schedules, soonest first."""

    schedules: list[Schedule]
    #: How many schedules this agent type accepts at once.
    max_schedules: int


# --------------------------------------------------------------------------- the SQL database

#: Longest SQL text accepted from outside (query `sql`, the model's tools).
MAX_SQL_CHARS = 20_000
#: Most parameters one statement takes (SQLite's own default limit).
MAX_SQL_PARAMS = 999


class SqlBlob(_Model):
    """A BLOB value on the wire: its bytes as base64 (JSON has no bytes)."""

    blob: str = Field(max_length=4 * 1024 * 1024)

    @field_validator("blob")
    @classmethod
    def _is_base64(cls, value: str) -> str:
        try:
            base64.b64decode(value, validate=True)
        except ValueError:
            raise ValueError("must be base64") from None
        return value

    @classmethod
    def of(cls, data: bytes) -> SqlBlob:
        return cls.model_construct(blob=base64.b64encode(data).decode("ascii"))

    @property
    def data(self) -> bytes:
        return base64.b64decode(self.blob)


#: One SQLite value on the wire: NULL, an integer, a real, text, or a BLOB.
SqlValue = None | bool | int | float | str | SqlBlob


class SqlRequest(_Model):
    """Query `sql`: one read-only statement on the agent's database, with `?` parameters;
    at most `max_rows` rows come back."""

    query: str = Field(min_length=1, max_length=MAX_SQL_CHARS)
    params: list[SqlValue] = Field(default=[], max_length=MAX_SQL_PARAMS)
    max_rows: int = Field(default=100, ge=1, le=10_000)


class SqlRows(_Model):
    """What query `sql` returns: the column names and the rows (BLOBs as `{"blob": base64}`);
    `truncated`: more rows (or more bytes than a reply holds) were left out."""

    columns: list[str]
    rows: list[list[SqlValue]]
    truncated: bool = False


class SqlCarried(_Model):
    """What the SQL part carries through continue-as-new: the agent's database as it was at
    `base_version` (SQLite's serialized file, zlib, base64; None: empty), and the changes of
    the later versions (`log`: JSON, zlib, base64; see `workflows.sql`). Together they restore
    every kept version. All defaults: an empty database at every version."""

    base_version: int = Field(default=0, ge=0)
    base: str | None = None
    log: str | None = None


# --------------------------------------------------------------------------- continue-as-new


class Snapshot(_Model):
    """One committed version of an agent's state."""

    version: int
    #: The state as JSON text, not parsed data. An agent keeps up to `max_versions` of these
    #: and carries them through continue-as-new: as parsed data, building them (every turn)
    #: and decoding them (every wake-up of a hibernated agent) cost one Python object per
    #: element of every kept version. As text, both are one pass in pydantic-core, and only
    #: the version that is restored or read is ever parsed.
    state_json: str
    #: The agent type's `state_schema_version` when this JSON was written; an older one is
    #: migrated when it is read (see `workflows.migrations`).
    schema_version: int = Field(default=0, ge=0)

    @model_validator(mode="before")
    @classmethod
    def _accept_parsed_state(cls, data: Any) -> Any:
        # Inputs carried by runs from before the text form (and tests) give `state` parsed.
        if isinstance(data, dict) and "state" in data and "state_json" not in data:
            data = dict(data)
            data["state_json"] = to_json(data.pop("state")).decode()
        return data

    @property
    def state(self) -> dict[str, Any]:
        """The state as JSON data (parsed on every call)."""
        return json.loads(self.state_json)  # type: ignore[no-any-return]


class SeenMessage(_Model):
    id: str
    reply: str | None
    version: int


class CarriedBulk(_Model):
    """The bulky part of `AgentStart`, packed into `AgentStart.packed` (see workflows.packing)."""

    snapshots: list[Snapshot] = []
    seen: list[SeenMessage] = []
    events: list[Event] = []


class AlarmsCarried(_Model):
    """What the alarms part carries: pending schedules with their absolute due times (alarms
    already due travel in the inbox)."""

    schedules: list[Schedule] = []


class ChildrenCarried(_Model):
    """What the children part carries."""

    #: Set in a spawned child's input: its task and whom to report to.
    task: TaskAssignment | None = None
    #: Children whose tasks are in flight.
    in_flight: list[ChildInFlight] = []


class MessagingCarried(_Model):
    """What the messaging part carries: `ask_agent` requests waiting for their answers."""

    asks: list[AskInFlight] = []


class ApprovalsCarried(_Model):
    """What the approvals part carries: calls waiting for a person, and the latest decisions
    (a second `decide` is refused)."""

    pending: list[PendingApproval] = []
    decided: list[Decision] = []


class ObservingCarried(_Model):
    """What the observing part carries: agents this one observes, and the (confirmed) agents
    observing this one."""

    observing: list[Observation] = []
    observers: list[Observation] = []
    #: Subscriptions received but not confirmed yet (confirmation starts again).
    confirming: list[Observation] = []


class AgentOrigin(_Model):
    """Where a forked or imported agent started from (`AgentStart.origin`): its first event
    says so."""

    kind: Literal["forked", "imported"]
    source_id: str = Field(min_length=1, max_length=301)
    #: The source's version the new agent's state started as.
    version: int = Field(ge=0)
    exported_at: datetime | None = None
    schedules: int = Field(default=0, ge=0)


class AgentStart(_Model):
    """The agent workflow's input: empty for a new agent, everything the agent carries after
    continue-as-new. Every field has a default, so `{}` starts an agent from the CLI."""

    def wire(self) -> dict[str, Any]:
        """As sent: fields left at their defaults are left out (the input stays small and
        readable in the Web UI)."""
        # Top-level fields only: nested models keep theirs (a wake's `kind` tag has a default,
        # and the union cannot be read back without it).
        unset = {
            name
            for name, field in type(self).model_fields.items()
            if getattr(self, name) == field.get_default(call_default_factory=True)
        }
        return self.model_dump(mode="json", exclude=unset)

    #: Kept state versions, oldest first (the last is the current state).
    snapshots: list[Snapshot] = []
    #: The bulk of what continue-as-new carries (more `snapshots`, `seen` and `events`,
    #: which come before the plain fields' items), packed: see `workflows.packing`.
    packed: str | None = None
    inbox: list[Wake] = []
    seen: list[SeenMessage] = []
    events: list[Event] = []
    next_offset: int = Field(default=1, ge=1)
    #: How many runs this agent has had before this one.
    generation: int = Field(default=0, ge=0)
    alarms: AlarmsCarried = Field(default_factory=AlarmsCarried)
    children: ChildrenCarried = Field(default_factory=ChildrenCarried)
    messaging: MessagingCarried = Field(default_factory=MessagingCarried)
    approvals: ApprovalsCarried = Field(default_factory=ApprovalsCarried)
    observing: ObservingCarried = Field(default_factory=ObservingCarried)
    #: An LLM agent's budget ledger (workflows/llm/budget.py).
    budget: BudgetCarried = Field(default_factory=BudgetCarried)
    #: The agent's SQL database (workflows/sql.py).
    sql: SqlCarried = Field(default_factory=SqlCarried)
    #: Set when a fork or an import starts the agent (a first run only; never carried).
    origin: AgentOrigin | None = None


# --------------------------------------------------------------------------- fork, export, import

#: What an export file says it is, and the newest layout of it this code reads and writes.
EXPORT_FORMAT = "perennial.agent"
EXPORT_FORMAT_VERSION = 1


class ExportRequest(_Model):
    """Query `export`: the agent as an `AgentExport`; `version`: only that kept version
    (default: every kept version, the current one last)."""

    version: int | None = Field(default=None, ge=0)
    with_schedules: bool = False


class AgentExport(_Model):
    """An agent as a file (`perennial export`): its kept state versions, and optionally its
    schedules, enough to start it again under another name (`fork`) or on another server
    (`import`). Its inbox, children, pending asks, approvals and observations stay behind."""

    format: Literal["perennial.agent"] = EXPORT_FORMAT
    format_version: int = Field(default=EXPORT_FORMAT_VERSION, ge=1)
    agent_type: AgentTypeName
    source_id: AgentId
    exported_at: datetime
    #: The version the bundle starts an agent at: its last snapshot's.
    version: int = Field(ge=0)
    #: The exporting agent type's `state_schema_version`.
    state_schema_version: int = Field(default=0, ge=0)
    #: Kept versions, oldest first; each says the schema version its JSON was written with.
    snapshots: list[Snapshot] = Field(min_length=1)
    #: Pending schedules with their absolute due times (empty unless asked for).
    schedules: list[Schedule] = []
    #: The agent's SQL database at the bundle's versions (`workflows.sql`; default: empty).
    sql: SqlCarried = Field(default_factory=SqlCarried)

    @model_validator(mode="after")
    def _consistent(self) -> AgentExport:
        numbers = [snapshot.version for snapshot in self.snapshots]
        if any(later <= earlier for earlier, later in zip(numbers, numbers[1:], strict=False)):
            raise ValueError("snapshot versions must increase")
        if numbers[-1] != self.version:
            raise ValueError(f"version is {self.version} but the last snapshot is {numbers[-1]}")
        ids = [schedule.id for schedule in self.schedules]
        if len(set(ids)) != len(ids):
            raise ValueError("schedule ids must be unique")
        if not self.source_id.startswith(f"{self.agent_type}/"):
            raise ValueError(f"source_id {self.source_id!r} is not an agent of {self.agent_type}")
        return self
