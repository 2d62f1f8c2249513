"""When an agent's schedules fall due: validation, due times, and folding of missed times.

Pure and deterministic: every function takes "now" as an argument, so the same code runs in
the workflow (with `workflow.now()`) and in unit tests (with any time they like). Due times are
absolute UTC datetimes; a recurring schedule computes its next due time from its previous due
time, never from when an alarm was handled, so it does not drift.

A schedule whose due times passed while nothing ran (no worker, a long turn) fires once for
all of them: the alarm carries the latest due time and how many earlier ones it stands for.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, tzinfo

from temporalio import workflow

from workflows.errors import InvalidSchedule, ScheduleNotFound, TooManySchedules
from workflows.messages import AlarmWake, Schedule, ScheduleRequest

# Time zones come from dateutil (the system's tz database, else the `tzdata` package), not
# `zoneinfo`: the workflow sandbox wraps `zoneinfo.ZoneInfo` objects in proxies that
# `datetime` refuses as tzinfo. Zone rules are read once per zone and cached.
with workflow.unsafe.imports_passed_through():
    from croniter import CroniterBadDateError, CroniterError, croniter
    from dateutil import tz as dateutil_tz

#: Missed due times of a cron schedule are counted one by one up to this many; beyond it the
#: schedule jumps straight to the present (so an every-second cron that was down for a month
#: does not make the agent iterate millions of times).
MISSED_COUNT_LIMIT = 1_000

# IANA names ("Europe/Paris", "UTC", "Etc/GMT+3"); never a path or a POSIX TZ string.
_ZONE_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_+-]*(/[A-Za-z0-9_+-]+)*$")

# croniter's `H` (hashed) and `R` (random) fields: random ones are not deterministic, and
# hashed ones depend on an id we do not pass; both are rejected.
_HASHED_OR_RANDOM = re.compile(r"^[hr](\(|/|$)", re.IGNORECASE)


def zone(name: str | None) -> tzinfo:
    """The time zone `name` (an IANA name like "Europe/Paris"); UTC when None."""
    if name is None:
        return UTC
    found = None
    if _ZONE_NAME.match(name):
        # The first use of a zone reads its rules from the tz database (then cached): a read
        # of fixed system data, which the sandbox would refuse as file I/O.
        with workflow.unsafe.sandbox_unrestricted():
            found = dateutil_tz.gettz(name)
    if not isinstance(found, dateutil_tz.tzfile | dateutil_tz.tzutc):
        raise InvalidSchedule(f"unknown time zone {name!r} (use an IANA name like 'Europe/Paris')")
    return found


def check_cron(expression: str) -> None:
    """Raise `InvalidSchedule` unless `expression` is a cron expression we run: 5 fields
    (minute hour day-of-month month day-of-week), 6 with seconds last, or an alias such as
    `@daily`."""
    fields = expression.split()
    if not (expression.strip().startswith("@") and len(fields) == 1) and len(fields) not in (5, 6):
        raise InvalidSchedule(
            f"cron {expression!r} has {len(fields)} fields: use 5 (minute hour day month "
            "weekday), or 6 with seconds last"
        )
    if any(_HASHED_OR_RANDOM.match(field) for field in fields):
        raise InvalidSchedule(
            f"cron {expression!r}: hashed (H) and random (R) fields are not supported"
        )
    if not croniter.is_valid(expression):
        raise InvalidSchedule(f"cron {expression!r} is not a valid cron expression")


def check_request(request: ScheduleRequest) -> None:
    """The checks that do not depend on the time or the agent (time zone, cron syntax), for
    callers that want to refuse a bad request before sending it."""
    zone(request.timezone)
    if request.cron is not None:
        check_cron(request.cron)


def _aware(at: datetime, tz: tzinfo) -> datetime:
    return (at if at.tzinfo is not None else at.replace(tzinfo=tz)).astimezone(UTC)


def _cron_next(expression: str, tz: tzinfo, after: datetime) -> datetime | None:
    """The first time strictly after `after` that `expression` matches in `tz`; None if it
    never matches again."""
    try:
        found = croniter(expression, after.astimezone(tz)).get_next(datetime)
    except CroniterBadDateError:
        return None
    return found.astimezone(UTC)


def first_due(request: ScheduleRequest, now: datetime) -> datetime:
    """When a new schedule first falls due, or `InvalidSchedule` if it never would."""
    tz = zone(request.timezone)
    if request.after_seconds is not None:
        return now + timedelta(seconds=request.after_seconds)
    if request.every_seconds is not None:
        return now + timedelta(seconds=request.every_seconds)
    if request.at is not None:
        due = _aware(request.at, tz)
        if due <= now:
            raise InvalidSchedule(
                f"at {due.isoformat()} is not in the future (the agent's time is "
                f"{now.isoformat()}): a one-shot schedule must fall due later"
            )
        return due
    assert request.cron is not None
    check_cron(request.cron)
    try:
        due = _cron_next(request.cron, tz, now)
    except CroniterError as err:  # accepted by is_valid, refused when iterating
        raise InvalidSchedule(f"cron {request.cron!r}: {err}") from None
    if due is None:
        raise InvalidSchedule(f"cron {request.cron!r} never falls due")
    return due


def describe(request: ScheduleRequest) -> str:
    """How a schedule falls due, for people: "in 30s", "every 60s", "cron '0 9 * * *'"."""
    if request.after_seconds is not None:
        return f"in {request.after_seconds:g}s"
    if request.every_seconds is not None:
        return f"every {request.every_seconds:g}s"
    where = f" {request.timezone}" if request.timezone else ""
    if request.at is not None:
        tz = zone(request.timezone)
        return f"at {_aware(request.at, tz).astimezone(tz).isoformat()}{where}"
    return f"cron {request.cron!r}{where}"


def fire(schedule: Schedule, now: datetime) -> tuple[AlarmWake, Schedule | None]:
    """The alarm for a schedule that is due (`next_due <= now`), and the schedule as it is
    afterwards (None when it is done: a one-shot, or a cron that never matches again).

    Every due time up to `now` is covered by this one alarm: `due_at` is the latest,
    `missed` counts the earlier ones."""
    if schedule.next_due > now:
        raise ValueError(f"schedule {schedule.id!r} is not due until {schedule.next_due}")
    due, missed, following = schedule.next_due, 0, None
    if schedule.every_seconds is not None:
        step = timedelta(seconds=schedule.every_seconds)
        missed = (now - due) // step
        due += missed * step
        following = due + step
    elif schedule.cron is not None:
        due, missed, following = _cron_catch_up(schedule.cron, zone(schedule.timezone), due, now)
    alarm = AlarmWake(
        schedule_id=schedule.id,
        payload=schedule.payload,
        due_at=due,
        fired_at=now,
        missed=missed,
        first_due_at=schedule.next_due,
        created_by=schedule.created_by,
    )
    if following is None:
        return alarm, None
    advanced = schedule.model_copy(
        update={"next_due": following, "last_fired_due": due, "fired": schedule.fired + 1}
    )
    return alarm, advanced


def _cron_catch_up(
    expression: str, tz: tzinfo, due: datetime, now: datetime
) -> tuple[datetime, int, datetime | None]:
    """(latest due time <= now, how many earlier ones it stands for, the next one)."""
    missed = 0
    following = _cron_next(expression, tz, due)
    while following is not None and following <= now:
        if missed >= MISSED_COUNT_LIMIT:
            # Too many to count: jump to the present (the count stays at the limit).
            latest = croniter(expression, now.astimezone(tz)).get_prev(datetime).astimezone(UTC)
            return max(latest, due), missed, _cron_next(expression, tz, now)
        due, missed = following, missed + 1
        following = _cron_next(expression, tz, due)
    return due, missed, following


class ScheduleBook:
    """An agent's pending schedules by id: at most `limit`, replaced by id, never duplicated.

    `revision` changes with every change, so a loop waiting for the next due time knows
    when to look again.
    """

    def __init__(self, *, limit: int, schedules: list[Schedule]) -> None:
        self.limit = limit
        self._by_id: dict[str, Schedule] = {s.id: s for s in schedules}
        self.revision = 0

    def __len__(self) -> int:
        return len(self._by_id)

    def __contains__(self, schedule_id: str) -> bool:
        return schedule_id in self._by_id

    def get(self, schedule_id: str) -> Schedule | None:
        return self._by_id.get(schedule_id)

    def plan(
        self,
        request: ScheduleRequest,
        now: datetime,
        *,
        created_by: str,
        max_payload_chars: int,
        min_every_seconds: float,
    ) -> Schedule:
        """Validate `request` against this book and the agent's limits; the schedule it
        would become. Changes nothing (update validators call this too)."""
        if len(request.payload) > max_payload_chars:
            raise InvalidSchedule(
                f"payload has {len(request.payload)} characters; at most {max_payload_chars}"
            )
        if request.every_seconds is not None and request.every_seconds < min_every_seconds:
            raise InvalidSchedule(
                f"every_seconds={request.every_seconds:g} is below this agent type's minimum "
                f"of {min_every_seconds:g}"
            )
        if request.id not in self._by_id and len(self._by_id) >= self.limit:
            raise TooManySchedules(
                f"this agent already has {len(self._by_id)} schedules, the most its type "
                f"allows; cancel one or reuse an id to replace it"
            )
        due = first_due(request, now)
        fields = request.model_dump(exclude={"created_by", "at"})
        at = None if request.at is None else _aware(request.at, zone(request.timezone))
        return Schedule(**fields, at=at, created_by=created_by, created_at=now, next_due=due)

    def put(self, schedule: Schedule) -> bool:
        """Add `schedule`, replacing one with the same id; True if it replaced one."""
        replaced = schedule.id in self._by_id
        self._by_id[schedule.id] = schedule
        self.revision += 1
        return replaced

    def cancel(self, schedule_id: str) -> Schedule:
        """Remove a schedule and return it (`ScheduleNotFound` if there is none)."""
        self.check_exists(schedule_id)
        self.revision += 1
        return self._by_id.pop(schedule_id)

    def check_exists(self, schedule_id: str) -> None:
        if schedule_id not in self._by_id:
            known = ", ".join(sorted(self._by_id)) or "none"
            raise ScheduleNotFound(f"no schedule {schedule_id!r} (schedules: {known})")

    def earliest(self) -> Schedule | None:
        """The schedule that falls due first (ties: by id)."""
        return min(self._by_id.values(), key=lambda s: (s.next_due, s.id), default=None)

    def take_due(self, now: datetime) -> list[AlarmWake]:
        """Fire every schedule due at `now` (soonest first): their alarms, with the book
        already advanced past them (one-shots removed)."""
        due = sorted(
            (s for s in self._by_id.values() if s.next_due <= now), key=lambda s: (s.next_due, s.id)
        )
        alarms = []
        for schedule in due:
            alarm, advanced = fire(schedule, now)
            if advanced is None:
                del self._by_id[schedule.id]
            else:
                self._by_id[schedule.id] = advanced
            alarms.append(alarm)
        if alarms:
            self.revision += 1
        return alarms

    def entries(self) -> list[Schedule]:
        """Every pending schedule, soonest first."""
        return sorted(self._by_id.values(), key=lambda s: (s.next_due, s.id))


__all__ = [
    "MISSED_COUNT_LIMIT",
    "ScheduleBook",
    "check_cron",
    "check_request",
    "describe",
    "fire",
    "first_due",
    "zone",
]
