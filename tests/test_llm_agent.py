"""LLM agents end to end: real dev server, in-process worker, scripted Chat Completions server.

The agent loop (model steps, tools, parallel calls), error handling (bad arguments, unknown
tools, failing tools, 400 and 429 from the model, the step limit), the event log, token
totals, the bounded context window, and what a model call adds to history.
"""

from __future__ import annotations

import asyncio
import json
import time

import pytest
from temporalio.client import Client

from perennial.client import Perennial, Settings, TurnFailed
from perennial.testing.scripted_llm import ScriptedLLM, call, error, text, tool_calls, usage
from perennial.workflows.llm import LLMState
from tests.llm_agents import MODEL
from tests.support import event_kinds

pytestmark = [
    pytest.mark.asyncio(loop_scope="session"),
    pytest.mark.agents(app=("tests.llm_agents",), llm=True),
]


def _name(request: pytest.FixtureRequest) -> str:
    return request.node.name.replace("[", "-").replace("]", "")


async def test_plain_reply(
    perennial: Perennial, worker, scripted_llm: ScriptedLLM, request: pytest.FixtureRequest
) -> None:
    scripted_llm.script(text("Hello there!", usage=usage(11, 3)))
    agent = perennial.agent("test_llm", _name(request))
    reply = await agent.ask("hi", sender="tester")
    assert reply.reply == "Hello there!"
    assert reply.version == 1

    [sent] = scripted_llm.completions
    assert sent.body["model"] == MODEL
    assert [m["role"] for m in sent.messages] == ["system", "user"]
    assert sent.messages[0]["content"] == "You are a test agent."
    assert sent.messages[1]["content"] == "hi"
    assert {t["function"]["name"] for t in sent.body["tools"]} >= {"put_state", "get_weather"}

    state = (await agent.state()).state
    assert isinstance(state, LLMState)
    assert [item.role for item in state.context] == ["user", "assistant"]
    assert state.usage.total_tokens == 14
    assert state.usage.model_calls == 1
    assert await event_kinds(agent) == ["received", "run_started", "step", "text", "turn"]


# --------------------------------------------------------------------------- helpers


async def _history(client: Client, workflow_id: str):  # type: ignore[no-untyped-def]
    return (await client.get_workflow_handle(workflow_id).fetch_history()).events


def _summary(event) -> str | None:  # type: ignore[no-untyped-def]
    if not event.HasField("user_metadata") or not event.user_metadata.HasField("summary"):
        return None
    return json.loads(event.user_metadata.summary.data)


def _scheduled(events, activity_type: str) -> list:  # type: ignore[no-untyped-def]
    return [
        e.activity_task_scheduled_event_attributes
        for e in events
        if e.HasField("activity_task_scheduled_event_attributes")
        and e.activity_task_scheduled_event_attributes.activity_type.name == activity_type
    ]


# --------------------------------------------------------------------------- the loop


