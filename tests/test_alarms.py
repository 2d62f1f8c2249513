"""Alarms and schedules against a real dev server: each timing kind, replace, cancel, typed
refusals before history, the Web UI's view, the CLI, and alarms in the one-at-a-time loop.

Delays are a second or two; due times are computed and checked, never waited for by sleeping.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Awaitable, Sized
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.api.history.v1 import HistoryEvent
from temporalio.client import WorkflowUpdateFailedError
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.exceptions import ApplicationError
from temporalio.worker import Replayer, Worker

import tests.alarm_agents  # noqa: F401  (registers the test agent types)
from perennial.client import (
    AgentHandle,
    AgentNotFound,
    InvalidSchedule,
    Perennial,
    ScheduleNotFound,
    Settings,
    TooManySchedules,
)
from perennial.workflows.messages import (
    AlarmEvent,
    Event,
    ScheduleCancelledEvent,
    ScheduledEvent,
    TurnEvent,
    TurnFailedEvent,
)
from perennial.workflows.registry import agent_types
from tests.alarm_agents import BOOM, SLEEP, RecorderState
from tests.conftest import ROOT, eventually
from tests.histories.record_alarms import alarms_scenario
from tests.support import accepted_updates, busy, history, unique

pytestmark = pytest.mark.usefixtures("worker")

RECORDER = "test_alarm_recorder"


async def events(agent: AgentHandle) -> list[Event]:
    return (await agent.events(limit=1000)).events


async def alarm_events(agent: AgentHandle, schedule_id: str | None = None) -> list[AlarmEvent]:
    return [
        e
        for e in await events(agent)
        if isinstance(e, AlarmEvent) and schedule_id in (None, e.schedule_id)
    ]


async def recorded(agent: AgentHandle) -> RecorderState:
    state = (await agent.state()).state
    assert isinstance(state, RecorderState)
    return state


async def notes(agent: AgentHandle) -> list[str]:
    return list((await agent.state_view()).state["notes"])  # type: ignore[arg-type]


async def status(agent: AgentHandle) -> str | None:
    return (await agent.describe()).status


async def current_details(perennial: Perennial, agent: AgentHandle) -> str:
    metadata = await perennial.client.get_workflow_handle(agent.id).query(
        "__temporal_workflow_metadata"
    )
    return metadata.current_details


async def timer_summaries(perennial: Perennial, agent: AgentHandle) -> list[str]:
    found = []
    for event in await history(agent, perennial.client):
        if event.event_type == EventType.EVENT_TYPE_TIMER_STARTED:
            summary = event.user_metadata.summary
            found.append(json.loads(summary.data) if summary.data else "")
    return found


# --------------------------------------------------------------------------- timing kinds


async def test_an_alarm_after_a_delay_becomes_one_note(perennial: Perennial) -> None:
    agent = perennial.agent("notes", unique("after"))
    result = await agent.schedule("water", "water the plants", after_seconds=1.5)
    schedule = result.schedule
    assert not result.replaced and schedule.created_by == "client"
    assert schedule.next_due == schedule.created_at + timedelta(seconds=1.5)
    assert [s.id for s in await agent.schedules()] == ["water"]

    # The Web UI's view while it waits: status, details, and the timer's summary.
    await eventually(lambda: _equals(status(agent), "waiting_alarm"))
    details = await current_details(perennial, agent)
    assert "next alarm `water`" in details and "water the plants" in details

    await eventually(lambda: _equals(notes(agent), ["water the plants"]))
    assert "alarm water: water the plants" in await timer_summaries(perennial, agent)
    [alarm] = await alarm_events(agent)
    assert alarm.due_at == schedule.next_due and alarm.fired_at >= alarm.due_at
    assert alarm.missed == 0 and alarm.next_due is None
    turns = [e for e in await events(agent) if isinstance(e, TurnEvent)]
    assert [t.message_id for t in turns] == [f"alarm:water@{schedule.next_due.isoformat()}"]
    assert await agent.schedules() == []
    await eventually(lambda: _equals(status(agent), "idle"))


async def test_an_alarm_at_a_local_time_fires_at_that_instant(perennial: Perennial) -> None:
    agent = perennial.agent("notes", unique("at"))
    due = datetime.now(UTC) + timedelta(seconds=2)
    paris_wall_clock = due.astimezone(ZoneInfo("Europe/Paris")).replace(tzinfo=None)
    result = await agent.schedule("call", "call mom", at=paris_wall_clock, timezone="Europe/Paris")
    assert result.schedule.next_due == due and result.schedule.at == due
    await eventually(lambda: _equals(notes(agent), ["call mom"]))
    [alarm] = await alarm_events(agent)
    assert alarm.due_at == due


async def test_an_interval_does_not_drift_and_stops_when_cancelled(perennial: Perennial) -> None:
    agent = perennial.agent(RECORDER, unique("every"))
    first = (await agent.schedule("tick", "tick", every_seconds=1)).schedule.next_due

    await eventually(lambda: _at_least(_alarm_count(agent), 3))
    seen = 0
    for record in (await recorded(agent)).alarms:
        seen += 1 + record.missed
        # On the grid of the first due time, whenever each alarm was handled.
        assert record.due_at == first + timedelta(seconds=seen - 1)
        assert record.fired_at >= record.due_at

    cancelled = await agent.cancel_schedule("tick")
    assert cancelled.id == "tick" and cancelled.fired >= 3
    assert await agent.schedules() == []
    # Let more than one interval pass, observably: a one-shot marker fires 2.5 s later.
    await agent.schedule("marker", "marker", after_seconds=2.5)
    await eventually(lambda: _contains(alarm_events(agent, "marker")))
    log = await events(agent)
    [cancel] = [e for e in log if isinstance(e, ScheduleCancelledEvent)]
    assert not [e for e in log if isinstance(e, AlarmEvent) and e.schedule_id == "tick"
                and e.offset > cancel.offset]  # fmt: skip
    ticks_fired = [e for e in log if isinstance(e, AlarmEvent) and e.schedule_id == "tick"]
    assert len([a for a in (await recorded(agent)).alarms if a.schedule_id == "tick"]) == len(
        ticks_fired
    )


async def test_cron_schedules_follow_their_time_zone(perennial: Perennial) -> None:
    agent = perennial.agent(RECORDER, unique("cron"))
    daily = await agent.schedule(
        "standup", "standup", cron="30 9 * * 1-5", timezone="America/New_York"
    )
    assert daily.schedule.next_due == _next_weekday_0930_new_york(daily.schedule.created_at)

    await agent.schedule("fast", "fast", cron="* * * * * */2", timezone="Asia/Kolkata")
    await eventually(lambda: _at_least(_alarm_count(agent), 2))
    fast = [a for a in (await recorded(agent)).alarms if a.schedule_id == "fast"]
    for alarm in fast:
        assert alarm.due_at.second % 2 == 0 and alarm.due_at.microsecond == 0
    for before, after in zip(fast, fast[1:], strict=False):
        assert after.due_at - before.due_at == timedelta(seconds=2 * (1 + after.missed))
    await agent.cancel_schedule("fast")
    [left] = await agent.schedules()
    assert left.id == "standup" and left.next_due == daily.schedule.next_due


async def test_scheduling_an_existing_id_replaces_it(perennial: Perennial) -> None:
    agent = perennial.agent("notes", unique("replace"))
    await agent.schedule("x", "old payload", after_seconds=60)
    result = await agent.schedule("x", "new payload", after_seconds=1)
    assert result.replaced
    assert [(s.id, s.payload) for s in await agent.schedules()] == [("x", "new payload")]
    await eventually(lambda: _equals(notes(agent), ["new payload"]))
    assert await agent.schedules() == []  # the 60 s version is gone, not kept beside it
    scheduled = [e for e in await events(agent) if isinstance(e, ScheduledEvent)]
    assert [e.replaced for e in scheduled] == [False, True]


# --------------------------------------------------------------------------- bad input


async def test_bad_schedules_get_typed_errors_and_leave_no_trace(perennial: Perennial) -> None:
    agent = perennial.agent(RECORDER, unique("invalid"))
    # Refused by the client: nothing is sent, the agent is not even created.
    for kwargs in (
        {},
        {"after_seconds": 1, "every_seconds": 1},
        {"cron": "61 * * * *"},
        {"cron": "0 9 * * *", "timezone": "Mars/Olympus"},
        {"every_seconds": 0.2},
        {"after_seconds": 5, "timezone": "Europe/Paris"},
    ):
        with pytest.raises(InvalidSchedule):
            await agent.schedule("x", "p", **kwargs)  # type: ignore[arg-type]
    with pytest.raises(AgentNotFound):
        await agent.state_view()

    await agent.schedule("a", "p", after_seconds=60)
    # Refused by the agent's update validators (the wire, bypassing the client's checks).
    handle = perennial.client.get_workflow_handle(agent.id)
    for raw in (
        {"id": "e", "payload": "p"},
        {"id": "e", "payload": "p", "cron": "bad cron"},
        {"id": "e", "payload": "p", "every_seconds": 0.1},
        {"id": "e", "payload": "p", "cron": "0 9 * * *", "timezone": "Nope/Nope"},
        {"id": "e", "payload": "p", "after_seconds": 1, "extra": True},
        "not an object",
    ):
        with pytest.raises(WorkflowUpdateFailedError) as failed:
            await handle.execute_update("schedule", raw)
        assert isinstance(failed.value.cause, ApplicationError)
        assert failed.value.cause.type == "InvalidSchedule"
    with pytest.raises(InvalidSchedule, match="not in the future"):
        await agent.schedule("late", "p", at=datetime.now(UTC) - timedelta(minutes=1))

    await agent.schedule("b", "p", after_seconds=60)
    await agent.schedule("c", "p", after_seconds=60)
    with pytest.raises(TooManySchedules):
        await agent.schedule("d", "p", after_seconds=60)
    await agent.schedule("c", "replaced at the limit", after_seconds=30)
    with pytest.raises(ScheduleNotFound):
        await agent.cancel_schedule("nope")
    with pytest.raises(WorkflowUpdateFailedError) as failed:
        await handle.execute_update("cancel_schedule", {"id": "nope"})
    assert isinstance(failed.value.cause, ApplicationError)
    assert failed.value.cause.type == "ScheduleNotFound"

    # Only the four accepted updates entered history; the agent's log agrees.
    updates = accepted_updates(await history(agent, perennial.client))
    assert [(u.name, u.input["id"]) for u in updates] == [
        ("schedule", "a"), ("schedule", "b"), ("schedule", "c"), ("schedule", "c"),
    ]  # fmt: skip
    log = await events(agent)
    assert [e.schedule_id for e in log if isinstance(e, ScheduledEvent)] == ["a", "b", "c", "c"]
    assert sorted(s.id for s in await agent.schedules()) == ["a", "b", "c"]


async def test_cancel_and_list_never_create_an_agent(perennial: Perennial) -> None:
    agent = perennial.agent("notes", unique("ghost"))
    with pytest.raises(AgentNotFound):
        await agent.schedules()
    with pytest.raises(AgentNotFound):
        await agent.cancel_schedule("x")


# --------------------------------------------------------------------------- in the loop


async def test_a_failed_alarm_turn_restores_the_state(perennial: Perennial) -> None:
    agent = perennial.agent(RECORDER, unique("boom"))
    reply = await agent.ask("before")
    await agent.schedule("bad", f"{BOOM}!", after_seconds=1)
    await eventually(lambda: _contains(_failed_turns(agent)))
    [failed] = await _failed_turns(agent)
    assert failed.message_id.startswith("alarm:bad@") and failed.error_type == "ValueError"
    view = await agent.state()
    assert view.version == reply.version  # the alarm's changes were undone
    assert (await recorded(agent)).applied == ["message:before"]
    assert await agent.schedules() == []  # the due time was applied (and failed): not retried
    assert (await agent.ask("after")).version == reply.version + 1


async def test_an_alarm_due_during_a_turn_keeps_its_place_in_line(perennial: Perennial) -> None:
    agent = perennial.agent(RECORDER, unique("busy"))
    due = (await agent.schedule("ring", "ring", after_seconds=1)).schedule.next_due
    await agent.send(f"{SLEEP}3")
    await eventually(lambda: busy(agent))
    await eventually(lambda: datetime.now(UTC) > due + timedelta(milliseconds=300))
    assert (await agent.state_view()).busy  # the alarm fell due while the turn ran
    await agent.send("after the alarm")
    await eventually(lambda: _at_least(_applied_count(agent), 3))
    assert (await recorded(agent)).applied == [
        f"message:{SLEEP}3", "alarm:ring", "message:after the alarm",
    ]  # fmt: skip
    [alarm] = await alarm_events(agent)
    assert alarm.due_at == due and alarm.fired_at > due + timedelta(seconds=1)


async def test_an_alarm_task_acts_and_publishes_after(perennial: Perennial) -> None:
    """A crowd of alarms due together is as late as its slowest workflow tasks: the task
    that applies a one-shot alarm makes no command at all: no visibility write, no timer.
    What the turn changed reaches the visibility API a few seconds later, through a
    timer armed while the agent waited; one armed for a cancelled alarm is cancelled."""
    agent = perennial.agent("notes", unique("crowd"))
    await agent.schedule("gone", "never rings", after_seconds=600)
    await agent.cancel_schedule("gone")
    first = await agent.ask("before the alarms")
    await agent.schedule("once", "once", after_seconds=1)
    await eventually(lambda: _at_least(_count(alarm_events(agent)), 1))
    await agent.schedule("ring", "ring", every_seconds=1)
    await eventually(lambda: _at_least(_count(alarm_events(agent, "ring")), 3))
    await agent.cancel_schedule("ring")
    final = await agent.state()
    assert final.version > first.version
    await eventually(lambda: _published(agent, final.version, "idle"))
    # The timer armed for "once" fires 2-4 s after it, maybe after the rings are over.
    await eventually(lambda: _timer_fired(agent, perennial, "publish after alarm"))

    events = await history(agent, perennial.client)
    timers = _timer_summaries(events)
    fired = [
        timers[e.timer_fired_event_attributes.started_event_id]
        for e in events
        if e.event_type == EventType.EVENT_TYPE_TIMER_FIRED
    ]
    assert fired.count("alarm ring: ring") >= 3
    cancelled = [
        timers[e.timer_canceled_event_attributes.started_event_id]
        for e in events
        if e.event_type == EventType.EVENT_TYPE_TIMER_CANCELED
    ]
    assert "publish after alarm" in cancelled  # the one armed for "gone"
    # (A recurring alarm's task may carry the upsert of the alarm before it, when that
    # publishing timer fires together with it: only the one-shot task is checked.)
    [once] = [
        index
        for index, e in enumerate(events)
        if e.event_type == EventType.EVENT_TYPE_TIMER_FIRED
        and timers[e.timer_fired_event_attributes.started_event_id] == "alarm once: once"
    ]
    assert _commands_of_next_task(events, once) == []


def _timer_summaries(events: list[HistoryEvent]) -> dict[int, str]:
    return {
        e.event_id: json.loads(e.user_metadata.summary.data)
        for e in events
        if e.event_type == EventType.EVENT_TYPE_TIMER_STARTED
    }


async def _timer_fired(agent: AgentHandle, perennial: Perennial, summary: str) -> bool:
    events = await history(agent, perennial.client)
    timers = _timer_summaries(events)
    return any(
        timers.get(e.timer_fired_event_attributes.started_event_id) == summary
        for e in events
        if e.event_type == EventType.EVENT_TYPE_TIMER_FIRED
    )


def _commands_of_next_task(events: list[HistoryEvent], index: int) -> list[HistoryEvent]:
    """The events the first workflow task completed after `events[index]` recorded."""
    completed = next(
        i for i in range(index, len(events))
        if events[i].event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED
    )  # fmt: skip
    made = []
    for event in events[completed + 1 :]:
        if event.event_type in _NOT_COMMANDS:
            break
        made.append(event)
    return made


_NOT_COMMANDS = {
    EventType.EVENT_TYPE_WORKFLOW_TASK_SCHEDULED,
    EventType.EVENT_TYPE_TIMER_FIRED,
    EventType.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED,
    EventType.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_ACCEPTED,
}


async def _count(items: Awaitable[Sized]) -> int:
    return len(await items)


async def _published(agent: AgentHandle, version: int, agent_status: str) -> bool:
    seen = await agent.describe()
    return (seen.version, seen.status) == (version, agent_status)


# --------------------------------------------------------------------------- the CLI


async def perennial_cli(settings: Settings, *args: str) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "perennial.client.cli",
        "--address", settings.address, "--task-queue", settings.task_queue, *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, cwd=ROOT,
    )  # fmt: skip
    out, err = await asyncio.wait_for(process.communicate(), 60)
    return process.returncode or 0, out.decode(), err.decode()


async def test_cli_schedule_schedules_unschedule(settings: Settings, worker: Worker) -> None:
    name = f"notes/{unique('cli')}"
    code, out, _ = await perennial_cli(
        settings, "schedule", name, "--id", "daily", "--payload", "review the day",
        "--cron", "0 18 * * *", "--timezone", "Europe/Paris",
    )  # fmt: skip
    assert code == 0 and "scheduled on" in out and "daily" in out and "Europe/Paris" in out
    code, out, _ = await perennial_cli(
        settings, "--json", "schedule", name, "--id", "soon", "--payload", "soon", "--after", "1"
    )
    assert code == 0 and json.loads(out)["schedule"]["created_by"] == "cli"

    async def fired() -> bool:
        _, out, _ = await perennial_cli(settings, "events", name)
        return "alarm soon due" in out

    await eventually(fired)
    code, out, _ = await perennial_cli(settings, "--json", "schedules", name)
    assert code == 0 and [s["id"] for s in json.loads(out)] == ["daily"]
    code, out, _ = await perennial_cli(settings, "schedules", name)
    assert code == 0 and "daily" in out and "review the day" in out
    code, out, _ = await perennial_cli(settings, "unschedule", name, "daily")
    assert code == 0 and "cancelled on" in out
    code, out, _ = await perennial_cli(settings, "schedules", name)
    assert code == 0 and "(no schedules)" in out

    code, _, err = await perennial_cli(settings, "unschedule", name, "daily")
    assert code == 2 and "ScheduleNotFound" in err
    code, _, err = await perennial_cli(
        settings, "schedule", name, "--id", "x", "--payload", "p", "--cron", "nope"
    )
    assert code == 2 and "InvalidSchedule" in err
    code, _, err = await perennial_cli(
        settings, "schedule", name, "--id", "x", "--payload", "p", "--at", "yesterday"
    )
    assert code == 2 and "InvalidSchedule" in err


# --------------------------------------------------------------------------- helpers


async def _equals(value: Awaitable[object], expected: object) -> bool:
    return await value == expected


async def _at_least(value: Awaitable[int], n: int) -> bool:
    return await value >= n


async def _contains(value: Awaitable[Sized]) -> bool:
    return len(await value) > 0


async def _alarm_count(agent: AgentHandle) -> int:
    return len((await recorded(agent)).alarms)


async def _applied_count(agent: AgentHandle) -> int:
    return len((await recorded(agent)).applied)


async def _failed_turns(agent: AgentHandle) -> list[TurnFailedEvent]:
    return [e for e in await events(agent) if isinstance(e, TurnFailedEvent)]


def _next_weekday_0930_new_york(after: datetime) -> datetime:
    new_york = ZoneInfo("America/New_York")
    day = after.astimezone(new_york).date()
    while True:
        candidate = datetime(day.year, day.month, day.day, 9, 30, tzinfo=new_york)
        if candidate > after and candidate.weekday() < 5:
            return candidate.astimezone(UTC)
        day += timedelta(days=1)


# --------------------------------------------------------------------------- determinism


async def test_a_fresh_alarm_history_replays(perennial: Perennial) -> None:
    workflow_id = await alarms_scenario(perennial, unique("alarm-replay"))
    history = await perennial.client.get_workflow_handle(workflow_id).fetch_history()
    replayer = Replayer(
        workflows=list(agent_types().values()), data_converter=pydantic_data_converter
    )
    await replayer.replay_workflow(history)
