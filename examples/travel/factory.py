"""The agent factory: the travel planner's agent types get their settings from one file.

`agents.toml` (beside this module; `TRAVEL_AGENTS_FILE` names another) declares, per agent
type, its model, its tools and its limits. The file is read and validated once per process,
when this module is first imported: by the worker and by the gateway, which both load
`--app examples.travel`. An agent class names its table with `configured`:

    @agent_type("travel")
    @configured("travel")
    class TravelAgent(LLMAgent[TravelState]):
        available_tools = (search_flights, ..., book)

and the factory sets the class attributes Perennial reads (`model`, `tools`, `max_steps`,
`model_settings`, `context_window`, `budget`, the model call's heartbeat timeout) and
`config`, the table itself, typed, for the settings of the type's own (an expiry, a timeout).
`tools` in the file is a subset of the class's `available_tools`, in the file's order.

The agent modules import this module passed through Temporal's sandbox, so every workflow run
reads the same settings and no workflow code touches the file. A bad file stops the process at
start with `InvalidAgentsConfig`, which names the file and the key.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Callable, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from perennial import Budget, ContextWindow, ModelSettings, UsageError

#: The file the factory reads unless TRAVEL_AGENTS_FILE names another.
DEFAULT_FILE = Path(__file__).with_name("agents.toml")
#: The environment variable that names another agents file.
FILE_ENV = "TRAVEL_AGENTS_FILE"

C = TypeVar("C", bound=type)


class InvalidAgentsConfig(UsageError):
    """The agents file cannot be read, or a value in it is wrong (the message says where)."""


class _Table(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class LLMAgentConfig(_Table):
    """What every LLM agent type's table may set."""

    #: None: the worker's default model (OPENAI_MODEL).
    model: str | None = Field(default=None, min_length=1)
    #: Replaces the type's own system prompt.
    instructions: str | None = Field(default=None, min_length=1)
    #: The tools the type uses, a subset of its `available_tools` (None: all of them).
    tools: tuple[str, ...] | None = None
    max_steps: int = Field(default=8, ge=1, le=50)
    #: A model call whose worker died is retried after this long without a heartbeat.
    model_heartbeat_seconds: float = Field(default=30, ge=2, le=600)
    model_settings: ModelSettings = ModelSettings()
    context_window: ContextWindow = ContextWindow()
    budget: Budget = Budget()


class TravelConfig(LLMAgentConfig):
    """The `travel` agent: the trip, its itinerary, bookings and reminders."""

    booking_approval_hours: float = Field(default=48, gt=0, le=24 * 365)
    max_itinerary_items: int = Field(default=60, ge=1, le=500)
    page_timeout_seconds: float = Field(default=90, gt=0, le=3600)


class ConversationConfig(LLMAgentConfig):
    """The `conversation` agent: one per session, routes each message to a specialist."""

    #: The agent types messages are routed to, with what each is good at.
    routes: dict[str, str] = Field(min_length=1)
    route_timeout_seconds: float = Field(default=240, gt=0, le=3600)
    transcript_turns: int = Field(default=40, ge=1, le=1000)


class SessionConfig(_Table):
    """The `session` agent: one per session, expires it when idle."""

    idle_expiry_seconds: float = Field(default=1800, ge=1, le=90 * 86_400)


class AgentsConfig(_Table):
    """The whole file: one table per agent type."""

    travel: TravelConfig
    conversation: ConversationConfig
    session: SessionConfig = SessionConfig()


def load_config(path: Path) -> AgentsConfig:
    """The agents file at `path`, validated (`InvalidAgentsConfig`)."""
    try:
        raw = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as err:
        raise InvalidAgentsConfig(f"cannot read the agents file {path}: {err}") from None
    try:
        return AgentsConfig.model_validate(raw)
    except ValidationError as err:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}"
            for e in err.errors(include_url=False)[:5]
        )
        raise InvalidAgentsConfig(f"{path}: {problems}") from None


def select_tools(
    available: Sequence[Any], wanted: Sequence[str] | None, table: str
) -> tuple[Any, ...]:
    """The tools named in `wanted` (in that order) among `available` (all when None)."""
    by_name = {tool.name: tool for tool in available}
    if wanted is None:
        return tuple(available)
    unknown = [name for name in wanted if name not in by_name]
    if unknown:
        raise InvalidAgentsConfig(
            f"[{table}] tools: no tool named {', '.join(map(repr, unknown))} "
            f"(this agent type has: {', '.join(by_name)})"
        )
    return tuple(by_name[name] for name in dict.fromkeys(wanted))


def configured(table: str) -> Callable[[C], C]:
    """Class decorator: give an agent class the settings of its table in the agents file
    (put it below `@agent_type`, so the class is configured before it is registered)."""

    def apply(cls: C) -> C:
        config = getattr(CONFIG, table)
        cls.config = config  # type: ignore[attr-defined]
        if isinstance(config, LLMAgentConfig):
            cls.model = config.model  # type: ignore[attr-defined]
            if config.instructions is not None:
                cls.instructions = config.instructions  # type: ignore[attr-defined]
            available = cls.available_tools  # type: ignore[attr-defined]
            cls.tools = select_tools(available, config.tools, table)  # type: ignore[attr-defined]
            cls.max_steps = config.max_steps  # type: ignore[attr-defined]
            cls.model_settings = config.model_settings  # type: ignore[attr-defined]
            cls.context_window = config.context_window  # type: ignore[attr-defined]
            cls.budget = config.budget  # type: ignore[attr-defined]
            cls.model_heartbeat_timeout = timedelta(seconds=config.model_heartbeat_seconds)  # type: ignore[attr-defined]
        return cls

    return apply


def config_path() -> Path:
    """The agents file this process reads."""
    named = os.environ.get(FILE_ENV, "")
    return Path(named) if named else DEFAULT_FILE


#: The settings of every agent type, read once per process.
CONFIG: AgentsConfig = load_config(config_path())

__all__ = [
    "CONFIG",
    "AgentsConfig",
    "ConversationConfig",
    "InvalidAgentsConfig",
    "LLMAgentConfig",
    "SessionConfig",
    "TravelConfig",
    "config_path",
    "configured",
    "load_config",
    "select_tools",
]
