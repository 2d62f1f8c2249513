"""What callers import: the Python client (and, in submodules, the CLI and settings)."""

from client.agents import AgentHandle, AgentState, AgentSummary, AskTimedOut, Perennial
from client.connection import TemporalUnavailable
from client.settings import Settings
from workflows.errors import (
    AgentNotFound,
    InvalidMessage,
    InvalidRequest,
    PerennialError,
    RunError,
    TurnFailed,
    UnknownAgentType,
    UsageError,
    VersionNotKept,
)
from workflows.messages import AskReply, Event, EventsPage, Message, RollbackResult, StateView

__all__ = [
    "AgentHandle",
    "AgentNotFound",
    "AgentState",
    "AgentSummary",
    "AskReply",
    "AskTimedOut",
    "Event",
    "EventsPage",
    "InvalidMessage",
    "InvalidRequest",
    "Message",
    "Perennial",
    "PerennialError",
    "RollbackResult",
    "RunError",
    "Settings",
    "StateView",
    "TemporalUnavailable",
    "TurnFailed",
    "UnknownAgentType",
    "UsageError",
    "VersionNotKept",
]
