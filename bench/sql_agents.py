"""The agent type bench/bench_sql.py measures (the worker imports it with PERENNIAL_APP).

The workflow sandbox re-imports this module for every run: no I/O at import time.
"""

from __future__ import annotations

from pydantic import BaseModel

from perennial import AgentWorkflow, Message, agent_type

SQL_ROWS = "bench_sql_rows"


class RowsState(BaseModel):
    turns: int = 0


@agent_type(SQL_ROWS)
class RowsAgent(AgentWorkflow[RowsState]):
    """`fill N`: N rows of ~100 bytes in one turn (the set-up); any other text: one row more,
    the reply saying how many there are (what `notes` does with a list, here in SQL)."""

    max_sql_bytes = 4 * 1024 * 1024

    async def on_message(self, message: Message) -> str:
        self.sql(
            "CREATE TABLE IF NOT EXISTS items(id INTEGER PRIMARY KEY, name TEXT NOT NULL, "
            "body TEXT NOT NULL, qty INTEGER NOT NULL)"
        )
        verb, _, count = message.text.partition(" ")
        if verb == "fill":
            for n in range(int(count)):
                self.sql(
                    "INSERT INTO items(name, body, qty) VALUES (?, ?, ?)",
                    f"item {n}",
                    f"note {n}: " + " ".join(f"w{(n * 7 + k) % 997}" for k in range(14)),
                    n % 50,
                )
        else:
            self.sql(
                "INSERT INTO items(name, body, qty) VALUES (?, ?, ?)", message.text, "one more", 1
            )
        self.state.turns += 1
        rows = self.sql("SELECT max(id) FROM items").scalar()
        return f"Noted (row #{rows})."


SQL_ROWS_SWITCHING = "bench_sql_rows_switching"


@agent_type(SQL_ROWS_SWITCHING)
class SwitchingRowsAgent(RowsAgent):
    """The same, continuing as new after a few dozen events (to measure what it carries)."""

    max_history_events = 60
