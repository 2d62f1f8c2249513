"""Budgets of LLM agents: the ledger, per-day and lifetime limits, per-agent budgets, prices.

End to end on the dev server with the scripted model: a budget exhausted mid-conversation
(the turn rolled back, the typed error, the spend of the failed turn still counted), a
per-agent budget set by update, cost from a price file carried across continue-as-new, and
`perennial usage`. As units: the per-day ledger with explicit dates (the dev server's clock
cannot be moved), and the price file's checks.
"""

from __future__ import annotations

import json
import os
import sys
from datetime import UTC, date, datetime
from pathlib import Path

import pytest

import tests.budget_llm_agents  # noqa: F401 - registers the agent types
from perennial.activities import build_activities
from perennial.activities.pricing import PriceTable, load_prices, priced
from perennial.client import (
    AgentNotFound,
    Budget,
    BudgetExceeded,
    InvalidRequest,
    Perennial,
    PricesFileInvalid,
    Settings,
    TurnFailed,
)
from perennial.client.commands import format_event
from perennial.client.usage import collect_usage, format_usage
from perennial.testing.scripted_llm import ScriptedLLM, call, text, tool_calls, usage
from perennial.worker import build_worker
from perennial.workflows.llm.budget import charge, on_day, reached, remaining, report
from perennial.workflows.llm.wire import AssistantItem, ModelResponse
from perennial.workflows.messages import (
    BudgetCarried,
    BudgetExceededEvent,
    Spend,
    StepEvent,
    SummaryEvent,
    TokenUsage,
)
from tests.conftest import ROOT, eventually
from tests.support import dashed_name, has_events, rejected_update
from tests.test_perennial_cli import perennial_cli

pytestmark = pytest.mark.agents(app=("tests.budget_llm_agents",), llm=True)
#: The end-to-end tests share the session's event loop (and its dev server).
on_server = pytest.mark.asyncio(loop_scope="session")

DAY_1, DAY_2 = date(2026, 12, 1), date(2026, 12, 2)


# --------------------------------------------------------------------------- the ledger (units)


def test_the_day_ledger_starts_again_each_utc_day_and_the_life_ledger_never() -> None:
    ledger = BudgetCarried()
    ledger = charge(ledger, DAY_1, TokenUsage(prompt_tokens=100, completion_tokens=20,
                                              total_tokens=120), 0.5)  # fmt: skip
    ledger = charge(ledger, DAY_1, TokenUsage(prompt_tokens=10, completion_tokens=5), None)
    assert ledger.day == DAY_1
    assert ledger.today == ledger.life
    # A server that reports no total: prompt and completion count.
    assert ledger.today.total_tokens == 135
    assert (ledger.today.model_calls, ledger.today.unpriced_calls) == (2, 1)
    assert ledger.today.cost_usd == 0.5

    budget = Budget(tokens_per_day=135, cost_total_usd=1.0)
    assert reached(budget, ledger.today, ledger.life) == ("tokens_per_day", 135, 135)
    # Seen on the next day: nothing spent today yet, the life total stays.
    next_day = on_day(ledger, DAY_2)
    assert next_day.today == Spend() and next_day.life == ledger.life
    assert reached(budget, next_day.today, next_day.life) is None
    assert report(ledger, budget, DAY_2).remaining.tokens_today == 135
    assert report(ledger, budget, DAY_1).exceeded == "tokens_per_day"

    ledger = charge(ledger, DAY_2, TokenUsage(total_tokens=40, prompt_tokens=40), 0.6)
    assert (ledger.day, ledger.today.total_tokens, ledger.life.total_tokens) == (DAY_2, 40, 175)
    assert ledger.life.cost_usd == pytest.approx(1.1)
    assert reached(budget, ledger.today, ledger.life) == ("cost_total_usd", pytest.approx(1.1), 1.0)
    left = remaining(budget, ledger.today, ledger.life)
    assert (left.tokens_today, left.cost_total_usd, left.tokens_total) == (95, 0, None)


def test_an_agents_own_budget_replaces_its_types_whole() -> None:
    ledger = charge(BudgetCarried(), DAY_1, TokenUsage(total_tokens=500), None)
    typed = Budget(tokens_total=100, cost_per_day_usd=1.0)
    assert report(ledger, typed, DAY_1).exceeded == "tokens_total"
    own = ledger.model_copy(update={"budget": Budget(tokens_per_day=1_000)})
    seen = report(own, typed, DAY_1)
    assert (seen.budget_source, seen.exceeded, seen.budget.tokens_total) == ("agent", None, None)
    assert seen.remaining.tokens_today == 500 and seen.remaining.cost_today_usd is None
    assert report(own, typed, DAY_1).budget == Budget(tokens_per_day=1_000)
    with pytest.raises(ValueError):
        Budget(cost_total_usd=float("inf"))
    with pytest.raises(ValueError):
        Budget(tokens_per_day=-1)


