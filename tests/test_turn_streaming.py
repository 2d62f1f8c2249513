"""Token streaming through the Python client: deltas before the reply, in order, tool calls
and results as they happen, a retried model call announced by a restart (worker killed
mid-stream), and a reader that reconnects mid-turn resuming from its last delta."""

from __future__ import annotations

import asyncio
import time

import pytest

import tests.llm_agents  # noqa: F401  (registers the test agent types before a worker is built)
from perennial.client import (
    DeltaItem,
    Perennial,
    ReplyItem,
    RestartItem,
    StreamItem,
    ToolCallItem,
    ToolResultItem,
)
from perennial.testing.scripted_llm import ScriptedLLM, call, text, tool_calls
from tests.support import event_kinds

pytestmark = [
    pytest.mark.asyncio(loop_scope="session"),
    pytest.mark.agents(app=("tests.llm_agents",), llm=True),
]

ANSWER = "The quick brown fox jumps over the lazy dog, twice, to be sure it streams."


def _name(request: pytest.FixtureRequest) -> str:
    return request.node.name.replace("[", "-").replace("]", "")


def _text(items: list[StreamItem]) -> str:
    return "".join(item.text for item in items if isinstance(item, DeltaItem))


async def test_deltas_arrive_before_the_reply_in_order(
    perennial: Perennial, worker, scripted_llm: ScriptedLLM, request: pytest.FixtureRequest
) -> None:
    scripted_llm.script(text(ANSWER, chunk_delay=0.03))  # 19 chunks over ~0.6 s
    agent = perennial.agent("test_llm", _name(request))
    items: list[tuple[float, StreamItem]] = []
    async for item in agent.ask_stream("tell me", id="m1"):
        items.append((time.monotonic(), item))
    kinds = [item.type for _, item in items]
    assert kinds[-1] == "reply" and set(kinds[:-1]) == {"delta"}
    deltas = [item for _, item in items if isinstance(item, DeltaItem)]
    assert len(deltas) >= 3, "the text came in several pieces, as it was written"
    assert _text([item for _, item in items]) == ANSWER
    reply = items[-1][1]
    assert isinstance(reply, ReplyItem) and reply.reply == ANSWER and reply.version == 1
    assert items[0][0] < items[-1][0] - 0.2, "the first delta came well before the reply"
    assert all(item.id == "m1" for _, item in items)
    chars = [item.position.chars for item in deltas]
    assert chars == sorted(chars) and chars[-1] == len(ANSWER)


async def test_tool_calls_and_results_appear_as_they_happen(
    perennial: Perennial, worker, scripted_llm: ScriptedLLM, request: pytest.FixtureRequest
) -> None:
    scripted_llm.tool("get_weather", result="sunny", delay=0.3)
    scripted_llm.script(
        tool_calls(call("get_weather", city="Paris"), content="Let me look.", chunk_delay=0.02),
        text("Sunny in Paris.", chunk_delay=0.02),
    )
    agent = perennial.agent("test_llm", _name(request))
    items = [item async for item in agent.ask_stream("weather?")]
    kinds = [item.type for item in items]
    call_at, result_at = kinds.index("tool_call"), kinds.index("tool_result")
    assert call_at < result_at < len(kinds) - 1
    tool_call, tool_result = items[call_at], items[result_at]
    assert isinstance(tool_call, ToolCallItem) and tool_call.name == "get_weather"
    assert '"Paris"' in tool_call.arguments
    assert isinstance(tool_result, ToolResultItem) and tool_result.ok
    assert tool_result.call_id == tool_call.call_id and "sunny" in tool_result.result
    step1 = "".join(i.text for i in items[:call_at] if isinstance(i, DeltaItem))
    step2 = "".join(i.text for i in items[result_at:] if isinstance(i, DeltaItem))
    assert (step1, step2) == ("Let me look.", "Sunny in Paris.")
    assert isinstance(items[-1], ReplyItem) and items[-1].reply == "Sunny in Paris."


async def test_a_reader_that_reconnects_resumes_from_its_last_delta(
    perennial: Perennial, worker, scripted_llm: ScriptedLLM, request: pytest.FixtureRequest
) -> None:
    scripted_llm.script(text(ANSWER, chunk_delay=0.05))
    agent = perennial.agent("test_llm", _name(request))
    first: list[StreamItem] = []
    stream = agent.ask_stream("tell me", id="again")
    async for item in stream:
        first.append(item)
        if len(first) == 3:
            break
    await stream.aclose()  # the connection is gone; the turn goes on
    rest = [item async for item in agent.ask_stream("tell me", id="again",
                                                    resume=first[-1].position)]  # fmt: skip
    assert _text(first) + _text(rest) == ANSWER
    assert isinstance(rest[-1], ReplyItem) and rest[-1].reply == ANSWER
    assert len(scripted_llm.completions) == 1, "the turn ran once"
    assert (await event_kinds(agent)).count("turn") == 1


@pytest.mark.agents(app=("tests.llm_agents",), llm=True)
async def test_a_worker_killed_mid_stream_restarts_the_step_without_mixing_text(
    perennial: Perennial, worker_process, scripted_llm: ScriptedLLM, request: pytest.FixtureRequest
) -> None:
    first_try = "This first attempt will never finish because its worker dies"
    second_try = "Second attempt, complete."
    scripted_llm.script(text(first_try, hold_at_chunk=6), text(second_try, chunk_delay=0.02))
    proc = worker_process()
    agent = perennial.agent("test_llm", _name(request))
    items: list[StreamItem] = []

    async def read() -> None:
        async for item in agent.ask_stream("go", id="crash", timeout=120):
            items.append(item)

    reader = asyncio.create_task(read())
    await scripted_llm.wait_for(lambda: bool(_text(items)))  # part of attempt 1 was seen
    proc.kill()
    scripted_llm.release()
    proc = worker_process()
    await asyncio.wait_for(reader, timeout=90)
    [restart_at] = [i for i, item in enumerate(items) if isinstance(item, RestartItem)]
    assert first_try.startswith(_text(items[:restart_at]))
    assert _text(items[restart_at:]) == second_try
    assert isinstance(items[-1], ReplyItem) and items[-1].reply == second_try
    assert (await event_kinds(agent)).count("turn") == 1
    proc.stop()
