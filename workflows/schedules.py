"""When an agent's schedules fall due: validation, due times, and folding of missed times.

Pure and deterministic: every function takes "now" as an argument, so the same code runs in
the workflow (with `workflow.now()`) and in unit tests (with any time they like). Due times are
absolute UTC datetimes; a recurring schedule computes its next due time from its previous due
time, never from when an alarm was handled, so it does not drift.

A schedule whose due times passed while nothing ran (no worker, a long turn) fires once for
all of them: the alarm carries the latest due time and how many earlier ones it stands for.

Wall-clock times (a cron, an `at` without an offset) are read in the schedule's time zone, and
each one falls due once: a time the clocks show twice (they went back) at its first
occurrence; a time they skip (they went forward) at the first instant after the gap, where
all the times skipped in one gap fall due together. A first due time lies at most
`MAX_SCHEDULE_SECONDS` (about 100 years) ahead, far from the limits of `datetime`.
"""

from __future__ import annotations

import functools
import re
from datetime import UTC, datetime, timedelta, tzinfo
from importlib import resources

from temporalio import workflow

from perennial.workflows.errors import InvalidSchedule, ScheduleNotFound, TooManySchedules
from perennial.workflows.messages import MAX_SCHEDULE_SECONDS, AlarmWake, Schedule, ScheduleRequest

# Zone rules come from the `tzdata` package, never the host's tz database, so every worker
# computes the same due times from the same history. dateutil reads them, not `zoneinfo`: the
# workflow sandbox wraps `zoneinfo.ZoneInfo` objects in proxies that `datetime` refuses as
# tzinfo. tzdata's files are slim (today's rules live in each file's footer), which dateutil
# reads from 3.0 on.
with workflow.unsafe.imports_passed_through():
    import tzdata
    from croniter import croniter
    from dateutil import tz as dateutil_tz

#: Missed due times of a cron schedule are counted one by one up to this many; beyond it the
#: schedule jumps straight to the present (so an every-second cron that was down for a month
#: does not make the agent iterate millions of times).
MISSED_COUNT_LIMIT = 1_000

# tzdata lists "Factory", a placeholder zone for machines whose zone is not set, not a place.
_NOT_ZONES = frozenset({"Factory"})

# croniter's `H` (hashed) and `R` (random) fields: random ones are not deterministic, and
# hashed ones depend on an id we do not pass; both are rejected.
_HASHED_OR_RANDOM = re.compile(r"^[hr](\(|/|$)", re.IGNORECASE)

_HORIZON = timedelta(seconds=MAX_SCHEDULE_SECONDS)
_SECOND = timedelta(seconds=1)
_MICROSECOND = timedelta(microseconds=1)

# Converting times near datetime.min/max, and croniter finding no match, raise these (every
# CroniterError is a ValueError).
_OUT_OF_RANGE = (OverflowError, ValueError)


def zone(name: str | None) -> tzinfo:
    """The time zone called `name`, with its rules from the `tzdata` package.

    Args:
        name: An IANA zone name that `tzdata` lists ("Europe/Paris", "Etc/GMT+3"), or "UTC";
            None means UTC.

    Raises:
        InvalidSchedule: `name` is not such a name (a path, "localtime", "Factory", a POSIX
            TZ string).
    """
    if name is None or name == "UTC":
        return UTC
    if name not in _zone_names():
        raise InvalidSchedule(
            f"unknown time zone {_shown(name)} (use an IANA name like 'Europe/Paris')"
        )
    return _read_zone(name)


@functools.cache
def _zone_names() -> frozenset[str]:
    # A read of fixed package data, which the sandbox would refuse as file I/O.
    with workflow.unsafe.sandbox_unrestricted():
        listed = resources.files(tzdata).joinpath("zones").read_text(encoding="utf-8")
    return frozenset(listed.split()) - _NOT_ZONES


@functools.cache
def _read_zone(name: str) -> tzinfo:
    with workflow.unsafe.sandbox_unrestricted():
        rules = resources.files(tzdata).joinpath("zoneinfo", *name.split("/"))
        with rules.open("rb") as file:
            return dateutil_tz.tzfile(file, name)