def test_budget_and_summary_events_read_for_people() -> None:
    at = datetime(2026, 12, 1, 9, 30, tzinfo=UTC)
    exceeded = BudgetExceededEvent(offset=7, at=at, message_id="m", limit="tokens_per_day",
                                   spent=270, allowed=250)  # fmt: skip
    assert format_event(exceeded) == (
        "#7 09:30:00   BUDGET tokens_per_day reached: 270 spent of 250; no model call made"
    )
    used = TokenUsage(prompt_tokens=10, completion_tokens=2, total_tokens=12)
    step = StepEvent(offset=8, at=at, message_id="m", step=1, model="gpt", usage=used,
                     cost_usd=0.00125)  # fmt: skip
    assert "12 tokens, $0.001250, 0 ms" in format_event(step)
    summary = SummaryEvent(offset=9, at=at, message_id="m", items=4, exchanges=2,
                           summary="Alice likes tea.")  # fmt: skip
    assert format_event(summary).endswith(
        "summarised 2 exchanges (4 items): 0+0=0 tokens -> Alice likes tea."
    )
    failed = SummaryEvent(offset=10, at=at, message_id="m", items=4, exchanges=2, ok=False,
                          fallback="drop", error="summarising failed: 400")  # fmt: skip
    assert (
        "summary of 2 exchanges (4 items) FAILED (drop): summarising failed: 400"
        in format_event(failed)
    )


# --------------------------------------------------------------------------- prices (units)


def test_prices_by_the_requested_model_then_the_reported_one(tmp_path: Path) -> None:
    path = tmp_path / "prices.toml"
    path.write_text(
        '# USD per 1M tokens\n[models."gpt-4o-mini"]\ninput = 0.15\noutput = 0.6\n\n'
        "[models.local]\ninput = 0\noutput = 0\n"
    )
    table = load_prices(path)
    used = TokenUsage(prompt_tokens=1_000_000, completion_tokens=500_000, total_tokens=1_500_000)
    assert table.cost(used, "gpt-4o-mini") == pytest.approx(0.45)
    assert table.cost(used, "gpt-4o-mini-2024-07-18", "gpt-4o-mini") == pytest.approx(0.45)
    assert table.cost(used, "local") == 0
    assert table.cost(used, "unknown", None) is None

    response = ModelResponse(message=AssistantItem(content="hi"), model="gpt-4o-mini-2024-07-18",
                             usage=used)  # fmt: skip
    settings = Settings(prices_file=path)
    assert priced(response, settings, requested="gpt-4o-mini").cost_usd == pytest.approx(0.45)
    assert priced(response, settings, requested="unknown").cost_usd is None
    assert priced(response, Settings(), requested="gpt-4o-mini").cost_usd is None
    assert PriceTable().cost(used, "gpt-4o-mini") is None


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ('[models."gpt-4o"\ninput = 1\n', "is not valid TOML"),
        ('[models."gpt-4o"]\ninput = -1\noutput = 2\n', "model 'gpt-4o' (line 1): input:"),
        ('\n[models."gpt-4o"]\ninput = 1\n', "model 'gpt-4o' (line 2): output: Field required"),
        ("[models.mini]\ninput = 1\noutput = 1\ncached = 0.5\n", "model 'mini' (line 1): cached"),
        ("[models.mini]\ninput = true\noutput = 1\n", "model 'mini' (line 1): input"),
        ("[models.mini]\ninput = '0.15'\noutput = 1\n", "model 'mini' (line 1): input"),
        ("[models.mini]\ninput = inf\noutput = 1\n", "model 'mini' (line 1): input"),
        ('[models]\n"gpt-4o" = 0.15\n', "model 'gpt-4o' (line 2): give it a table"),
        ('currency = "EUR"\n', "currency: Extra inputs are not permitted"),
    ],
)
def test_a_bad_price_file_is_a_typed_error_naming_what_is_wrong(
    tmp_path: Path, content: str, expected: str
) -> None:
    path = tmp_path / "prices.toml"
    path.write_text(content)
    with pytest.raises(PricesFileInvalid) as bad:
        load_prices(path)
    assert str(path) in str(bad.value)
    assert expected in str(bad.value)


