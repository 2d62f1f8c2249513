"""Long conversations: older exchanges summarised into the agent's memory by a model call.

End to end with the scripted model and a tiny window (three exchanges): forty turns that stay
within the window, each exchange summarised once, the summary in every later system prompt
and in the event log, the budget counting the summary calls; a failing summary call fails
the turn with nothing lost (or, by choice, drops the exchanges and goes on). As units: where
the context is cut, and what the summarising call reads.
"""

from __future__ import annotations

import json
import re

import pytest

from perennial.client import Perennial, TurnFailed
from perennial.testing.scripted_llm import Reply, Request, ScriptedLLM, error, text, usage
from perennial.workflows.llm import ContextWindow, LLMState
from perennial.workflows.llm.summary import (
    DEFAULT_SUMMARY_INSTRUCTIONS,
    SUMMARY_HEADING,
    overflow,
    summary_cut,
    summary_request,
    transcript,
    with_summary,
)
from perennial.workflows.llm.wire import AssistantItem, ModelSettings, ToolCall, ToolItem, UserItem
from perennial.workflows.messages import SummaryEvent
from tests.budget_llm_agents import SUMMARY_WINDOW
from tests.support import dashed_name

pytestmark = pytest.mark.agents(app=("tests.budget_llm_agents",), llm=True)
on_server = pytest.mark.asyncio(loop_scope="session")

_SUMMARISING = DEFAULT_SUMMARY_INSTRUCTIONS[:40]


def _exchange(n: int) -> list:
    return [UserItem(content=f"message {n}"), AssistantItem(content=f"reply to message {n}")]


# --------------------------------------------------------------------------- units


def test_the_cut_takes_whole_old_exchanges_down_to_the_kept_share() -> None:
    window = ContextWindow(max_items=6, max_chars=4_000, summarize=True)
    context = [item for n in range(1, 4) for item in _exchange(n)]
    assert overflow(context, window) == 0  # three exchanges fit
    context.append(UserItem(content="message 4"))
    assert overflow(context, window) == 2  # the window alone would drop one exchange
    assert summary_cut(context, window) == 4  # a summary keeps half: two exchanges go
    whole = window.model_copy(update={"summarize_keep": 1.0})
    assert summary_cut(context, whole) == 2
    # The latest exchange is never cut, however long.
    assert summary_cut([UserItem(content="x" * 10_000)], window) == 0
    # Characters count too.
    by_chars = ContextWindow(max_items=100, max_chars=100, summarize=True)
    long_context = [UserItem(content="a" * 60), AssistantItem(content="b" * 60),
                    UserItem(content="c")]  # fmt: skip
    assert (overflow(long_context, by_chars), summary_cut(long_context, by_chars)) == (2, 2)


def test_the_summarising_request_reads_the_previous_summary_and_the_exchanges() -> None:
    items = [
        UserItem(content="weather in Paris?"),
        AssistantItem(tool_calls=[ToolCall(id="c1", name="get_weather", arguments='{"c": 1}')]),
        ToolItem(tool_call_id="c1", name="get_weather", content="18 degrees"),
        AssistantItem(content="It is 18 degrees."),
    ]
    assert transcript(items) == (
        "user: weather in Paris?\n"
        'assistant called get_weather({"c": 1})\n'
        "tool get_weather answered: 18 degrees\n"
        "assistant: It is 18 degrees."
    )
    window = ContextWindow(summarize=True, summary_max_chars=500, summary_model="cheap")
    request = summary_request("Alice likes tea.", items, window, "big", ModelSettings())
    system, user = request.messages
    assert request.model == "cheap" and request.tools == []
    assert request.settings.stream is False
    assert "at most 500 characters" in system.content
    assert user.content.startswith("Summary so far:\nAlice likes tea.\n\nNext part")
    own = window.model_copy(update={"summary_instructions": "Summarise in {max_chars} chars."})
    first = summary_request(None, items, own, "big", ModelSettings())
    assert first.messages[0].content == "Summarise in 500 chars."
    assert "(none yet)" in first.messages[1].content and first.model == "cheap"
    assert with_summary("Be nice.", None) == "Be nice."
    assert with_summary("Be nice.", "Alice likes tea.") == (
        f"Be nice.\n\n{SUMMARY_HEADING}\nAlice likes tea."
    )
    with pytest.raises(ValueError):
        ContextWindow(summarize=True, summarize_keep=0)
    with pytest.raises(ValueError):
        ContextWindow(on_summary_failure="ignore")  # type: ignore[arg-type]


# --------------------------------------------------------------------------- end to end


def _is_summary(request: Request) -> bool:
    return request.messages[0]["content"].startswith(_SUMMARISING)


class _Model:
    """Answers turns with `reply to <message>` and summaries with the turns they cover."""

    def __init__(self) -> None:
        self.summaries: list[str] = []

    def __call__(self, request: Request) -> Reply:
        if not _is_summary(request):
            return text(f"reply to {request.messages[-1]['content']}", usage=usage(50, 5))
        seen = re.findall(r"user: message (\d+)", request.messages[1]["content"])
        summary = f"S{len(self.summaries) + 1}: the user sent messages up to {seen[-1]}"
        self.summaries.append(summary)
        return text(summary, usage=usage(80, 10))


