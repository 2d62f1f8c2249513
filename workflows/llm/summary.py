"""Long conversations: older exchanges are summarised into the agent's memory, not forgotten.

With `ContextWindow(summarize=True)`, before a model call whose context would not fit the window
(`fit_window` would drop exchanges), the oldest exchanges are summarised first: one model call
through the same model activity (a summarising system prompt, no tools) merges the previous
summary and those exchanges into a new summary of at most `summary_max_chars`. The summary
goes into `LLMState.summary`, which the system prompt of every later request carries, the
summarised exchanges leave the context, and a `summary` event records it. Each summary cuts the
context down to `summarize_keep` of the window, so summaries come once per that much new
conversation, and a conversation of thousands of turns stays within the window.

The summary is part of the state: a turn that fails after summarising is rolled back whole
(context and summary), and the next turn summarises again. The budget counts summary calls.

A summary call that fails for good (after the model activity's retries), or answers with no
text, is recorded as a `summary` event with `ok` False; then `on_summary_failure` decides:
"fail" (the default) fails the turn with `SummaryFailed`, rolled back with nothing lost, so
the next turn tries again; "drop" drops the exchanges unsummarised (as without `summarize`) and
the turn goes on. Failing is the default because dropping loses what was said for good, while
a failed turn loses nothing: the same endpoint that cannot summarise usually cannot answer
either, and a person can still choose "drop" for availability.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from temporalio import workflow
from temporalio.exceptions import ActivityError, ApplicationError, CancelledError, FailureError

from perennial.workflows.errors import SummaryFailed
from perennial.workflows.llm.budget import Spending
from perennial.workflows.llm.context import ContextWindow, exchange_starts, fit_window
from perennial.workflows.llm.wire import (
    AssistantItem,
    ChatItem,
    ModelRequest,
    ModelResponse,
    ModelSettings,
    SystemItem,
    ToolItem,
    UserItem,
)
from perennial.workflows.messages import SummaryEvent, TokenUsage, preview

if TYPE_CHECKING:
    from perennial.workflows.llm.agent import LLMAgent

#: The summarising call's system prompt; `{max_chars}` is replaced by `summary_max_chars`.
DEFAULT_SUMMARY_INSTRUCTIONS = (
    "You keep the memory of a long conversation between a user and an AI assistant. You get "
    "the summary so far (if any) and the next part of the conversation. Write one updated "
    "summary that replaces both: keep facts, names, numbers, dates, decisions, the user's "
    "preferences and the tasks still open; leave out greetings and small talk. Write plain "
    "notes, at most {max_chars} characters. Answer with the summary only."
)

#: How the summary is introduced in the agent's system prompt.
SUMMARY_HEADING = "Summary of the earlier conversation (older exchanges, summarised):"


def with_summary(prompt: str, summary: str | None) -> str:
    """The system prompt with the summary of older exchanges, if there is one."""
    return f"{prompt}\n\n{SUMMARY_HEADING}\n{summary}" if summary else prompt


def overflow(context: Sequence[ChatItem], window: ContextWindow) -> int:
    """How many items `fit_window` would drop now (0: the context fits)."""
    return fit_window(list(context), window)


def summary_cut(context: Sequence[ChatItem], window: ContextWindow) -> int:
    """How many of the oldest items to summarise: whole exchanges, until what stays fits
    `summarize_keep` of the window (never the latest exchange)."""
    share = window.summarize_keep
    smaller = window.model_copy(
        update={
            "max_items": max(2, int(window.max_items * share)),
            "max_chars": max(100, int(window.max_chars * share)),
        }
    )
    return fit_window(list(context), smaller)


def transcript(items: Sequence[ChatItem]) -> str:
    """Context items as the summarising call reads them."""
    lines: list[str] = []
    for item in items:
        if isinstance(item, UserItem):
            lines.append(f"user: {item.content}")
        elif isinstance(item, AssistantItem):
            if item.content:
                lines.append(f"assistant: {item.content}")
            lines.extend(f"assistant called {c.name}({c.arguments})" for c in item.tool_calls)
        elif isinstance(item, ToolItem):
            lines.append(f"tool {item.name or item.tool_call_id} answered: {item.content}")
        elif isinstance(item, SystemItem):
            lines.append(f"system: {item.content}")
    return "\n".join(lines)


def summary_request(
    previous: str | None,
    items: Sequence[ChatItem],
    window: ContextWindow,
    agent_model: str | None,
    settings: ModelSettings,
) -> ModelRequest:
    """The summarising call: its own system prompt, the previous summary and the exchanges,
    no tools, not streamed."""
    instructions = window.summary_instructions or DEFAULT_SUMMARY_INSTRUCTIONS
    prompt = instructions.replace("{max_chars}", str(window.summary_max_chars))
    text = (
        f"Summary so far:\n{previous or '(none yet)'}\n\n"
        f"Next part of the conversation:\n{transcript(items)}"
    )
    return ModelRequest(
        model=window.summary_model or agent_model,
        messages=[SystemItem(content=prompt), UserItem(content=text)],
        settings=settings.model_copy(update={"stream": False}),
    )


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _failure(err: ActivityError) -> SummaryFailed:
    cause = err.cause
    failure = (cause.type or "ModelError") if isinstance(cause, ApplicationError) else "ModelError"
    reason = cause.message if isinstance(cause, FailureError) else str(cause or err)
    return SummaryFailed(f"summarising older exchanges failed: {reason}", failure=failure)


class Summarizer:
    """Summarises an LLM agent's oldest exchanges before a model call that would drop them
    (see the module docstring)."""

    def __init__(self, agent: LLMAgent[Any], spending: Spending) -> None:
        self._agent = agent
        self._spending = spending

    async def compact(self, message_id: str, step: int) -> bool:
        """Summarise the oldest exchanges if the context would not fit the window; True when
        a model call was made (the budget must be checked again)."""
        agent = self._agent
        window = agent.context_window
        context = agent.state.context
        if not window.summarize or overflow(context, window) == 0:
            return False
        cut = summary_cut(context, window)
        items = context[:cut]
        request = summary_request(
            agent.state.summary, items, window, agent.model, agent.model_settings
        )
        self._spending.check(message_id)
        event: dict[str, Any] = {"message_id": message_id, "items": cut,
                                 "exchanges": len(exchange_starts(items))}  # fmt: skip
        try:
            response = await self._call(request, step)
        except ActivityError as err:
            if isinstance(err.cause, CancelledError):  # the turn is being stopped: no fallback
                raise
            return self._failed(_failure(err), event, cut)
        self._spending.charge(response.usage, response.cost_usd)
        agent.state.usage = agent.state.usage.add(response.usage)
        event.update(model=response.model, usage=response.usage, cost_usd=response.cost_usd,
                     duration_ms=response.duration_ms)  # fmt: skip
        text = (response.message.content or "").strip()
        if not text:
            failed = SummaryFailed("the model answered the summary request with no text",
                                   failure="EmptySummary")  # fmt: skip
            return self._failed(failed, event, cut)
        summary = _cut(text, window.summary_max_chars)
        agent.state.summary = summary
        del agent.state.context[:cut]
        agent.record(SummaryEvent, chars=len(summary), summary=preview(summary), **event)
        return True

    def _failed(self, err: SummaryFailed, event: dict[str, Any], cut: int) -> bool:
        agent = self._agent
        fallback = agent.context_window.on_summary_failure
        event.setdefault("usage", TokenUsage())
        agent.record(SummaryEvent, ok=False, error=str(err), fallback=fallback, **event)
        if fallback == "fail":
            raise err
        workflow.logger.warning("summary failed, dropping %d context items: %s", cut, err)
        del agent.state.context[:cut]
        return True

    async def _call(self, request: ModelRequest, step: int) -> ModelResponse:
        model = request.model or "default model"
        self._agent.show(f"summarising older exchanges with {model}")
        return await self._agent.execute_model(request, step=step, turn=None, label="summary")


__all__ = [
    "DEFAULT_SUMMARY_INSTRUCTIONS",
    "SUMMARY_HEADING",
    "Summarizer",
    "overflow",
    "summary_cut",
    "summary_request",
    "transcript",
    "with_summary",
]