def test_a_worker_with_a_bad_price_file_does_not_start(tmp_path: Path) -> None:
    with pytest.raises(PricesFileInvalid, match="cannot read the price file"):
        build_activities(Settings(prices_file=tmp_path / "missing.toml"))
    syntax = tmp_path / "syntax.toml"
    syntax.write_text("[models\n")
    with pytest.raises(PricesFileInvalid, match=r"line 1"):
        build_activities(Settings(prices_file=syntax))


@on_server
async def test_perennial_worker_refuses_a_bad_price_file(
    settings: Settings, tmp_path: Path
) -> None:
    import asyncio

    bad = tmp_path / "prices.toml"
    bad.write_text('[models."m"]\ninput = -1\noutput = 1\n')
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "perennial.client.cli", "--json", "worker",
        "--address", settings.address, "--task-queue", settings.task_queue,
        env={**os.environ, "PERENNIAL_PRICES_FILE": str(bad), "PERENNIAL_LOG_LEVEL": "WARNING"},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, cwd=ROOT,
    )  # fmt: skip
    _, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 2, err
    error = json.loads(err.decode().strip().splitlines()[-1])["error"]
    assert error["type"] == "PricesFileInvalid"
    assert "model 'm' (line 1): input" in error["message"]


# --------------------------------------------------------------------------- end to end


@on_server
async def test_budget_exhausted_mid_conversation(
    perennial: Perennial, worker, scripted_llm: ScriptedLLM, request: pytest.FixtureRequest
) -> None:
    agent = perennial.agent("test_llm_budget_day", dashed_name(request))
    scripted_llm.script(text("Hello!", usage=usage(100, 20)))
    assert (await agent.ask("hi")).reply == "Hello!"
    before = await agent.state_view()

    # The first step of the next turn crosses the 250 tokens a day; its second is refused.
    scripted_llm.script(
        tool_calls(call("put_state", key="city", value="Paris"), usage=usage(130, 20))
    )
    with pytest.raises(TurnFailed) as failed:
        await agent.ask("remember Paris")
    assert failed.value.error_type == BudgetExceeded.__name__
    assert "tokens_per_day allows 250 tokens and 270 tokens are spent" in str(failed.value)
    assert len(scripted_llm.completions) == 2  # no third call was made

    # The turn is rolled back (memory, conversation, the state's own token totals)...
    after = await agent.state_view()
    assert (after.version, after.state) == (before.version, before.state)
    assert after.state["memory"] == {} and after.state["usage"]["total_tokens"] == 120
    # ...but its spend is not: the ledger counts every call.
    spent = await agent.usage()
    assert after.usage == spent
    assert (spent.today.total_tokens, spent.life.total_tokens) == (270, 270)
    assert (spent.life.model_calls, spent.life.unpriced_calls, spent.life.cost_usd) == (2, 2, 0)
    assert (spent.exceeded, spent.remaining.tokens_today, spent.budget_source) == (
        "tokens_per_day", 0, "type",
    )  # fmt: skip
    events = (await agent.events(limit=1000)).events
    assert [e.kind for e in events][-5:] == [
        "step", "tool_call", "budget_exceeded", "error", "turn_failed",
    ]  # fmt: skip
    [exceeded] = [e for e in events if isinstance(e, BudgetExceededEvent)]
    assert (exceeded.limit, exceeded.spent, exceeded.allowed) == ("tokens_per_day", 270, 250)

    # Every later turn fails before calling the model, until the budget allows it.
    with pytest.raises(TurnFailed) as again:
        await agent.ask("hello?")
    assert again.value.error_type == "BudgetExceeded"
    assert len(scripted_llm.completions) == 2

    # This agent's own budget, by update: it replaces the type's.
    raised = await agent.set_budget(Budget(tokens_per_day=1_000))
    assert (raised.budget_source, raised.exceeded, raised.remaining.tokens_today) == (
        "agent", None, 730,
    )  # fmt: skip
    scripted_llm.script(text("Back.", usage=usage(10, 5)))
    assert (await agent.ask("hello again")).reply == "Back."
    assert (await agent.usage()).today.total_tokens == 285

    # Bad budgets are refused before they enter history; nothing changes.
    with pytest.raises(InvalidRequest):
        await agent.set_budget({"tokens_per_day": -1})
    cause = await rejected_update(perennial, agent, "set_budget", {"budget": {"tokens": 5}})
    assert cause.type == "InvalidRequest" and "tokens" in cause.message
    cause = await rejected_update(perennial, agent, "set_budget")
    assert cause.type == "InvalidRequest" and "missing argument" in cause.message
    assert (await agent.usage()).budget == Budget(tokens_per_day=1_000)

    back = await agent.set_budget(None)
    assert (back.budget_source, back.exceeded) == ("type", "tokens_per_day")