async def test_multi_step_turn_with_several_tools(
    perennial: Perennial, worker, scripted_llm: ScriptedLLM, request: pytest.FixtureRequest
) -> None:
    scripted_llm.tool("get_weather", result=lambda a: f"18 degrees and sunny in {a['city']}")
    scripted_llm.tool("book_table", result={"booking": "B-17", "status": "confirmed"})
    scripted_llm.script(
        tool_calls(call("get_weather", id="w1", city="Paris"), usage=usage(100, 10)),
        tool_calls(
            call("put_state", id="p1", key="trip.city", value="Paris"),
            call("book_table", id="b1", restaurant="Chez Nous", people=3),
            content="Nice weather; booking now.",
            usage=usage(150, 20),
        ),
        text("Booked Chez Nous for 3 (B-17); it is sunny.", usage=usage(200, 15)),
    )
    agent = perennial.agent("test_llm", _name(request))
    reply = await agent.ask("Plan dinner in Paris for 3")
    assert reply.reply == "Booked Chez Nous for 3 (B-17); it is sunny."

    first, second, third = scripted_llm.completions
    assert second.tool_results() == {"w1": "18 degrees and sunny in Paris"}
    assert list(third.tool_results()) == ["w1", "p1", "b1"]
    assert third.tool_results()["p1"] == "stored 'trip.city'"
    assert json.loads(third.tool_results()["b1"]) == {"booking": "B-17", "status": "confirmed"}
    # The schema the model saw came from the signature and docstring.
    [weather] = [t for t in first.body["tools"] if t["function"]["name"] == "get_weather"]
    assert weather["function"]["description"] == "The current weather in a city."
    params = weather["function"]["parameters"]
    assert params["required"] == ["city"]
    assert params["properties"]["city"]["description"] == "The city, like 'Paris'"
    assert params["properties"]["unit"]["enum"] == ["C", "F"]
    assert "ctx" not in params["properties"]

    assert scripted_llm.executions_by_tool() == {"get_weather": 1, "book_table": 1}
    state = (await agent.state()).state
    assert state.memory == {"trip.city": "Paris"}
    assert [i.role for i in state.context] == [
        "user", "assistant", "tool", "assistant", "tool", "tool", "assistant",
    ]  # fmt: skip

    events = (await agent.events(limit=1000)).events
    assert [e.kind for e in events] == [
        "received", "run_started",
        "step", "tool_call",
        "step", "text", "tool_call", "tool_call",
        "step", "text", "turn",
    ]  # fmt: skip
    calls = [e for e in events if e.kind == "tool_call"]
    assert [(c.name, c.runs_in, c.ok, c.attempts) for c in calls] == [
        ("get_weather", "activity", True, 1),
        ("put_state", "workflow", True, 1),
        ("book_table", "activity", True, 1),
    ]
    assert json.loads(calls[2].arguments) == {"restaurant": "Chez Nous", "people": 3}
    steps = [e for e in events if e.kind == "step"]
    assert [(s.step, s.tool_calls) for s in steps] == [
        (1, ["get_weather"]), (2, ["put_state", "book_table"]), (3, []),
    ]  # fmt: skip

    # Web UI legibility: activity summaries name the model and step, or the tool.
    history = await _history(perennial.client, agent.id)
    summaries = [
        _summary(e) for e in history if e.HasField("activity_task_scheduled_event_attributes")
    ]
    assert summaries == [
        f"llm {MODEL} step 1", "tool get_weather",
        f"llm {MODEL} step 2", "tool book_table",
        f"llm {MODEL} step 3",
    ]  # fmt: skip


async def test_parallel_tool_calls_run_concurrently_and_answer_in_order(
    perennial: Perennial, worker, scripted_llm: ScriptedLLM, request: pytest.FixtureRequest
) -> None:
    # Paris is slow and Rome fast, so they finish in the reverse of the model's order.
    scripted_llm.tool(
        "get_weather",
        result=lambda a: f"weather in {a['city']}",
        delay=lambda a: 1.0 if a["city"] == "Paris" else 0.0,
        hold_first=3,  # every call waits until all three have started
    )
    scripted_llm.script(
        tool_calls(
            call("get_weather", id="c-paris", city="Paris"),
            call("get_weather", id="c-rome", city="Rome"),
            call("get_weather", id="c-oslo", city="Oslo"),
        ),
        text("Three cities checked."),
    )
    agent = perennial.agent("test_llm", _name(request))
    asking = asyncio.create_task(agent.ask("weather in Paris, Rome and Oslo?"))
    await scripted_llm.wait_for(lambda: scripted_llm.executions("get_weather") == 3)
    assert scripted_llm.finished("get_weather") == 0  # all three were running at once
    scripted_llm.release_tools()
    reply = await asking
    assert reply.reply == "Three cities checked."
    results = scripted_llm.completions[1].tool_results()
    assert list(results.items()) == [
        ("c-paris", "weather in Paris"),
        ("c-rome", "weather in Rome"),
        ("c-oslo", "weather in Oslo"),
    ]
    events = (await agent.events(limit=1000)).events
    assert [e.call_id for e in events if e.kind == "tool_call"] == ["c-paris", "c-rome", "c-oslo"]


