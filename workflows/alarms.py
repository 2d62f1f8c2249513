"""The alarm side of an agent: schedules on the wire, and alarms through the agent's loop.

`AgentWorkflow` inherits `Alarms`, so every agent type has:

* update `schedule` (`ScheduleRequest` in, `ScheduleResult` out): create a schedule, or replace
  the one with the same id; update `cancel_schedule` (`{"id"}`); query `schedules`. Bad
  requests are refused by the update validators, before anything enters history.
* `add_schedule` / `cancel_schedule` / `list_schedules`: the same, for code inside the agent
  (an agent's own turn, the LLM tools `schedule_alarm`, `list_alarms`, `cancel_alarm`).
* `on_alarm`: the hook a due alarm is applied with, one at a time in the agent's loop like
  messages. By default the alarm is handed to `on_message` as a message from sender
  `alarm:<id>` whose text is the payload.

Schedules are bookkeeping beside the agent's state, not part of it: they take effect as soon as
the update is accepted (also while a turn runs), and `rollback` does not undo them. What a turn
itself scheduled or cancelled (through the methods above) is put back if that turn fails, so a
failed turn leaves schedules as it found them, like the state.

When the loop has nothing to do it waits for work or for the earliest due time (one timer,
summarised `alarm <id>: <payload>` in the Web UI). A due alarm is inserted into the inbox at
the place of its due time, so it is applied after what arrived before it and before what
arrived after it. Between turns the loop takes in alarms that fell due while it was busy.
Firing advances the schedule and queues the alarm in one step; continue-as-new carries both
(pending schedules with absolute due times, queued alarms in the inbox), so each due time is
applied exactly once.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any, ClassVar

from temporalio import workflow

from workflows.errors import InvalidSchedule, parse_input
from workflows.messages import (
    AgentStart,
    AlarmEvent,
    AlarmWake,
    CancelScheduleRequest,
    Schedule,
    ScheduleCancelledEvent,
    ScheduledEvent,
    ScheduleList,
    ScheduleRequest,
    ScheduleResult,
    Wake,
    preview,
)
from workflows.schedules import ScheduleBook, describe
from workflows.visibility import AgentStatus

if TYPE_CHECKING:
    from workflows.errors import TurnFailed
    from workflows.messages import AskReply, Event

#: Who created a schedule when the request does not say.
DEFAULT_CREATOR = "api"


class Alarms:
    """Schedules and alarms for `AgentWorkflow` (see the module docstring)."""

    #: Most schedules one agent may have at once.
    max_schedules: ClassVar[int] = 100
    #: Shortest interval of an `every_seconds` schedule.
    min_every_seconds: ClassVar[float] = 1.0
    #: Longest payload of one schedule. Pending schedules travel in the continue-as-new input,
    #: which Temporal caps (2 MB by default): `max_schedules` x this must stay well below it.
    max_schedule_payload_chars: ClassVar[int] = 4_000

    if TYPE_CHECKING:  # provided by AgentWorkflow
        _inbox: deque[Wake]

        def _log(self, kind: type[Event], **fields: Any) -> int: ...  # type: ignore[valid-type]
        def _count_arrival(self, *, update: bool = False) -> None: ...
        def _rejecting(self, check: Callable[[], object]) -> None: ...
        def _details(self, doing: str) -> None: ...
        async def on_message(self, message: Any) -> str | None: ...
        async def _run_turn(
            self, key: str, label: str, turn: Callable[[], Awaitable[str | None]]
        ) -> AskReply | TurnFailed: ...

    def _init_alarms(self, start: AgentStart) -> None:
        self._alarm_book = ScheduleBook(limit=self.max_schedules, schedules=start.schedules)
        #: Schedule changes made by the running turn's own code: (id, before, after). A
        #: failed turn puts them back, so it leaves schedules as it found them, like state.
        self._turn_changes: list[tuple[str, Schedule | None, Schedule | None]] | None = None
        self._details_line: tuple[int, str] = (-1, "")

    # ------------------------------------------------------------------ for agent types

    async def on_alarm(self, alarm: AlarmWake) -> str | None:
        """Apply one due alarm to `self.state` and return a reply (kept in the event log).
        Raising fails the turn like a message's: the state is restored.

        The default hands the alarm to `on_message` as `alarm.as_message()`: text = payload,
        sender `alarm:<schedule id>`, data = due time, fire time and missed count."""
        return await self.on_message(alarm.as_message())

    def add_schedule(
        self, request: ScheduleRequest, *, created_by: str | None = None
    ) -> ScheduleResult:
        """Create a schedule, or replace the one with its id. Raises `InvalidSchedule` or
        `TooManySchedules` (and changes nothing) if it cannot be honoured. Called from a
        turn, the change is undone if the turn fails."""
        return self._store(self._plan_schedule(request, created_by=created_by), by_turn=True)

    def cancel_schedule(self, schedule_id: str) -> Schedule:
        """Remove a pending schedule and return it (`ScheduleNotFound` if there is none).
        An alarm of it that already fell due and waits in the inbox is still applied.
        Called from a turn, the cancellation is undone if the turn fails."""
        return self._drop(schedule_id, by_turn=True)

    def list_schedules(self) -> list[Schedule]:
        """The pending schedules, soonest first."""
        return self._alarm_book.entries()

    @property
    def next_alarm(self) -> Schedule | None:
        """The schedule that falls due first, if any."""
        return self._alarm_book.earliest()

    # ------------------------------------------------------------------ wire

    @workflow.update(name="schedule")
    def schedule_update(self, raw: Any) -> ScheduleResult:
        self._count_arrival(update=True)
        return self._store(self._plan_schedule(self._parse_schedule(raw)), by_turn=False)

    @schedule_update.validator
    def _validate_schedule(self, raw: Any) -> None:
        self._rejecting(lambda: self._plan_schedule(self._parse_schedule(raw)))

    @workflow.update(name="cancel_schedule")
    def cancel_schedule_update(self, raw: Any) -> Schedule:
        self._count_arrival(update=True)
        return self._drop(parse_input(CancelScheduleRequest, raw).id, by_turn=False)

    @cancel_schedule_update.validator
    def _validate_cancel_schedule(self, raw: Any) -> None:
        self._rejecting(
            lambda: self._alarm_book.check_exists(parse_input(CancelScheduleRequest, raw).id)
        )

    @workflow.query(name="schedules")
    def schedules_query(self) -> ScheduleList:
        return ScheduleList(schedules=self.list_schedules(), max_schedules=self.max_schedules)

    # ------------------------------------------------------------------ the loop's side

    def _parse_schedule(self, raw: Any) -> ScheduleRequest:
        return parse_input(ScheduleRequest, raw, error=InvalidSchedule)

    def _plan_schedule(
        self, request: ScheduleRequest, *, created_by: str | None = None
    ) -> Schedule:
        return self._alarm_book.plan(
            request,
            workflow.now(),
            created_by=created_by or request.created_by or DEFAULT_CREATOR,
            max_payload_chars=self.max_schedule_payload_chars,
            min_every_seconds=self.min_every_seconds,
        )

    def _store(
        self, schedule: Schedule, *, by_turn: bool, reason: str | None = None
    ) -> ScheduleResult:
        before = self._alarm_book.get(schedule.id)
        replaced = self._alarm_book.put(schedule)
        if by_turn and self._turn_changes is not None:
            self._turn_changes.append((schedule.id, before, schedule))
        self._log(
            ScheduledEvent,
            schedule_id=schedule.id,
            timing=describe(schedule),
            payload=preview(schedule.payload) or "",
            next_due=schedule.next_due,
            created_by=schedule.created_by,
            replaced=replaced,
            reason=reason,
        )
        return ScheduleResult(schedule=schedule, replaced=replaced)

    def _drop(self, schedule_id: str, *, by_turn: bool, reason: str | None = None) -> Schedule:
        schedule = self._alarm_book.cancel(schedule_id)
        if by_turn and self._turn_changes is not None:
            self._turn_changes.append((schedule_id, schedule, None))
        self._log(ScheduleCancelledEvent, schedule_id=schedule_id, reason=reason)
        return schedule

    def _begin_turn_schedules(self) -> None:
        self._turn_changes = []

    def _end_turn_schedules(self, *, failed: bool) -> None:
        """After a turn: keep its schedule changes, or (it failed) put back what it changed,
        newest change first, unless a `schedule` / `cancel_schedule` update changed that id
        again meanwhile (the caller's later word wins)."""
        changes, self._turn_changes = self._turn_changes or [], None
        if not failed:
            return
        for schedule_id, before, after in reversed(changes):
            if self._alarm_book.get(schedule_id) is not after:
                continue
            if before is None:
                self._drop(
                    schedule_id, by_turn=False, reason="undone: the turn that made it failed"
                )
            else:
                self._store(
                    before, by_turn=False, reason="restored: the turn that changed it failed"
                )

    def _take_due_alarms(self) -> None:
        """Queue an alarm for every schedule that is due now, each at the place of its due
        time in the inbox (after what arrived before it)."""
        if not self._alarm_book:  # no schedule, the common case: checked before every wake
            return
        for alarm in self._alarm_book.take_due(workflow.now()):
            schedule = self._alarm_book.get(alarm.schedule_id)
            self._log(
                AlarmEvent,
                schedule_id=alarm.schedule_id,
                payload=preview(alarm.payload) or "",
                due_at=alarm.due_at,
                fired_at=alarm.fired_at,
                missed=alarm.missed,
                next_due=schedule.next_due if schedule else None,
            )
            workflow.logger.info(
                "alarm %s due %s fired (missed %d)", alarm.schedule_id, alarm.due_at, alarm.missed
            )
            position = len(self._inbox)
            while position > 0 and _arrived(self._inbox[position - 1]) > alarm.due_at:
                position -= 1
            self._inbox.insert(position, alarm)

    def _alarm_timer(self) -> tuple[datetime, str] | None:
        """When the loop must wake for the next alarm, and the timer's summary."""
        schedule = self._alarm_book.earliest()
        if schedule is None:
            return None
        return schedule.next_due, f"alarm {schedule.id}: {preview(schedule.payload)}"

    @property
    def _alarm_revision(self) -> int:
        return self._alarm_book.revision

    def _idle_status(self) -> AgentStatus:
        """`waiting_alarm` when idle with schedules pending, else `idle`."""
        return AgentStatus.WAITING_ALARM if len(self._alarm_book) else AgentStatus.IDLE

    def _alarm_details(self) -> str:
        """The next alarm, for the agent's current details in the Web UI ("" if none)."""
        revision, line = self._details_line
        if revision == self._alarm_book.revision:  # details are set several times a task
            return line
        schedule = self._alarm_book.earliest()
        line = ""
        if schedule is not None:
            count = len(self._alarm_book)
            line = (
                f"next alarm `{schedule.id}` at {schedule.next_due:%Y-%m-%d %H:%M:%S} UTC "
                f"({describe(schedule)}): {preview(schedule.payload)} · "
                f"{count} schedule{'s' if count != 1 else ''}"
            )
        self._details_line = (self._alarm_book.revision, line)
        return line

    async def _apply_alarm(self, alarm: AlarmWake) -> None:
        late = (alarm.fired_at - alarm.due_at).total_seconds()
        missed = f", {alarm.missed} missed" if alarm.missed else ""
        self._details(f"alarm `{alarm.schedule_id}` ({late:.1f}s late{missed})")
        # A failed alarm turn is recorded like a message's (`turn_failed`, state restored);
        # nobody waits for its outcome, and it is not retried: the due time was applied.
        await self._run_turn(
            alarm.key, f"alarm {alarm.schedule_id!r}", lambda: self.on_alarm(alarm)
        )


def alarm_prompt(alarm: AlarmWake) -> str:
    """How an alarm reads to a model: the user message an LLM agent's alarm turn starts with."""
    missed = (
        f" It stands for {alarm.missed + 1} due times: {alarm.missed} earlier ones passed while "
        "you could not run."
        if alarm.missed
        else ""
    )
    return (
        f"[alarm {alarm.schedule_id!r}, due {alarm.due_at.isoformat()}, now "
        f"{alarm.fired_at.isoformat()}] Your alarm went off.{missed} Carry out its action:\n"
        f"{alarm.payload}"
    )


def _arrived(wake: Wake) -> datetime:
    """When a wake entered the agent's inbox (an alarm: its due time)."""
    return wake.due_at if isinstance(wake, AlarmWake) else wake.received_at


__all__ = ["Alarms", "alarm_prompt"]
