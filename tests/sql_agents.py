"""Agent types with an SQL database, for tests/test_sql_state.py (registered on import).

The workflow sandbox re-imports this module for every run: no I/O at import time.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from perennial import (
    SQL_TOOLS,
    AgentWorkflow,
    LLMAgent,
    LLMState,
    Message,
    agent_type,
    callable_method,
)

#: A parameter as the tests send it (blobs travel as {"blob": base64} on the wire only).
Param = str | int | float | bool | None


class LedgerState(BaseModel):
    #: Counts the turns that wrote, so that state and database can be checked together.
    entries: int = 0


class Outcome(BaseModel):
    columns: list[str]
    rows: list[list[Any]]
    rowcount: int
    lastrowid: int | None


@agent_type("test_sql_ledger")
class Ledger(AgentWorkflow[LedgerState]):
    """A ledger in SQL: messages `add <text>` insert a row; callable methods run any SQL."""

    max_sql_bytes = 256 * 1024

    async def on_message(self, message: Message) -> str:
        verb, _, text = message.text.partition(" ")
        if verb == "add":
            self._ensure_table()
            self.sql("INSERT INTO entries(text) VALUES (?)", text)
            self.state.entries += 1
            return f"{self.sql('SELECT count(*) FROM entries').scalar()} entries"
        if verb == "fail":  # changes state and database, then fails: both are undone
            self._ensure_table()
            self.sql("INSERT INTO entries(text) VALUES (?)", text)
            self.state.entries += 1
            raise ValueError("failing on purpose")
        return f"{self.state.entries} entries"

    def _ensure_table(self) -> None:
        self.sql("CREATE TABLE IF NOT EXISTS entries(id INTEGER PRIMARY KEY, text TEXT NOT NULL)")

    @callable_method
    def execute(self, query: str, params: list[Param] | None = None) -> Outcome:
        """Run one statement and return what it gave."""
        result = self.sql(query, *(params or []))
        return Outcome(
            columns=list(result.columns),
            rows=[list(row) for row in result.rows],
            rowcount=result.rowcount,
            lastrowid=result.lastrowid,
        )

    @callable_method
    def fill(self, rows: int, size: int, first: int = 0) -> int:
        """Insert `rows` rows of `size` characters that compress poorly; the count after."""
        self._ensure_table()
        for n in range(first, first + rows):
            self.sql("INSERT INTO entries(text) VALUES (?)", _noise(n, size))
        self.state.entries += rows
        return int(self.sql("SELECT count(*) FROM entries").scalar())


def _noise(seed: int, size: int) -> str:
    """`size` characters that compress poorly (~6.5 bits each), the same for a seed."""
    out = []
    x = seed * 2654435761 % 2**32 or 1
    for _ in range(size):
        x ^= (x << 13) & 0xFFFFFFFF
        x ^= x >> 17
        x ^= (x << 5) & 0xFFFFFFFF
        out.append(chr(33 + x % 90))
    return "".join(out)


@agent_type("test_sql_switching")
class SwitchingLedger(Ledger):
    """A ledger that continues as new every few turns, with a database near its budget."""

    max_history_events = 40
    max_sql_bytes = 512 * 1024
    max_versions = 4


@agent_type("test_sql_analyst")
class Analyst(LLMAgent[LLMState]):
    instructions = "You keep a database."
    model = "test-model"
    tools = [*SQL_TOOLS]
