"""Sub-agents as child workflows: spawn, and the parent woken once when a child's task ends
(completed, failed, cancelled, terminated), also after the parent continued as new; the LLM
tool `spawn_agent` and the turn the model sees when the child is done.

Real dev server, in-process worker, scripted Chat Completions server for the LLM parent.
"""

from __future__ import annotations

import pytest
from temporalio.client import WorkflowExecutionStatus

import tests.coordination_agents  # noqa: F401 - registers the test agent types
from perennial.client import Perennial, TurnFailed
from perennial.testing.scripted_llm import ScriptedLLM, call, text, tool_calls
from tests.conftest import eventually
from tests.support import (
    COORDINATION_MODULES,
    busy,
    dashed_name,
    event_kinds,
    has_events,
    has_note,
    has_note_starting,
    notes,
)

pytestmark = [
    pytest.mark.asyncio(loop_scope="session"),
    pytest.mark.agents(app=COORDINATION_MODULES, llm=True),
]


async def _status(perennial: Perennial, workflow_id: str) -> WorkflowExecutionStatus | None:
    return (await perennial.client.get_workflow_handle(workflow_id).describe()).status


@pytest.mark.usefixtures("worker")
async def test_child_completes_and_wakes_parent(
    perennial: Perennial, request: pytest.FixtureRequest
) -> None:
    name = dashed_name(request)
    parent = perennial.agent("test_parent", name)
    reply = await parent.ask(f"spawn test_child {name} hello there")
    child_id = f"test_child/{name}"
    assert reply.reply == f"spawned {child_id}"

    await eventually(lambda: has_note(parent, f"completed {child_id}: done: hello there"))
    assert await _status(perennial, child_id) == WorkflowExecutionStatus.COMPLETED
    kinds = await event_kinds(parent)
    assert kinds.count("child_started") == 1 and kinds.count("child_finished") == 1
    page = await parent.events(limit=1000)
    [turn] = [e for e in page.events if e.kind == "turn" and e.message_id.startswith("child:")]
    assert turn.reply == "thanks"
    assert await perennial.client.get_workflow_handle(parent.id).query("children") == []
    # The child's history says who started it and why (Web UI summary).
    child = perennial.client.get_workflow_handle(child_id)
    assert (await child.describe()).parent_id == parent.id


@pytest.mark.usefixtures("worker")
async def test_child_failure_wakes_parent_with_error(
    perennial: Perennial, request: pytest.FixtureRequest
) -> None:
    name = dashed_name(request)
    parent = perennial.agent("test_parent", name)
    await parent.ask(f"spawn test_child {name} fail on purpose")
    child_id = f"test_child/{name}"
    await eventually(lambda: has_note_starting(parent, f"failed {child_id}: turn for message"))
    [note] = [n for n in await notes(parent) if n.startswith("failed")]
    assert "ValueError" in note and "fail on purpose" in note
    await eventually(lambda: _status_is(perennial, child_id, WorkflowExecutionStatus.FAILED))
    assert (await parent.state()).state.counter == 1  # woken once, not by report and handle


@pytest.mark.usefixtures("worker")
async def test_cancelled_child_wakes_parent(
    perennial: Perennial, request: pytest.FixtureRequest
) -> None:
    name = dashed_name(request)
    parent = perennial.agent("test_parent", name)
    child_id = f"test_child/{name}"
    await parent.ask(f"spawn test_child {name} wait for ever")
    child = perennial.agent("test_child", name)
    await eventually(lambda: busy(child))  # parked inside its task turn
    reply = await parent.ask(f"cancel {child_id}")
    assert reply.reply == f"cancelling {child_id}"
    await eventually(lambda: has_note(parent, f"cancelled {child_id}: the child was cancelled"))
    await eventually(lambda: _status_is(perennial, child_id, WorkflowExecutionStatus.CANCELED))
    assert (await parent.state()).state.counter == 1


@pytest.mark.usefixtures("worker")
async def test_terminated_child_wakes_parent_through_its_handle(
    perennial: Perennial, request: pytest.FixtureRequest
) -> None:
    name = dashed_name(request)
    parent = perennial.agent("test_parent", name)
    child_id = f"test_child/{name}"
    await parent.ask(f"spawn test_child {name} wait for ever")
    await eventually(lambda: busy(perennial.agent("test_child", name)))
    await perennial.client.get_workflow_handle(child_id).terminate("test")
    await eventually(lambda: has_note_starting(parent, f"terminated {child_id}:"))


