"""Bad input gets a clear, typed error and changes nothing; the agent keeps working.

Client-side checks are bypassed with the raw Temporal client where the point is the
workflow's own validators (what another SDK or the `temporal` CLI would hit)."""

from __future__ import annotations

from typing import Any

import pytest
from temporalio.client import WorkflowQueryFailedError
from temporalio.worker import Worker

import tests.agents  # noqa: F401  (registers the test agent types before a worker is built)
from perennial.client import (
    AgentHandle,
    InvalidMessage,
    InvalidRequest,
    Perennial,
)
from tests.support import accepted_updates, history, rejected_update, unique

OVERSIZED = "x" * 40_000  # notes agents accept 32,768 characters


async def _agent_with_one_note(perennial: Perennial) -> AgentHandle:
    agent = perennial.agent("notes", unique())
    await agent.ask("the only note", id="good")
    return agent


@pytest.mark.parametrize(
    ("case", "payload", "expect"),
    [
        ("empty", {"text": ""}, "text"),
        ("blank", {"text": "  \n\t "}, "blank"),
        ("oversized", {"text": OVERSIZED}, "40000 characters"),
        ("misspelled field", {"txt": "hi"}, "text"),
        ("bare string", "hi", "Message"),
        ("extra field", {"text": "hi", "colour": "red"}, "colour"),
        ("wrong type", {"text": 42}, "text"),
        ("empty id", {"text": "hi", "id": ""}, "id"),
    ],
)
async def test_ask_validator_rejects_bad_messages_before_history(
    perennial: Perennial, worker: Worker, case: str, payload: Any, expect: str
) -> None:
    agent = await _agent_with_one_note(perennial)
    before = await agent.state_view()
    events_before = await agent.events()
    update_id = f"bad-{case.replace(' ', '-')}"

    cause = await rejected_update(perennial, agent, "ask", payload, update_id=update_id)
    assert cause.type == "InvalidMessage"
    assert expect in cause.message

    assert await agent.state_view() == before
    assert await agent.events() == events_before
    accepted = accepted_updates(await history(agent, perennial.client))
    assert update_id not in {u.update_id for u in accepted}
    assert [(u.name, u.input["id"]) for u in accepted] == [("ask", "good")]
    # The agent keeps working.
    assert (await agent.ask("next")).version == 2


async def test_client_rejects_bad_messages_before_sending(
    perennial: Perennial, worker: Worker
) -> None:
    agent = await _agent_with_one_note(perennial)
    before = await agent.state_view()
    for bad in ("", "   ", OVERSIZED):
        with pytest.raises(InvalidMessage):
            await agent.ask(bad)
        with pytest.raises(InvalidMessage):
            await agent.send(bad)
    with pytest.raises(InvalidMessage):
        await agent.ask("hi", id="")
    assert await agent.state_view() == before
    accepted = accepted_updates(await history(agent, perennial.client))
    assert [(u.name, u.input["id"]) for u in accepted] == [("ask", "good")]
    # A message that never reached the agent did not create it either.
    ghost = perennial.agent("notes", unique())
    with pytest.raises(InvalidMessage):
        await ghost.send("")
    found = [w async for w in perennial.client.list_workflows(f"WorkflowId = '{ghost.id}'")]
    assert found == []


@pytest.mark.parametrize(
    ("agent_type", "name"),
    [("no/such", "alice"), ("", "alice"), ("notes", ""), ("notes", "x" * 201),
     ("notes", "tab\there"), ("n" * 101, "alice")],
)  # fmt: skip
async def test_bad_agent_names_are_refused_before_anything_is_sent(
    perennial: Perennial, agent_type: str, name: str
) -> None:
    """A workflow id over the server's limits would fail the tasks of any agent that later
    names it (in a reply_to, a subscription): ids are bounded and printable everywhere."""
    with pytest.raises(InvalidRequest):
        perennial.agent(agent_type, name)


async def test_a_type_this_process_does_not_know_is_listed_untyped(perennial: Perennial) -> None:
    assert await perennial.list_agents(agent_type="no_such_type") == []


@pytest.mark.parametrize(
    ("update", "payload", "error_type"),
    [
        ("rollback", {"version": 7}, "VersionNotKept"),
        ("rollback", {"version": -1}, "InvalidRequest"),
        ("rollback", {"versoin": 0}, "InvalidRequest"),
        ("rollback", "0", "InvalidRequest"),
        ("wait_events", {"after": -1}, "InvalidRequest"),
        ("wait_events", {"after": 0, "timeout_seconds": -5}, "InvalidRequest"),
        ("wait_events", {"after": 0, "limit": 0}, "InvalidRequest"),
    ],
)
async def test_other_update_validators_reject_bad_requests_before_history(
    perennial: Perennial, worker: Worker, update: str, payload: Any, error_type: str
) -> None:
    agent = await _agent_with_one_note(perennial)
    before = await agent.state_view()
    update_id = f"bad-{update}"
    cause = await rejected_update(perennial, agent, update, payload, update_id=update_id)
    assert cause.type == error_type
    assert await agent.state_view() == before
    accepted = accepted_updates(await history(agent, perennial.client))
    assert update_id not in {u.update_id for u in accepted}
    assert [(u.name, u.input["id"]) for u in accepted] == [("ask", "good")]
    assert (await agent.ask("next")).version == 2


async def test_client_rejects_bad_event_requests(perennial: Perennial, worker: Worker) -> None:
    agent = await _agent_with_one_note(perennial)
    with pytest.raises(InvalidRequest):
        await agent.events(after=-1)
    with pytest.raises(InvalidRequest):
        await agent.events(after=0, limit=0)
    with pytest.raises(InvalidRequest):
        await agent.wait_events(after=-1, timeout=1)
    with pytest.raises(InvalidRequest):
        await agent.rollback(-1)
    # Through the raw client, the `events` query itself refuses a negative offset.
    handle = perennial.client.get_workflow_handle(agent.id)
    with pytest.raises(WorkflowQueryFailedError) as failed:
        await handle.query("events", {"after": -1})
    assert "after" in str(failed.value)
    assert (await agent.state_view()).version == 1


async def test_malformed_message_signals_are_recorded_as_rejected(
    perennial: Perennial, worker: Worker
) -> None:
    """Signals cannot be refused: a malformed one is recorded as a `rejected` event instead
    of being dropped silently, and changes nothing else."""
    agent = await _agent_with_one_note(perennial)
    handle = perennial.client.get_workflow_handle(agent.id)
    for bad in ({"txt": "hi"}, "just a string", {"text": ""}, {"text": OVERSIZED}):
        await handle.signal("message", bad)
    reply = await agent.ask("still here")  # applied after the signals: arrival order
    assert (reply.reply, reply.version) == ("Noted (note #2).", 2)

    events = (await agent.events()).events
    rejected = [e for e in events if e.kind == "rejected"]
    assert len(rejected) == 4
    assert "text" in rejected[0].error
    assert "by signal notes agents accept at most 16384" in rejected[3].error
    assert (await agent.state()).state.notes == ["the only note", "still here"]