@on_server
async def test_cost_from_a_price_file_across_continue_as_new_and_perennial_usage(
    perennial: Perennial,
    settings: Settings,
    scripted_llm: ScriptedLLM,
    request: pytest.FixtureRequest,
    tmp_path: Path,
) -> None:
    prices = tmp_path / "prices.toml"
    prices.write_text('[models."scripted-model"]\ninput = 2.0\noutput = 10.0\n')
    priced_settings = settings.model_copy(update={"prices_file": prices})
    async with build_worker(perennial.client, priced_settings):
        agent = perennial.agent("test_llm_budget_cost", dashed_name(request))
        scripted_llm.script(text("One.", usage=usage(500, 100)))  # $0.001 + $0.001
        await agent.ask("first")
        [step] = [e for e in (await agent.events()).events if isinstance(e, StepEvent)]
        assert step.cost_usd == pytest.approx(0.002)

        with pytest.raises(TurnFailed) as failed:
            await agent.ask("second")
        assert failed.value.error_type == "BudgetExceeded"
        assert "cost_total_usd allows $0.0020" in str(failed.value)

        # Two updates: the run continues as new, and the ledger goes with it.
        await eventually(lambda: has_events(agent, "continued_as_new"))
        carried = await agent.usage()
        assert carried.life.cost_usd == pytest.approx(0.002)
        assert (carried.exceeded, carried.remaining.cost_total_usd) == ("cost_total_usd", 0)

        await agent.set_budget(Budget(cost_total_usd=1.0))
        scripted_llm.script(text("Two.", usage=usage(1_000, 0)))
        assert (await agent.ask("third")).reply == "Two."
        final = await agent.usage()
        assert final.life.cost_usd == pytest.approx(0.004)
        assert final.remaining.cost_total_usd == pytest.approx(0.996)
        assert final.life.unpriced_calls == 0

        # Totals across agents: through visibility, which catches up a little later.
        async def listed() -> bool:
            found = await collect_usage(perennial, agent_type="test_llm_budget_cost")
            return any(a.agent_id == agent.id for a in found.agents)

        await eventually(listed)
        summary = await collect_usage(perennial, agent_type="test_llm_budget_cost")
        table = format_usage(summary)
        assert agent.id in table and "$0.0040" in table and "TOTAL (1 agents" in table

        code, out, err = await perennial_cli(
            settings, "--json", "usage", "--type", "test_llm_budget_cost"
        )
        assert code == 0, err
        printed = json.loads(out)
        [row] = printed["agents"]
        assert (row["agent_id"], row["status"]) == (agent.id, "ok")
        assert printed["totals"]["agents"] == 1
        assert printed["totals"]["life"]["cost_usd"] == pytest.approx(0.004)
        assert printed["totals"]["life"]["total_tokens"] == 1_600
        assert printed["totals"]["life"]["model_calls"] == 2

        # Agents that call no model have no usage: refused here, left out of the totals.
        notes = perennial.agent("notes", dashed_name(request))
        await notes.ask("a note")
        with pytest.raises(InvalidRequest, match="call no model"):
            await notes.usage()
        with pytest.raises(InvalidRequest, match="call no model"):
            await notes.set_budget(Budget(tokens_total=1))

        async def skipped() -> bool:
            found = await collect_usage(perennial, agent_type="notes")
            mine = [a for a in found.agents if a.agent_id == notes.id]
            return bool(mine) and mine[0].status == "skipped" and found.totals.agents == 0

        await eventually(skipped)


@on_server
async def test_set_budget_never_creates_an_agent_of_a_type_unknown_here(
    perennial: Perennial, worker, request: pytest.FixtureRequest
) -> None:
    ghost = perennial.agent("test_llm_not_known_here", dashed_name(request))
    with pytest.raises(AgentNotFound):
        await ghost.set_budget(Budget(tokens_total=10))
    with pytest.raises(AgentNotFound):
        await ghost.describe()