async def test_bad_arguments_and_unknown_tools_reach_the_model(
    perennial: Perennial, worker, scripted_llm: ScriptedLLM, request: pytest.FixtureRequest
) -> None:
    scripted_llm.script(
        tool_calls(
            call("get_weather", id="broken", raw='{"city": "Par'),
            call("get_weather", id="wrong", city="Paris", unit="K"),
            call("get_weather", id="extra", city="Paris", when="tomorrow"),
            call("launch_rockets", id="unknown", target="moon"),
        ),
        tool_calls(call("get_weather", id="fixed", city="Paris")),
        text("Recovered: sunny."),
    )
    agent = perennial.agent("test_llm", _name(request))
    reply = await agent.ask("weather?")
    assert reply.reply == "Recovered: sunny."

    results = scripted_llm.completions[1].tool_results()
    assert results["broken"].startswith("error: invalid arguments for get_weather:")
    assert "unit" in results["wrong"] and results["wrong"].startswith("error: invalid arguments")
    assert "when" in results["extra"] and results["extra"].startswith("error: invalid arguments")
    assert results["unknown"].startswith("error: there is no tool named 'launch_rockets'")
    assert "get_weather" in results["unknown"]  # the model is told what exists
    assert scripted_llm.executions("get_weather") == 1  # only the corrected call ran
    events = (await agent.events(limit=1000)).events
    assert [e.ok for e in events if e.kind == "tool_call"] == [False, False, False, False, True]


async def test_failing_tools_are_retried_then_reported_to_the_model(
    perennial: Perennial, worker, scripted_llm: ScriptedLLM, request: pytest.FixtureRequest
) -> None:
    scripted_llm.tool("get_weather", fail="weather service down")
    scripted_llm.tool("book_table", tool_error="fully booked tonight")
    scripted_llm.script(
        tool_calls(
            call("get_weather", id="w", city="Paris"),
            call("book_table", id="b", restaurant="Chez Nous"),
        ),
        text("Sorry: no weather and no table."),
    )
    agent = perennial.agent("test_llm", _name(request))
    reply = await agent.ask("weather and a table?")
    assert reply.reply == "Sorry: no weather and no table."

    results = scripted_llm.completions[1].tool_results()
    assert results["w"] == (
        "error: get_weather failed after 3 attempt(s): RuntimeError: weather service down"
    )
    assert results["b"] == "error: fully booked tonight"
    # An ordinary exception is retried by the tool's policy (3 attempts); ToolError is not.
    assert scripted_llm.executions_by_tool() == {"get_weather": 3, "book_table": 1}
    calls = [e for e in (await agent.events(limit=1000)).events if e.kind == "tool_call"]
    assert [(c.name, c.ok, c.attempts) for c in calls] == [
        ("get_weather", False, 3),
        ("book_table", False, 1),
    ]


async def test_a_failing_workflow_tool_changes_nothing(
    perennial: Perennial, worker, scripted_llm: ScriptedLLM, request: pytest.FixtureRequest
) -> None:
    scripted_llm.script(
        tool_calls(
            call("get_state", id="missing", key="nothing.here"),
            call("put_state", id="big", key="blob", value="x" * 9_000),
            call("delete_state_key", id="gone", key="nope"),
        ),
        text("Nothing stored."),
    )
    agent = perennial.agent("test_llm", _name(request))
    await agent.ask("try things")
    results = scripted_llm.completions[1].tool_results()
    assert results["missing"] == "error: nothing is stored under 'nothing.here' (stored keys: none)"
    assert results["big"].startswith("error: value is 9002 characters as JSON")
    assert results["gone"] == "error: nothing is stored under 'nope'"
    assert (await agent.state()).state.memory == {}


