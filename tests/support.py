"""Helpers the tests share: unique agent names, what an agent shows through its queries (notes,
events, rejections), and its Temporal history (every run of it), the ground truth the tests
compare the agent's state against."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from typing import Any

import pytest
from temporalio.api.enums.v1 import EventType, WorkflowTaskFailedCause
from temporalio.api.history.v1 import HistoryEvent
from temporalio.client import Client, WorkflowUpdateFailedError
from temporalio.exceptions import ApplicationError

from perennial.client import AgentHandle, AgentNotFound, Perennial
from perennial.workflows.messages import RejectedEvent, TurnEvent
from perennial.workflows.notes import NotesState

SIGNALED = EventType.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED
UPDATE_ACCEPTED = EventType.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_ACCEPTED
CONTINUED_AS_NEW = EventType.EVENT_TYPE_WORKFLOW_EXECUTION_CONTINUED_AS_NEW
STARTED = EventType.EVENT_TYPE_WORKFLOW_EXECUTION_STARTED
TASK_FAILED = EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED
TASK_COMPLETED = EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED

#: Worker modules that register the LLM and coordination test agent types.
COORDINATION_MODULES = ("tests.llm_agents", "tests.coordination_agents")


# --------------------------------------------------------------------------- names


def unique(prefix: str = "a") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def dashed_name(request: pytest.FixtureRequest) -> str:
    """An agent name from the test's name."""
    return request.node.name.replace("_", "-")


# --------------------------------------------------------------------------- what an agent shows


async def notes(agent: AgentHandle) -> list[str]:
    """The notes of an agent whose state is `NotesState`; none while it does not exist yet
    (another agent creates it)."""
    try:
        state = (await agent.state()).state
    except AgentNotFound:
        return []
    assert isinstance(state, NotesState), state
    return list(state.notes)


async def has_note(agent: AgentHandle, note: str) -> bool:
    return note in await notes(agent)


async def has_note_starting(agent: AgentHandle, prefix: str) -> bool:
    return any(n.startswith(prefix) for n in await notes(agent))


async def event_kinds(agent: AgentHandle) -> list[str]:
    """The kind of each event in the agent's log, oldest first."""
    return [e.kind for e in (await agent.events(limit=1000)).events]


async def has_events(agent: AgentHandle, kind: str, count: int = 1) -> bool:
    """At least `count` events of `kind` (`turn`, `continued_as_new`, ...) in the agent's log."""
    return (await event_kinds(agent)).count(kind) >= count


async def turns(agent: AgentHandle) -> list[TurnEvent]:
    return [e for e in (await agent.events(limit=1000)).events if isinstance(e, TurnEvent)]


async def rejections(agent: AgentHandle) -> list[str]:
    """The errors of the signals the agent rejected (signals cannot be refused)."""
    page = await agent.events(limit=1000)
    return [e.error for e in page.events if isinstance(e, RejectedEvent)]


async def busy(agent: AgentHandle) -> bool:
    """The agent is inside a turn; false while it does not exist yet."""
    try:
        return (await agent.state_view()).busy
    except AgentNotFound:
        return False


async def rejected_update(
    perennial: Perennial, agent: AgentHandle, update: str, *args: Any, update_id: str | None = None
) -> ApplicationError:
    """Send the raw update, which must be refused: the error the agent raised."""
    handle = perennial.client.get_workflow_handle(agent.id)
    with pytest.raises(WorkflowUpdateFailedError) as failed:
        await handle.execute_update(update, args=list(args), id=update_id)
    cause = failed.value.cause
    assert isinstance(cause, ApplicationError)
    return cause


# --------------------------------------------------------------------------- history


@dataclass
class Signal:
    name: str
    input: Any


@dataclass
class AcceptedUpdate:
    update_id: str
    name: str
    input: Any


def _decode(payloads: Any) -> Any:
    """The first argument of a call, as JSON (the pydantic converter writes json/plain)."""
    if not payloads:
        return None
    return json.loads(payloads[0].data)


async def run_histories(client: Client, workflow_id: str) -> list[list[HistoryEvent]]:
    """The history of every run of a workflow, oldest run first, following continue-as-new."""
    latest = [e async for e in client.get_workflow_handle(workflow_id).fetch_history_events()]
    first_run_id = latest[0].workflow_execution_started_event_attributes.first_execution_run_id
    runs: list[list[HistoryEvent]] = []
    run_id: str | None = first_run_id
    while run_id:
        handle = client.get_workflow_handle(workflow_id, run_id=run_id)
        events = [e async for e in handle.fetch_history_events()]
        runs.append(events)
        run_id = None
        if events and events[-1].event_type == CONTINUED_AS_NEW:
            attrs = events[-1].workflow_execution_continued_as_new_event_attributes
            run_id = attrs.new_execution_run_id
    return runs


async def history(agent: AgentHandle, client: Client) -> list[HistoryEvent]:
    """Every history event of every run of the agent, in order."""
    return [e for run in await run_histories(client, agent.id) for e in run]


def signals(events: list[HistoryEvent], name: str = "message") -> list[Signal]:
    found = []
    for e in events:
        if e.event_type == SIGNALED:
            attrs = e.workflow_execution_signaled_event_attributes
            if attrs.signal_name == name:
                found.append(Signal(attrs.signal_name, _decode(attrs.input.payloads)))
    return found


def accepted_updates(events: list[HistoryEvent]) -> list[AcceptedUpdate]:
    found = []
    for e in events:
        if e.event_type == UPDATE_ACCEPTED:
            request = e.workflow_execution_update_accepted_event_attributes.accepted_request
            found.append(
                AcceptedUpdate(
                    update_id=request.meta.update_id,
                    name=request.input.name,
                    input=_decode(request.input.args.payloads),
                )
            )
    return found


def task_failure_causes(events: list[HistoryEvent]) -> list[str]:
    """Why workflow tasks failed, e.g. `WORKFLOW_TASK_FAILED_CAUSE_UNHANDLED_COMMAND` (a
    continue-as-new that new messages raced: the server refuses it and the run goes on)."""
    return [
        WorkflowTaskFailedCause.Name(e.workflow_task_failed_event_attributes.cause)
        for e in events
        if e.event_type == TASK_FAILED
    ]


#: Workflow task failures the server causes under load and the agent recovers from: a task
#: force-closed by a flood of signals, a continue-as-new raced by new messages.
SERVER_RECOVERED_CAUSES = frozenset(
    {
        "WORKFLOW_TASK_FAILED_CAUSE_FORCE_CLOSE_COMMAND",
        "WORKFLOW_TASK_FAILED_CAUSE_UNHANDLED_COMMAND",
    }
)


def worker_task_failures(events: list[HistoryEvent]) -> list[str]:
    """Workflow task failures the agent's own code caused: an input that breaks a task would
    show here, on every retry."""
    return [cause for cause in task_failure_causes(events) if cause not in SERVER_RECOVERED_CAUSES]
