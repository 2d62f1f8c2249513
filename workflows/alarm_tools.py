"""The model's alarm tools: `schedule_alarm`, `list_alarms`, `cancel_alarm`.

Workflow tools (they run inside the agent, deterministically) over the agent's schedules, the
same ones the wire's `schedule` / `cancel_schedule` / `schedules` reach:

    class Planner(LLMAgent[LLMState]):
        tools = (*STATE_TOOLS, *ALARM_TOOLS)

When an alarm falls due, an LLM agent runs a turn whose user message is
`workflows.alarms.alarm_prompt(alarm)`: the alarm's id, due time and action, so the model knows
it woke itself. What the tools do in a
turn that then fails is undone with the rest of the turn.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

from pydantic import Field
from temporalio import workflow

from perennial.workflows.errors import (
    InvalidSchedule,
    ScheduleNotFound,
    TooManySchedules,
    parse_input,
)
from perennial.workflows.llm.tools import ToolError, workflow_tool
from perennial.workflows.messages import Schedule, ScheduleRequest
from perennial.workflows.schedules import describe

if TYPE_CHECKING:
    from perennial.workflows.entity import AgentWorkflow

#: Recorded as `created_by` of the schedules the model makes.
MODEL_CREATOR = "model"

AlarmId = Annotated[str, Field(min_length=1, max_length=200)]


def _view(schedule: Schedule) -> dict[str, Any]:
    return {
        "alarm_id": schedule.id,
        "action": schedule.payload,
        "when": describe(schedule),
        "next_due": schedule.next_due.isoformat(),
        "created_by": schedule.created_by,
        "times_fired": schedule.fired,
    }


@workflow_tool
def schedule_alarm(
    agent: AgentWorkflow[Any],
    alarm_id: AlarmId,
    action: Annotated[str, Field(min_length=1)],
    after_seconds: float | None = None,
    at: str | None = None,
    every_seconds: float | None = None,
    cron: str | None = None,
    timezone: str | None = None,
) -> dict[str, Any]:
    """Set an alarm that wakes you later with an action to carry out. Give exactly one of
    after_seconds, at, every_seconds or cron. Setting an id that exists replaces that alarm.

    Args:
        alarm_id: A short name for the alarm, like "call-mom"; use it again to change it.
        action: What you must do when the alarm goes off, written as an instruction to
            yourself (you will receive it as a message then).
        after_seconds: Go off once, this many seconds from now.
        at: Go off once at this ISO-8601 time, like "2026-03-01T09:00:00+01:00" (without an
            offset it is read in `timezone`, else UTC).
        every_seconds: Go off repeatedly, every this many seconds.
        cron: Go off repeatedly by a cron expression: minute hour day-of-month month
            day-of-week, like "0 9 * * 1-5" for 09:00 on weekdays (read in `timezone`).
        timezone: An IANA time zone such as "Europe/Paris", for `at` and `cron` (default UTC).
    """
    fields = {"id": alarm_id, "payload": action, "after_seconds": after_seconds, "at": at,
              "every_seconds": every_seconds, "cron": cron, "timezone": timezone}  # fmt: skip
    try:
        request = parse_input(ScheduleRequest, fields, error=InvalidSchedule)
        result = agent.add_schedule(request, created_by=MODEL_CREATOR)
    except (InvalidSchedule, TooManySchedules) as err:
        raise ToolError(str(err)) from None
    return {"replaced" if result.replaced else "scheduled": _view(result.schedule)}


@workflow_tool
def list_alarms(agent: AgentWorkflow[Any]) -> dict[str, Any]:
    """List your pending alarms, soonest first, with the current time."""
    return {
        "now": workflow.now().isoformat(),
        "alarms": [_view(s) for s in agent.list_schedules()],
        "max_alarms": agent.max_schedules,
    }


@workflow_tool
def cancel_alarm(agent: AgentWorkflow[Any], alarm_id: AlarmId) -> str:
    """Cancel a pending alarm.

    Args:
        alarm_id: The id the alarm was set with.
    """
    try:
        agent.cancel_schedule(alarm_id)
    except ScheduleNotFound as err:
        raise ToolError(str(err)) from None
    return f"cancelled alarm {alarm_id!r}"


#: The three alarm tools, for an LLM agent type's `tools`.
ALARM_TOOLS = (schedule_alarm, list_alarms, cancel_alarm)


__all__ = ["ALARM_TOOLS", "cancel_alarm", "list_alarms", "schedule_alarm"]
