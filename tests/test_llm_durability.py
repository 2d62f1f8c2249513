"""LLM agents survive crashes: the worker (a subprocess) is SIGKILLed mid-turn.

After a new worker starts, the turn completes, and no tool that had completed runs again
(the scripted server counts every execution). Memory written with `put_state` survives a
restart and a continue-as-new.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest
from temporalio.client import Client

import tests.llm_agents  # noqa: F401  (registers the test agent types for the client)
from perennial.client import Perennial
from perennial.testing.scripted_llm import ScriptedLLM, call, text, tool_calls
from tests.conftest import WorkerProcess

pytestmark = [
    pytest.mark.asyncio(loop_scope="session"),
    pytest.mark.agents(app=("tests.llm_agents",), llm=True),
]


def _name(request: pytest.FixtureRequest) -> str:
    return request.node.name


async def _completed_activities(client: Client, workflow_id: str) -> list[str]:
    """Activity types whose completion is recorded in the agent's history."""
    events = (await client.get_workflow_handle(workflow_id).fetch_history()).events
    scheduled = {
        e.event_id: e.activity_task_scheduled_event_attributes.activity_type.name
        for e in events
        if e.HasField("activity_task_scheduled_event_attributes")
    }
    return [
        scheduled[e.activity_task_completed_event_attributes.scheduled_event_id]
        for e in events
        if e.HasField("activity_task_completed_event_attributes")
    ]


async def test_worker_killed_while_the_model_call_is_in_flight(
    perennial: Perennial,
    worker_process: Callable[[], WorkerProcess],
    scripted_llm: ScriptedLLM,
    request: pytest.FixtureRequest,
) -> None:
    scripted_llm.script(
        tool_calls(call("book_table", id="b1", restaurant="Chez Nous")),
        text("Booked.", hold=True),  # step 2: the model never answers the first attempt
        text("Booked, for sure."),
    )
    first = worker_process()
    agent = perennial.agent("test_llm", _name(request))
    asking = asyncio.create_task(agent.ask("book dinner", timeout=120))

    await scripted_llm.wait_for(lambda: len(scripted_llm.completions) == 2, timeout=60)
    assert scripted_llm.executions("book_table") == 1
    first.kill()
    worker_process()

    reply = await asking
    assert reply.reply == "Booked, for sure."
    assert scripted_llm.executions("book_table") == 1  # completed before the crash: not rerun
    assert len(scripted_llm.completions) == 3  # step 2 was retried, step 1 was not
    steps = [e for e in (await agent.events(limit=1000)).events if e.kind == "step"]
    assert [(s.step, s.attempts) for s in steps] == [(1, 1), (2, 2)]


async def test_worker_killed_while_a_tool_runs(
    perennial: Perennial,
    worker_process: Callable[[], WorkerProcess],
    scripted_llm: ScriptedLLM,
    request: pytest.FixtureRequest,
) -> None:
    scripted_llm.tool("get_weather", result="sunny")
    scripted_llm.tool("book_table", result="booked", hold_first=1)  # first attempt hangs
    scripted_llm.script(
        tool_calls(
            call("get_weather", id="w", city="Paris"),
            call("book_table", id="b", restaurant="Chez Nous"),
        ),
        text("Sunny, and booked."),
    )
    first = worker_process()
    agent = perennial.agent("test_llm", _name(request))
    asking = asyncio.create_task(agent.ask("weather and a table", timeout=120))

    async def weather_recorded() -> bool:
        return "get_weather" in await _completed_activities(perennial.client, agent.id)

    await scripted_llm.wait_for(lambda: scripted_llm.executions("book_table") == 1, timeout=60)
    for _ in range(600):  # the weather result is in history before the crash
        if await weather_recorded():
            break
        await asyncio.sleep(0.05)
    assert await weather_recorded()
    first.kill()
    worker_process()

    reply = await asking
    assert reply.reply == "Sunny, and booked."
    assert scripted_llm.executions("get_weather") == 1  # completed: never ran again
    assert scripted_llm.executions("book_table") == 2  # in flight at the crash: retried
    assert scripted_llm.completions[1].tool_results() == {"w": "sunny", "b": "booked"}
    calls = [e for e in (await agent.events(limit=1000)).events if e.kind == "tool_call"]
    assert [(c.name, c.attempts) for c in calls] == [("get_weather", 1), ("book_table", 2)]


async def test_memory_survives_a_restart_and_continue_as_new(
    perennial: Perennial,
    worker_process: Callable[[], WorkerProcess],
    scripted_llm: ScriptedLLM,
    request: pytest.FixtureRequest,
) -> None:
    # This agent type continues as new after every 2 updates.
    agent = perennial.agent("test_llm_short_runs", _name(request))
    first = worker_process()
    scripted_llm.script(
        tool_calls(call("put_state", key="user.colour", value="green")),
        text("I'll remember green."),
    )
    assert (await agent.ask("my favourite colour is green", timeout=60)).version == 1

    first.kill()
    worker_process()
    for n in range(2, 5):  # three more turns: at least one continue-as-new on the way
        scripted_llm.script(
            tool_calls(call("get_state", id=f"get{n}", key="user.colour")),
            text(f"Green ({n})."),
        )
        reply = await agent.ask(f"what is my colour? ({n})", timeout=60)
        assert reply.reply == f"Green ({n})."
        assert scripted_llm.completions[-1].tool_results()[f"get{n}"] == "green"

    kinds = [e.kind for e in (await agent.events(limit=1000)).events]
    assert "continued_as_new" in kinds
    state = (await agent.state()).state
    assert state.memory == {"user.colour": "green"}
    # The conversation crossed the switch too: the model saw every earlier question.
    users = [m["content"] for m in scripted_llm.completions[-1].messages if m["role"] == "user"]
    assert users == ["my favourite colour is green"] + [
        f"what is my colour? ({n})" for n in range(2, 5)
    ]
    assert state.usage.model_calls == 8
