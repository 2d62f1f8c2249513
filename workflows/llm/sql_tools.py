"""The model's SQL tools: read with `sql_query`, change with `sql_execute`.

    @agent_type("analyst")
    class Analyst(LLMAgent[LLMState]):
        tools = [*SQL_TOOLS, *STATE_TOOLS]

Both run inside the agent workflow on the agent's own SQLite database (`workflows.sql`): no
activity, nothing leaves the workflow, and a failed turn (or a failed call) undoes what they
changed. With either of them, the system prompt shows the model the database's schema
(`describe_database`), so it can write queries without looking the tables up first.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

from pydantic import Field
from pydantic_core import to_json

from perennial.workflows.errors import SqlError, StateTooLarge
from perennial.workflows.llm.tools import ToolError, workflow_tool
from perennial.workflows.messages import MAX_SQL_CHARS, SqlBlob, SqlRows

if TYPE_CHECKING:
    from perennial.workflows.llm.agent import LLMAgent

#: A value for a `?` placeholder, as the model writes it.
SqlParam = str | int | float | bool | None
Statement = Annotated[str, Field(min_length=1, max_length=MAX_SQL_CHARS)]
#: Rows a `sql_execute` with RETURNING shows the model, at most.
_RETURNED_ROWS = 50


@workflow_tool
def sql_query(
    agent: LLMAgent[Any],
    query: Statement,
    params: list[SqlParam] | None = None,
    max_rows: Annotated[int, Field(ge=1, le=500)] = 50,
) -> str:
    """Run one read-only SQL query (SQLite) on your database. Returns JSON: "columns", "rows"
    and "truncated" (true when more rows matched than max_rows).

    Args:
        query: One SELECT statement (or a read-only PRAGMA such as table_info(name)). Write
            values as ? placeholders and pass them in params.
        params: The values of the ? placeholders, in order.
        max_rows: The most rows to return.
    """
    try:
        return agent.sql_read(query, *(params or []), max_rows=max_rows).model_dump_json()
    except SqlError as err:
        raise ToolError(str(err)) from None


@workflow_tool
def sql_execute(
    agent: LLMAgent[Any], statement: Statement, params: list[SqlParam] | None = None
) -> str:
    """Run one SQL statement (SQLite) that changes your database: CREATE TABLE, CREATE INDEX,
    INSERT, UPDATE, DELETE, ALTER TABLE, DROP. The database is kept with your memory. There is
    no clock and no randomness in it: pass times and ids as parameters. Returns JSON: "changed"
    (rows changed), "last_row_id", and the rows of a RETURNING clause.

    Args:
        statement: One SQL statement. Write values as ? placeholders and pass them in params.
        params: The values of the ? placeholders, in order.
    """
    try:
        result = agent.sql(statement, *(params or []))
    except (SqlError, StateTooLarge) as err:
        raise ToolError(str(err)) from None
    returned = SqlRows(
        columns=list(result.columns),
        rows=[[_json(value) for value in row] for row in result.rows[:_RETURNED_ROWS]],
        truncated=len(result.rows) > _RETURNED_ROWS,
    )
    summary: dict[str, Any] = {
        "changed": max(result.rowcount, 0),
        "last_row_id": result.lastrowid or None,
    }
    if returned.columns:
        summary["returned"] = returned.model_dump(mode="json")
    return to_json(summary).decode()


def _json(value: Any) -> Any:
    return SqlBlob.of(value) if isinstance(value, bytes) else value


def describe_database(agent: LLMAgent[Any]) -> str:
    """What the system prompt says of the agent's database: its schema, or that it is empty."""
    schema = agent.sql_schema()
    if not schema:
        return (
            "You have an SQLite database (tools sql_query and sql_execute). It is empty: "
            "create tables with sql_execute when you need them."
        )
    return f"You have an SQLite database (tools sql_query and sql_execute). Its schema:\n{schema}"


#: The SQL tools of the brief: read-only queries and statements that change the database.
SQL_TOOLS = (sql_query, sql_execute)

__all__ = ["SQL_TOOLS", "describe_database", "sql_execute", "sql_query"]
