"""The pure schedule logic (workflows/schedules.py): validation, due times, missed folding.

No Temporal here: every function takes "now", so these tests choose their own clock.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from perennial.workflows.errors import (
    InvalidSchedule,
    ScheduleNotFound,
    TooManySchedules,
    parse_input,
)
from perennial.workflows.messages import AlarmWake, Schedule, ScheduleRequest
from perennial.workflows.schedules import (
    MISSED_COUNT_LIMIT,
    ScheduleBook,
    check_request,
    describe,
    fire,
    first_due,
)

NOW = datetime(2026, 1, 15, 10, 0, 0, 250_000, tzinfo=UTC)


def request(**fields: object) -> ScheduleRequest:
    return parse_input(
        ScheduleRequest, {"id": "r", "payload": "p", **fields}, error=InvalidSchedule
    )


def planned(book: ScheduleBook | None = None, now: datetime = NOW, **fields: object) -> Schedule:
    book = book or ScheduleBook(limit=10, schedules=[])
    return book.plan(
        request(**fields), now, created_by="test", max_payload_chars=100, min_every_seconds=1.0
    )


# --------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    "fields",
    [
        {},
        {"after_seconds": 5, "every_seconds": 5},
        {"at": "2030-01-01T00:00:00Z", "cron": "* * * * *"},
        {"after_seconds": 0},
        {"every_seconds": -1},
        {"after_seconds": 5, "timezone": "Europe/Paris"},
        {"every_seconds": 5, "timezone": "Europe/Paris"},
        {"after_seconds": 5, "unknown": 1},
    ],
    ids=["none", "two", "at+cron", "zero", "negative", "tz-after", "tz-every", "extra-field"],
)
def test_a_request_needs_exactly_one_valid_timing_field(fields: dict[str, object]) -> None:
    with pytest.raises(InvalidSchedule):
        request(**fields)


@pytest.mark.parametrize("payload", ["", "   "])
def test_blank_payload_or_id_is_invalid(payload: str) -> None:
    with pytest.raises(InvalidSchedule):
        parse_input(
            ScheduleRequest,
            {"id": "r", "payload": payload, "after_seconds": 1},
            error=InvalidSchedule,
        )
    with pytest.raises(InvalidSchedule):
        parse_input(
            ScheduleRequest,
            {"id": payload, "payload": "p", "after_seconds": 1},
            error=InvalidSchedule,
        )


@pytest.mark.parametrize(
    "cron",
    [
        "61 * * * *",
        "* * *",
        "* * * * * * *",  # 7 fields (croniter's year field) are not accepted
        "H * * * *",
        "R * * * *",
        "not a cron",
    ],
)
def test_bad_cron_expressions_are_refused(cron: str) -> None:
    with pytest.raises(InvalidSchedule):
        check_request(request(cron=cron))
    with pytest.raises(InvalidSchedule):
        first_due(request(cron=cron), NOW)


def test_a_cron_that_never_falls_due_is_refused() -> None:
    with pytest.raises(InvalidSchedule, match="never"):
        first_due(request(cron="0 0 30 2 *"), NOW)  # 30 February


@pytest.mark.parametrize("zone", ["Mars/Olympus", "utc+3", "/etc/localtime", "../UTC", ""])
def test_unknown_or_unsafe_time_zones_are_refused(zone: str) -> None:
    with pytest.raises(InvalidSchedule):
        check_request(request(cron="0 9 * * *", timezone=zone))


def test_a_one_shot_time_that_is_not_in_the_future_is_refused() -> None:
    with pytest.raises(InvalidSchedule, match="not in the future"):
        first_due(request(at=NOW.isoformat()), NOW)
    with pytest.raises(InvalidSchedule, match="not in the future"):
        first_due(request(at=(NOW - timedelta(days=1)).isoformat()), NOW)


def test_limits_of_the_agent_type_are_checked_when_planning() -> None:
    book = ScheduleBook(limit=2, schedules=[])
    with pytest.raises(InvalidSchedule, match="payload"):
        planned(book, after_seconds=1, payload="x" * 101)
    with pytest.raises(InvalidSchedule, match="minimum"):
        planned(book, every_seconds=0.5)
    book.put(planned(book, after_seconds=1, id="a"))
    book.put(planned(book, after_seconds=1, id="b"))
    with pytest.raises(TooManySchedules):
        planned(book, after_seconds=1, id="c")
    # Replacing an existing id is allowed at the limit.
    assert planned(book, after_seconds=2, id="b").id == "b"


# --------------------------------------------------------------------------- first due time


def test_first_due_time_of_each_kind() -> None:
    assert first_due(request(after_seconds=1.5), NOW) == NOW + timedelta(seconds=1.5)
    assert first_due(request(every_seconds=60), NOW) == NOW + timedelta(seconds=60)
    at = datetime(2026, 1, 15, 11, 0, tzinfo=UTC)
    assert first_due(request(at=at.isoformat()), NOW) == at
    # 5 fields: the next whole minute; 6 fields: seconds last.
    assert first_due(request(cron="* * * * *"), NOW) == datetime(2026, 1, 15, 10, 1, tzinfo=UTC)
    assert first_due(request(cron="* * * * * */2"), NOW) == datetime(
        2026, 1, 15, 10, 0, 2, tzinfo=UTC
    )
    assert first_due(request(cron="@hourly"), NOW) == datetime(2026, 1, 15, 11, 0, tzinfo=UTC)


def test_a_naive_at_is_read_in_its_time_zone() -> None:
    due = first_due(request(at="2026-07-01T09:00:00", timezone="Europe/Paris"), NOW)
    assert due == datetime(2026, 7, 1, 7, 0, tzinfo=UTC)  # CEST is UTC+2
    assert first_due(request(at="2026-07-01T09:00:00"), NOW) == datetime(2026, 7, 1, 9, tzinfo=UTC)


def test_cron_follows_its_time_zone_across_daylight_saving() -> None:
    paris = ZoneInfo("Europe/Paris")
    winter = first_due(request(cron="30 9 * * *", timezone="Europe/Paris"), NOW)
    # NOW is 11:00 in Paris: the next 09:30 there is the next day, 08:30 UTC (CET is UTC+1).
    assert winter == datetime(2026, 1, 16, 9, 30, tzinfo=paris).astimezone(UTC)
    assert winter == datetime(2026, 1, 16, 8, 30, tzinfo=UTC)
    summer_now = datetime(2026, 6, 1, 12, tzinfo=UTC)
    summer = first_due(request(cron="30 9 * * *", timezone="Europe/Paris"), summer_now)
    assert summer == datetime(2026, 6, 2, 7, 30, tzinfo=UTC)  # CEST is UTC+2


def test_planning_normalises_at_to_utc_and_records_the_creator() -> None:
    schedule = planned(at="2026-07-01T09:00:00", timezone="Europe/Paris")
    assert schedule.at == datetime(2026, 7, 1, 7, 0, tzinfo=UTC)
    assert schedule.next_due == schedule.at
    assert schedule.created_by == "test" and schedule.created_at == NOW
    assert schedule.fired == 0 and schedule.last_fired_due is None
    assert describe(schedule) == "at 2026-07-01T09:00:00+02:00 Europe/Paris"


# --------------------------------------------------------------------------- firing


def test_a_one_shot_fires_once_and_is_done() -> None:
    schedule = planned(after_seconds=5)
    alarm, after = fire(schedule, schedule.next_due + timedelta(milliseconds=30))
    assert after is None
    assert alarm.due_at == schedule.next_due and alarm.missed == 0
    assert alarm.fired_at - alarm.due_at == timedelta(milliseconds=30)
    assert alarm.key == f"alarm:r@{schedule.next_due.isoformat()}"


def test_a_schedule_is_not_fired_before_it_is_due() -> None:
    schedule = planned(after_seconds=5)
    with pytest.raises(ValueError):
        fire(schedule, schedule.next_due - timedelta(microseconds=1))


def test_an_interval_does_not_drift_with_late_fires() -> None:
    schedule = planned(every_seconds=10)
    first = schedule.next_due
    for k in range(5):
        # Each alarm is handled 3 s late; the next due time stays on the grid.
        alarm, schedule = fire(schedule, schedule.next_due + timedelta(seconds=3))
        assert alarm.due_at == first + timedelta(seconds=10 * k) and alarm.missed == 0
        assert schedule is not None
        assert schedule.next_due == first + timedelta(seconds=10 * (k + 1))
        assert schedule.last_fired_due == alarm.due_at and schedule.fired == k + 1


def test_missed_interval_times_fire_once_with_their_count() -> None:
    schedule = planned(every_seconds=10)
    first = schedule.next_due
    alarm, after = fire(schedule, first + timedelta(seconds=35))
    # Due at first, +10, +20, +30: one alarm for the latest, three earlier ones missed.
    assert alarm.due_at == first + timedelta(seconds=30)
    assert alarm.missed == 3 and alarm.first_due_at == first
    assert after is not None and after.next_due == first + timedelta(seconds=40)


def test_missed_cron_times_fire_once_with_their_count() -> None:
    schedule = planned(cron="*/5 * * * *")  # every 5 minutes
    assert schedule.next_due == datetime(2026, 1, 15, 10, 5, tzinfo=UTC)
    alarm, after = fire(schedule, datetime(2026, 1, 15, 10, 27, tzinfo=UTC))
    assert alarm.due_at == datetime(2026, 1, 15, 10, 25, tzinfo=UTC)
    assert alarm.missed == 4  # 10:05, 10:10, 10:15, 10:20
    assert after is not None and after.next_due == datetime(2026, 1, 15, 10, 30, tzinfo=UTC)


def test_counting_missed_cron_times_stops_at_the_limit() -> None:
    schedule = planned(cron="* * * * * *")  # every second
    now = schedule.next_due + timedelta(days=1)
    alarm, after = fire(schedule, now)
    assert alarm.missed == MISSED_COUNT_LIMIT
    assert alarm.due_at <= now and now - alarm.due_at <= timedelta(seconds=1)
    assert after is not None and now < after.next_due <= now + timedelta(seconds=1)


def test_an_alarm_reads_as_a_message_from_its_schedule() -> None:
    schedule = planned(after_seconds=5, payload="water the plants")
    alarm, _ = fire(schedule, schedule.next_due)
    message = alarm.as_message()
    assert message.text == "water the plants"
    assert message.sender == "alarm:r" and message.id == alarm.key
    assert isinstance(message.data, dict) and message.data["missed"] == 0


# --------------------------------------------------------------------------- the book


def test_the_book_replaces_by_id_and_never_duplicates() -> None:
    book = ScheduleBook(limit=5, schedules=[])
    assert book.put(planned(book, after_seconds=60, id="x", payload="old")) is False
    revision = book.revision
    assert book.put(planned(book, after_seconds=5, id="x", payload="new")) is True
    assert book.revision > revision
    assert len(book) == 1 and [s.payload for s in book.entries()] == ["new"]


def test_the_book_cancels_and_reports_unknown_ids() -> None:
    book = ScheduleBook(limit=5, schedules=[planned(after_seconds=5, id="x")])
    assert book.cancel("x").id == "x" and len(book) == 0
    with pytest.raises(ScheduleNotFound):
        book.cancel("x")


def test_the_book_takes_due_alarms_soonest_first() -> None:
    book = ScheduleBook(limit=5, schedules=[])
    for schedule_id, seconds in (("late", 3), ("tick", 1), ("early", 2), ("future", 60)):
        fields = {"every_seconds": 1} if schedule_id == "tick" else {"after_seconds": seconds}
        book.put(planned(book, id=schedule_id, **fields))
    assert book.earliest() is not None and book.earliest().id == "tick"  # type: ignore[union-attr]
    alarms = book.take_due(NOW + timedelta(seconds=3.5))
    assert [a.schedule_id for a in alarms] == ["tick", "early", "late"]
    assert all(isinstance(a, AlarmWake) for a in alarms)
    assert alarms[0].missed == 2  # due at +1, +2, +3: fired once for +3
    assert [s.id for s in book.entries()] == ["tick", "future"]  # one-shots are done
    assert book.take_due(NOW + timedelta(seconds=3.5)) == []


def test_the_book_round_trips_through_json_like_continue_as_new() -> None:
    book = ScheduleBook(limit=5, schedules=[])
    book.put(planned(book, id="c", cron="0 9 * * 1-5", timezone="America/New_York"))
    book.put(planned(book, id="e", every_seconds=30))
    carried = [Schedule.model_validate_json(s.model_dump_json()) for s in book.entries()]
    again = ScheduleBook(limit=5, schedules=carried)
    assert again.entries() == book.entries()