# --------------------------------------------------------------------------- model failures


async def test_model_400_fails_the_turn_and_keeps_the_state(
    perennial: Perennial, worker, scripted_llm: ScriptedLLM, request: pytest.FixtureRequest
) -> None:
    scripted_llm.script(
        tool_calls(call("put_state", key="name", value="Ada")),
        text("Nice to meet you, Ada."),
    )
    agent = perennial.agent("test_llm", _name(request))
    assert (await agent.ask("I am Ada")).version == 1
    before = await agent.state_view()

    scripted_llm.script(
        tool_calls(call("put_state", key="name", value="Bob"), usage=usage(50, 5)),
        error(400, "This model's maximum context length is 8 tokens"),
    )
    with pytest.raises(TurnFailed) as failed:
        await agent.ask("Actually I am Bob")
    assert failed.value.error_type == "ModelRequestRejected"
    assert "ModelBadRequest (HTTP 400)" in str(failed.value)
    assert "maximum context length" in str(failed.value)
    assert failed.value.version == 1
    # Not retried: one request for step 2, and the state (memory, context, usage) as before.
    assert len(scripted_llm.completions) == 4
    after = await agent.state_view()
    assert after.version == before.version and after.state == before.state
    events = (await agent.events(limit=1000)).events
    assert [e.kind for e in events[-3:]] == ["tool_call", "error", "turn_failed"]
    assert events[-2].error_type == "ModelRequestRejected"
    assert events[-2].step == 2
    assert events[-2].usage.total_tokens == 55  # what the failed run had spent

    # The agent keeps working afterwards.
    scripted_llm.script(text("Still Ada."))
    assert (await agent.ask("who am I?")).reply == "Still Ada."


async def test_429_is_retried_after_the_retry_after_delay(
    perennial: Perennial, worker, scripted_llm: ScriptedLLM, request: pytest.FixtureRequest
) -> None:
    # The agent type's own retry interval is 0.2 s: a later retry is the server's retry-after.
    scripted_llm.script(error(429, "slow down", retry_after=2), text("Done after waiting."))
    agent = perennial.agent("test_llm", _name(request))
    reply = await agent.ask("hello")
    assert reply.reply == "Done after waiting."
    first, second = scripted_llm.completions
    assert second.at - first.at >= 1.9
    [step] = [e for e in (await agent.events(limit=1000)).events if e.kind == "step"]
    assert step.attempts == 2


async def test_server_errors_are_retried_then_fail_the_turn(
    perennial: Perennial, worker, scripted_llm: ScriptedLLM, request: pytest.FixtureRequest
) -> None:
    scripted_llm.script(error(503, "overloaded"), error(500, "oops"), text("Back again."))
    agent = perennial.agent("test_llm", _name(request))
    assert (await agent.ask("hello")).reply == "Back again."

    scripted_llm.script(*(error(502, "bad gateway") for _ in range(4)))  # maximum_attempts=4
    with pytest.raises(TurnFailed) as failed:
        await agent.ask("hello again")
    assert failed.value.error_type == "ModelUnavailable"
    assert "ModelServerError (HTTP 502)" in str(failed.value)
    assert len(scripted_llm.completions) == 3 + 4
    assert (await agent.state_view()).version == 1


async def test_step_limit_fails_the_turn_and_rolls_everything_back(
    perennial: Perennial, worker, scripted_llm: ScriptedLLM, request: pytest.FixtureRequest
) -> None:
    agent = perennial.agent("test_llm", _name(request))
    scripted_llm.script(*(tool_calls(call("put_state", key=f"k{i}", value=i)) for i in range(5)))
    with pytest.raises(TurnFailed) as failed:
        await agent.ask("loop forever")
    assert failed.value.error_type == "StepLimitExceeded"
    assert len(scripted_llm.completions) == 5  # max_steps model calls, then no more
    view = await agent.state_view()
    assert view.version == 0
    assert view.state == LLMState().model_dump(mode="json")  # memory, context and usage
    kinds = await event_kinds(agent)
    assert kinds.count("tool_call") == 4  # the last step's tools never ran
    assert kinds[-2:] == ["error", "turn_failed"]