@on_server
async def test_forty_turns_stay_within_the_window_through_summaries(
    perennial: Perennial, worker, scripted_llm: ScriptedLLM, request: pytest.FixtureRequest
) -> None:
    model = _Model()
    scripted_llm.respond = model
    agent = perennial.agent("test_llm_summary", dashed_name(request))
    for n in range(1, 41):
        assert (await agent.ask(f"message {n}")).reply == f"reply to message {n}"

    sent = scripted_llm.completions
    turns = [r for r in sent if not _is_summary(r)]
    summaries = [r for r in sent if _is_summary(r)]
    assert len(turns) == 40 and len(summaries) == len(model.summaries) >= 15
    # Every request fits the window: the system prompt and at most six items.
    assert max(len(r.messages) for r in turns) <= 1 + SUMMARY_WINDOW.max_items
    # Each summary reads the previous one and exchanges no summary saw before, in order.
    summarised: list[int] = []
    for number, summary_call in enumerate(summaries):
        body = summary_call.messages[1]["content"]
        previous = model.summaries[number - 1] if number else "(none yet)"
        assert body.startswith(f"Summary so far:\n{previous}\n\n")
        summarised += [int(n) for n in re.findall(r"user: message (\d+)", body)]
        assert "tools" not in summary_call.body and not summary_call.body.get("stream")
    assert summarised == list(range(1, len(summarised) + 1)) and len(summarised) >= 35
    # The summary rides in the system prompt of every later turn.
    last_turn = turns[-1].messages
    assert last_turn[0]["content"].endswith(f"{SUMMARY_HEADING}\n{model.summaries[-1]}")
    assert last_turn[-1]["content"] == "message 40"

    state = (await agent.state()).state
    assert isinstance(state, LLMState)
    assert state.summary == model.summaries[-1]
    assert len(state.context) <= SUMMARY_WINDOW.max_items
    assert state.usage.model_calls == 40 + len(summaries)
    ledger = await agent.usage()
    assert ledger.life.model_calls == 40 + len(summaries)
    assert ledger.life.total_tokens == 40 * 55 + len(summaries) * 90

    events = [e for e in (await agent.events(limit=1000)).events if isinstance(e, SummaryEvent)]
    assert len(events) == len(summaries)
    assert all(e.ok and e.model == "scripted-model" for e in events)
    assert sum(e.exchanges for e in events) == len(summarised)
    assert events[-1].summary == model.summaries[-1] and events[-1].usage.total_tokens == 90

    # In the history: one model activity per summary, named for the Web UI, its request read
    # through the `llm_context` query (never inline for this agent type).
    history = await perennial.client.get_workflow_handle(agent.id).fetch_history()
    scheduled = [
        e for e in history.events if e.HasField("activity_task_scheduled_event_attributes")
    ]
    labels = [json.loads(e.user_metadata.summary.data) for e in scheduled]
    assert labels.count("llm scripted-model summary") == len(summaries)
    inputs = [json.loads(e.activity_task_scheduled_event_attributes.input.payloads[0].data)
              for e in scheduled]  # fmt: skip
    assert all(i.get("request") is None for i in inputs)


async def _fill_window(agent, scripted_llm: ScriptedLLM) -> None:  # type: ignore[no-untyped-def]
    scripted_llm.script(*(text(f"reply to message {n}") for n in range(1, 4)))
    for n in range(1, 4):
        await agent.ask(f"message {n}")


@on_server
async def test_a_failed_summary_fails_the_turn_and_loses_nothing(
    perennial: Perennial, worker, scripted_llm: ScriptedLLM, request: pytest.FixtureRequest
) -> None:
    agent = perennial.agent("test_llm_summary", dashed_name(request))
    await _fill_window(agent, scripted_llm)
    before = await agent.state_view()

    scripted_llm.script(error(400, "the summary request was refused"))
    with pytest.raises(TurnFailed) as failed:
        await agent.ask("message 4")
    assert failed.value.error_type == "SummaryFailed"
    assert "the summary request was refused" in str(failed.value)
    after = await agent.state_view()
    assert (after.version, after.state) == (before.version, before.state)
    assert len(after.state["context"]) == 6 and after.state["summary"] is None
    events = (await agent.events(limit=1000)).events
    assert [e.kind for e in events][-3:] == ["summary", "error", "turn_failed"]
    [summary] = [e for e in events if isinstance(e, SummaryEvent)]
    assert (summary.ok, summary.fallback, summary.exchanges) == (False, "fail", 2)

    # The next turn summarises again, and nothing said before is missing from it.
    scripted_llm.script(text("S1: messages 1 and 2"), text("reply to message 4 again"))
    assert (await agent.ask("message 4 again")).reply == "reply to message 4 again"
    summary_call = scripted_llm.completions[-2]
    assert "user: message 1\n" in summary_call.messages[1]["content"]
    assert "user: message 2\n" in summary_call.messages[1]["content"]
    state = (await agent.state()).state
    assert state.summary == "S1: messages 1 and 2"
    assert [i.content for i in state.context if isinstance(i, UserItem)] == [
        "message 3", "message 4 again",
    ]  # fmt: skip


@on_server
async def test_a_failed_summary_can_drop_the_exchanges_instead(
    perennial: Perennial, worker, scripted_llm: ScriptedLLM, request: pytest.FixtureRequest
) -> None:
    agent = perennial.agent("test_llm_summary_drop", dashed_name(request))
    await _fill_window(agent, scripted_llm)
    scripted_llm.script(text("   "), text("reply to message 4"))  # an empty summary fails too
    assert (await agent.ask("message 4")).reply == "reply to message 4"
    state = (await agent.state()).state
    assert state.summary is None
    assert [i.content for i in state.context if isinstance(i, UserItem)] == [
        "message 3", "message 4",
    ]  # fmt: skip
    [summary] = [e for e in (await agent.events(limit=1000)).events
                 if isinstance(e, SummaryEvent)]  # fmt: skip
    assert (summary.ok, summary.fallback) == (False, "drop")
    assert "no text" in (summary.error or "")
    assert (await agent.usage()).life.model_calls == 5  # the empty summary was paid for
