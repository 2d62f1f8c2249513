"""LLM agent types with budgets and summarised context windows, for the tests only.

Registered on import (a worker subprocess imports it through `PERENNIAL_APP`). They answer
through the scripted model of `tests.llm_agents` (same model name, fast retries).
"""

from __future__ import annotations

from perennial.workflows.llm import STATE_TOOLS, Budget, ContextWindow
from perennial.workflows.registry import agent_type
from tests.llm_agents import BaseScriptedAgent


@agent_type("test_llm_budget_day")
class DailyBudgetAgent(BaseScriptedAgent):
    """At most 250 tokens a day; state tools only (no activity tools)."""

    tools = STATE_TOOLS
    budget = Budget(tokens_per_day=250)


@agent_type("test_llm_budget_cost")
class CostBudgetAgent(BaseScriptedAgent):
    """At most $0.002 over its life, and short runs: the ledger must cross continue-as-new."""

    tools = ()
    budget = Budget(cost_total_usd=0.002)
    max_updates_per_run = 2


#: Three exchanges fit; a summary keeps about half of that.
SUMMARY_WINDOW = ContextWindow(max_items=6, max_chars=4_000, summarize=True, summary_max_chars=300)


@agent_type("test_llm_summary")
class SummaryAgent(BaseScriptedAgent):
    """A tiny window whose older exchanges are summarised; a failed summary fails the turn."""

    tools = ()
    context_window = SUMMARY_WINDOW
    #: Every request, summaries too, is read through the `llm_context` query.
    inline_request_max_bytes = 0


@agent_type("test_llm_summary_drop")
class SummaryDropAgent(BaseScriptedAgent):
    """Like `test_llm_summary`, but a failed summary drops the exchanges and goes on."""

    tools = ()
    context_window = SUMMARY_WINDOW.model_copy(update={"on_summary_failure": "drop"})