async def test_slow_model_is_kept_alive_by_heartbeats(
    perennial: Perennial, worker, scripted_llm: ScriptedLLM, request: pytest.FixtureRequest
) -> None:
    # The heartbeat timeout is 2 s; the model takes 4 s: heartbeats keep attempt 1 alive.
    scripted_llm.script(text("Slow but sure.", delay=4.0))
    agent = perennial.agent("test_llm", _name(request))
    assert (await agent.ask("take your time")).reply == "Slow but sure."
    assert len(scripted_llm.completions) == 1
    [step] = [e for e in (await agent.events(limit=1000)).events if e.kind == "step"]
    assert step.attempts == 1 and step.duration_ms >= 3900


# --------------------------------------------------------------------------- usage and context


async def test_token_totals_add_up(
    perennial: Perennial, worker, scripted_llm: ScriptedLLM, request: pytest.FixtureRequest
) -> None:
    scripted_llm.script(
        tool_calls(call("list_state_keys"), usage=usage(10, 5)),
        text("none", usage=usage(20, 3)),
        text("hi", usage=usage(30, 4)),
    )
    agent = perennial.agent("test_llm", _name(request))
    await agent.ask("what do you remember?")
    await agent.ask("hello")
    scripted_llm.script(error(400))
    with pytest.raises(TurnFailed):
        await agent.ask("fail")

    totals = (await agent.state()).state.usage
    assert (totals.prompt_tokens, totals.completion_tokens, totals.total_tokens) == (60, 12, 72)
    assert totals.model_calls == 3
    steps = [e for e in (await agent.events(limit=1000)).events if e.kind == "step"]
    assert sum(s.usage.total_tokens for s in steps) == totals.total_tokens
    assert [s.usage.prompt_tokens for s in steps] == [10, 20, 30]


async def test_context_window_drops_the_oldest_exchanges(
    perennial: Perennial, worker, scripted_llm: ScriptedLLM, request: pytest.FixtureRequest
) -> None:
    agent = perennial.agent("test_llm_small_window", _name(request))  # at most 6 items
    for n in range(1, 5):
        scripted_llm.script(text(f"answer {n}"))
        await agent.ask(f"question {n}")
    last = scripted_llm.completions[-1]
    assert [m["content"] for m in last.messages[1:]] == [
        "question 2", "answer 2", "question 3", "answer 3", "question 4",
    ]  # fmt: skip
    context = (await agent.state()).state.context
    assert [item.content for item in context][0] == "question 2"


async def test_context_tools_pin_notes_and_clear_old_exchanges(
    perennial: Perennial, worker, scripted_llm: ScriptedLLM, request: pytest.FixtureRequest
) -> None:
    agent = perennial.agent("test_llm", _name(request))
    for n in (1, 2):
        scripted_llm.script(text(f"answer {n}"))
        await agent.ask(f"question {n}")
    scripted_llm.script(
        tool_calls(
            call("add_to_context", id="pin", note="The user is Ada; she likes tea."),
            call("clear_old_context", id="clear", keep_last=1),
        ),
        text("Summarised."),
        text("You are Ada."),
    )
    await agent.ask("please tidy up")
    tidy = scripted_llm.completions[-1]
    assert tidy.tool_results()["clear"] == "cleared 4 message(s) and 0 note(s)"
    assert "The user is Ada; she likes tea." in tidy.messages[0]["content"]
    assert [m["role"] for m in tidy.messages] == ["system", "user", "assistant", "tool", "tool"]

    await agent.ask("who am I?")
    later = scripted_llm.completions[-1]
    assert "The user is Ada; she likes tea." in later.messages[0]["content"]
    assert later.messages[1]["content"] == "please tidy up"
    assert (await agent.state()).state.notes == ["The user is Ada; she likes tea."]


