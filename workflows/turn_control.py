"""Turn control: the running turn, stopping it, and what a message arriving mid-turn does.

The loop runs each turn as a task this part owns, so a turn can be stopped: `stop` (or a
message whose policy is `interrupt`) cancels the task, which cancels the turn's model and tool
activities at once (they learn it at their next heartbeat). What the stopped turn leaves is
the agent type's choice (`AgentWorkflow.on_turn_stopped`): rolled back by default; an LLM
agent keeps the conversation with the answer marked stopped, so the next turn knows.

A message that arrives while a turn runs follows its `on_busy` policy, else the agent type's
`busy_policy`:

    queue       wait in the inbox for its own turn (the default)
    interrupt   stop the running turn, then go first
    steer       join the running turn at its next model or tool step (`take_steering`); if
                the turn ends before one, it gets its own turn
    merge       with the other messages queued meanwhile, become one turn
    reject      refused: `TurnInProgress` to an update's caller, a `rejected` event for a signal

Every outcome is in the event log (`turn_stopped`, `steered`, `merged`, `rejected`), and all of
it happens in handlers and the loop, from history alone, so a replay after a crash makes the
same decisions.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

from temporalio import workflow

from perennial.workflows.errors import TurnInProgress
from perennial.workflows.inbox import Inbox
from perennial.workflows.messages import (
    BusyPolicy,
    MergedEvent,
    Message,
    MessageWake,
    SteeredEvent,
)
from perennial.workflows.parts import AgentContext, Part

T = TypeVar("T")

#: Errors that mean the workflow code is broken for this history (see `workflows.entity`).
_CODE_ERRORS = (workflow.NondeterminismError, workflow.ReadOnlyContextError)


class StopRequested(Exception):
    """Raised out of a stopped turn's task (internal: the loop turns it into TurnStopped)."""

    def __init__(self, by: str, reason: str | None) -> None:
        super().__init__(reason or f"stopped by {by}")
        self.by = by
        self.reason = reason


class _Running:
    __slots__ = ("key", "task", "stop", "steered")

    def __init__(self, key: str, task: asyncio.Task[object]) -> None:
        self.key = key
        self.task = task
        self.stop: StopRequested | None = None
        #: Messages that joined this turn: they share its outcome.
        self.steered: list[MessageWake] = []


class TurnControl(Part):
    """Owns the running turn's task; decides what arriving messages do while one runs."""

    def __init__(self, ctx: AgentContext, *, inbox: Inbox, default_policy: BusyPolicy) -> None:
        self._ctx = ctx
        self._inbox = inbox
        self._default = default_policy
        self._running: _Running | None = None
        self._finished: _Running | None = None

    @property
    def running(self) -> str | None:
        """The key (message id, alarm key, ...) of the turn running now, if any."""
        return self._running.key if self._running is not None else None

    def policy(self, message: Message) -> BusyPolicy:
        return message.on_busy or self._default

    # ------------------------------------------------------------------ arrivals

    def before_admit(self, message: Message) -> None:
        """A message is about to enter the inbox: TurnInProgress if it must be refused."""
        if self._running is not None and self.policy(message) == "reject":
            raise TurnInProgress(
                f"{self._ctx.agent_id} is running a turn ({self._running.key}) and this "
                "message's policy is `reject`: send it again when the turn is over"
            )

    def after_admit(self, message_id: str, message: Message) -> None:
        """A message entered the inbox: an `interrupt` goes first and stops the running turn."""
        running = self._running
        if running is None or self.policy(message) != "interrupt":
            return
        self._inbox.move_to_front("message", message_id)
        self.stop(by=message_id, reason=f"interrupted by message {message_id!r}")

    # ------------------------------------------------------------------ running and stopping

    async def run(self, key: str, turn: Callable[[], Awaitable[T]]) -> T:
        """Run `turn` as a task that `stop` can cancel; StopRequested when it was stopped."""

        async def body() -> T:
            return await turn()

        task: asyncio.Task[T] = asyncio.create_task(body())
        running = _Running(key, task)  # type: ignore[arg-type]
        self._running = running
        try:
            return await task
        except _CODE_ERRORS:
            raise
        except (asyncio.CancelledError, Exception):
            # Cancelled activities surface as ActivityError; code may wrap that in its own
            # error: after a stop, however the turn ended, it ended because of the stop.
            if running.stop is None:
                raise  # a failure of its own, or the workflow itself is being cancelled
            raise running.stop from None
        finally:
            self._running = None
            self._finished = running

    def stop(self, *, by: str, reason: str | None, turn: str | None = None) -> str | None:
        """Stop the running turn (only if it is `turn`, when given); its key, or None when no
        such turn runs. A second stop of the same turn changes nothing."""
        running = self._running
        if running is None or running.task.done() or (turn is not None and running.key != turn):
            return None
        if running.stop is None:
            running.stop = StopRequested(by, reason)
            running.task.cancel()
        return running.key

    # ------------------------------------------------------------------ steer and merge

    def take_steering(self) -> list[Message]:
        """Messages waiting with policy `steer`: they leave the inbox and join the running
        turn (their callers get its outcome)."""
        running = self._running
        if running is None:
            return []
        taken = self._inbox.take_messages(lambda m: self.policy(m) == "steer" and m.call is None)
        for wake in taken:
            assert wake.message.id is not None
            running.steered.append(wake)
            self._ctx.record(SteeredEvent, message_id=running.key, steered_id=wake.message.id)
        return [wake.message for wake in taken]

    def finished_steered(self) -> list[MessageWake]:
        """The messages that joined the turn that just ended (each once)."""
        finished = self._finished
        if finished is None:
            return []
        self._finished = None
        return finished.steered

    def merge_queued(self, first: MessageWake) -> tuple[Message, list[MessageWake]]:
        """`first` and the messages right behind it whose policy is `merge`, as one message
        (texts in arrival order); the others taken from the inbox. Calls never merge."""
        if self.policy(first.message) != "merge" or first.message.call is not None:
            return first.message, []
        merged: list[MessageWake] = []
        while self._inbox:
            wake = self._inbox[0]
            if not (isinstance(wake, MessageWake) and wake.message.call is None
                    and self.policy(wake.message) == "merge"):  # fmt: skip
                break
            merged.append(wake)  # type: ignore[arg-type]
            self._inbox.take()
        if not merged:
            return first.message, []
        assert first.message.id is not None
        ids = [wake.message.id for wake in merged if wake.message.id is not None]
        self._ctx.record(MergedEvent, message_id=first.message.id, merged_ids=ids)
        text = "\n\n".join([first.message.text, *(wake.message.text for wake in merged)])
        return first.message.model_copy(update={"text": text}), merged


__all__ = ["StopRequested", "TurnControl"]