@pytest.mark.usefixtures("worker")
async def test_named_child_reports_and_lives_on(
    perennial: Perennial, request: pytest.FixtureRequest
) -> None:
    name = dashed_name(request)
    parent = perennial.agent("test_parent", name)
    child_id = f"test_child/{name}"
    await parent.ask(f"keep test_child {name} first job")
    await eventually(lambda: has_note(parent, f"completed {child_id}: done: first job"))
    assert await _status(perennial, child_id) == WorkflowExecutionStatus.RUNNING
    later = await perennial.agent("test_child", name).ask("second job")
    assert later.reply == "done: second job"
    # Spawning a second child under a running agent's id is a typed error.
    with pytest.raises(TurnFailed) as caught:
        await parent.ask(f"spawn test_child {name} again")
    assert caught.value.error_type == "ChildAlreadyRunning"


@pytest.mark.usefixtures("worker")
async def test_children_in_flight_survive_parent_continue_as_new(
    perennial: Perennial, request: pytest.FixtureRequest
) -> None:
    name = dashed_name(request)
    parent = perennial.agent("test_parent_short", name)
    first, second = f"test_child/{name}-a", f"test_child/{name}-b"
    await parent.ask(f"spawn test_child {name}-a wait a")
    await parent.ask(f"spawn test_child {name}-b wait b")  # 2nd update: continue-as-new
    handle = perennial.client.get_workflow_handle(parent.id)
    await eventually(lambda: has_events(parent, "continued_as_new"))
    assert {c["child_id"] for c in await handle.query("children")} == {first, second}
    # Both children are still running (ABANDON: the parent's run closing did not cancel them).
    assert await _status(perennial, first) == WorkflowExecutionStatus.RUNNING
    await perennial.client.get_workflow_handle(first).signal("release")
    await perennial.client.get_workflow_handle(second).signal("release")
    await eventually(lambda: has_note(parent, f"completed {first}: done: wait a"))
    await eventually(lambda: has_note(parent, f"completed {second}: done: wait b"))
    assert (await parent.state()).state.counter == 2
    assert await handle.query("children") == []


@pytest.mark.usefixtures("worker")
async def test_llm_parent_spawns_and_sees_the_answer(
    perennial: Perennial, scripted_llm: ScriptedLLM, request: pytest.FixtureRequest
) -> None:
    name = dashed_name(request)
    scripted_llm.script(
        tool_calls(
            call("spawn_agent", agent_type="test_child", name=name, task="compute 6x7"),
            call("spawn_agent", agent_type="notes", name=name, task="not allowed"),
        ),
        text("I asked a helper."),
        text("The helper answered: done: compute 6x7"),
    )
    parent = perennial.agent("test_llm_parent", name)
    reply = await parent.ask("please delegate")
    assert reply.reply == "I asked a helper."
    await eventually(lambda: len(scripted_llm.completions) == 3)
    second, third = scripted_llm.completions[1], scripted_llm.completions[2]
    results = list(second.tool_results().values())
    assert results[0].startswith(f"started test_child/{name}")
    assert "cannot start agents of type 'notes'" in results[1]
    woken = third.messages[-1]
    assert woken["role"] == "user"
    assert f"[child agent test_child/{name} completed]" in woken["content"]
    assert "done: compute 6x7" in woken["content"]
    await eventually(lambda: has_events(parent, "child_finished"))
    page = await parent.events(limit=1000)
    turns = [e for e in page.events if e.kind == "turn"]
    assert turns[-1].reply == "The helper answered: done: compute 6x7"


# --------------------------------------------------------------------------- helpers


async def _status_is(perennial: Perennial, workflow_id: str, status: object) -> bool:
    return await _status(perennial, workflow_id) == status


@pytest.mark.usefixtures("worker")
async def test_cancelling_the_parent_cancels_its_task_children_gracefully(
    perennial: Perennial, request: pytest.FixtureRequest
) -> None:
    name = dashed_name(request)
    parent = perennial.agent("test_parent", name)
    task_child, named_child = f"test_child/{name}-t", f"test_child/{name}-n"
    await parent.ask(f"spawn test_child {name}-t wait for ever")
    await parent.ask(f"keep test_child {name}-n wait too")
    await eventually(lambda: busy(perennial.agent("test_child", f"{name}-t")))
    await perennial.client.get_workflow_handle(parent.id).cancel()
    await eventually(lambda: _status_is(perennial, parent.id, WorkflowExecutionStatus.CANCELED))
    # The task child was asked to cancel (not terminated); the named child lives on.
    await eventually(lambda: _status_is(perennial, task_child, WorkflowExecutionStatus.CANCELED))
    assert await _status(perennial, named_child) == WorkflowExecutionStatus.RUNNING
