"""The agent's inbox: every wake waits here, in arrival order, until the loop applies it.

Handlers only enqueue. A message is admitted once per id (the dedup window remembers applied
ids, the pending table queued ones); callers of `ask` and `rollback` wait on the pending
table for their wake's outcome. Pending entries are keyed by kind and id, so an ask and a
rollback that happen to share an id never meet.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Literal

from temporalio import workflow

from perennial.workflows.dedup import SeenWindow
from perennial.workflows.errors import PerennialError, TurnFailed, to_application_error
from perennial.workflows.eventlog import EventLog
from perennial.workflows.messages import (
    AlarmWake,
    AskReply,
    Message,
    MessageWake,
    ReceivedEvent,
    RollbackResult,
    RollbackWake,
    Wake,
    preview,
)
from perennial.workflows.versions import json_size

#: What a caller can wait for: the outcome of a message's turn, or of a rollback.
PendingKind = Literal["message", "rollback"]
Outcome = AskReply | TurnFailed | RollbackResult | PerennialError


class _Pending:
    """A queued request whose outcome zero or more callers await."""

    __slots__ = ("waiters", "outcome")

    def __init__(self) -> None:
        self.waiters = 0
        self.outcome: Outcome | None = None


class Inbox:
    def __init__(self, wakes: list[Wake], *, seen: SeenWindow, events: EventLog) -> None:
        self._wakes: deque[Wake] = deque(wakes)
        self._seen = seen
        self._events = events
        self._pending: dict[tuple[PendingKind, str], _Pending] = {}
        for wake in wakes:
            if (key := _pending_key(wake)) is not None:
                self._pending[key] = _Pending()

    def __len__(self) -> int:
        return len(self._wakes)

    def __bool__(self) -> bool:
        return bool(self._wakes)

    def __iter__(self) -> Iterator[Wake]:
        return iter(self._wakes)

    def __getitem__(self, index: int) -> Wake:
        return self._wakes[index]

    def __setitem__(self, index: int, wake: Wake) -> None:
        self._wakes[index] = wake

    def queue(self, wake: Wake) -> None:
        self._wakes.append(wake)

    def queue_in_time_order(self, alarm: AlarmWake) -> None:
        """Insert an alarm at the place of its due time: after what arrived before it."""
        position = len(self._wakes)
        while position > 0 and _arrived(self._wakes[position - 1]) > alarm.due_at:
            position -= 1
        self._wakes.insert(position, alarm)

    def take(self) -> Wake:
        return self._wakes.popleft()

    def move_to_front(self, kind: PendingKind, key: str) -> None:
        """Move a queued request's wake to the front (it goes next)."""
        for index, wake in enumerate(self._wakes):
            if _pending_key(wake) == (kind, key):
                del self._wakes[index]
                self._wakes.appendleft(wake)
                return

    def take_messages(self, wanted: Callable[[Message], bool]) -> list[MessageWake]:
        """Take the queued messages `wanted` accepts out of the inbox, in arrival order."""
        taken = [w for w in self._wakes if isinstance(w, MessageWake) and wanted(w.message)]
        if taken:
            gone = {id(wake) for wake in taken}
            self._wakes = deque(w for w in self._wakes if id(w) not in gone)
        return taken

    def knows(self, message_id: str | None) -> bool:
        """True when a message with this id was applied (and remembered) or is queued."""
        return message_id is not None and (
            message_id in self._seen or ("message", message_id) in self._pending
        )

    def wakes(self) -> list[Wake]:
        return list(self._wakes)

    # ------------------------------------------------------------------ messages

    def admit(self, message: Message, *, awaited: bool, now: datetime) -> tuple[str, bool]:
        """Queue a message unless its id was already applied or is already queued. Returns
        its id (a fresh one if it had none) and whether it was queued now."""
        if message.id is None:
            message = message.model_copy(update={"id": str(workflow.uuid4())})
        message_id = message.id
        assert message_id is not None
        key: tuple[PendingKind, str] = ("message", message_id)
        if message_id in self._seen or key in self._pending:
            return message_id, False
        self._pending[key] = _Pending()
        self._wakes.append(MessageWake(message=message, awaited=awaited, received_at=now))
        self._events.record(
            ReceivedEvent,
            at=now,
            message_id=message_id,
            sender=message.sender,
            text=preview(message.text) or "",
            awaited=awaited,
        )
        return message_id, True

    def open(self, kind: PendingKind, key: str) -> bool:
        """Start waiting for a request's outcome; False if one with this key is pending."""
        if (kind, key) in self._pending:
            return False
        self._pending[(kind, key)] = _Pending()
        return True

    async def outcome(self, kind: PendingKind, key: str) -> AskReply | RollbackResult:
        """Wait for the outcome of a pending request; a PerennialError is raised as the typed
        failure its caller gets."""
        pending = self._pending[(kind, key)]
        pending.waiters += 1
        try:
            await workflow.wait_condition(lambda: pending.outcome is not None)
        finally:
            pending.waiters -= 1
            if pending.waiters == 0 and self._pending.get((kind, key)) is pending:
                del self._pending[(kind, key)]
        outcome = pending.outcome
        if isinstance(outcome, PerennialError):
            raise to_application_error(outcome)
        assert outcome is not None
        return outcome

    def settle(self, kind: PendingKind, key: str, outcome: Outcome) -> None:
        pending = self._pending.get((kind, key))
        if pending is None:
            return
        pending.outcome = outcome
        if pending.waiters == 0:  # nobody waits (a signal): forget it now
            del self._pending[(kind, key)]

    def is_awaited(self, wake: Wake) -> bool:
        key = _pending_key(wake)
        pending = self._pending.get(key) if key is not None else None
        return pending is not None and pending.waiters > 0

    def last_awaited_index(self) -> int:
        """Index of the last wake a caller waits for (-1 if none)."""
        for index in range(len(self._wakes) - 1, -1, -1):
            if self.is_awaited(self._wakes[index]):
                return index
        return -1

    def sizes(self) -> deque[int]:
        """Each wake's bytes as JSON, in order (what continue-as-new would carry)."""
        return deque(json_size(wake) for wake in self._wakes)


def _pending_key(wake: Wake) -> tuple[PendingKind, str] | None:
    if isinstance(wake, MessageWake):
        return ("message", wake.message.id) if wake.message.id else None
    if isinstance(wake, RollbackWake):
        return ("rollback", wake.request_id)
    return None


def _arrived(wake: Wake) -> datetime:
    """When a wake entered the inbox (an alarm: its due time)."""
    return wake.due_at if isinstance(wake, AlarmWake) else wake.received_at


__all__ = ["Inbox", "Outcome", "PendingKind"]
