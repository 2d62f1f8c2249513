"""Agents talking to agents by name: `send_to_agent` and `ask_agent`.

Every agent has:

* `send_to_agent(agent_type, name, text)`: fire-and-forget into another agent's inbox,
  creating that agent if needed. Returns the message id once the message is delivered.
* `ask_agent(agent_type, name, text, timeout_seconds=...)`: the same message, with a
  correlation id, a token and `reply_to` set. Returns at once; this agent goes on working.
  When the other agent has answered (or its turn failed), it signals `agent_reply` back with
  the token, and this agent is woken with an `agent_reply` wake; if no answer comes before
  the deadline, the wake says `timed_out` (error type `AskAgentTimedOut`). An answer without
  the ask's token, or a late one, is ignored: each ask wakes the asker exactly once, and only
  the asked agent can answer it (the `asks` query shows correlation ids, never tokens).
* `on_agent_reply`: the hook that wake is applied with (default: to `on_message` as a message
  from sender `agent:<target id>`); query `asks` lists the asks in flight.

Why an activity for delivery. An external workflow handle can only signal an agent that is
already running; it cannot create one, and workflow code has no signal-with-start. Delivery is
therefore the `deliver_message` activity (`activities/agents.py`): get-or-create through the
worker's client, retried by Temporal, idempotent through the message id the sending workflow
fixed. The answer goes back the other way by a plain external signal: the asker is running
(it waits for it), and if it is gone there is nobody to tell.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from datetime import timedelta
from typing import Any, Literal

from temporalio import workflow
from temporalio.common import RawValue, RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError

from perennial.workflows.clock import seconds_until
from perennial.workflows.errors import (
    AskAgentTimedOut,
    DeliveryFailed,
    InvalidRequest,
    LimitExceeded,
    TurnFailed,
    from_application_error,
)
from perennial.workflows.messages import (
    AgentDelivery,
    AgentReply,
    AgentReplyEvent,
    AgentReplyWake,
    AskInFlight,
    AskReply,
    Message,
    MessagingCarried,
    PendingAsk,
    ReplyTo,
    SentToAgentEvent,
    clip,
    preview,
)
from perennial.workflows.parts import AgentContext, Part, SignalHandler
from perennial.workflows.payloads import decode
from perennial.workflows.visibility import agent_id

#: The activity that get-or-creates another agent and queues a message into it.
DELIVER_ACTIVITY = "deliver_message"
#: The signal an asked agent answers with.
AGENT_REPLY_SIGNAL = "agent_reply"


class Messaging(Part):
    def __init__(
        self,
        ctx: AgentContext,
        carried: MessagingCarried,
        *,
        max_pending_asks: int,
        delivery_timeout: timedelta,
        delivery_retry_policy: RetryPolicy,
        parse_message: Callable[[Any], Message],
    ) -> None:
        self._ctx = ctx
        self._max_pending = max_pending_asks
        self._delivery_timeout = delivery_timeout
        self._delivery_retry_policy = delivery_retry_policy
        self._parse_message = parse_message
        self._asks: dict[str, AskInFlight] = {a.correlation_id: a for a in carried.asks}
        self._timers: dict[str, asyncio.Task[None]] = {}
        #: Asks a running turn waits for (`ask_agent_and_wait`): their outcome lands here
        #: instead of in the inbox.
        self._awaited: dict[str, AgentReplyWake | None] = {}

    def signals(self) -> Mapping[str, SignalHandler]:
        return {AGENT_REPLY_SIGNAL: self._on_reply}

    # ------------------------------------------------------------------ the asker's side

    async def send(self, agent_type: str, name: str, text: str, *, data: Any) -> str:
        message_id = f"msg-{workflow.uuid4()}"
        await self._deliver(agent_type, name, text, message_id=message_id, data=data)
        return message_id

    async def ask(
        self,
        agent_type: str,
        name: str,
        text: str,
        *,
        timeout: timedelta,
        data: Any,
        in_turn: bool = False,
    ) -> PendingAsk:
        if timeout <= timedelta(0):
            raise InvalidRequest("timeout_seconds must be positive")
        if len(self._asks) >= self._max_pending:
            raise LimitExceeded(
                f"{len(self._asks)} asks are waiting for answers, the most this agent type "
                "allows; wait for some to be answered"
            )
        correlation_id = f"ask-{workflow.uuid4()}"
        now = workflow.now()
        ask = AskInFlight(
            correlation_id=correlation_id,
            target_id=agent_id(agent_type, name),
            question=preview(text) or "",
            asked_at=now,
            deadline=now + timeout,
            token=self._ctx.new_token(),
        )
        reply_to = ReplyTo(
            asker_id=self._ctx.agent_id, correlation_id=correlation_id, token=ask.token
        )
        # Pending before delivery: an answer can come back before the activity's result does.
        self._asks[correlation_id] = ask
        if in_turn:
            self._awaited[correlation_id] = None
        try:
            await self._deliver(
                agent_type, name, text, message_id=correlation_id, data=data, reply_to=reply_to
            )
        except BaseException:
            self._asks.pop(correlation_id, None)
            self._awaited.pop(correlation_id, None)
            raise
        if correlation_id in self._asks:  # not already answered while delivery completed
            self._arm_timer(ask)
        return _public(ask)

    async def wait_for(self, correlation_id: str) -> AgentReplyWake:
        """The answer to an ask made with `in_turn=True` (or its timeout)."""
        try:
            await workflow.wait_condition(lambda: self._awaited.get(correlation_id) is not None)
            outcome = self._awaited[correlation_id]
        finally:
            self._awaited.pop(correlation_id, None)
        assert outcome is not None
        return outcome

    @property
    def pending(self) -> list[PendingAsk]:
        """The asks waiting for answers, oldest first."""
        return [_public(a) for a in sorted(self._asks.values(), key=lambda a: a.asked_at)]

    def _on_reply(self, raw: RawValue) -> None:
        reply = decode(raw, AgentReply)
        ask = self._asks.get(reply.correlation_id)
        if ask is None:
            workflow.logger.info("ignored answer to %s (not pending)", reply.correlation_id)
            return
        if reply.token != ask.token:
            self._ctx.reject(AGENT_REPLY_SIGNAL, f"answer to {reply.correlation_id} without its token")
            return
        self._done(ask, status=reply.status, reply=reply.reply, error=reply.error,
                   error_type=reply.error_type)  # fmt: skip

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
        me = self._ctx.agent_id
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
                    task_queue=self._ctx.task_queue,
                    message=message,
                    sender_id=me,
                ),
                start_to_close_timeout=self._delivery_timeout,
                retry_policy=self._delivery_retry_policy,
                summary=f"{verb} {me} → {target}: {preview(text)}",
            )
        except ActivityError as err:
            cause = err.cause
            typed = from_application_error(cause) if isinstance(cause, ApplicationError) else None
            if typed is not None:
                raise typed from None
            raise DeliveryFailed(f"could not deliver to {target}: {cause or err}") from None
        self._ctx.record(
            SentToAgentEvent,
            target_id=target,
            message_id=message_id,
            text=preview(text) or "",
            correlation_id=reply_to.correlation_id if reply_to else None,
        )

    def _arm_timer(self, ask: AskInFlight) -> None:
        if ask.deadline is not None:
            self._timers[ask.correlation_id] = asyncio.create_task(self._deadline(ask))

    async def _deadline(self, ask: AskInFlight) -> None:
        assert ask.deadline is not None
        await workflow.sleep(seconds_until(ask.deadline), summary=f"ask {ask.target_id}: deadline")
        self._timers.pop(ask.correlation_id, None)
        if self._asks.get(ask.correlation_id) is ask:
            self._done(
                ask,
                status="timed_out",
                error=f"no answer from {ask.target_id} within the ask's deadline",
                error_type=AskAgentTimedOut.__name__,
            )

    def _done(
        self,
        ask: AskInFlight,
        *,
        status: Literal["answered", "failed", "timed_out"],
        reply: str | None = None,
        error: str | None = None,
        error_type: str | None = None,
    ) -> None:
        """The first answer (or the timeout) of a pending ask becomes a wake."""
        del self._asks[ask.correlation_id]
        timer = self._timers.pop(ask.correlation_id, None)
        if timer is not None:
            timer.cancel()  # answered in time: no wake-up at the deadline
        wake = AgentReplyWake(
            ask=_public(ask),
            status=status,
            reply=reply,
            error=error,
            error_type=error_type,
            received_at=workflow.now(),
        )
        if ask.correlation_id in self._awaited:  # a turn waits for it
            self._awaited[ask.correlation_id] = wake
        else:
            self._ctx.queue(wake)
        self._ctx.record(
            AgentReplyEvent,
            correlation_id=ask.correlation_id,
            from_id=ask.target_id,
            status=status,
            reply=preview(reply),
            error=preview(error),
        )

    # ------------------------------------------------------------------ the asked side

    async def answer(self, message: Message, outcome: AskReply | TurnFailed) -> None:
        """After the turn of a message that another agent asked: signal it the answer."""
        reply_to = message.reply_to
        if reply_to is None:
            return
        if isinstance(outcome, AskReply):
            reply = AgentReply(correlation_id=reply_to.correlation_id, from_id=self._ctx.agent_id,
                               status="answered", reply=clip(outcome.reply), token=reply_to.token)  # fmt: skip
        else:
            reply = AgentReply(correlation_id=reply_to.correlation_id, from_id=self._ctx.agent_id,
                               status="failed", error=clip(str(outcome)),
                               error_type=outcome.error_type[:200], token=reply_to.token)  # fmt: skip
        try:
            await workflow.get_external_workflow_handle(reply_to.asker_id).signal(
                AGENT_REPLY_SIGNAL, reply
            )
        except ApplicationError as err:  # the asker is gone
            workflow.logger.warning("could not answer %s: %s", reply_to.asker_id, err)

    # ------------------------------------------------------------------ lifecycle

    def arm(self) -> None:
        for ask in self._asks.values():  # deadlines carried from the last run
            self._arm_timer(ask)

    def carry(self) -> MessagingCarried:
        return MessagingCarried(asks=sorted(self._asks.values(), key=lambda a: a.asked_at))


def _public(ask: AskInFlight) -> PendingAsk:
    """The ask as queries and agent code see it: without the token."""
    return PendingAsk.model_construct(**ask.model_dump(exclude={"token"}))



def reply_prompt(wake: AgentReplyWake) -> str:
    """How an answer reads to a model: the user message of the turn it wakes."""
    ask = wake.ask
    head = f"[answer from agent {ask.target_id}: {wake.status}] You asked: {ask.question}\n"
    if wake.status == "answered":
        return head + f"Its answer:\n{wake.reply or '(no answer)'}"
    return head + f"Error ({wake.error_type or 'unknown'}): {wake.error or '(none)'}"


__all__ = ["AGENT_REPLY_SIGNAL", "DELIVER_ACTIVITY", "Messaging", "reply_prompt"]
