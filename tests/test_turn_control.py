"""Turn control: `stop` during a model call and during a slow tool, and what a message that
arrives mid-turn does under each busy policy (queue, interrupt, steer, merge, reject),
including a worker killed while a steered or an interrupting message is in flight."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from temporalio.api.enums.v1 import EventType

import tests.llm_agents  # noqa: F401  (registers the test agent types before a worker is built)
from perennial.client import (
    AskReply,
    Perennial,
    TurnInProgress,
    TurnStopped,
)
from perennial.testing.harness import eventually
from perennial.testing.scripted_llm import ScriptedLLM, call, text, tool_calls
from perennial.workflows.llm import LLMState
from perennial.workflows.messages import MergedEvent, SteeredEvent, TurnStoppedEvent
from tests.support import event_kinds, history, rejections

pytestmark = [
    pytest.mark.asyncio(loop_scope="session"),
    pytest.mark.agents(app=("tests.llm_agents",), llm=True),
]

CANCEL_REQUESTED = EventType.EVENT_TYPE_ACTIVITY_TASK_CANCEL_REQUESTED
CANCELED = EventType.EVENT_TYPE_ACTIVITY_TASK_CANCELED


def _name(request: pytest.FixtureRequest) -> str:
    return request.node.name.replace("[", "-").replace("]", "")


def _user_texts(body: dict[str, Any]) -> list[str]:
    return [m["content"] for m in body["messages"] if m["role"] == "user"]


async def _cancelled_activities(perennial: Perennial, agent) -> int:  # type: ignore[no-untyped-def]
    events = await history(agent, perennial.client)
    return sum(1 for e in events if e.event_type == CANCELED)


# --------------------------------------------------------------------------- stop


async def test_stop_during_a_model_call(
    perennial: Perennial, worker, scripted_llm: ScriptedLLM, request: pytest.FixtureRequest
) -> None:
    scripted_llm.script(text("never seen", hold=True))
    agent = perennial.agent("test_llm", _name(request))
    asking = asyncio.create_task(agent.ask("write a long essay", id="essay", timeout=60))
    await scripted_llm.wait_for(lambda: len(scripted_llm.completions) == 1)

    result = await agent.stop(reason="changed my mind")
    assert (result.stopped, result.turn, result.version) == (True, "essay", 1)
    with pytest.raises(TurnStopped) as stopped:
        await asking
    assert (stopped.value.by, stopped.value.kept, stopped.value.version) == ("stop", True, 1)

    # The conversation keeps the question and says the answer was stopped.
    state = (await agent.state()).state
    assert isinstance(state, LLMState)
    assert [item.role for item in state.context] == ["user", "assistant"]
    assert "stopped by the user" in (state.context[-1].content or "")
    [event] = [e for e in (await agent.events()).events if isinstance(e, TurnStoppedEvent)]
    assert (event.message_id, event.by, event.reason, event.kept) == (
        "essay", "stop", "changed my mind", True
    )  # fmt: skip
    # The model call was cancelled, and the activity learnt it (at its next heartbeat).
    await eventually(lambda: _cancelled_activities(perennial, agent), timeout=15)
    scripted_llm.release()

    # Nothing runs now: a stop changes nothing, and the agent answers the next message.
    assert (await agent.stop()).stopped is False
    scripted_llm.script(text("Short answer."))
    assert (await agent.ask("a short one then")).reply == "Short answer."


async def test_stop_during_a_slow_tool(
    perennial: Perennial, worker, scripted_llm: ScriptedLLM, request: pytest.FixtureRequest
) -> None:
    scripted_llm.tool("get_weather", result="sunny", hold_first=1)
    scripted_llm.script(tool_calls(call("get_weather", city="Oslo")))
    agent = perennial.agent("test_llm", _name(request))
    asking = asyncio.create_task(agent.ask("weather in Oslo?", id="oslo", timeout=60))
    await scripted_llm.wait_for(lambda: scripted_llm.executions("get_weather") == 1)

    assert (await agent.stop(turn="some other turn")).stopped is False  # not the running one
    assert (await agent.stop(turn="oslo")).stopped is True
    with pytest.raises(TurnStopped):
        await asking
    state = (await agent.state()).state
    assert isinstance(state, LLMState)
    roles = [item.role for item in state.context]
    assert roles == ["user", "assistant", "tool", "assistant"]
    assert "not completed" in state.context[2].content
    await eventually(lambda: _cancelled_activities(perennial, agent), timeout=15)
    scripted_llm.release_tools()


# --------------------------------------------------------------------------- busy policies


async def test_interrupt_stops_the_turn_and_answers_with_what_it_had(
    perennial: Perennial, worker, scripted_llm: ScriptedLLM, request: pytest.FixtureRequest
) -> None:
    scripted_llm.script(text("never seen", hold=True), text("Rome it is."))
    agent = perennial.agent("test_llm", _name(request))
    first = asyncio.create_task(agent.ask("plan a trip to Paris", id="paris", timeout=60))
    await scripted_llm.wait_for(lambda: len(scripted_llm.completions) == 1)

    reply = await agent.ask("no, Rome", id="rome", on_busy="interrupt", timeout=60)
    assert reply.reply == "Rome it is."
    with pytest.raises(TurnStopped) as stopped:
        await first
    assert stopped.value.by == "rome"
    second = scripted_llm.completions[1].body
    assert _user_texts(second) == ["plan a trip to Paris", "no, Rome"]
    assert "stopped by a newer message" in second["messages"][2]["content"]
    kinds = await event_kinds(agent)
    assert kinds.count("turn_stopped") == 1 and kinds.count("turn") == 1
    scripted_llm.release()


async def test_steer_joins_the_running_turn_at_its_next_step(
    perennial: Perennial, worker, scripted_llm: ScriptedLLM, request: pytest.FixtureRequest
) -> None:
    scripted_llm.tool("get_weather", result="sunny", hold_first=1)
    scripted_llm.script(tool_calls(call("get_weather", city="Paris")), text("Sunny; in Celsius."))
    agent = perennial.agent("test_llm", _name(request))
    first = asyncio.create_task(agent.ask("weather in Paris?", id="w1", timeout=60))
    await scripted_llm.wait_for(lambda: scripted_llm.executions("get_weather") == 1)

    second = asyncio.create_task(agent.ask("in Celsius please", id="w2", on_busy="steer",
                                           timeout=60))  # fmt: skip
    await eventually(lambda: _queued(agent))
    scripted_llm.release_tools()
    one, two = await first, await second
    assert one.reply == two.reply == "Sunny; in Celsius."
    assert (one.id, two.id, one.version) == ("w1", "w2", two.version)
    step2 = scripted_llm.completions[1].body
    assert [m["role"] for m in step2["messages"]][-2:] == ["tool", "user"]
    assert _user_texts(step2) == ["weather in Paris?", "in Celsius please"]
    events = (await agent.events()).events
    assert [(e.message_id, e.steered_id) for e in events if isinstance(e, SteeredEvent)] == [
        ("w1", "w2")
    ]
    assert (await event_kinds(agent)).count("turn") == 1
    # Asked again, the steered message is answered from memory, not applied again.
    assert (await agent.ask("in Celsius please", id="w2")).reply == "Sunny; in Celsius."
    assert len(scripted_llm.completions) == 2


async def _queued(agent) -> bool:  # type: ignore[no-untyped-def]
    return (await agent.state_view()).inbox >= 1


async def test_merge_makes_the_messages_queued_meanwhile_one_turn(
    perennial: Perennial, worker, scripted_llm: ScriptedLLM, request: pytest.FixtureRequest
) -> None:
    scripted_llm.script(text("First.", hold=True), text("Both noted."))
    agent = perennial.agent("test_llm", _name(request))
    first = asyncio.create_task(agent.ask("one", id="m1", timeout=60))
    await scripted_llm.wait_for(lambda: len(scripted_llm.completions) == 1)
    b = asyncio.create_task(agent.ask("two", id="m2", on_busy="merge", timeout=60))
    await eventually(lambda: _queued(agent))
    await agent.send("three", id="m3", on_busy="merge")
    await eventually(lambda: _inbox_is(agent, 2))
    scripted_llm.release()

    assert (await first).reply == "First."
    merged: AskReply = await b
    assert (merged.id, merged.reply) == ("m2", "Both noted.")
    assert len(scripted_llm.completions) == 2
    assert _user_texts(scripted_llm.completions[1].body)[-1] == "two\n\nthree"
    events = (await agent.events()).events
    assert [(e.message_id, e.merged_ids) for e in events if isinstance(e, MergedEvent)] == [
        ("m2", ["m3"])
    ]
    assert (await event_kinds(agent)).count("turn") == 2


async def _inbox_is(agent, count: int) -> bool:  # type: ignore[no-untyped-def]
    return (await agent.state_view()).inbox == count


async def test_reject_refuses_a_message_while_a_turn_runs(
    perennial: Perennial, worker, scripted_llm: ScriptedLLM, request: pytest.FixtureRequest
) -> None:
    scripted_llm.script(text("Done.", hold=True), text("Now free."))
    agent = perennial.agent("test_llm", _name(request))
    first = asyncio.create_task(agent.ask("busy work", id="r1", timeout=60))
    await scripted_llm.wait_for(lambda: len(scripted_llm.completions) == 1)

    with pytest.raises(TurnInProgress):
        await agent.ask("are you there?", id="r2", on_busy="reject", timeout=30)
    await agent.send("by signal", id="r3", on_busy="reject")  # a signal cannot be refused...
    await eventually(lambda: _rejected(agent, 2))  # ...so it is a `rejected` event
    scripted_llm.release()
    assert (await first).reply == "Done."
    # Neither was applied; with no turn running, the same policy lets a message in.
    assert (await agent.ask("now?", id="r4", on_busy="reject")).reply == "Now free."
    assert (await event_kinds(agent)).count("turn") == 2
    assert all("TurnInProgress" in r or "running a turn" in r for r in await rejections(agent))


async def _rejected(agent, count: int) -> bool:  # type: ignore[no-untyped-def]
    return len(await rejections(agent)) >= count


# --------------------------------------------------------------------------- crashes


async def test_steer_and_interrupt_survive_a_worker_crash(
    perennial: Perennial, worker_process, scripted_llm: ScriptedLLM, request: pytest.FixtureRequest
) -> None:
    """Each decision is made from history: a worker that replays it decides the same."""
    scripted_llm.tool("get_weather", result="sunny", hold_first=1)
    scripted_llm.script(tool_calls(call("get_weather", city="Oslo")), text("Sunny, steered."))
    proc = worker_process()
    steered = perennial.agent("test_llm", _name(request) + "-steer")
    first = asyncio.create_task(steered.ask("weather in Oslo?", id="s1", timeout=120))
    await scripted_llm.wait_for(lambda: scripted_llm.executions("get_weather") == 1)
    second = asyncio.create_task(steered.ask("and tomorrow?", id="s2", on_busy="steer",
                                             timeout=120))  # fmt: skip
    await eventually(lambda: _queued(steered))
    proc.kill()
    proc = worker_process()
    scripted_llm.release_tools()
    one, two = await first, await second
    assert one.reply == two.reply == "Sunny, steered."
    assert (await event_kinds(steered)).count("steered") == 1

    scripted_llm.script(text("never seen", hold=True), text("Interrupted and answered."))
    interrupted = perennial.agent("test_llm", _name(request) + "-interrupt")
    held = asyncio.create_task(interrupted.ask("a long one", id="i1", timeout=120))
    await scripted_llm.wait_for(lambda: len(scripted_llm.completions) == 3)
    await interrupted.send("stop that, this instead", id="i2", on_busy="interrupt")
    proc.kill()
    proc = worker_process()
    with pytest.raises(TurnStopped):
        await held
    await eventually(lambda: _turned(interrupted), timeout=60)
    kinds = await event_kinds(interrupted)
    assert kinds.count("turn_stopped") == 1 and kinds.count("turn") == 1
    assert _user_texts(scripted_llm.completions[-1].body)[-1] == "stop that, this instead"
    scripted_llm.release()
    proc.stop()


async def _turned(agent) -> bool:  # type: ignore[no-untyped-def]
    return "turn" in await event_kinds(agent)
