"""Alarms: an agent's schedules, and the alarms they raise through the agent's loop.

Every agent has:

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
itself scheduled or cancelled is put back if that turn fails, so a failed turn leaves schedules
as it found them, like the state.

When the loop has nothing to do it waits for work or for the earliest due time (one timer,
summarised `alarm <id>: <payload>` in the Web UI). A due alarm is inserted into the inbox at
the place of its due time. Firing advances the schedule and queues the alarm in one step;
continue-as-new carries both (pending schedules with absolute due times, queued alarms in the
inbox), so each due time is applied exactly once.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from temporalio import workflow

from perennial.workflows.inbox import Inbox
from perennial.workflows.messages import (
    AlarmEvent,
    AlarmsCarried,
    AlarmWake,
    Schedule,
    ScheduleCancelledEvent,
    ScheduledEvent,
    ScheduleRequest,
    ScheduleResult,
    preview,
)
from perennial.workflows.parts import AgentContext, Part
from perennial.workflows.schedules import ScheduleBook, describe
from perennial.workflows.visibility import AgentStatus

#: Who created a schedule when the request does not say.
DEFAULT_CREATOR = "api"


@dataclass(frozen=True)
class AlarmLimits:
    """An agent type's limits on schedules (its class attributes)."""

    max_schedules: int
    min_every_seconds: float
    max_payload_chars: int


class Alarms(Part):
    def __init__(
        self, ctx: AgentContext, carried: AlarmsCarried, *, limits: AlarmLimits, inbox: Inbox
    ) -> None:
        self._ctx = ctx
        self._inbox = inbox
        self.limits = limits
        self._book = ScheduleBook(limit=limits.max_schedules, schedules=carried.schedules)
        #: Schedule changes made by the running turn's own code: (id, before, after). A
        #: failed turn puts them back, so it leaves schedules as it found them, like state.
        self._turn_changes: list[tuple[str, Schedule | None, Schedule | None]] | None = None
        self._details_line: tuple[int, str] = (-1, "")

    # ------------------------------------------------------------------ requests

    def plan(self, request: ScheduleRequest, *, created_by: str | None = None) -> Schedule:
        """The schedule `request` would become; raises (and changes nothing) if it cannot be
        honoured. Update validators call this too."""
        limits = self.limits
        return self._book.plan(
            request,
            workflow.now(),
            created_by=created_by or request.created_by or DEFAULT_CREATOR,
            max_payload_chars=limits.max_payload_chars,
            min_every_seconds=limits.min_every_seconds,
        )

    def store(
        self, schedule: Schedule, *, by_turn: bool, reason: str | None = None
    ) -> ScheduleResult:
        before = self._book.get(schedule.id)
        replaced = self._book.put(schedule)
        if by_turn and self._turn_changes is not None:
            self._turn_changes.append((schedule.id, before, schedule))
        self._ctx.record(
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

    def drop(self, schedule_id: str, *, by_turn: bool, reason: str | None = None) -> Schedule:
        schedule = self._book.cancel(schedule_id)
        if by_turn and self._turn_changes is not None:
            self._turn_changes.append((schedule_id, schedule, None))
        self._ctx.record(ScheduleCancelledEvent, schedule_id=schedule_id, reason=reason)
        return schedule

    def check_exists(self, schedule_id: str) -> None:
        self._book.check_exists(schedule_id)

    def entries(self) -> list[Schedule]:
        """The pending schedules, soonest first."""
        return self._book.entries()

    def earliest(self) -> Schedule | None:
        return self._book.earliest()

    # ------------------------------------------------------------------ the loop's side

    @property
    def revision(self) -> int:
        """Changes whenever a schedule is added, replaced, cancelled or fired."""
        return self._book.revision

    def take_due(self) -> None:
        """Queue an alarm for every schedule that is due now, each at the place of its due
        time in the inbox (after what arrived before it)."""
        if not self._book:  # no schedule, the common case: checked before every wake
            return
        for alarm in self._book.take_due(workflow.now()):
            schedule = self._book.get(alarm.schedule_id)
            self._ctx.record(
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
            self._inbox.queue_in_time_order(alarm)

    def timer(self) -> tuple[datetime, str] | None:
        """When the loop must wake for the next alarm, and the timer's summary."""
        schedule = self._book.earliest()
        if schedule is None:
            return None
        return schedule.next_due, f"alarm {schedule.id}: {preview(schedule.payload)}"

    def next_due(self) -> datetime | None:
        schedule = self._book.earliest()
        return schedule.next_due if schedule is not None else None

    def details(self) -> str:
        """The next alarm, for the agent's current details in the Web UI ("" if none)."""
        revision, line = self._details_line
        if revision == self._book.revision:  # details are set several times a task
            return line
        schedule = self._book.earliest()
        line = ""
        if schedule is not None:
            count = len(self._book)
            line = (
                f"next alarm `{schedule.id}` at {schedule.next_due:%Y-%m-%d %H:%M:%S} UTC "
                f"({describe(schedule)}): {preview(schedule.payload)} · "
                f"{count} schedule{'s' if count != 1 else ''}"
            )
        self._details_line = (self._book.revision, line)
        return line

    # ------------------------------------------------------------------ lifecycle

    def begin_turn(self) -> None:
        self._turn_changes = []

    def end_turn(self, *, failed: bool) -> None:
        """Keep the turn's schedule changes, or (it failed) put back what it changed, newest
        first, unless an update changed that id again meanwhile (the caller's later word
        wins)."""
        changes, self._turn_changes = self._turn_changes or [], None
        if not failed:
            return
        for schedule_id, before, after in reversed(changes):
            if self._book.get(schedule_id) is not after:
                continue
            if before is None:
                self.drop(schedule_id, by_turn=False, reason="undone: the turn that made it failed")
            else:
                self.store(
                    before, by_turn=False, reason="restored: the turn that changed it failed"
                )

    def idle_status(self) -> AgentStatus | None:
        return AgentStatus.WAITING_ALARM if len(self._book) else None

    def carry(self) -> AlarmsCarried:
        return AlarmsCarried(schedules=self._book.entries())


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


__all__ = ["DEFAULT_CREATOR", "AlarmLimits", "Alarms", "alarm_prompt"]
