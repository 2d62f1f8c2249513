"""The entity's basic contract: get-or-create, replies, duplicate ids, search attributes."""

from __future__ import annotations

import asyncio
import json

import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.api.history.v1 import HistoryEvent
from temporalio.worker import Worker

import tests.agents  # noqa: F401  (registers the test agent types before a worker is built)
from perennial.client import AgentHandle, AgentNotFound, AgentStopped, Perennial
from tests.conftest import eventually
from tests.support import history, unique


async def test_state_of_an_agent_that_never_existed_is_not_found(perennial: Perennial) -> None:
    agent = perennial.agent("notes", unique())
    with pytest.raises(AgentNotFound):
        await agent.state()
    with pytest.raises(AgentNotFound):
        await agent.events()
    # Reading must not have created it.
    with pytest.raises(AgentNotFound):
        await agent.describe()


async def test_ask_creates_the_agent_and_later_asks_reach_the_same_one(
    perennial: Perennial, worker: Worker, settings
) -> None:
    name = unique()
    agent = perennial.agent("notes", name)

    first = await agent.ask("buy milk")
    assert first.reply == "Noted (note #1)."
    assert first.version == 1
    run_id = (await agent.describe()).run_id

    # A second client, a second handle, same name: the same agent, not a new one.
    other = await Perennial.connect(settings)
    second = await other.agent("notes", name).ask("buy bread")
    assert second.reply == "Noted (note #2)."
    assert second.version == 2
    assert (await agent.describe()).run_id == run_id

    state = await agent.state()
    assert state.version == 2
    assert state.state.counter == 2
    assert state.state.notes == ["buy milk", "buy bread"]
    assert state.versions_kept == [0, 1, 2]

    # Exactly one workflow with this id ever existed.
    found = [w async for w in perennial.client.list_workflows(f"WorkflowId = '{agent.id}'")]
    assert len(found) == 1


async def test_send_creates_the_agent(perennial: Perennial, worker: Worker) -> None:
    agent = perennial.agent("notes", unique())
    message_id = await agent.send("hello", sender="bob")
    assert message_id

    async def applied() -> bool:
        try:
            return (await agent.state()).state.counter == 1
        except AgentNotFound:  # the first task may not have run yet
            return False

    await eventually(applied)
    page = await agent.events()
    kinds = [(e.kind, getattr(e, "message_id", None)) for e in page.events]
    assert kinds == [("received", message_id), ("turn", message_id)]
    assert page.events[0].sender == "bob"


