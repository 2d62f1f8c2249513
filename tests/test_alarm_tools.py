"""The model's alarm tools (`schedule_alarm`, `list_alarms`, `cancel_alarm`) with a scripted
Chat Completions server: the model sets an alarm, the alarm wakes the model, and what a failed
turn scheduled is undone."""

from __future__ import annotations

import json

import pytest

import tests.alarm_llm_agents  # noqa: F401  (registers the test agent type)
from perennial.client import Perennial, TurnFailed
from perennial.testing.scripted_llm import ScriptedLLM, call, error, text, tool_calls
from perennial.workflows.messages import (
    AlarmEvent,
    ScheduleCancelledEvent,
    ScheduledEvent,
)
from tests.conftest import eventually
from tests.support import has_events, turns, unique

pytestmark = [pytest.mark.usefixtures("worker"), pytest.mark.agents(llm=True)]

AGENT = "test_alarm_llm"


async def test_the_model_sets_an_alarm_that_wakes_it(
    perennial: Perennial, scripted_llm: ScriptedLLM
) -> None:
    scripted_llm.script(
        tool_calls(
            call(
                "schedule_alarm",
                alarm_id="stretch",
                action="Tell the user to stretch.",
                after_seconds=1,
            )
        ),
        text("Done: I will remind you in a second."),
        text("Time to stretch!"),
    )
    agent = perennial.agent(AGENT, unique("llm-alarm"))
    reply = await agent.ask("remind me in a second to stretch")
    assert reply.reply == "Done: I will remind you in a second."

    await eventually(lambda: has_events(agent, "turn", 2))
    log = (await agent.events(limit=1000)).events
    [scheduled] = [e for e in log if isinstance(e, ScheduledEvent)]
    assert scheduled.schedule_id == "stretch" and scheduled.created_by == "model"
    [alarm] = [e for e in log if isinstance(e, AlarmEvent)]
    assert alarm.payload == "Tell the user to stretch."
    last = (await turns(agent))[-1]
    assert last.message_id == f"alarm:stretch@{alarm.due_at.isoformat()}"
    assert last.reply == "Time to stretch!"
    # The model was told which alarm went off and what to do.
    woken = scripted_llm.completions[-1].messages[-1]
    assert woken["role"] == "user"
    assert (
        "[alarm 'stretch'" in woken["content"] and "Tell the user to stretch." in woken["content"]
    )
    assert await agent.schedules() == []


async def test_the_model_lists_and_cancels_alarms(
    perennial: Perennial, scripted_llm: ScriptedLLM
) -> None:
    scripted_llm.script(
        tool_calls(
            call("schedule_alarm", id="set-daily", alarm_id="daily", action="Plan the day.",
                 cron="0 9 * * *", timezone="Europe/Paris"),
            call("schedule_alarm", id="set-bad", alarm_id="bad", action="x", cron="not a cron"),
            call("schedule_alarm", id="set-two", alarm_id="two", action="x", after_seconds=5,
                 every_seconds=5),
        ),
        tool_calls(call("list_alarms", id="list")),
        tool_calls(call("cancel_alarm", id="cancel-daily", alarm_id="daily"),
                   call("cancel_alarm", id="cancel-nope", alarm_id="nope")),
        text("All clear."),
    )  # fmt: skip
    agent = perennial.agent(AGENT, unique("llm-list"))
    assert (await agent.ask("set my alarms, show them, then cancel")).reply == "All clear."

    results = scripted_llm.completions[-1].tool_results()  # every result of the turn, by call
    assert json.loads(results["set-daily"])["scheduled"]["alarm_id"] == "daily"
    assert results["set-bad"].startswith("error:") and "not a cron" in results["set-bad"]
    assert results["set-two"].startswith("error:") and "exactly one" in results["set-two"]
    listed = json.loads(results["list"])
    assert [a["alarm_id"] for a in listed["alarms"]] == ["daily"] and "now" in listed
    assert listed["alarms"][0]["when"] == "cron '0 9 * * *' Europe/Paris"
    assert listed["alarms"][0]["created_by"] == "model"
    assert results["cancel-daily"] == "cancelled alarm 'daily'"
    assert results["cancel-nope"].startswith("error:")
    assert "no schedule 'nope'" in results["cancel-nope"]
    assert await agent.schedules() == []


async def test_a_failed_turn_undoes_the_alarms_it_set(
    perennial: Perennial, scripted_llm: ScriptedLLM
) -> None:
    agent = perennial.agent(AGENT, unique("llm-undo"))
    await agent.schedule("kept", "set by a person", after_seconds=3600)
    scripted_llm.script(
        tool_calls(
            call("schedule_alarm", alarm_id="new", action="x", after_seconds=3600),
            call(
                "schedule_alarm", alarm_id="kept", action="changed by the model", after_seconds=60
            ),
        ),
        error(400, "the model refuses"),
    )
    with pytest.raises(TurnFailed):
        await agent.ask("set some alarms")
    [kept] = await agent.schedules()
    assert kept.id == "kept" and kept.payload == "set by a person"
    log = (await agent.events(limit=1000)).events
    undone = [e for e in log if isinstance(e, ScheduleCancelledEvent)]
    assert [(e.schedule_id, e.reason is not None) for e in undone] == [("new", True)]
    restored = [e for e in log if isinstance(e, ScheduledEvent) and e.reason]
    assert [(e.schedule_id, e.payload) for e in restored] == [("kept", "set by a person")]
