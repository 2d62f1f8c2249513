"""An LLM agent's state: its memory, its conversation context, and its token usage.

The conversation is part of the agent's committed state, so a failed turn rolls it back with
everything else, and a rollback to an older version restores the conversation of that version.

The context is bounded: before every model call the oldest whole exchanges (a user message and
everything that answered it) are dropped until the window fits, and the agent can drop more
itself (`clear_old_context`). Notes added with `add_to_context` stay in every request until
cleared. Exchanges are dropped whole, so a tool result never loses the call it answers. With
`summarize=True` they are summarised into `summary` first (see `workflows.llm.summary`).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, JsonValue

from perennial.workflows.llm.wire import ChatItem, UserItem, item_chars
from perennial.workflows.messages import TokenUsage


class UsageTotals(TokenUsage):
    """Running token totals of an agent, over the turns its state has applied."""

    model_calls: int = Field(default=0, ge=0)

    def add(self, usage: TokenUsage) -> UsageTotals:
        total = self + usage
        return UsageTotals(**total.model_dump(), model_calls=self.model_calls + 1)


class LLMState(BaseModel):
    """The state every LLM agent has; agent types may subclass it to add their own fields."""

    model_config = ConfigDict(extra="forbid")

    #: The agent's key-value memory (the state tools read and write it).
    memory: dict[str, JsonValue] = {}
    #: Notes the agent pinned into its context (`add_to_context`).
    notes: list[str] = []
    #: The conversation, oldest first, bounded by the agent type's context window.
    context: list[ChatItem] = []
    usage: UsageTotals = UsageTotals()
    #: What older exchanges said, summarised when they left the context window (sent in
    #: the system prompt of every request; see `ContextWindow.summarize`).
    summary: str | None = None


class ContextWindow(BaseModel):
    """How much conversation an agent sends to the model (the current exchange is always sent
    whole; older exchanges are dropped oldest first to fit)."""

    model_config = ConfigDict(frozen=True)

    max_items: int = Field(default=100, ge=2)
    max_chars: int = Field(default=48_000, ge=100)
    #: Notes kept by `add_to_context` (the oldest goes first) and their length.
    max_notes: int = Field(default=20, ge=0)
    max_note_chars: int = Field(default=2_000, ge=1)
    #: Summarise the exchanges the window would drop (a model call) into `LLMState.summary`
    #: instead of forgetting them (see `workflows.llm.summary`).
    summarize: bool = False
    #: After a summary the context keeps this share of the window, so the next summary
    #: comes after that much new conversation, not at the very next call.
    summarize_keep: float = Field(default=0.5, gt=0, le=1)
    summary_max_chars: int = Field(default=4_000, ge=100, le=100_000)
    #: The summarising call's system prompt (None: the default one) and model (None: the
    #: agent type's).
    summary_instructions: str | None = Field(default=None, min_length=1)
    summary_model: str | None = None
    #: When the summarising call fails for good: "fail" the turn (rolled back, nothing lost;
    #: the next turn tries again) or "drop" the exchanges unsummarised and go on.
    on_summary_failure: Literal["fail", "drop"] = "fail"


def exchange_starts(context: list[ChatItem]) -> list[int]:
    """Indices where an exchange (a user message and its answers) begins."""
    return [i for i, item in enumerate(context) if isinstance(item, UserItem)]


def fit_window(context: list[ChatItem], window: ContextWindow) -> int:
    """Drop the oldest exchanges until the context fits (never the latest exchange); returns
    how many items were dropped."""
    starts = exchange_starts(context)
    latest = starts[-1] if starts else 0
    sizes = [item_chars(item) for item in context]
    chars = sum(sizes)
    cut = 0
    for start in [*starts, latest]:
        if start > latest:
            break
        if len(context) - cut <= window.max_items and chars <= window.max_chars:
            break
        if start <= cut:
            continue
        chars -= sum(sizes[cut:start])
        cut = start
    del context[:cut]
    return cut


def keep_last_exchanges(context: list[ChatItem], keep: int) -> int:
    """Drop all but the last `keep` exchanges (at least the current one); returns how many
    items were dropped."""
    starts = exchange_starts(context)
    if not starts:
        return 0
    cut = starts[max(0, len(starts) - max(1, keep))]
    del context[:cut]
    return cut


__all__ = [
    "ContextWindow",
    "LLMState",
    "UsageTotals",
    "exchange_starts",
    "fit_window",
    "keep_last_exchanges",
]