async def test_a_handle_calls_its_agent_directly_once_seen_and_never_recreates_a_stopped_one(
    perennial: Perennial, worker: Worker, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Get-or-create on the first call only: later calls through the same handle are plain
    signals and updates. A terminated agent is not started again from empty by the next send
    or ask: they raise AgentStopped, and `recover` brings the agent back with its state."""
    with_start: list[str] = []
    client = perennial.client
    start_workflow, update_with_start = client.start_workflow, client.execute_update_with_start_workflow

    async def counted_start(*args: object, **kwargs: object) -> object:
        with_start.append("signal")
        return await start_workflow(*args, **kwargs)  # type: ignore[arg-type]

    async def counted_update(*args: object, **kwargs: object) -> object:
        with_start.append("update")
        return await update_with_start(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(client, "start_workflow", counted_start)
    monkeypatch.setattr(client, "execute_update_with_start_workflow", counted_update)
    agent = perennial.agent("notes", unique())
    await agent.send("one")
    await agent.send("two")
    assert (await agent.ask("three")).reply == "Noted (note #3)."
    assert with_start == ["signal"]

    await client.get_workflow_handle(agent.id).terminate(reason="test: the agent is gone")
    with pytest.raises(AgentStopped, match="was terminated: test: the agent is gone"):
        await agent.send("four")  # NOT_FOUND for the signal, then a refused signal-with-start
    with pytest.raises(AgentStopped, match="perennial recover"):
        await perennial.agent("notes", agent.name).ask("five")  # a fresh handle: the same
    assert (await agent.state_view()).state["notes"] == ["one", "two", "three"]

    await agent.recover()
    assert (await agent.ask("six")).reply == "Noted (note #4)."
    assert (await agent.state_view()).state["notes"] == ["one", "two", "three", "six"]


async def test_ask_reply_carries_text_version_and_id(perennial: Perennial, worker: Worker) -> None:
    agent = perennial.agent("notes", unique())
    replies = [await agent.ask(f"note {i}", id=f"m{i}") for i in range(3)]
    assert [(r.id, r.reply, r.version) for r in replies] == [
        ("m0", "Noted (note #1).", 1),
        ("m1", "Noted (note #2).", 2),
        ("m2", "Noted (note #3).", 3),
    ]
    assert (await agent.state()).version == 3


async def test_send_twice_with_the_same_id_is_applied_once(
    perennial: Perennial, worker: Worker
) -> None:
    agent = perennial.agent("notes", unique())
    await agent.send("once", id="dup")
    await agent.send("once", id="dup")
    await agent.send("once, again", id="dup")  # same id, other text: still a duplicate
    # Messages are applied in arrival order, so when this reply arrives the sends are done.
    barrier = await agent.ask("barrier")
    assert barrier.reply == "Noted (note #2)."
    state = await agent.state()
    assert state.state.notes == ["once", "barrier"]
    assert state.version == 2


async def test_ask_twice_with_the_same_id_returns_the_first_reply(
    perennial: Perennial, worker: Worker
) -> None:
    agent = perennial.agent("notes", unique())
    first = await agent.ask("question", id="q1")
    again = await agent.ask("question", id="q1")
    assert again == first
    # Asked concurrently with one new id: one turn, both callers get its reply.
    a, b = await asyncio.gather(agent.ask("twin", id="q2"), agent.ask("twin", id="q2"))
    assert a == b
    assert a.reply == "Noted (note #2)."
    state = await agent.state()
    assert state.state.notes == ["question", "twin"]
    assert state.version == 2


async def test_ask_after_send_with_the_same_id_returns_the_sends_reply(
    perennial: Perennial, worker: Worker
) -> None:
    agent = perennial.agent("notes", unique())
    await agent.ask("first")
    await agent.send("sent", id="shared")
    reply = await agent.ask("asked", id="shared")
    assert (reply.id, reply.reply, reply.version) == ("shared", "Noted (note #2).", 2)
    state = await agent.state()
    assert state.state.notes == ["first", "sent"]

    # Once the send is long applied, asking with its id still answers from the dedup window.
    await agent.ask("third")
    late = await agent.ask("asked again", id="shared")
    assert late == reply
    assert (await agent.state()).state.counter == 3


async def test_list_agents_finds_the_agent_idle_at_its_version(
    perennial: Perennial, worker: Worker
) -> None:
    agent = perennial.agent("notes", unique())
    for i in range(3):
        await agent.ask(f"note {i}")

    async def listed() -> bool:
        found = await perennial.list_agents(agent_type="notes", limit=1000)
        mine = [a for a in found if a.workflow_id == agent.id]
        return (
            len(mine) == 1
            and mine[0].status == "idle"
            and mine[0].version == 3
            and mine[0].name == agent.name
            and mine[0].agent_type == "notes"
            and mine[0].running
        )

    await eventually(listed)
    idle = await perennial.list_agents(agent_type="notes", status="idle", limit=1000)
    assert agent.id in {a.workflow_id for a in idle}
    working = await perennial.list_agents(agent_type="notes", status="working", limit=1000)
    assert agent.id not in {a.workflow_id for a in working}
    # Filtering by another type excludes it.
    others = await perennial.list_agents(agent_type="test_flaky", limit=1000)
    assert agent.id not in {a.workflow_id for a in others}


async def test_search_attributes_are_written_behind(perennial: Perennial, worker: Worker) -> None:
    """Turns that change only the version are published at most once per
    `publish_version_interval`; a status change goes out within the short budget and takes
    the pending version along, replacing the later upsert that waited for it."""
    agent = perennial.agent("notes", unique())
    for i in range(6):
        await agent.ask(f"note {i}")
    events = await history(agent, perennial.client)
    upserts = _upserts(events)
    assert len(upserts) <= 3  # the creation's (and the SDK's patch marker), one more at most
    assert _pending_timers(events) == ["publish search attributes"]  # the version, later

    await agent.schedule("later", "far away", after_seconds=3600)
    await eventually(lambda: _described(agent, ("waiting_alarm", 6)))
    events = await history(agent, perennial.client)
    last = _upserts(events)[-1]
    assert (last["AgentStatus"], last["AgentVersion"]) == ("waiting_alarm", 6)
    assert "publish search attributes" not in _pending_timers(events)


async def _described(agent: AgentHandle, wanted: tuple[str, int]) -> bool:
    seen = await agent.describe()
    return (seen.status, seen.version) == wanted


def _upserts(events: list[HistoryEvent]) -> list[dict[str, object]]:
    return [
        {
            key: json.loads(payload.data)
            for key, payload in e.upsert_workflow_search_attributes_event_attributes.search_attributes.indexed_fields.items()  # noqa: E501
        }
        for e in events
        if e.event_type == EventType.EVENT_TYPE_UPSERT_WORKFLOW_SEARCH_ATTRIBUTES
    ]


def _pending_timers(events: list[HistoryEvent]) -> list[str]:
    """Summaries of the timers started and neither fired nor cancelled."""
    started = {
        e.event_id: json.loads(e.user_metadata.summary.data)
        for e in events
        if e.event_type == EventType.EVENT_TYPE_TIMER_STARTED
    }
    for e in events:
        if e.event_type == EventType.EVENT_TYPE_TIMER_FIRED:
            started.pop(e.timer_fired_event_attributes.started_event_id, None)
        elif e.event_type == EventType.EVENT_TYPE_TIMER_CANCELED:
            started.pop(e.timer_canceled_event_attributes.started_event_id, None)
    return sorted(started.values())