# --------------------------------------------------------------------------- history


async def test_model_calls_add_history_independent_of_conversation_length(
    perennial: Perennial, worker, scripted_llm: ScriptedLLM, request: pytest.FixtureRequest
) -> None:
    agent = perennial.agent("test_llm", _name(request))
    filler = "lorem ipsum dolor sit amet " * 40  # ~1 KB per message
    for n in range(12):
        scripted_llm.script(text(f"reply {n}: {filler}"))
        await agent.ask(f"message {n}: {filler}")
    assert len(scripted_llm.completions[-1].messages) == 1 + 23  # the model saw it all
    inputs = _scheduled(await _history(perennial.client, agent.id), "llm_complete")
    sizes = [len(a.input.payloads[0].data) for a in inputs]
    assert len(sizes) == 12
    assert max(sizes) < 600, sizes  # a reference, not the conversation
    assert max(sizes) - min(sizes) <= 8, sizes
    assert all(b"lorem" not in a.input.payloads[0].data for a in inputs)


async def test_small_requests_travel_inline_and_large_ones_by_reference(
    perennial: Perennial, worker, scripted_llm: ScriptedLLM, request: pytest.FixtureRequest
) -> None:
    agent = perennial.agent("test_llm_no_tools", _name(request))  # inline up to 2048 bytes
    for n in range(6):
        scripted_llm.script(text(f"reply {n} " + "r" * 300))
        assert (await agent.ask(f"message {n} " + "m" * 300)).reply.startswith(f"reply {n}")
    inputs = _scheduled(await _history(perennial.client, agent.id), "llm_complete")
    data = [a.input.payloads[0].data for a in inputs]
    inline = [b"message 0" in d for d in data]
    assert inline[0] and not inline[-1]  # the first request inline, later ones by query
    assert inline == sorted(inline, reverse=True)
    assert all(len(d) <= 2048 + 600 for d in data)  # bounded either way
    # Both paths sent the model the whole conversation.
    assert len(scripted_llm.completions[-1].messages) == 1 + 11


async def test_the_api_key_reaches_the_server_but_never_the_history(
    perennial: Perennial,
    settings: Settings,
    scripted_llm: ScriptedLLM,
    request: pytest.FixtureRequest,
) -> None:
    from pydantic import SecretStr

    from perennial.worker import build_worker

    secret = "sk-test-7c1d0f-super-secret"
    keyed = settings.model_copy(update={"openai_api_key": SecretStr(secret)})
    scripted_llm.script(tool_calls(call("list_state_keys")), text("ok"))
    async with build_worker(perennial.client, keyed):
        agent = perennial.agent("test_llm", _name(request))
        await agent.ask("hello")
        view = await agent.state_view()
    assert scripted_llm.completions[0].headers["authorization"] == f"Bearer {secret}"
    history = await perennial.client.get_workflow_handle(agent.id).fetch_history()
    assert secret not in history.to_json()
    assert secret not in json.dumps(view.model_dump(mode="json"))


async def test_a_worker_without_a_model_endpoint_fails_the_turn_clearly(
    perennial: Perennial,
    settings: Settings,
    scripted_llm: ScriptedLLM,
    request: pytest.FixtureRequest,
) -> None:
    from perennial.worker import build_worker

    bare = settings.model_copy(update={"openai_base_url": None, "openai_api_key": None})
    started = time.monotonic()
    async with build_worker(perennial.client, bare):
        agent = perennial.agent("test_llm", _name(request))
        with pytest.raises(TurnFailed) as failed:
            await agent.ask("hello")
    assert failed.value.error_type == "ModelRequestRejected"
    assert "ModelNotConfigured" in str(failed.value) and "OPENAI_BASE_URL" in str(failed.value)
    assert time.monotonic() - started < 10  # not retried
