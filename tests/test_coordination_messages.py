"""Agents talking to agents by name: `send_to_agent` (creates the target), `ask_agent` (the
answer, a failed turn or a timeout wakes the asker exactly once; pending asks survive
continue-as-new), typed errors, and the LLM tools.

Real dev server, in-process worker, scripted Chat Completions server for the LLM agent.
"""

from __future__ import annotations

import pytest

import tests.coordination_agents  # noqa: F401 - registers the test agent types
from perennial.client import Perennial, TurnFailed
from perennial.testing.scripted_llm import ScriptedLLM, call, text, tool_calls
from tests.conftest import eventually
from tests.support import (
    COORDINATION_MODULES,
    dashed_name,
    has_events,
    has_note,
    has_note_starting,
    notes,
)

pytestmark = [
    pytest.mark.asyncio(loop_scope="session"),
    pytest.mark.agents(app=COORDINATION_MODULES, llm=True),
]


@pytest.mark.usefixtures("worker")
async def test_send_creates_the_target_and_delivers(
    perennial: Perennial, request: pytest.FixtureRequest
) -> None:
    name = dashed_name(request)
    sender = perennial.agent("test_parent", name)
    reply = await sender.ask(f"send notes {name} hello from an agent")
    assert reply.reply and reply.reply.startswith("sent msg-")
    target = perennial.agent("notes", name)
    await eventually(lambda: has_note(target, "hello from an agent"))
    page = await target.events(limit=100)
    [received] = [e for e in page.events if e.kind == "received"]
    assert received.sender == f"agent:{sender.id}"
    sent = [e for e in (await sender.events(limit=100)).events if e.kind == "sent_to_agent"]
    assert [e.target_id for e in sent] == [target.id]


@pytest.mark.usefixtures("worker")
async def test_ask_answer_wakes_the_asker(
    perennial: Perennial, request: pytest.FixtureRequest
) -> None:
    name = dashed_name(request)
    asker = perennial.agent("test_parent", name)
    assert (await asker.ask(f"ask test_child {name} 60 what is 6x7")).reply == (
        f"asked test_child/{name}"
    )
    await eventually(lambda: has_note(asker, f"answered test_child/{name}: done: what is 6x7"))
    handle = perennial.client.get_workflow_handle(asker.id)
    assert await handle.query("asks") == []
    assert (await asker.state()).state.counter == 1


@pytest.mark.usefixtures("worker")
async def test_ask_failed_turn_wakes_the_asker_with_the_error(
    perennial: Perennial, request: pytest.FixtureRequest
) -> None:
    name = dashed_name(request)
    asker = perennial.agent("test_parent", name)
    await asker.ask(f"ask test_child {name} 60 fail please")
    prefix = f"failed test_child/{name}: ValueError: turn for message"
    await eventually(lambda: has_note_starting(asker, prefix))


@pytest.mark.usefixtures("worker")
async def test_ask_times_out_and_a_late_answer_is_ignored(
    perennial: Perennial, request: pytest.FixtureRequest
) -> None:
    name = dashed_name(request)
    asker = perennial.agent("test_parent", name)
    await asker.ask(f"ask test_child {name} 1 wait for me")
    await eventually(
        lambda: has_note_starting(asker, f"timed_out test_child/{name}: AskAgentTimedOut")
    )
    # The target answers late: the asker was already woken, and is not woken again.
    target = perennial.agent("test_child", name)
    await perennial.client.get_workflow_handle(target.id).signal("release")
    await eventually(lambda: has_events(target, "turn"))
    await eventually(lambda: _signalled(perennial, asker.id, "agent_reply"))
    await eventually(lambda: has_events(asker, "turn", 2))  # the ask's turn and the timeout's
    assert (await asker.state()).state.counter == 1
    assert "answered" not in " ".join(await notes(asker))


@pytest.mark.usefixtures("worker")
async def test_pending_ask_survives_continue_as_new(
    perennial: Perennial, request: pytest.FixtureRequest
) -> None:
    name = dashed_name(request)
    asker = perennial.agent("test_parent_short", name)
    await asker.ask(f"ask test_child {name} 120 wait then answer")
    await asker.ask("note this")  # the second update: the asker continues as new
    await eventually(lambda: has_events(asker, "continued_as_new"))
    handle = perennial.client.get_workflow_handle(asker.id)
    [pending] = await handle.query("asks")
    assert pending["target_id"] == f"test_child/{name}"
    await perennial.client.get_workflow_handle(f"test_child/{name}").signal("release")
    await eventually(lambda: has_note(asker, f"answered test_child/{name}: done: wait then answer"))
    assert (await asker.state()).state.counter == 1


@pytest.mark.usefixtures("worker")
async def test_unknown_agent_type_is_a_typed_error(
    perennial: Perennial, request: pytest.FixtureRequest
) -> None:
    asker = perennial.agent("test_parent", dashed_name(request))
    with pytest.raises(TurnFailed) as caught:
        await asker.ask("send no_such_type somebody hello")
    assert caught.value.error_type == "UnknownAgentType"
    with pytest.raises(TurnFailed) as caught:
        await asker.ask("ask no_such_type somebody 5 hello")
    assert caught.value.error_type == "UnknownAgentType"
    assert await perennial.client.get_workflow_handle(asker.id).query("asks") == []


@pytest.mark.usefixtures("worker")
async def test_llm_agent_asks_and_sends_by_tool(
    perennial: Perennial, scripted_llm: ScriptedLLM, request: pytest.FixtureRequest
) -> None:
    name = dashed_name(request)
    scripted_llm.script(
        tool_calls(
            call("ask_agent", agent_type="test_child", name=name, question="capital of France"),
            call("send_to_agent", agent_type="notes", name=name, text="remember Paris"),
            call("send_to_agent", agent_type="nope", name=name, text="lost"),
        ),
        text("I asked around."),
        text("The answer is Paris."),
    )
    agent = perennial.agent("test_llm_parent", name)
    assert (await agent.ask("find out")).reply == "I asked around."
    await eventually(lambda: len(scripted_llm.completions) == 3)
    results = list(scripted_llm.completions[1].tool_results().values())
    assert results[0].startswith(f"asked test_child/{name}")
    assert results[1].startswith(f"delivered to notes/{name}")
    assert "unknown agent type 'nope'" in results[2]
    woken = scripted_llm.completions[2].messages[-1]
    assert woken["role"] == "user"
    assert f"[answer from agent test_child/{name}: answered]" in woken["content"]
    assert "done: capital of France" in woken["content"]
    await eventually(lambda: has_note(perennial.agent("notes", name), "remember Paris"))


# --------------------------------------------------------------------------- helpers


async def _signalled(perennial: Perennial, workflow_id: str, signal: str) -> bool:
    history = await perennial.client.get_workflow_handle(workflow_id).fetch_history()
    return any(
        e.HasField("workflow_execution_signaled_event_attributes")
        and e.workflow_execution_signaled_event_attributes.signal_name == signal
        for e in history.events
    )
