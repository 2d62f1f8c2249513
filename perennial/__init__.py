"""Perennial: durable, long-lived AI agents on Temporal.

What an agent type is written with (workflow code: imported inside Temporal's sandbox, so
nothing here does I/O):

    from perennial import AgentWorkflow, Message, agent_type, callable_method

    @agent_type("counter")
    class Counter(AgentWorkflow[CounterState]):
        async def on_message(self, message: Message) -> str: ...

        @callable_method  # clients call it by name with typed arguments, as a turn
        def add(self, amount: int) -> int: ...

What callers use is `perennial.client` (`Perennial`, `AgentHandle`, the errors, `Settings`);
the worker is `perennial.worker`; tests use `perennial.testing`. Names are imported when first
used, so `perennial --help` does not load Temporal's workflow machinery.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from perennial._lazy import lazy_exports

if TYPE_CHECKING:
    from perennial.workflows.callables import callable_method
    from perennial.workflows.entity import AgentWorkflow
    from perennial.workflows.errors import (
        InvalidMessage,
        InvalidRequest,
        MethodNotFound,
        PerennialError,
        RunError,
        SqlError,
        SqlNotDeterministic,
        SqlReadOnly,
        StateMigrationFailed,
        StateTooLarge,
        ToolFailed,
        TurnFailed,
        TurnInProgress,
        TurnStopped,
        UsageError,
    )
    from perennial.workflows.llm import (
        CONTEXT_TOOLS,
        SQL_TOOLS,
        STATE_TOOLS,
        Budget,
        ContextWindow,
        LLMAgent,
        LLMState,
        ModelSettings,
        ToolContext,
        ToolError,
        activity_tool,
        workflow_tool,
    )
    from perennial.workflows.llm.tool_runner import run_tool
    from perennial.workflows.llm.tools import ToolSecret
    from perennial.workflows.messages import (
        AgentReplyWake,
        AlarmWake,
        ApprovalWake,
        BusyPolicy,
        ChildFinishedWake,
        Message,
        PeerChangedWake,
        ScheduleRequest,
    )
    from perennial.workflows.registry import agent_type
    from perennial.workflows.sql import SqlResult

#: Public name -> the module that defines it.
_EXPORTS: dict[str, str] = {
    "AgentWorkflow": "perennial.workflows.entity",
    "agent_type": "perennial.workflows.registry",
    "callable_method": "perennial.workflows.callables",
    "Message": "perennial.workflows.messages",
    "AlarmWake": "perennial.workflows.messages",
    "ChildFinishedWake": "perennial.workflows.messages",
    "AgentReplyWake": "perennial.workflows.messages",
    "PeerChangedWake": "perennial.workflows.messages",
    "ApprovalWake": "perennial.workflows.messages",
    "ScheduleRequest": "perennial.workflows.messages",
    "LLMAgent": "perennial.workflows.llm",
    "LLMState": "perennial.workflows.llm",
    "Budget": "perennial.workflows.llm",
    "ContextWindow": "perennial.workflows.llm",
    "ModelSettings": "perennial.workflows.llm",
    "ToolContext": "perennial.workflows.llm",
    "ToolError": "perennial.workflows.llm",
    "ToolSecret": "perennial.workflows.llm.tools",
    "activity_tool": "perennial.workflows.llm",
    "run_tool": "perennial.workflows.llm.tool_runner",
    "workflow_tool": "perennial.workflows.llm",
    "STATE_TOOLS": "perennial.workflows.llm",
    "SQL_TOOLS": "perennial.workflows.llm",
    "SqlResult": "perennial.workflows.sql",
    "SqlError": "perennial.workflows.errors",
    "SqlNotDeterministic": "perennial.workflows.errors",
    "SqlReadOnly": "perennial.workflows.errors",
    "CONTEXT_TOOLS": "perennial.workflows.llm",
    "PerennialError": "perennial.workflows.errors",
    "UsageError": "perennial.workflows.errors",
    "RunError": "perennial.workflows.errors",
    "InvalidMessage": "perennial.workflows.errors",
    "InvalidRequest": "perennial.workflows.errors",
    "MethodNotFound": "perennial.workflows.errors",
    "TurnFailed": "perennial.workflows.errors",
    "TurnInProgress": "perennial.workflows.errors",
    "TurnStopped": "perennial.workflows.errors",
    "BusyPolicy": "perennial.workflows.messages",
    "ToolFailed": "perennial.workflows.errors",
    "StateTooLarge": "perennial.workflows.errors",
    "StateMigrationFailed": "perennial.workflows.errors",
}

__all__ = [
    "AgentReplyWake",
    "AgentWorkflow",
    "AlarmWake",
    "ApprovalWake",
    "CONTEXT_TOOLS",
    "ChildFinishedWake",
    "InvalidMessage",
    "InvalidRequest",
    "LLMAgent",
    "LLMState",
    "Budget",
    "ContextWindow",
    "Message",
    "MethodNotFound",
    "ModelSettings",
    "PeerChangedWake",
    "PerennialError",
    "RunError",
    "SQL_TOOLS",
    "STATE_TOOLS",
    "ScheduleRequest",
    "SqlError",
    "SqlNotDeterministic",
    "SqlReadOnly",
    "SqlResult",
    "StateMigrationFailed",
    "StateTooLarge",
    "ToolContext",
    "ToolError",
    "ToolFailed",
    "ToolSecret",
    "TurnFailed",
    "TurnInProgress",
    "TurnStopped",
    "BusyPolicy",
    "UsageError",
    "activity_tool",
    "agent_type",
    "callable_method",
    "run_tool",
    "workflow_tool",
]


__getattr__, __dir__ = lazy_exports(globals(), _EXPORTS)
