"""All I/O that agents do runs here, as Temporal activities (retried, timed out, visible).

`build_activities(settings)` is what the worker registers: the model call, message delivery
between agents, the confirmation of subscribers, the backlog's pacing, and one activity per
activity tool used by a registered agent type.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from perennial.activities.agents import confirm_subscriber, deliver_message
from perennial.activities.llm import ModelActivities
from perennial.activities.pacing import next_task
from perennial.activities.pricing import prices_for
from perennial.activities.tools import collect_activity_tools, tool_activity
from perennial.client.settings import Settings


def build_activities(
    settings: Settings, *, agent_types: Iterable[type] | None = None
) -> list[Callable[..., Any]]:
    """The activities of a worker with these settings, for these agent types (default: all
    registered ones)."""
    if agent_types is None:
        from perennial.workflows.registry import agent_types as registered

        agent_types = registered().values()
    tools = collect_activity_tools(agent_types)
    prices_for(settings)  # a bad price file stops the worker here, before it takes work
    return [
        ModelActivities(settings).complete,
        deliver_message,
        confirm_subscriber,
        next_task,
        *(tool_activity(t, settings) for t in tools),
    ]


__all__ = ["ModelActivities", "build_activities"]
