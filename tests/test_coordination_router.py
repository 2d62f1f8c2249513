"""The router agent: the model sees the routes with their descriptions, forwards requests to
the agents it picks (one or a sequence), and relays their answers as its reply; routes it does
not have, and specialists that do not answer in time, come back to the model as errors.

Real dev server, in-process worker, scripted Chat Completions server for the router's model.
"""

from __future__ import annotations

import pytest

import tests.coordination_agents  # noqa: F401 - registers the test agent types
from perennial.client import Perennial
from perennial.testing.scripted_llm import ScriptedLLM, call, text, tool_calls
from tests.support import COORDINATION_MODULES, dashed_name

pytestmark = [
    pytest.mark.asyncio(loop_scope="session"),
    pytest.mark.agents(app=COORDINATION_MODULES, llm=True),
]


@pytest.mark.usefixtures("worker")
async def test_router_picks_among_three_agents_and_relays(
    perennial: Perennial, scripted_llm: ScriptedLLM, request: pytest.FixtureRequest
) -> None:
    name = dashed_name(request)
    scripted_llm.script(
        tool_calls(call("route_to", agent_type="notes", request="buy milk")),
        tool_calls(call("route_to", agent_type="test_child", request="compute 6x7")),
        text("Noted your milk; the task agent says: done: compute 6x7"),
        tool_calls(call("route_to", agent_type="test_parent", request="remember the plan")),
        text("The manager noted it."),
    )
    router = perennial.agent("test_router", name)
    reply = await router.ask("note 'buy milk', then compute 6x7")
    assert reply.reply == "Noted your milk; the task agent says: done: compute 6x7"

    first = scripted_llm.completions[0]
    system = first.messages[0]["content"]
    for route in ("- notes: Writes down", "- test_child: Does small tasks", "- test_parent:"):
        assert route in system
    assert [t["function"]["name"] for t in first.body["tools"]][0] == "route_to"
    assert list(scripted_llm.completions[1].tool_results().values()) == ["Noted (note #1)."]
    assert list(scripted_llm.completions[2].tool_results().values())[-1] == "done: compute 6x7"
    # Each specialist conversation is the router's name at that agent type.
    notes = await perennial.agent("notes", name).state()
    assert notes.state.notes == ["buy milk"]

    assert (await router.ask("remember this")).reply == "The manager noted it."
    parent = await perennial.agent("test_parent", name).state()
    assert parent.state.notes == ["remember the plan"]


@pytest.mark.usefixtures("worker")
async def test_unknown_route_and_a_specialist_that_times_out(
    perennial: Perennial, scripted_llm: ScriptedLLM, request: pytest.FixtureRequest
) -> None:
    name = dashed_name(request)
    scripted_llm.script(
        tool_calls(
            call("route_to", agent_type="assistant", request="hi"),
            call("route_to", agent_type="test_child", request="wait for ever"),
        ),
        text("Sorry, nobody could answer."),
    )
    router = perennial.agent("test_router", name)
    reply = await router.ask("hard question")
    assert reply.reply == "Sorry, nobody could answer."
    unknown, late = list(scripted_llm.completions[1].tool_results().values())
    assert "no route to 'assistant'" in unknown
    assert "test_child did not answer: AskAgentTimedOut" in late
