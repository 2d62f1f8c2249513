"""People in the loop: a tool that needs approval waits (visible in query `approvals` and in
`AgentStatus='waiting_approval'`); update `decide` approves or rejects it, the first decision
wins; a deadline rejects it; the pending approval survives a worker crash and continue-as-new;
the CLI lists and answers approvals.

Real dev server, workers in process or in a child process, scripted Chat Completions server.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Callable

import pytest

import tests.coordination_agents  # noqa: F401 - registers the test agent types
from perennial.client import Perennial, Settings, TurnFailed
from perennial.client.approvals import decide, pending_approvals, waiting_for_approval
from perennial.testing.scripted_llm import ScriptedLLM, call, error, text, tool_calls
from perennial.workflows.errors import AlreadyDecided, ApprovalNotFound
from perennial.workflows.visibility import AGENT_STATUS
from tests.conftest import ROOT, WorkerProcess, eventually
from tests.support import COORDINATION_MODULES, dashed_name, has_events

pytestmark = [
    pytest.mark.asyncio(loop_scope="session"),
    pytest.mark.agents(app=COORDINATION_MODULES, llm=True),
]


async def _status(perennial: Perennial, workflow_id: str) -> str | None:
    desc = await perennial.client.get_workflow_handle(workflow_id).describe()
    return desc.typed_search_attributes.get(AGENT_STATUS)


async def _status_is(perennial: Perennial, workflow_id: str, status: str) -> bool:
    return await _status(perennial, workflow_id) == status


async def _pending(agent) -> list:  # type: ignore[no-untyped-def]
    try:
        return await pending_approvals(agent)
    except Exception:  # not running yet
        return []


@pytest.mark.usefixtures("worker")
async def test_approve_runs_the_call_and_the_first_decision_wins(
    perennial: Perennial, scripted_llm: ScriptedLLM, request: pytest.FixtureRequest
) -> None:
    scripted_llm.script(
        tool_calls(call("wire_money", to="bob", amount=50)),
        text("I asked for approval."),
        text("Sent 50 euros to bob."),
    )
    agent = perennial.agent("test_llm_approver", dashed_name(request))
    assert (await agent.ask("send bob 50")).reply == "I asked for approval."
    [waiting] = list(scripted_llm.completions[1].tool_results().values())
    assert waiting.startswith("waiting for approval appr-")
    [approval] = await pending_approvals(agent)
    assert approval.tool == "wire_money"
    assert json.loads(approval.arguments) == {"to": "bob", "amount": 50}
    assert scripted_llm.executions("wire_money") == 0
    await eventually(lambda: _status_is(perennial, agent.id, "waiting_approval"))
    found = await waiting_for_approval(perennial, agent_type="test_llm_approver")
    assert any(s.workflow_id == agent.id and error is None for s, _, error in found)

    with pytest.raises(ApprovalNotFound):
        await decide(agent, "appr-nope", approve=True)
    decision = await decide(
        agent, approval.approval_id, approve=True, comment="fine", decided_by="alice"
    )
    assert decision.approved and decision.decided_by == "alice"
    with pytest.raises(AlreadyDecided):
        await decide(agent, approval.approval_id, approve=False, decided_by="mallory")

    await eventually(lambda: len(scripted_llm.completions) == 3)
    woken = scripted_llm.completions[2].messages[-1]["content"]
    assert f"[approval {approval.approval_id}: approved by alice]" in woken
    assert "Comment: fine" in woken and "Its result:\nok" in woken
    assert scripted_llm.executions("wire_money") == 1
    assert await pending_approvals(agent) == []
    await eventually(lambda: _status_is(perennial, agent.id, "idle"))
    kinds = [e.kind for e in (await agent.events(limit=1000)).events]
    assert kinds.count("approval_requested") == 1 and kinds.count("approval_decided") == 1


@pytest.mark.usefixtures("worker")
async def test_reject_and_deadline_never_run_the_call(
    perennial: Perennial, scripted_llm: ScriptedLLM, request: pytest.FixtureRequest
) -> None:
    scripted_llm.script(
        tool_calls(
            call("wire_money", to="eve", amount=9000),
            call("wire_money_quick", to="eve", amount=1),
        ),
        text("Both need approval."),
        text("Understood."),
        text("Understood too."),
    )
    agent = perennial.agent("test_llm_approver", dashed_name(request))
    await agent.ask("pay eve")
    approvals = {a.tool: a for a in await pending_approvals(agent)}
    # wire_money_quick has a 1 s deadline: it is rejected on its own.
    await eventually(lambda: len(scripted_llm.completions) >= 3)
    quick = approvals["wire_money_quick"]
    assert (
        f"[approval {quick.approval_id}: rejected (its deadline passed)]"
        in (scripted_llm.completions[2].messages[-1]["content"])
    )
    with pytest.raises(AlreadyDecided):
        await decide(agent, quick.approval_id, approve=True)

    slow = approvals["wire_money"]
    await decide(agent, slow.approval_id, approve=False, comment="too much", decided_by="bob")
    await eventually(lambda: len(scripted_llm.completions) == 4)
    woken = scripted_llm.completions[3].messages[-1]["content"]
    assert f"[approval {slow.approval_id}: rejected (bob)]" in woken
    assert "did not run" in woken and "Comment: too much" in woken
    assert scripted_llm.executions("wire_money") == 0
    assert scripted_llm.executions("wire_money_quick") == 0


async def test_pending_approval_survives_a_worker_crash(
    perennial: Perennial,
    scripted_llm: ScriptedLLM,
    worker_process: Callable[[], WorkerProcess],
    request: pytest.FixtureRequest,
) -> None:
    scripted_llm.script(
        tool_calls(call("wire_money", to="carol", amount=5)),
        text("Waiting for a person."),
        text("Done: carol got 5."),
    )
    first = worker_process()
    agent = perennial.agent("test_llm_approver", dashed_name(request))
    assert (await agent.ask("pay carol 5")).reply == "Waiting for a person."
    [approval] = await pending_approvals(agent)
    first.kill()
    worker_process()
    await decide(agent, approval.approval_id, approve=True, decided_by="dave")
    await eventually(lambda: len(scripted_llm.completions) == 3, timeout=60)
    assert scripted_llm.executions("wire_money") == 1
    turns = [e for e in (await agent.events(limit=1000)).events if e.kind == "turn"]
    assert turns[-1].reply == "Done: carol got 5."


@pytest.mark.usefixtures("worker")
async def test_pending_approval_survives_continue_as_new(
    perennial: Perennial, scripted_llm: ScriptedLLM, request: pytest.FixtureRequest
) -> None:
    scripted_llm.script(
        tool_calls(call("put_state", key="secret", value=42), call("forget_everything")),
        text("Stored; erasing needs approval."),
        text("Hi."),
        text("Memory erased."),
    )
    agent = perennial.agent("test_llm_approver_short", dashed_name(request))
    await agent.ask("remember 42, then forget everything")
    [approval] = await pending_approvals(agent)
    assert (await agent.ask("hello")).reply == "Hi."  # the second update: continue-as-new
    await eventually(lambda: has_events(agent, "continued_as_new"))
    [carried] = await _pending(agent)
    assert carried.approval_id == approval.approval_id
    assert (await agent.state()).state.memory == {"secret": 42}
    await decide(agent, approval.approval_id, approve=True)
    await eventually(lambda: len(scripted_llm.completions) == 4)
    await eventually(lambda: _memory_empty(agent))


@pytest.mark.usefixtures("worker")
async def test_cli_lists_and_decides(
    perennial: Perennial,
    scripted_llm: ScriptedLLM,
    settings: Settings,
    request: pytest.FixtureRequest,
) -> None:
    scripted_llm.script(
        tool_calls(call("wire_money", to="frank", amount=7)), text("Asked."), text("Ok, not sent.")
    )
    agent = perennial.agent("test_llm_approver", dashed_name(request))
    await agent.ask("pay frank 7")
    [approval] = await pending_approvals(agent)

    async def listed() -> bool:
        code, out, _ = await _cli(settings, "approvals")
        return code == 0 and approval.approval_id in out and agent.id in out

    await eventually(listed)
    code, out, _ = await _cli(settings, "--json", "approvals", agent.id)
    assert code == 0 and json.loads(out)[agent.id][0]["tool"] == "wire_money"
    code, out, _ = await _cli(
        settings, "decide", agent.id, approval.approval_id, "--reject", "--comment", "no"
    )
    assert code == 0 and f"rejected {approval.approval_id}" in out
    code, _, err = await _cli(settings, "decide", agent.id, approval.approval_id, "--approve")
    assert code == 2 and "AlreadyDecided" in err
    await eventually(lambda: len(scripted_llm.completions) == 3)
    assert scripted_llm.executions("wire_money") == 0


# --------------------------------------------------------------------------- helpers


async def _cli(settings: Settings, *args: str) -> tuple[int, str, str]:
    """`perennial --app tests.coordination_agents ...` in a child process: the CLI loads the
    application's agent types, as a user's would."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "perennial.client.cli", "--app", "tests.coordination_agents",
        "--address", settings.address, "--task-queue", settings.task_queue, *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, cwd=ROOT,
    )  # fmt: skip
    out, err = await asyncio.wait_for(process.communicate(), 60)
    return process.returncode or 0, out.decode(), err.decode()


async def _memory_empty(agent) -> bool:  # type: ignore[no-untyped-def]
    return (await agent.state()).state.memory == {}


@pytest.mark.usefixtures("worker")
async def test_a_failed_turn_withdraws_the_approvals_it_asked_for(
    perennial: Perennial, scripted_llm: ScriptedLLM, request: pytest.FixtureRequest
) -> None:
    scripted_llm.script(
        tool_calls(call("wire_money", to="gus", amount=3)),
        error(400, "the model refuses"),
    )
    agent = perennial.agent("test_llm_approver", dashed_name(request))
    with pytest.raises(TurnFailed):
        await agent.ask("pay gus 3")
    assert await pending_approvals(agent) == []
    page = await agent.events(limit=1000)
    [requested] = [e for e in page.events if e.kind == "approval_requested"]
    [withdrawn] = [e for e in page.events if e.kind == "approval_decided"]
    assert withdrawn.approval_id == requested.approval_id and not withdrawn.approved
    assert "withdrawn" in (withdrawn.comment or "")
    with pytest.raises(AlreadyDecided):
        await decide(agent, requested.approval_id, approve=True)
    assert scripted_llm.executions("wire_money") == 0
