"""LLM agents: the agent loop, tools with schemas from signatures, and the built-in tools.

    from perennial.workflows.llm import LLMAgent, LLMState, STATE_TOOLS, CONTEXT_TOOLS, activity_tool

See `workflows.llm.agent` for the loop, `workflows.llm.tools` for declaring tools, and
`workflows.llm.wire` for the types that cross the activity boundary.
"""

from perennial.workflows.llm.agent import LLMAgent
from perennial.workflows.llm.budget import Budget
from perennial.workflows.llm.builtin import (
    CONTEXT_TOOLS,
    STATE_TOOLS,
    add_to_context,
    clear_old_context,
    delete_state_key,
    get_state,
    list_state_keys,
    put_state,
)
from perennial.workflows.llm.context import ContextWindow, LLMState, UsageTotals
from perennial.workflows.llm.sql_tools import SQL_TOOLS, sql_execute, sql_query
from perennial.workflows.llm.tools import (
    ActivityTool,
    AnyTool,
    ToolContext,
    ToolError,
    WorkflowTool,
    activity_tool,
    workflow_tool,
)
from perennial.workflows.llm.wire import ModelSettings

__all__ = [
    "CONTEXT_TOOLS",
    "SQL_TOOLS",
    "STATE_TOOLS",
    "ActivityTool",
    "AnyTool",
    "Budget",
    "ContextWindow",
    "LLMAgent",
    "LLMState",
    "ModelSettings",
    "ToolContext",
    "ToolError",
    "UsageTotals",
    "WorkflowTool",
    "activity_tool",
    "add_to_context",
    "clear_old_context",
    "delete_state_key",
    "get_state",
    "list_state_keys",
    "put_state",
    "sql_execute",
    "sql_query",
    "workflow_tool",
]
