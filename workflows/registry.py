"""Every agent type the worker runs and the client may address, by name."""

from __future__ import annotations

from workflows.entity import AgentWorkflow
from workflows.errors import UnknownAgentType
from workflows.notes import NotesAgent

AGENT_TYPES: dict[str, type[AgentWorkflow]] = {
    "notes": NotesAgent,
}


def agent_class(agent_type: str) -> type[AgentWorkflow]:
    try:
        return AGENT_TYPES[agent_type]
    except KeyError:
        known = ", ".join(sorted(AGENT_TYPES))
        raise UnknownAgentType(f"unknown agent type {agent_type!r} (known: {known})") from None
