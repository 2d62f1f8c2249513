"""How the LLM layer's events read for people (`perennial events`, the demo)."""

from __future__ import annotations

from perennial.workflows.messages import (
    BudgetExceededEvent,
    ErrorEvent,
    Event,
    RunStartedEvent,
    StepEvent,
    SummaryEvent,
    TextEvent,
    TokenUsage,
    ToolCallEvent,
)


def _tokens(usage: TokenUsage) -> str:
    return f"{usage.prompt_tokens}+{usage.completion_tokens}={usage.total_tokens} tokens"


def format_llm_event(event: Event) -> str | None:
    """One line for a run, step, text, tool call or error event; None for other kinds."""
    head = f"#{event.offset} {event.at:%H:%M:%S}"
    if isinstance(event, RunStartedEvent):
        return f"{head} run ({event.message_id}) started, model {event.model or 'default'}"
    if isinstance(event, StepEvent):
        tools = f", asks for {', '.join(event.tool_calls)}" if event.tool_calls else ""
        retried = f", {event.attempts} attempts" if event.attempts > 1 else ""
        cost = f", ${event.cost_usd:.6f}" if event.cost_usd is not None else ""
        return (
            f"{head}   step {event.step} {event.model}: {_tokens(event.usage)}{cost}, "
            f"{event.duration_ms} ms{retried}{tools}"
        )
    if isinstance(event, BudgetExceededEvent):
        return (
            f"{head}   BUDGET {event.limit} reached: {event.spent:,.6g} spent of "
            f"{event.allowed:,.6g}; no model call made"
        )
    if isinstance(event, SummaryEvent):
        what = f"{event.exchanges} exchanges ({event.items} items)"
        if not event.ok:
            return f"{head}   summary of {what} FAILED ({event.fallback}): {event.error}"
        return f"{head}   summarised {what}: {_tokens(event.usage)} -> {event.summary}"
    if isinstance(event, TextEvent):
        return f"{head}   says: {event.text}"
    if isinstance(event, ToolCallEvent):
        status = "ok" if event.ok else "FAILED"
        retried = f", {event.attempts} attempts" if event.attempts > 1 else ""
        return (
            f"{head}   tool {event.name}({event.arguments}) [{event.runs_in}, {status}, "
            f"{event.duration_ms} ms{retried}] -> {event.result}"
        )
    if isinstance(event, ErrorEvent):
        step = f" at step {event.step}" if event.step else ""
        return (
            f"{head}   ERROR{step} {event.error_type}: {event.error} ({_tokens(event.usage)} spent)"
        )
    return None
