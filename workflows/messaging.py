"""Agents talking to agents by name: `send_to_agent` and `ask_agent`.

`AgentWorkflow` inherits `Messaging`, so every agent type has:

* `send_to_agent(agent_type, name, text)`: fire-and-forget into another agent's inbox,
  creating that agent if needed. Returns the message id once the message is delivered.
* `ask_agent(agent_type, name, text, timeout_seconds=...)`: the same message, with a
  correlation id and `reply_to` set. Returns the correlation id at once; this agent goes on
  working. When the other agent has answered (or its turn failed), it signals `agent_reply`
  back, and this agent is woken with an `agent_reply` wake; if no answer comes before the
  deadline, the wake says `timed_out` (error type `AskAgentTimedOut`). A late answer is
  ignored: each ask wakes the asker exactly once.
* `on_agent_reply`: the hook that wake is applied with (default: to `on_message` as a message
  from sender `agent:<target id>`); query `asks` lists the asks in flight.

Why an activity for delivery. An external workflow handle (`workflow.get_external_workflow_
handle(id).signal(...)`) can only reach an agent that is already running; it cannot create
one, and workflow code has no signal-with-start. Delivery is therefore the `deliver_message`
activity (`activities/agents.py`): signal-with-start through the worker's client, retried by
Temporal, idempotent through the message id the sending workflow fixed. The answer goes back
the other way by a plain external signal: the asker is running (it waits for it), and if it
is gone there is nobody to tell. Both show in the Web UI with summaries naming both agents.

Pending asks, with absolute deadlines, are carried across continue-as-new; each new run arms
one timer per pending ask.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError

from workflows.clock import seconds_until
from workflows.errors import (
    AskAgentTimedOut,
    DeliveryFailed,
    InvalidRequest,
    from_application_error,
    parse_input,
)
from workflows.messages import (
    AgentDelivery,
    AgentReply,
    AgentReplyEvent,
    AgentReplyWake,
    AgentStart,
    AskReply,
    Message,
    PendingAsk,
    RejectedEvent,
    ReplyTo,
    SentToAgentEvent,
    Wake,
    preview,
)
from workflows.visibility import agent_id

if TYPE_CHECKING:
    from workflows.errors import TurnFailed
    from workflows.messages import Event

#: The activity that signal-with-starts another agent's `message`.
DELIVER_ACTIVITY = "deliver_message"
#: The signal an asked agent answers with.
AGENT_REPLY_SIGNAL = "agent_reply"


class Messaging:
    """Messages between agents for `AgentWorkflow` (see the module docstring)."""

    #: Default deadline of `ask_agent`.
    ask_timeout: ClassVar[timedelta] = timedelta(minutes=5)
    #: Timeouts and retries of one delivery.
    delivery_timeout: ClassVar[timedelta] = timedelta(seconds=30)
    delivery_retry_policy: ClassVar[RetryPolicy] = RetryPolicy(
        initial_interval=timedelta(milliseconds=500),
        backoff_coefficient=2.0,
        maximum_interval=timedelta(seconds=10),
        maximum_attempts=10,
    )

    if TYPE_CHECKING:  # provided by AgentWorkflow
        _inbox: deque[Wake]

        def _log(self, kind: type[Event], **fields: Any) -> int: ...  # type: ignore[valid-type]
        def _count_arrival(self, *, update: bool = False) -> None: ...
        def _parse_message(self, raw: Any) -> Message: ...
        async def on_message(self, message: Any) -> str | None: ...
        async def _run_turn(
            self, key: str, label: str, turn: Callable[[], Awaitable[str | None]]
        ) -> AskReply | TurnFailed: ...

    def _init_messaging(self, start: AgentStart) -> None:
        self._asks: dict[str, PendingAsk] = {a.correlation_id: a for a in start.asks}
        self._ask_timers: dict[str, asyncio.Task[None]] = {}
        #: Asks a running turn waits for (`ask_agent_and_wait`): their outcome lands here
        #: instead of in the inbox.
        self._awaited_asks: dict[str, AgentReplyWake | None] = {}

    # ------------------------------------------------------------------ for agent types

    async def send_to_agent(
        self, agent_type: str, name: str, text: str, *, data: Any = None
    ) -> str:
        """Deliver `text` into the inbox of `{agent_type}/{name}` (creating that agent if
        needed) and return the message id. Raises `InvalidMessage`, `UnknownAgentType`, or
        `DeliveryFailed` when retries ran out."""
        message_id = f"msg-{workflow.uuid4()}"
        await self._deliver(agent_type, name, text, message_id=message_id, data=data)
        return message_id

    async def ask_agent(
        self,
        agent_type: str,
        name: str,
        text: str,
        *,
        timeout_seconds: float | None = None,
        data: Any = None,
    ) -> PendingAsk:
        """Ask `{agent_type}/{name}` (creating it if needed) and return at once; this agent is
        woken with an `agent_reply` wake when the answer arrives or the ask times out
        (`timeout_seconds`, default `ask_timeout`). Raises like `send_to_agent`."""
        return await self._ask(agent_type, name, text, timeout_seconds=timeout_seconds, data=data)

    async def ask_agent_and_wait(
        self,
        agent_type: str,
        name: str,
        text: str,
        *,
        timeout_seconds: float | None = None,
        data: Any = None,
    ) -> AgentReplyWake:
        """Ask, and wait inside the running turn for the answer (or the timeout: status
        `timed_out`, error type `AskAgentTimedOut`); no wake is queued. The agent handles
        nothing else meanwhile: use it where the answer is the turn's answer (a router)."""
        ask = await self._ask(
            agent_type, name, text, timeout_seconds=timeout_seconds, data=data, in_turn=True
        )
        key = ask.correlation_id
        try:
            await workflow.wait_condition(lambda: self._awaited_asks.get(key) is not None)
            outcome = self._awaited_asks[key]
        finally:
            self._awaited_asks.pop(key, None)
        assert outcome is not None
        return outcome

    async def _ask(
        self,
        agent_type: str,
        name: str,
        text: str,
        *,
        timeout_seconds: float | None,
        data: Any,
        in_turn: bool = False,
    ) -> PendingAsk:
        if timeout_seconds is not None and timeout_seconds <= 0:
            raise InvalidRequest("timeout_seconds must be positive")
        correlation_id = f"ask-{workflow.uuid4()}"
        timeout = (
            timedelta(seconds=timeout_seconds) if timeout_seconds is not None else self.ask_timeout
        )
        ask = PendingAsk(
            correlation_id=correlation_id,
            target_id=agent_id(agent_type, name),
            question=preview(text) or "",
            asked_at=workflow.now(),
            deadline=workflow.now() + timeout,
        )
        reply_to = ReplyTo(asker_id=workflow.info().workflow_id, correlation_id=correlation_id)
        # Pending before delivery: an answer can come back before the activity's result does.
        self._asks[correlation_id] = ask
        if in_turn:
            self._awaited_asks[correlation_id] = None
        try:
            await self._deliver(
                agent_type, name, text, message_id=correlation_id, data=data, reply_to=reply_to
            )
        except BaseException:
            self._asks.pop(correlation_id, None)
            self._awaited_asks.pop(correlation_id, None)
            raise
        if correlation_id in self._asks:  # not already answered while delivery completed
            self._arm_ask_timer(ask)
        return ask

    @property
    def pending_asks(self) -> list[PendingAsk]:
        """The asks waiting for answers, oldest first."""
        return sorted(self._asks.values(), key=lambda a: a.asked_at)

    async def on_agent_reply(self, wake: AgentReplyWake) -> str | None:
        """Apply an answer (or a timeout) to `self.state`; the default hands it to
        `on_message` as `wake.as_message()`."""
        return await self.on_message(wake.as_message())

    # ------------------------------------------------------------------ wire

    @workflow.signal(name=AGENT_REPLY_SIGNAL)
    def agent_reply_signal(self, raw: Any) -> None:
        self._count_arrival()
        try:
            reply = parse_input(AgentReply, raw)
        except InvalidRequest as err:
            self._log(RejectedEvent, error=str(err))
            return
        self._ask_done(
            reply.correlation_id,
            status=reply.status,
            reply=reply.reply,
            error=reply.error,
            error_type=reply.error_type,
        )

    @workflow.query(name="asks")
    def asks_query(self) -> list[PendingAsk]:
        return self.pending_asks

    # ------------------------------------------------------------------ the asker's side

    async def _deliver(
        self,
        agent_type: str,
        name: str,
        text: str,
        *,
        message_id: str,
        data: Any,
        reply_to: ReplyTo | None = None,
    ) -> None:
        me = workflow.info().workflow_id
        raw = {"text": text, "sender": f"agent:{me}", "id": message_id, "data": data}
        message = self._parse_message(raw).model_copy(update={"reply_to": reply_to})
        target = agent_id(agent_type, name)
        verb = "ask" if reply_to else "message"
        try:
            await workflow.execute_activity(
                DELIVER_ACTIVITY,
                AgentDelivery(
                    agent_type=agent_type,
                    name=name,
                    task_queue=workflow.info().task_queue,
                    message=message,
                    sender_id=me,
                ),
                start_to_close_timeout=self.delivery_timeout,
                retry_policy=self.delivery_retry_policy,
                summary=f"{verb} {me} → {target}: {preview(text)}",
            )
        except ActivityError as err:
            cause = err.cause
            typed = from_application_error(cause) if isinstance(cause, ApplicationError) else None
            if typed is not None:
                raise typed from None
            raise DeliveryFailed(f"could not deliver to {target}: {cause or err}") from None
        self._log(
            SentToAgentEvent,
            target_id=target,
            message_id=message_id,
            text=preview(text) or "",
            correlation_id=reply_to.correlation_id if reply_to else None,
        )

    def _arm_ask_timer(self, ask: PendingAsk) -> None:
        if ask.deadline is not None:
            self._ask_timers[ask.correlation_id] = asyncio.create_task(self._ask_timer(ask))

    def _arm_ask_timers(self) -> None:
        """At the start of a run: one timer per carried ask."""
        for ask in self.pending_asks:
            self._arm_ask_timer(ask)

    async def _ask_timer(self, ask: PendingAsk) -> None:
        assert ask.deadline is not None
        delay = seconds_until(ask.deadline)
        await workflow.sleep(delay, summary=f"ask {ask.target_id}: deadline")
        self._ask_timers.pop(ask.correlation_id, None)
        self._ask_done(
            ask.correlation_id,
            status="timed_out",
            error=f"no answer from {ask.target_id} within the ask's deadline",
            error_type=AskAgentTimedOut.__name__,
        )

    def _ask_done(
        self,
        correlation_id: str,
        *,
        status: Literal["answered", "failed", "timed_out"],
        reply: str | None = None,
        error: str | None = None,
        error_type: str | None = None,
    ) -> None:
        """The first answer (or the timeout) of a pending ask becomes a wake; later ones are
        ignored."""
        ask = self._asks.pop(correlation_id, None)
        if ask is None:
            workflow.logger.info("ignored answer to %s (not pending)", correlation_id)
            return
        timer = self._ask_timers.pop(correlation_id, None)
        if timer is not None:
            timer.cancel()  # answered in time: no wake-up at the deadline
        wake = AgentReplyWake(
            ask=ask,
            status=status,
            reply=reply,
            error=error,
            error_type=error_type,
            received_at=workflow.now(),
        )
        if correlation_id in self._awaited_asks:  # a turn waits for it
            self._awaited_asks[correlation_id] = wake
        else:
            self._inbox.append(wake)
        self._log(
            AgentReplyEvent,
            correlation_id=correlation_id,
            from_id=ask.target_id,
            status=status,
            reply=preview(reply),
            error=preview(error),
        )

    def _carried_asks(self) -> dict[str, Any]:
        return {"asks": self.pending_asks}

    # ------------------------------------------------------------------ the asked side

    async def _answer_asker(self, message: Message, outcome: AskReply | TurnFailed) -> None:
        """After the turn of a message that another agent asked: signal it the answer."""
        if message.reply_to is None:
            return
        me = workflow.info().workflow_id
        if isinstance(outcome, AskReply):
            reply = AgentReply(correlation_id=message.reply_to.correlation_id, from_id=me,
                               status="answered", reply=outcome.reply)  # fmt: skip
        else:
            reply = AgentReply(correlation_id=message.reply_to.correlation_id, from_id=me,
                               status="failed", error=str(outcome),
                               error_type=outcome.error_type)  # fmt: skip
        try:
            await workflow.get_external_workflow_handle(message.reply_to.asker_id).signal(
                AGENT_REPLY_SIGNAL, reply
            )
        except ApplicationError as err:  # the asker is gone
            workflow.logger.warning("could not answer %s: %s", message.reply_to.asker_id, err)


def reply_prompt(wake: AgentReplyWake) -> str:
    """How an answer reads to a model: the user message of the turn it wakes."""
    ask = wake.ask
    head = f"[answer from agent {ask.target_id}: {wake.status}] You asked: {ask.question}\n"
    if wake.status == "answered":
        return head + f"Its answer:\n{wake.reply or '(no answer)'}"
    return head + f"Error ({wake.error_type or 'unknown'}): {wake.error or '(none)'}"


__all__ = [
    "AGENT_REPLY_SIGNAL",
    "DELIVER_ACTIVITY",
    "Messaging",
    "reply_prompt",
]
