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
        StateTooLarge,
        TurnFailed,
        UsageError,
    )
    from perennial.workflows.llm import (
        CONTEXT_TOOLS,
        STATE_TOOLS,
        LLMAgent,
        LLMState,
        ModelSettings,
        ToolContext,
        ToolError,
        activity_tool,
        workflow_tool,
    )
    from perennial.workflows.llm.tools import ToolSecret
    from perennial.workflows.messages import (
        AgentReplyWake,
        AlarmWake,
        ApprovalWake,
        ChildFinishedWake,
        Message,
        PeerChangedWake,
        ScheduleRequest,
    )
    from perennial.workflows.registry import agent_type

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
    "ModelSettings": "perennial.workflows.llm",
    "ToolContext": "perennial.workflows.llm",
    "ToolError": "perennial.workflows.llm",
    "ToolSecret": "perennial.workflows.llm.tools",
    "activity_tool": "perennial.workflows.llm",
    "workflow_tool": "perennial.workflows.llm",
    "STATE_TOOLS": "perennial.workflows.llm",
    "CONTEXT_TOOLS": "perennial.workflows.llm",
    "PerennialError": "perennial.workflows.errors",
    "UsageError": "perennial.workflows.errors",
    "RunError": "perennial.workflows.errors",
    "InvalidMessage": "perennial.workflows.errors",
    "InvalidRequest": "perennial.workflows.errors",
    "MethodNotFound": "perennial.workflows.errors",
    "TurnFailed": "perennial.workflows.errors",
    "StateTooLarge": "perennial.workflows.errors",
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
    "Message",
    "MethodNotFound",
    "ModelSettings",
    "PeerChangedWake",
    "PerennialError",
    "RunError",
    "STATE_TOOLS",
    "ScheduleRequest",
    "StateTooLarge",
    "ToolContext",
    "ToolError",
    "ToolSecret",
    "TurnFailed",
    "UsageError",
    "activity_tool",
    "agent_type",
    "callable_method",
    "workflow_tool",
]


__getattr__, __dir__ = lazy_exports(globals(), _EXPORTS)
