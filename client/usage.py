"""`perennial usage`: what LLM agents' model calls spent, agent by agent and in total.

    perennial usage                 running agents of every type
    perennial usage --type travel   one agent type; --all adds agents that are not running

Agents are listed through the visibility API (like `perennial list`) and each is asked for its
usage (query `usage`), a few at a time. "Today" is the current UTC day by this machine's clock:
an agent that has not spent anything today counts nothing for it. Agents that call no model
are left out of the table (counted as `skipped`); agents that did not answer are reported.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from datetime import UTC, date, datetime

from pydantic import BaseModel

from perennial.client.agents import AgentSummary, Perennial
from perennial.workflows.errors import InvalidRequest, PerennialError
from perennial.workflows.messages import Spend, UsageReport

#: Agents read at once.
READ_CONCURRENCY = 8


class AgentUsage(BaseModel):
    """One agent's usage, or why there is none."""

    agent_id: str
    agent_type: str
    running: bool
    usage: UsageReport | None = None
    #: "skipped": the agent calls no model; "failed": it did not answer (see `error`).
    status: str = "ok"
    error: str | None = None


class FleetTotals(BaseModel):
    """What all the agents read spent, today (UTC) and over their lives."""

    day: date
    agents: int = 0
    today: Spend = Spend()
    life: Spend = Spend()


class UsageSummary(BaseModel):
    """What `perennial usage` prints."""

    agents: list[AgentUsage]
    totals: FleetTotals
    #: More agents matched than `limit`: the totals cover the first ones only.
    truncated: bool = False


def sum_spend(spends: Iterable[Spend]) -> Spend:
    """Several spends added up."""
    total = Spend()
    for spend in spends:
        total = Spend(
            prompt_tokens=total.prompt_tokens + spend.prompt_tokens,
            completion_tokens=total.completion_tokens + spend.completion_tokens,
            total_tokens=total.total_tokens + spend.total_tokens,
            cost_usd=total.cost_usd + spend.cost_usd,
            model_calls=total.model_calls + spend.model_calls,
            unpriced_calls=total.unpriced_calls + spend.unpriced_calls,
        )
    return total


def today_of(report: UsageReport, day: date) -> Spend:
    """What the agent spent on `day` (nothing when its ledger counts another day)."""
    return report.today if report.day == day else Spend()


async def _read(perennial: Perennial, found: AgentSummary, gate: asyncio.Semaphore) -> AgentUsage:
    base = {"agent_id": found.workflow_id, "agent_type": found.agent_type, "running": found.running}
    async with gate:
        try:
            report = await perennial.agent(found.agent_type, found.name).usage()
        except InvalidRequest as err:  # no `usage` query: an agent type that calls no model
            return AgentUsage(**base, status="skipped", error=str(err))
        except PerennialError as err:
            return AgentUsage(**base, status="failed", error=f"{type(err).__name__}: {err}")
    return AgentUsage(**base, usage=report)


async def collect_usage(
    perennial: Perennial,
    *,
    agent_type: str | None = None,
    running_only: bool = True,
    limit: int = 1000,
    day: date | None = None,
) -> UsageSummary:
    """Every matching agent's usage (at most `limit` agents) and the totals."""
    if limit < 1:
        raise InvalidRequest(f"--limit must be at least 1, not {limit}")
    found = await perennial.list_agents(
        agent_type=agent_type, running_only=running_only, limit=limit + 1
    )
    truncated = len(found) > limit
    gate = asyncio.Semaphore(READ_CONCURRENCY)
    agents = await asyncio.gather(*(_read(perennial, a, gate) for a in found[:limit]))
    day = day or datetime.now(UTC).date()
    reports = [a.usage for a in agents if a.usage is not None]
    totals = FleetTotals(
        day=day,
        agents=len(reports),
        today=sum_spend(today_of(r, day) for r in reports),
        life=sum_spend(r.life for r in reports),
    )
    return UsageSummary(agents=list(agents), totals=totals, truncated=truncated)


def _left(report: UsageReport) -> str:
    if report.exceeded is not None:
        return f"EXCEEDED {report.exceeded}"
    left = report.remaining
    parts = [
        f"{left.tokens_today:,} tokens today" if left.tokens_today is not None else "",
        f"{left.tokens_total:,} tokens" if left.tokens_total is not None else "",
        f"${left.cost_today_usd:,.4f} today" if left.cost_today_usd is not None else "",
        f"${left.cost_total_usd:,.4f}" if left.cost_total_usd is not None else "",
    ]
    return ", ".join(p for p in parts if p) or "no budget"


def _line(name: str, today: Spend, life: Spend, left: str) -> str:
    return (
        f"{name:40} {life.model_calls:>6} {today.total_tokens:>13,} {life.total_tokens:>13,} "
        f"{'$' + format(today.cost_usd, ',.4f'):>11} {'$' + format(life.cost_usd, ',.4f'):>11}  "
        f"{left}"
    )


def format_usage(summary: UsageSummary) -> str:
    """The table `perennial usage` prints for people."""
    day = summary.totals.day
    rows = [a for a in summary.agents if a.usage is not None]
    if not rows:
        return "(no agents with model usage)"
    header = (
        f"{'AGENT':40} {'CALLS':>6} {'TOKENS TODAY':>13} {'TOKENS TOTAL':>13} "
        f"{'COST TODAY':>11} {'COST TOTAL':>11}  BUDGET LEFT"
    )
    lines = [header]
    for agent in rows:
        assert agent.usage is not None
        report = agent.usage
        lines.append(_line(agent.agent_id, today_of(report, day), report.life, _left(report)))
    totals = summary.totals
    lines.append(_line(f"TOTAL ({totals.agents} agents, {day} UTC)", totals.today, totals.life, ""))
    notes = []
    if totals.life.unpriced_calls:
        notes.append(
            f"{totals.life.unpriced_calls} calls had no price in the worker's price table "
            "(PERENNIAL_PRICES_FILE): their cost is not counted"
        )
    skipped = sum(1 for a in summary.agents if a.status == "skipped")
    if skipped:
        notes.append(f"{skipped} agents call no model (left out)")
    if summary.truncated:
        notes.append("more agents match than --limit: the totals cover the first ones only")
    return "\n".join(lines + [f"note: {n}" for n in notes])


__all__ = [
    "AgentUsage",
    "FleetTotals",
    "UsageSummary",
    "collect_usage",
    "format_usage",
    "sum_spend",
    "today_of",
]
