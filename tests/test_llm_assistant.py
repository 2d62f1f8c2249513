"""The `assistant` agent type and its part of the demo, against the scripted model server."""

from __future__ import annotations

import pytest
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer

from perennial.client import Perennial, Settings
from perennial.client.assistant_demo import run_assistant_demo
from perennial.testing.scripted_llm import ScriptedLLM, call, text, tool_calls, usage
from perennial.workflows.assistant import INSTRUCTIONS
from perennial.workflows.registry import agent_types
from tests.histories.record_llm import assistant_scenario

pytestmark = [pytest.mark.asyncio(loop_scope="session"), pytest.mark.agents(llm=True)]


async def test_the_assistant_remembers_through_the_state_tools(
    perennial: Perennial, worker, scripted_llm: ScriptedLLM, request: pytest.FixtureRequest
) -> None:
    scripted_llm.script(
        tool_calls(call("put_state", id="put", key="user.favourite_colour", value="green")),
        text("Got it: green."),
        tool_calls(call("list_state_keys", id="keys")),
        tool_calls(call("get_state", id="get", key="user.favourite_colour")),
        text("Your favourite colour is green."),
    )
    agent = perennial.agent("assistant", request.node.name)
    await agent.ask("My favourite colour is green.")
    reply = await agent.ask("What is my favourite colour?")
    assert reply.reply == "Your favourite colour is green."

    first = scripted_llm.completions[0]
    assert first.body["model"] == "gpt-4o-mini"  # the worker's default (OPENAI_MODEL)
    assert first.messages[0] == {"role": "system", "content": INSTRUCTIONS}
    assert [t["function"]["name"] for t in first.body["tools"]] == [
        "get_state", "put_state", "list_state_keys", "delete_state_key",
        "add_to_context", "clear_old_context",
        "schedule_alarm", "list_alarms", "cancel_alarm",
    ]  # fmt: skip
    last = scripted_llm.completions[-1]
    assert last.tool_results()["keys"] == '["user.favourite_colour"]'
    assert last.tool_results()["get"] == "green"
    state = (await agent.state()).state
    assert state.memory == {"user.favourite_colour": "green"}


async def test_the_demo_shows_the_assistant_thinking(
    perennial: Perennial,
    settings: Settings,
    worker,
    scripted_llm: ScriptedLLM,
    capsys: pytest.CaptureFixture[str],
) -> None:
    scripted_llm.script(
        tool_calls(call("put_state", key="user.favourite_colour", value="green")),
        text("Nice to meet you, Ada: I'll remember green.", usage=usage(300, 12)),
        tool_calls(call("get_state", key="user.favourite_colour")),
        text("Green!", usage=usage(320, 2)),
    )
    await run_assistant_demo(perennial, settings)
    out = capsys.readouterr().out
    assert "-> Nice to meet you, Ada: I'll remember green." in out
    assert "-> Green!" in out
    assert "its memory (state tools): {'user.favourite_colour': 'green'}" in out
    assert "tool put_state(" in out and "tool get_state(" in out
    assert "in 4 model calls" in out


async def test_the_demo_says_how_to_configure_a_model_when_there_is_none(
    perennial: Perennial, settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    bare = settings.model_copy(update={"openai_base_url": None, "openai_api_key": None})
    await run_assistant_demo(perennial, bare)
    out = capsys.readouterr().out
    assert "skipped: no model endpoint" in out and "OPENAI_BASE_URL" in out


async def test_a_fresh_assistant_history_replays(
    perennial: Perennial, worker, scripted_llm: ScriptedLLM, request: pytest.FixtureRequest
) -> None:
    """Determinism: the whole loop (tools, errors, a failed turn) replays on this code."""
    workflow_id = await assistant_scenario(perennial, scripted_llm, request.node.name)
    history = await perennial.client.get_workflow_handle(workflow_id).fetch_history()
    replayer = Replayer(
        workflows=list(agent_types().values()), data_converter=pydantic_data_converter
    )
    await replayer.replay_workflow(history)
    kinds = [
        e.kind for e in (await perennial.agent("assistant", request.node.name).events()).events
    ]
    assert kinds.count("turn") == 3 and kinds.count("turn_failed") == 1