def check_cron(expression: str) -> None:
    """Check that `expression` is a cron expression we run.

    Args:
        expression: 5 fields (minute hour day-of-month month day-of-week), 6 with seconds
            last, or an alias such as `@daily`.

    Raises:
        InvalidSchedule: it is not.
    """
    fields = expression.split()
    if not (expression.strip().startswith("@") and len(fields) == 1) and len(fields) not in (5, 6):
        raise InvalidSchedule(
            f"cron {_shown(expression)} has {len(fields)} fields: use 5 (minute hour day month "
            "weekday), or 6 with seconds last"
        )
    if any(_HASHED_OR_RANDOM.match(field) for field in fields):
        raise InvalidSchedule(
            f"cron {_shown(expression)}: hashed (H) and random (R) fields are not supported"
        )
    if not croniter.is_valid(expression):
        raise InvalidSchedule(f"cron {_shown(expression)} is not a valid cron expression")


def check_request(request: ScheduleRequest) -> None:
    """The checks that do not depend on the time or the agent (time zone, cron syntax), for
    callers that want to refuse a bad request before sending it.

    Raises:
        InvalidSchedule: the time zone or the cron expression is not one we run.
    """
    zone(request.timezone)
    if request.cron is not None:
        check_cron(request.cron)


def _shown(text: str, limit: int = 80) -> str:
    """`text` quoted for an error message, cut short when long."""
    return repr(text) if len(text) <= limit else f"{text[:limit]!r}..."


# --------------------------------------------------------------------------- wall-clock time


def _wall(instant: datetime, tz: tzinfo) -> datetime:
    """The naive wall-clock time `tz` shows at `instant`."""
    return instant.astimezone(tz).replace(tzinfo=None, fold=0)


def _instant(local: datetime, tz: tzinfo) -> datetime:
    """The first instant (UTC) at which `tz` shows the naive wall-clock time `local` or later:
    its first occurrence when it shows twice, the end of the gap when it is skipped."""
    # Sorted: for a skipped time, fold=0 reads it with the offset before the gap (PEP 495).
    earlier, later = sorted(local.replace(tzinfo=tz, fold=f).astimezone(UTC) for f in (0, 1))
    if _wall(earlier, tz) == local:
        return earlier
    return _offset_change(tz, earlier, later)


