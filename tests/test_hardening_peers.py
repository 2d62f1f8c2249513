"""Nobody speaks for another agent: answers, child reports and change notices are believed only
with the capability the receiver issued (no query reveals it), subscribers are confirmed
agents, and subscriber lists stay bounded. Each attack comes through the raw Temporal client,
with everything the queries show.
"""

from __future__ import annotations

import asyncio

import pytest
from temporalio.api.enums.v1 import EventType

import tests.coordination_agents  # noqa: F401 - registers the test agent types
from perennial.client import Perennial
from tests.conftest import eventually
from tests.support import has_events, has_note, history, notes, unique, worker_task_failures

pytestmark = [
    pytest.mark.asyncio(loop_scope="session"),
    pytest.mark.agents(app=("tests.coordination_agents",)),
]

FORGED_TOKEN = "0" * 32


@pytest.mark.usefixtures("worker")
async def test_a_strangers_answer_is_not_taken_for_the_asked_agents(perennial: Perennial) -> None:
    name = unique()
    asker = perennial.agent("test_parent", name)
    await asker.ask(f"ask test_child {name} 60 wait for me")
    handle = perennial.client.get_workflow_handle(asker.id)
    [pending] = await handle.query("asks")
    assert "token" not in pending  # the query shows the correlation id, never the token
    for token in (None, FORGED_TOKEN):
        forged = {"correlation_id": pending["correlation_id"], "from_id": pending["target_id"],
                  "status": "answered", "reply": "forged answer", "token": token}  # fmt: skip
        await handle.signal("agent_reply", forged)
    await eventually(lambda: has_events(asker, "rejected", 2))
    assert not any("forged" in note for note in await notes(asker))
    # The real answer still wakes the asker, once.
    await perennial.client.get_workflow_handle(f"test_child/{name}").signal("release")
    await eventually(lambda: has_note(asker, f"answered test_child/{name}: done: wait for me"))
    assert (await asker.state()).state.counter == 1


@pytest.mark.usefixtures("worker")
async def test_a_forged_child_report_is_ignored_and_the_real_one_applied(
    perennial: Perennial,
) -> None:
    name = unique()
    parent = perennial.agent("test_parent", name)
    await parent.ask(f"spawn test_child {name} wait here")
    handle = perennial.client.get_workflow_handle(parent.id)
    [record] = await handle.query("children")
    assert "token" not in record
    forged = {"child_id": record["child_id"], "task_id": record["task_id"],
              "status": "completed", "result": "forged result", "token": FORGED_TOKEN}  # fmt: skip
    await handle.signal("child_finished", forged)
    await eventually(lambda: has_events(parent, "rejected"))
    assert len(await handle.query("children")) == 1  # still in flight
    await perennial.client.get_workflow_handle(record["child_id"]).signal("release")
    await eventually(lambda: has_note(parent, f"completed {record['child_id']}: done: wait here"))
    assert not any("forged" in note for note in await notes(parent))


@pytest.mark.usefixtures("worker")
async def test_strangers_cannot_subscribe_other_workflows(perennial: Perennial) -> None:
    """200 subscriptions for workflows that never asked: none is confirmed, and changes to
    the agent send no `peer_changed` anywhere. The list of would-be subscribers is bounded."""
    target = perennial.agent("notes", unique())
    await target.ask("exists")
    handle = perennial.client.get_workflow_handle(target.id)
    victims = [f"notes/victim-{i}" for i in range(200)]
    await perennial.agent("notes", "victim-0").ask("i exist, but never subscribed")
    await asyncio.gather(*(
        handle.signal("subscribe", {"subscriber_id": victim, "watch": "events",
                                    "debounce_seconds": 0.05, "token": FORGED_TOKEN})
        for victim in victims
    ))  # fmt: skip
    for i in range(10):
        await target.send(f"change {i}")
    await eventually(lambda: has_events(target, "rejected", 200), timeout=60)
    assert (await handle.query("subscriptions"))["observed_by"] == []
    events = await history(target, perennial.client)
    signalled = [
        e.signal_external_workflow_execution_initiated_event_attributes.signal_name
        for e in events
        if e.event_type == EventType.EVENT_TYPE_SIGNAL_EXTERNAL_WORKFLOW_EXECUTION_INITIATED
    ]
    assert signalled == []
    assert _most_confirmations_at_once(events) <= 32  # max_observers; the rest turned away
    assert worker_task_failures(events) == []


def _most_confirmations_at_once(events: list) -> int:  # type: ignore[type-arg]
    """The most `confirm_subscriber` activities in flight at any point of the history."""
    confirming: set[int] = set()
    most = 0
    for e in events:
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
            if e.activity_task_scheduled_event_attributes.activity_type.name == "confirm_subscriber":
                confirming.add(e.event_id)
                most = max(most, len(confirming))
        for closed in ("completed", "failed", "timed_out", "canceled"):
            attrs = getattr(e, f"activity_task_{closed}_event_attributes")
            if e.HasField(f"activity_task_{closed}_event_attributes"):
                confirming.discard(attrs.scheduled_event_id)
    return most


@pytest.mark.usefixtures("worker")
async def test_a_forged_change_notice_is_ignored(perennial: Perennial) -> None:
    name = unique()
    await perennial.agent("notes", name).ask("exists")
    observer = perennial.agent("test_parent", name)
    await observer.ask(f"observe notes {name} 0.1")
    handle = perennial.client.get_workflow_handle(observer.id)
    forged = {"peer_id": f"notes/{name}", "version": 99, "last_offset": 99,
              "changed_at": "2026-01-01T00:00:00Z", "token": FORGED_TOKEN}  # fmt: skip
    await handle.signal("peer_changed", forged)
    await eventually(lambda: has_events(observer, "rejected"))
    assert not any("v99" in note for note in await notes(observer))
    await perennial.agent("notes", name).send("a real change")
    await eventually(lambda: has_note(observer, f"changed notes/{name} v2"))


@pytest.mark.usefixtures("worker")
async def test_thousands_of_subscribe_signals_leave_an_agent_that_still_switches_runs(
    perennial: Perennial,
) -> None:
    """2,400 subscribe signals with distinct long ids: the would-be subscribers are bounded,
    so what continue-as-new carries stays small, and the agent switches runs normally."""
    target = perennial.agent("test_parent_short", unique())
    await target.ask("exists")
    handle = perennial.client.get_workflow_handle(target.id)
    sem = asyncio.Semaphore(32)

    async def subscribe(i: int) -> None:
        async with sem:
            await handle.signal("subscribe", {"subscriber_id": f"notes/{i:04d}-" + "s" * 290,
                                              "token": FORGED_TOKEN})  # fmt: skip

    await asyncio.gather(*(subscribe(i) for i in range(2_400)))
    await target.ask("switch now")  # update 2: the short agent continues as new
    await target.ask("and again")
    assert (await target.state_view()).version == 3
    assert (await handle.query("subscriptions"))["observed_by"] == []
    assert worker_task_failures(await history(target, perennial.client)) == []
