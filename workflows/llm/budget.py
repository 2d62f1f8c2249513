"""Budgets of LLM agents: limits on tokens and cost, per UTC day and over the agent's life.

    @agent_type("assistant")
    class Assistant(LLMAgent[LLMState]):
        budget = Budget(tokens_per_day=200_000, cost_total_usd=25.0)

The agent type's `budget` applies to each of its agents; one agent can be given its own with
update `set_budget` (`AgentHandle.set_budget`), which replaces the type's budget whole until it
is cleared. Before each model call (summaries included) the agent checks the budget in force:
at or over a limit it records a `budget_exceeded` event and raises `BudgetExceeded`, so the turn
fails, its state is rolled back and `ask` callers get `TurnFailed` (error_type
`BudgetExceeded`). The call that crosses a limit completes; the next one is refused.

The ledger (`Spending`) is a part of the agent, not of its state: spend is real money even when
a turn fails, so a failed or rolled-back turn's calls stay counted. It counts every model call's
tokens and its cost (priced by the worker: `ModelResponse.cost_usd`, None for a model without a
price, counted as an unpriced call), per UTC day by the workflow's clock and over the agent's
life, and continue-as-new carries it (`AgentStart.budget`).
"""

from __future__ import annotations

from datetime import UTC, date

from temporalio.common import RawValue

from perennial.workflows.errors import BudgetExceeded, PerennialError, to_application_error
from perennial.workflows.messages import (
    Budget,
    BudgetCarried,
    BudgetExceededEvent,
    BudgetLimit,
    BudgetRemaining,
    SetBudgetRequest,
    Spend,
    TokenUsage,
    UsageReport,
)
from perennial.workflows.parts import AgentContext, Part
from perennial.workflows.payloads import decode

#: The wire names: update `set_budget` (a `SetBudgetRequest`), query `usage` (a `UsageReport`).
SET_BUDGET_UPDATE = "set_budget"
USAGE_QUERY = "usage"


def tokens_of(usage: TokenUsage) -> int:
    """The tokens a call used: its total, or prompt and completion when a server reports no
    total."""
    return max(usage.total_tokens, usage.prompt_tokens + usage.completion_tokens)


def add_spend(spend: Spend, usage: TokenUsage, cost_usd: float | None) -> Spend:
    """`spend` with one more model call."""
    return Spend(
        prompt_tokens=spend.prompt_tokens + usage.prompt_tokens,
        completion_tokens=spend.completion_tokens + usage.completion_tokens,
        total_tokens=spend.total_tokens + tokens_of(usage),
        cost_usd=spend.cost_usd + (cost_usd or 0.0),
        model_calls=spend.model_calls + 1,
        unpriced_calls=spend.unpriced_calls + (cost_usd is None),
    )


def on_day(ledger: BudgetCarried, day: date) -> BudgetCarried:
    """The ledger as it stands on `day`: a new day starts with nothing spent today."""
    if ledger.day == day:
        return ledger
    return ledger.model_copy(update={"day": day, "today": Spend()})


def charge(
    ledger: BudgetCarried, day: date, usage: TokenUsage, cost_usd: float | None
) -> BudgetCarried:
    """The ledger after a model call on `day`."""
    current = on_day(ledger, day)
    return current.model_copy(
        update={
            "today": add_spend(current.today, usage, cost_usd),
            "life": add_spend(current.life, usage, cost_usd),
        }
    )


def _spent(limit: BudgetLimit, today: Spend, life: Spend) -> float:
    if limit == "tokens_per_day":
        return today.total_tokens
    if limit == "tokens_total":
        return life.total_tokens
    if limit == "cost_per_day_usd":
        return today.cost_usd
    return life.cost_usd


LIMITS: tuple[BudgetLimit, ...] = (
    "tokens_per_day",
    "tokens_total",
    "cost_per_day_usd",
    "cost_total_usd",
)


def reached(budget: Budget, today: Spend, life: Spend) -> tuple[BudgetLimit, float, float] | None:
    """The first limit already reached, with what was spent and what it allows."""
    for limit in LIMITS:
        allowed = getattr(budget, limit)
        spent = _spent(limit, today, life)
        if allowed is not None and spent >= allowed:
            return limit, spent, allowed
    return None