def _offset_change(tz: tzinfo, start: datetime, end: datetime) -> datetime:
    """When the UTC offset of `tz` changes to `end`'s, between `start` (before the change) and
    `end`: a binary search over whole seconds, as tz database changes fall on them."""
    target = end.astimezone(tz).utcoffset()
    base = start.replace(microsecond=0)
    low, high = 0, -(-(end - base) // _SECOND)
    while high - low > 1:
        middle = (low + high) // 2
        if (base + middle * _SECOND).astimezone(tz).utcoffset() == target:
            high = middle
        else:
            low = middle
    return base + high * _SECOND


def _shown_by(instant: datetime, tz: tzinfo) -> datetime:
    """The latest wall-clock time `tz` has shown by `instant`: the time it shows then, unless
    the clocks went back and it repeats times already shown (then the last one before)."""
    wall = _wall(instant, tz)
    first = _instant(wall, tz)
    if first >= instant:
        return wall
    return _wall(_offset_change(tz, first, instant) - _MICROSECOND, tz)


def _aware(at: datetime, tz: tzinfo) -> datetime:
    """`at` in UTC; one without an offset is a wall-clock time in `tz` (see `_instant`)."""
    try:
        return at.astimezone(UTC) if at.tzinfo is not None else _instant(at, tz)
    except _OUT_OF_RANGE:
        raise InvalidSchedule(
            f"at {at.isoformat()} is too near the limits of the calendar to be read"
        ) from None


def _horizon(now: datetime) -> datetime:
    """The latest first due time a schedule may have."""
    try:
        return now + _HORIZON
    except OverflowError:
        return datetime.max.replace(tzinfo=UTC)


# --------------------------------------------------------------------------- cron


def _cron_next(expression: str, tz: tzinfo, after: datetime) -> datetime | None:
    """The first due time strictly after `after`: the first wall-clock time in `tz` that
    `expression` matches and `tz` has not shown by `after`, when it first shows (see
    `_instant`); None if it never matches again."""
    try:
        local = croniter(expression, _shown_by(after, tz)).get_next(datetime)
        return _instant(local, tz)
    except _OUT_OF_RANGE:
        return None


def _cron_latest(expression: str, tz: tzinfo, now: datetime) -> datetime | None:
    """The latest due time at or before `now` (None if there is none)."""
    try:
        local = croniter(expression, _shown_by(now, tz) + _MICROSECOND).get_prev(datetime)
        return _instant(local, tz)
    except _OUT_OF_RANGE:
        return None


def _cron_catch_up(
    expression: str, tz: tzinfo, due: datetime, now: datetime
) -> tuple[datetime, int, datetime | None]:
    """(latest due time <= now, how many earlier ones it stands for, the next one)."""
    missed = 0
    following = _cron_next(expression, tz, due)
    while following is not None and following <= now:
        if missed >= MISSED_COUNT_LIMIT:
            # Too many to count: jump to the present (the count stays at the limit).
            latest = _cron_latest(expression, tz, now) or due
            return max(latest, due), missed, _cron_next(expression, tz, now)
        due, missed = following, missed + 1
        following = _cron_next(expression, tz, due)
    return due, missed, following


# --------------------------------------------------------------------------- due times


def _delay(seconds: float, now: datetime) -> datetime:
    """`now` plus a delay of `seconds` (the model bounds it; this guards built requests)."""
    if not 0 < seconds <= MAX_SCHEDULE_SECONDS:
        raise InvalidSchedule(f"a delay must be above 0 and at most {MAX_SCHEDULE_SECONDS}s")
    return now + timedelta(seconds=seconds)


def _one_shot_due(at: datetime, tz: tzinfo, now: datetime) -> datetime:
    due = _aware(at, tz)
    if due <= now:
        raise InvalidSchedule(
            f"at {due.isoformat()} is not in the future (the agent's time is "
            f"{now.isoformat()}): a one-shot schedule must fall due later"
        )
    if due > _horizon(now):
        raise InvalidSchedule(
            f"at {due.isoformat()} is too far ahead: a one-shot schedule must fall due "
            f"within {MAX_SCHEDULE_SECONDS} seconds (about 100 years) of {now.isoformat()}"
        )
    return due


def first_due(request: ScheduleRequest, now: datetime) -> datetime:
    """When a new schedule first falls due.

    Args:
        request: The schedule asked for.
        now: The agent's time (`workflow.now()` in the workflow).

    Raises:
        InvalidSchedule: it never would, or not within `MAX_SCHEDULE_SECONDS` of `now`; or
            the time zone, the cron expression or the `at` time is bad.
    """
    tz = zone(request.timezone)
    if request.after_seconds is not None:
        return _delay(request.after_seconds, now)
    if request.every_seconds is not None:
        return _delay(request.every_seconds, now)
    if request.at is not None:
        return _one_shot_due(request.at, tz, now)
    assert request.cron is not None
    check_cron(request.cron)
    due = _cron_next(request.cron, tz, now)
    if due is None or due > _horizon(now):
        raise InvalidSchedule(
            f"cron {_shown(request.cron)} never falls due within {MAX_SCHEDULE_SECONDS} "
            "seconds (about 100 years)"
        )
    return due


def describe(request: ScheduleRequest) -> str:
    """How a schedule falls due, for people: "in 30s", "every 60s", "cron '0 9 * * *'".
    Never raises: an `at` that cannot be shown in its time zone is shown as given."""
    if request.after_seconds is not None:
        return f"in {request.after_seconds:g}s"
    if request.every_seconds is not None:
        return f"every {request.every_seconds:g}s"
    where = f" {request.timezone}" if request.timezone else ""
    if request.at is not None:
        return f"at {_local_text(request.at, request.timezone)}{where}"
    return f"cron {request.cron!r}{where}"


def _local_text(at: datetime, timezone: str | None) -> str:
    try:
        tz = zone(timezone)
        return _aware(at, tz).astimezone(tz).isoformat()
    except (InvalidSchedule, *_OUT_OF_RANGE):
        return at.isoformat()


def _carried_zone(name: str | None) -> tzinfo:
    """The zone of a schedule already accepted; UTC if it was accepted before the zone was
    refused ("localtime", "posixrules": whatever the host meant), as firing must not fail."""
    try:
        return zone(name)
    except InvalidSchedule:
        return UTC


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
        tz = _carried_zone(schedule.timezone)
        due, missed, following = _cron_catch_up(schedule.cron, tz, due, now)
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
        at = due if request.at is not None else None
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
