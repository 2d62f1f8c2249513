"""The rules a schedule is held to (workflows/schedules.py): how far ahead it may fall due,
which time zones it may name, and how wall-clock times fall due across daylight-saving changes.

Pure tests with explicit clocks, plus one through the raw Temporal client to show a refused
far-future one-shot leaves the agent working. London's clocks go forward from 01:00 GMT to
02:00 BST on 2027-03-28 and back from 02:00 BST to 01:00 GMT on 2027-10-31 (both at 01:00
UTC); New York's go forward at 02:00 on 2027-03-14 and back at 02:00 on 2027-11-07.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from importlib import resources

import pytest
import tzdata
from temporalio.client import WorkflowUpdateFailedError
from temporalio.exceptions import ApplicationError
from temporalio.worker import Worker

from perennial.client import Perennial
from perennial.workflows.errors import InvalidSchedule, parse_input
from perennial.workflows.messages import MAX_SCHEDULE_SECONDS, Schedule, ScheduleRequest
from perennial.workflows.schedules import (
    MISSED_COUNT_LIMIT,
    ScheduleBook,
    check_request,
    describe,
    fire,
    first_due,
    zone,
)
from tests.support import unique

NOW = datetime(2026, 5, 1, 12, 0, 0, 250_000, tzinfo=UTC)
HORIZON = timedelta(seconds=MAX_SCHEDULE_SECONDS)
ZONES = ["Asia/Tokyo", "Pacific/Kiritimati", "Etc/GMT+12", "America/New_York", "UTC", None]


def request(**fields: object) -> ScheduleRequest:
    fields = {name: value for name, value in fields.items() if value is not None}
    return parse_input(
        ScheduleRequest, {"id": "r", "payload": "p", **fields}, error=InvalidSchedule
    )


def planned(now: datetime = NOW, **fields: object) -> Schedule:
    return ScheduleBook(limit=10, schedules=[]).plan(
        request(**fields), now, created_by="test", max_payload_chars=100, min_every_seconds=1.0
    )


def utc(*fields: int) -> datetime:
    return datetime(*fields, tzinfo=UTC)  # type: ignore[misc]


def dues(cron: str, timezone: str, start: datetime, stop: datetime) -> list[datetime]:
    """The due times of a cron after `start`, up to `stop`, each fired when it falls due."""
    schedule: Schedule | None = planned(start, cron=cron, timezone=timezone)
    found: list[datetime] = []
    while schedule is not None and schedule.next_due <= stop:
        alarm, schedule = fire(schedule, schedule.next_due)
        assert alarm.missed == 0
        found.append(alarm.due_at)
    assert found == sorted(set(found)), "due times must strictly increase"
    return found


# --------------------------------------------------------------------------- how far ahead

FAR_AT = [
    "9999-12-31T20:00:00Z",
    "9999-12-31T23:59:58Z",
    "9999-12-31T23:59:59.999999",
    "9999-12-31T12:00:00",
    "9999-12-31T23:59:59-14:00",
    "0001-01-01T00:00:00",
    "0001-01-01T12:00:00",
    "0001-01-01T00:00:00+14:00",
    "0001-01-01T00:00:00Z",
    "3000-01-01T00:00:00",
]


@pytest.mark.parametrize("timezone", ZONES)
@pytest.mark.parametrize("at", FAR_AT)
def test_one_shots_near_the_ends_of_time_are_invalid_and_nothing_else(
    at: str, timezone: str | None
) -> None:
    with pytest.raises(InvalidSchedule) as refused:
        first_due(request(at=at, timezone=timezone), NOW)
    assert len(str(refused.value)) < 300
    with pytest.raises(InvalidSchedule):
        planned(at=at, timezone=timezone)
    assert describe(request(at=at, timezone=timezone)).startswith("at ")


@pytest.mark.parametrize("timezone", ZONES)
def test_a_one_shot_may_fall_due_up_to_max_schedule_seconds_ahead(timezone: str | None) -> None:
    latest = NOW + HORIZON
    schedule = planned(at=latest.isoformat(), timezone=timezone)
    assert schedule.next_due == schedule.at == latest
    assert describe(schedule).startswith("at ")
    # The agent fires a few seconds late without trouble.
    alarm, after = fire(schedule, latest + timedelta(seconds=4))
    assert alarm.due_at == latest and after is None
    with pytest.raises(InvalidSchedule, match="too far ahead"):
        planned(at=(latest + timedelta(microseconds=1)).isoformat(), timezone=timezone)


def test_the_longest_delay_and_interval_are_accepted_and_fire() -> None:
    assert planned(after_seconds=MAX_SCHEDULE_SECONDS).next_due == NOW + HORIZON
    schedule = planned(every_seconds=MAX_SCHEDULE_SECONDS)
    assert describe(schedule) == f"every {MAX_SCHEDULE_SECONDS:g}s"
    alarm, after = fire(schedule, schedule.next_due + timedelta(seconds=4))
    assert after is not None and after.next_due == NOW + 2 * HORIZON
    with pytest.raises(InvalidSchedule):
        request(after_seconds=MAX_SCHEDULE_SECONDS + 1)


@pytest.mark.parametrize("timezone", ["Europe/London", "Asia/Kolkata", "Etc/GMT+3", None])
@pytest.mark.parametrize(
    "timing",
    [
        {"after_seconds": 30},
        {"every_seconds": 60},
        {"at": "2030-06-01T09:00:00"},
        {"at": "2030-06-01T09:00:00+05:00"},
        {"cron": "0 9 * * 1-5"},
        {"cron": "30 1 * * * 15"},
        {"cron": "@daily"},
        {"cron": "0 0 29 2 *"},
    ],
)
def test_every_accepted_schedule_can_be_described_and_fired(
    timing: dict[str, object], timezone: str | None
) -> None:
    if "after_seconds" in timing or "every_seconds" in timing:
        timezone = None
    schedule = planned(**timing, timezone=timezone)
    assert describe(schedule)
    alarm, _ = fire(schedule, schedule.next_due + timedelta(seconds=3))
    assert alarm.due_at == schedule.next_due


# --------------------------------------------------------------------------- time zones


@pytest.mark.parametrize(
    "name",
    [
        "localtime",
        "Factory",
        "posixrules",
        "posix/Europe/Paris",
        "right/UTC",
        "../etc/passwd",
        "Europe/Nowhere",
        "europe/london",
        "Europe/London ",
        "EST5EDT,M3.2.0,M11.1.0",
        "x" * 64,
    ],
)
def test_only_iana_zone_names_are_accepted(name: str) -> None:
    with pytest.raises(InvalidSchedule, match="unknown time zone") as refused:
        check_request(request(cron="0 9 * * *", timezone=name))
    assert len(str(refused.value)) < 200


@pytest.mark.parametrize(
    ("name", "winter_offset"),
    [
        ("Europe/London", timedelta(0)),
        ("America/New_York", timedelta(hours=-5)),
        ("Asia/Kolkata", timedelta(hours=5, minutes=30)),
        ("UTC", timedelta(0)),
        ("Etc/GMT+3", timedelta(hours=-3)),  # POSIX sign: three hours behind UTC
    ],
)
def test_iana_zones_are_accepted(name: str, winter_offset: timedelta) -> None:
    check_request(request(cron="0 9 * * *", timezone=name))
    assert utc(2027, 1, 15, 12).astimezone(zone(name)).utcoffset() == winter_offset


def test_zone_names_come_from_the_tzdata_package_without_its_placeholder() -> None:
    listed = resources.files(tzdata).joinpath("zones").read_text(encoding="utf-8").split()
    assert "Factory" in listed  # tzdata lists it: it is refused on purpose
    for name in ("Europe/Paris", "US/Eastern", "Antarctica/Troll", listed[-1]):
        assert zone(name) is zone(name)  # read once, then cached
    # tzdata's files keep today's rules in a footer that dateutil < 3 ignores.
    summer = utc(2027, 7, 1, 12).astimezone(zone("Europe/London")).utcoffset()
    assert summer == timedelta(hours=1), "summer time is missing: dateutil must be >= 3.0"


def test_a_carried_schedule_in_a_zone_refused_since_still_fires_in_utc() -> None:
    # Accepted by an earlier version (its meaning depended on the host); firing must not fail.
    carried = Schedule(
        id="old",
        payload="p",
        cron="0 9 * * *",
        timezone="localtime",
        created_at=NOW,
        next_due=utc(2026, 5, 2, 9),
    )
    assert describe(carried) == "cron '0 9 * * *' localtime"
    alarm, after = fire(carried, utc(2026, 5, 2, 9, 0, 2))
    assert alarm.due_at == utc(2026, 5, 2, 9)
    assert after is not None and after.next_due == utc(2026, 5, 3, 9)


# --------------------------------------------------------------------------- daylight saving


def test_a_daily_cron_fires_once_on_the_day_the_clocks_go_back() -> None:
    # 01:30 London happens twice on 2027-10-31: at 00:30 UTC (BST) and 01:30 UTC (GMT).
    found = dues("30 1 * * *", "Europe/London", utc(2027, 10, 29, 12), utc(2027, 11, 2))
    assert found == [utc(2027, 10, 30, 0, 30), utc(2027, 10, 31, 0, 30), utc(2027, 11, 1, 1, 30)]


def test_a_daily_cron_in_the_gap_fires_once_when_the_clocks_go_forward() -> None:
    # 01:30 London does not happen on 2027-03-28: it falls due at 02:00 BST, 01:00 UTC.
    found = dues("30 1 * * *", "Europe/London", utc(2027, 3, 26, 12), utc(2027, 3, 30))
    assert found == [utc(2027, 3, 27, 1, 30), utc(2027, 3, 28, 1, 0), utc(2027, 3, 29, 0, 30)]


def test_half_hourly_cron_fires_once_per_wall_clock_time_when_clocks_go_back() -> None:
    found = dues("*/30 * * * *", "Europe/London", utc(2027, 10, 30, 23, 15), utc(2027, 10, 31, 3))
    assert found == [
        utc(2027, 10, 30, 23, 30),  # 00:30 BST
        utc(2027, 10, 31, 0, 0),  # 01:00 BST
        utc(2027, 10, 31, 0, 30),  # 01:30 BST; 01:00 and 01:30 GMT are not fired again
        utc(2027, 10, 31, 2, 0),  # 02:00 GMT
        utc(2027, 10, 31, 2, 30),
        utc(2027, 10, 31, 3, 0),
    ]
    london = zone("Europe/London")
    walls = [due.astimezone(london).replace(tzinfo=None) for due in found]
    assert len(walls) == len(set(walls))


def test_half_hourly_cron_fires_once_for_the_gap_when_clocks_go_forward() -> None:
    found = dues("*/30 * * * *", "Europe/London", utc(2027, 3, 27, 23, 15), utc(2027, 3, 28, 2))
    assert found == [
        utc(2027, 3, 27, 23, 30),  # 23:30 GMT
        utc(2027, 3, 28, 0, 0),
        utc(2027, 3, 28, 0, 30),
        utc(2027, 3, 28, 1, 0),  # 01:00 and 01:30 GMT (skipped) with 02:00 BST
        utc(2027, 3, 28, 1, 30),  # 02:30 BST
        utc(2027, 3, 28, 2, 0),
    ]


def test_aliases_and_six_field_crons_follow_the_same_rules() -> None:
    found = dues("@hourly", "Europe/London", utc(2027, 3, 27, 23, 15), utc(2027, 3, 28, 2))
    assert found == [utc(2027, 3, 28, 0), utc(2027, 3, 28, 1), utc(2027, 3, 28, 2)]
    found = dues("30 1 * * * 15", "Europe/London", utc(2027, 10, 30, 12), utc(2027, 11, 1, 12))
    assert found == [utc(2027, 10, 31, 0, 30, 15), utc(2027, 11, 1, 1, 30, 15)]


def test_new_york_changes_fire_each_wall_clock_time_once() -> None:
    # 01:30 happens twice on 2027-11-07 (05:30 UTC in EDT, 06:30 UTC in EST).
    found = dues("30 1 * * *", "America/New_York", utc(2027, 11, 5, 12), utc(2027, 11, 9))
    assert found == [utc(2027, 11, 6, 5, 30), utc(2027, 11, 7, 5, 30), utc(2027, 11, 8, 6, 30)]
    # 02:30 does not happen on 2027-03-14: it falls due at 03:00 EDT, 07:00 UTC.
    found = dues("30 2 * * *", "America/New_York", utc(2027, 3, 12, 12), utc(2027, 3, 16))
    assert found == [utc(2027, 3, 13, 7, 30), utc(2027, 3, 14, 7, 0), utc(2027, 3, 15, 6, 30)]


def test_a_cron_started_in_the_repeated_hour_does_not_repeat_its_times() -> None:
    # 01:10 GMT: 01:30 was already shown (in BST), so the next due time is 02:00 GMT.
    again = utc(2027, 10, 31, 1, 10)
    assert first_due(request(cron="*/30 * * * *", timezone="Europe/London"), again) == utc(
        2027, 10, 31, 2
    )
    assert first_due(request(cron="30 1 * * *", timezone="Europe/London"), again) == utc(
        2027, 11, 1, 1, 30
    )


def test_missed_times_across_a_change_are_counted_once_per_wall_clock_time() -> None:
    back = planned(utc(2027, 10, 30, 23, 45), cron="*/30 * * * *", timezone="Europe/London")
    assert back.next_due == utc(2027, 10, 31, 0, 0)  # 01:00 BST
    alarm, after = fire(back, utc(2027, 10, 31, 2, 10))
    # 01:00 BST, 01:30 BST, 02:00 GMT: one alarm for the last, two missed.
    assert (alarm.due_at, alarm.missed) == (utc(2027, 10, 31, 2, 0), 2)
    assert after is not None and after.next_due == utc(2027, 10, 31, 2, 30)

    forward = planned(utc(2027, 3, 27, 23, 45), cron="*/30 * * * *", timezone="Europe/London")
    alarm, after = fire(forward, utc(2027, 3, 28, 1, 45))
    # 00:00, 00:30, the gap with 02:00 BST, 02:30 BST.
    assert (alarm.due_at, alarm.missed) == (utc(2027, 3, 28, 1, 30), 3)
    assert after is not None and after.next_due == utc(2027, 3, 28, 2, 0)

    daily = planned(utc(2027, 10, 27, 12), cron="30 1 * * *", timezone="Europe/London")
    alarm, after = fire(daily, utc(2027, 11, 3, 12))
    assert (alarm.due_at, alarm.missed) == (utc(2027, 11, 3, 1, 30), 6)  # seven days, once each


def test_the_jump_past_too_many_missed_times_keeps_the_rules() -> None:
    # Every minute from 07:00 BST; the agent is back at 01:10 GMT, in the repeated hour.
    schedule = planned(utc(2027, 10, 30, 5, 59), cron="* * * * *", timezone="Europe/London")
    alarm, after = fire(schedule, utc(2027, 10, 31, 1, 10, 30))
    assert alarm.missed == MISSED_COUNT_LIMIT
    assert alarm.due_at == utc(2027, 10, 31, 0, 59)  # 01:59 BST, the latest wall time shown
    assert after is not None and after.next_due == utc(2027, 10, 31, 2, 0)  # 02:00 GMT


def test_a_naive_one_shot_reads_like_a_cron_across_changes() -> None:
    before = utc(2027, 3, 1)
    gap = first_due(request(at="2027-03-28T01:30:00", timezone="Europe/London"), before)
    assert gap == utc(2027, 3, 28, 1, 0)  # the end of the gap, 02:00 BST
    twice = first_due(request(at="2027-10-31T01:30:00", timezone="Europe/London"), before)
    assert twice == utc(2027, 10, 31, 0, 30)  # the first 01:30, in BST


def test_utc_crons_are_unchanged() -> None:
    found = dues("*/30 * * * *", "UTC", utc(2027, 10, 31, 0, 15), utc(2027, 10, 31, 1, 45))
    assert found == [utc(2027, 10, 31, 0, 30), utc(2027, 10, 31, 1), utc(2027, 10, 31, 1, 30)]
    assert planned(utc(2027, 10, 31, 0, 15), cron="*/30 * * * *").next_due == found[0]


# --------------------------------------------------------------------------- on the wire


async def test_far_future_one_shots_are_refused_and_the_agent_keeps_working(
    perennial: Perennial, worker: Worker
) -> None:
    agent = perennial.agent("notes", unique("far"))
    await agent.ask("hello")
    handle = perennial.client.get_workflow_handle(agent.id)
    for raw in (
        {"id": "x", "payload": "p", "at": "9999-12-31T20:00:00Z", "timezone": "Asia/Tokyo"},
        {"id": "x", "payload": "p", "at": "9999-12-31T23:59:58Z"},
    ):
        with pytest.raises(WorkflowUpdateFailedError) as failed:
            await handle.execute_update("schedule", raw)
        assert isinstance(failed.value.cause, ApplicationError)
        assert failed.value.cause.type == "InvalidSchedule"
    assert await agent.schedules() == []
    assert (await agent.ask("still here")).reply
