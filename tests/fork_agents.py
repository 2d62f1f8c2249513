"""Agent types for the fork, export, import and migration tests (tests/test_fork_export.py).

`test_fork_notes` keeps notes and a key-value memory. `test_fork_migrating` exists in three
versions of its code, as three deploys would: `MigratingV1` (registered: what the session's
workers run) keeps its state at schema 0; `MigratingV2` declares schema 1 and a migration that
refuses a "poisoned" state; `MigratingV3` is the fixed deploy whose migration accepts it. V2
and V3 are not registered: a test runs each on a worker of its own (`worker_for`).

The workflow sandbox re-imports this module for every run: no I/O at import time.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from perennial.workflows.entity import AgentWorkflow
from perennial.workflows.messages import Message
from perennial.workflows.registry import agent_type

#: A state the V2 migration refuses.
POISON = "poison"


class ForkNotes(BaseModel):
    notes: list[str] = []
    memory: dict[str, str] = {}


@agent_type("test_fork_notes")
class ForkNotesAgent(AgentWorkflow[ForkNotes]):
    """`remember KEY=VALUE` stores in memory; `boom` fails the turn; anything else is a note,
    kept in the state and in the agent's SQL database (table `notes`)."""

    async def on_message(self, message: Message) -> str:
        verb, _, rest = message.text.partition(" ")
        if verb == "remember":
            key, _, value = rest.partition("=")
            self.state.memory[key] = value
            return f"remembered {key}"
        if verb == "boom":
            raise ValueError("boom")
        self.state.notes.append(message.text)
        self.sql("CREATE TABLE IF NOT EXISTS notes (text TEXT NOT NULL)")
        self.sql("INSERT INTO notes (text) VALUES (?)", message.text)
        return f"{len(self.state.notes)} notes"


class LegacyState(BaseModel):
    """Schema 0: the current value and what it was set to."""

    current: str = ""
    history: list[str] = []


class CountedState(BaseModel):
    """Schema 1: also how many times it was set."""

    current: str = ""
    history: list[str] = []
    count: int


def _set(state: Any, text: str) -> str:
    verb, _, value = text.partition(" ")
    if verb != "set" or not value:
        raise ValueError(f"say 'set VALUE', not {text!r}")
    state.current = value
    state.history.append(value)
    return value


@agent_type("test_fork_migrating")
class MigratingV1(AgentWorkflow[LegacyState]):
    """Deploy 1: schema 0. Continues as new after every 3 updates, so its state travels in a
    run's input."""

    max_updates_per_run = 3

    async def on_message(self, message: Message) -> str:
        return _set(self.state, message.text)


def count_sets(old: dict[str, Any]) -> dict[str, Any]:
    """0 -> 1: count the values set so far; a poisoned state cannot be migrated."""
    if old["current"] == POISON:
        raise ValueError("a poisoned state cannot be counted")
    return {**old, "count": len(old["history"])}


def count_sets_fixed(old: dict[str, Any]) -> dict[str, Any]:
    """0 -> 1, fixed: a poisoned state is cured."""
    current = "cured" if old["current"] == POISON else old["current"]
    return {**old, "current": current, "count": len(old["history"])}


@agent_type("test_fork_migrating", registered=False)
class MigratingV2(AgentWorkflow[CountedState]):
    """Deploy 2: schema 1, with a migration that fails on a poisoned state."""

    state_schema_version = 1
    state_migrations = {0: count_sets}

    def initial_state(self) -> CountedState:
        return CountedState(count=0)

    async def on_message(self, message: Message) -> str:
        value = _set(self.state, message.text)
        self.state.count += 1
        return f"{value} (set {self.state.count} times)"


@agent_type("test_fork_migrating", registered=False)
class MigratingV3(MigratingV2):
    """Deploy 3: the fixed migration."""

    state_migrations = {0: count_sets_fixed}
