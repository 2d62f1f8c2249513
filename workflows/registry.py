"""Every agent type the worker runs and the client may address, by name.

Built-in types are registered here; an application registers its own with `register` before
it builds its worker and client (both read this registry).
"""

from __future__ import annotations

from workflows.assistant import AssistantAgent
from workflows.entity import AgentWorkflow
from workflows.errors import UnknownAgentType
from workflows.notes import NotesAgent
from workflows.router import DefaultRouter

AGENT_TYPES: dict[str, type[AgentWorkflow]] = {}


def register(cls: type[AgentWorkflow]) -> type[AgentWorkflow]:
    """Register an agent workflow class under its workflow type name (usable as decorator)."""
    name = getattr(cls, "__temporal_workflow_definition").name
    existing = AGENT_TYPES.get(name)
    if existing is not None and existing is not cls:
        raise ValueError(f"agent type {name!r} is already registered by {existing.__qualname__}")
    AGENT_TYPES[name] = cls
    return cls


def agent_class(agent_type: str) -> type[AgentWorkflow]:
    try:
        return AGENT_TYPES[agent_type]
    except KeyError:
        known = ", ".join(sorted(AGENT_TYPES))
        raise UnknownAgentType(f"unknown agent type {agent_type!r} (known: {known})") from None


register(NotesAgent)
register(AssistantAgent)
register(DefaultRouter)