def remaining(budget: Budget, today: Spend, life: Spend) -> BudgetRemaining:
    """What is left of each limit that is set (never below zero)."""

    def left(limit: BudgetLimit) -> float | None:
        allowed = getattr(budget, limit)
        return None if allowed is None else max(0, allowed - _spent(limit, today, life))

    tokens_today, tokens_total = left("tokens_per_day"), left("tokens_total")
    return BudgetRemaining(
        tokens_today=None if tokens_today is None else int(tokens_today),
        tokens_total=None if tokens_total is None else int(tokens_total),
        cost_today_usd=left("cost_per_day_usd"),
        cost_total_usd=left("cost_total_usd"),
    )


def report(ledger: BudgetCarried, type_budget: Budget, day: date) -> UsageReport:
    """The ledger as seen on `day`, with the budget in force and what is left of it."""
    current = on_day(ledger, day)
    budget = current.budget if current.budget is not None else type_budget
    hit = reached(budget, current.today, current.life)
    return UsageReport(
        day=day,
        today=current.today,
        life=current.life,
        budget=budget,
        budget_source="type" if current.budget is None else "agent",
        remaining=remaining(budget, current.today, current.life),
        exceeded=hit[0] if hit else None,
    )


def _amount(limit: BudgetLimit, value: float) -> str:
    return f"{value:,.0f} tokens" if limit.startswith("tokens") else f"${value:,.4f}"


class Spending(Part):
    """The budget ledger of an LLM agent (see the module docstring)."""

    def __init__(self, ctx: AgentContext, carried: BudgetCarried, *, type_budget: Budget) -> None:
        self._ctx = ctx
        self._ledger = carried
        self._type_budget = type_budget

    def _today(self) -> date:
        return self._ctx.now().astimezone(UTC).date()

    @property
    def budget(self) -> Budget:
        """The budget in force: this agent's own, else its agent type's."""
        own = self._ledger.budget
        return own if own is not None else self._type_budget

    def report(self) -> UsageReport:
        return report(self._ledger, self._type_budget, self._today())

    def check(self, message_id: str) -> None:
        """Before a model call: `BudgetExceeded` (and a `budget_exceeded` event) when a limit
        is reached."""
        current = on_day(self._ledger, self._today())
        hit = reached(self.budget, current.today, current.life)
        if hit is None:
            return
        limit, spent, allowed = hit
        self._ctx.record(BudgetExceededEvent, message_id=message_id, limit=limit, spent=spent,
                         allowed=allowed)  # fmt: skip
        again = "it starts again at 00:00 UTC" if "per_day" in limit else "see set_budget"
        raise BudgetExceeded(
            f"budget reached: {limit} allows {_amount(limit, allowed)} and "
            f"{_amount(limit, spent)} are spent; no model call was made ({again})",
            limit=limit,
            spent=spent,
            allowed=allowed,
        )

    def charge(self, usage: TokenUsage, cost_usd: float | None) -> None:
        """Count one model call, whatever becomes of its turn."""
        self._ledger = charge(self._ledger, self._today(), usage, cost_usd)

    def set_budget(self, budget: Budget | None) -> UsageReport:
        """This agent's own budget (None: back to its agent type's)."""
        self._ledger = self._ledger.model_copy(update={"budget": budget})
        return self.report()

    @staticmethod
    def read_request(raw: RawValue) -> SetBudgetRequest:
        """The argument of update `set_budget`, or the typed failure its caller gets
        (`InvalidRequest`), before anything enters history."""
        try:
            return decode(raw, SetBudgetRequest)
        except PerennialError as err:
            raise to_application_error(err) from None

    def carry(self) -> BudgetCarried:
        return self._ledger


__all__ = [
    "LIMITS",
    "SET_BUDGET_UPDATE",
    "USAGE_QUERY",
    "Budget",
    "Spending",
    "add_spend",
    "charge",
    "on_day",
    "reached",
    "remaining",
    "report",
    "tokens_of",
]
