"""An agent's runs from outside: creating it, never silently re-creating it, recovering it.

Get-or-create (signal-with-start, update-with-start) starts a new run whenever no run is
running. That is right for a new agent and for a task child whose task is done, and wrong for
an agent whose run was terminated or failed: the new run would start from empty, and its
state, inbox and schedules would be gone without a word. So every start Perennial makes
refuses to reuse the id of a closed run (`REJECT_DUPLICATE`), looks at how that run ended, and
starts again only if it ended on purpose:

    completed                      a task child whose task is done: a new run may follow
    failed with InvalidStart       the run never started (bad start input): nothing to lose
    anything else                  AgentStopped; `recover` brings the agent back

`recover` resets the last run to its last workflow task that completed before it stopped
(Temporal's reset), reapplying the signals and updates that came after: the agent resumes
with its state, inbox and schedules, and no message it accepted is lost. (A run stopped by a
flood of oversized signals has too many bytes after that point for the server to reapply:
then only the signals an agent accepts are sent again, and the rest, which it would refuse
anyway, are counted and left out.)
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, NamedTuple, TypeVar

from temporalio.api.common.v1 import Payload, WorkflowExecution
from temporalio.api.enums.v1 import EventType, ResetReapplyExcludeType
from temporalio.api.workflowservice.v1 import (
    GetWorkflowExecutionHistoryReverseRequest,
    ResetWorkflowExecutionRequest,
)
from temporalio.client import Client, WithStartWorkflowOperation, WorkflowExecutionStatus
from temporalio.common import RawValue, WorkflowIDConflictPolicy, WorkflowIDReusePolicy
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from perennial.sdk_internals import collect_start_outcome
from perennial.workflows.entity import AgentWorkflow
from perennial.workflows.errors import AgentNotFound, AgentStopped, InvalidRequest
from perennial.workflows.messages import AgentStart
from perennial.workflows.registry import AGENT_TYPES
from perennial.workflows.visibility import agent_id

T = TypeVar("T")

#: Failure types after which a new run may start: the run never started.
RESTARTABLE_FAILURES = frozenset({"InvalidStart"})

_STATUS_WORDS = {
    WorkflowExecutionStatus.TERMINATED: "was terminated",
    WorkflowExecutionStatus.FAILED: "failed",
    WorkflowExecutionStatus.CANCELED: "was cancelled",
    WorkflowExecutionStatus.TIMED_OUT: "timed out",
}


async def get_or_create(
    client: Client,
    workflow_id: str,
    start: Callable[[WorkflowIDReusePolicy], Awaitable[T]],
) -> T:
    """`start(policy)` (a with-start call), first refusing to replace a closed run; if one is
    in the way and may be followed (see the module docstring), again allowing it."""
    try:
        return await start(WorkflowIDReusePolicy.REJECT_DUPLICATE)
    except WorkflowAlreadyStartedError:
        pass
    except RPCError as err:  # update-with-start reports the refused start this way
        if err.status != RPCStatusCode.ALREADY_EXISTS:
            raise
    await check_restartable(client, workflow_id)
    return await start(WorkflowIDReusePolicy.ALLOW_DUPLICATE)


def _start_options(
    agent_type: str, name: str, task_queue: str, reuse: WorkflowIDReusePolicy
) -> dict[str, Any]:
    return {
        "id": agent_id(agent_type, name),
        "task_queue": task_queue,
        "id_conflict_policy": WorkflowIDConflictPolicy.USE_EXISTING,
        "id_reuse_policy": reuse,
        # Shown in the Web UI's workflow list and header.
        "static_summary": f"{agent_type} agent {name!r}",
    }


async def signal_with_start(
    client: Client, *, agent_type: str, name: str, task_queue: str, signal: str, arg: Any
) -> None:
    """Signal the agent, creating it if needed (never re-creating a stopped one)."""

    async def call(reuse: WorkflowIDReusePolicy) -> None:
        await client.start_workflow(
            agent_type,
            AgentStart().wire(),
            start_signal=signal,
            start_signal_args=[arg],
            **_start_options(agent_type, name, task_queue, reuse),
        )

    await get_or_create(client, agent_id(agent_type, name), call)


async def update_with_start(
    client: Client,
    *,
    agent_type: str,
    name: str,
    task_queue: str,
    update: str,
    arg: Any,
    result_type: type[T],
) -> T:
    """Update the agent, creating it if needed (never re-creating a stopped one)."""

    async def call(reuse: WorkflowIDReusePolicy) -> T:
        # A start operation is single-use: a new one for every call.
        start = WithStartWorkflowOperation(
            agent_type, AgentStart().wire(), **_start_options(agent_type, name, task_queue, reuse)
        )
        try:
            return await client.execute_update_with_start_workflow(
                update, arg, start_workflow_operation=start, result_type=result_type
            )
        except BaseException:
            collect_start_outcome(start)
            raise

    return await get_or_create(client, agent_id(agent_type, name), call)


async def check_restartable(client: Client, workflow_id: str) -> None:
    """Raise AgentStopped unless the agent's last run ended so that a new run may follow."""
    description = await client.get_workflow_handle(workflow_id).describe()
    status = description.status
    if status in (WorkflowExecutionStatus.COMPLETED, WorkflowExecutionStatus.RUNNING):
        return  # done on purpose, or started again meanwhile by another caller
    failure = await _closing_failure(client, workflow_id, description.run_id or "")
    if status == WorkflowExecutionStatus.FAILED and failure[0] in RESTARTABLE_FAILURES:
        return
    what = _STATUS_WORDS.get(status, f"is {status.name.lower() if status else 'closed'}")
    why = f": {failure[1].rstrip('.')}" if failure[1] else ""
    raise AgentStopped(
        f"agent {workflow_id!r} {what}{why}. Nothing was sent; a new run would start it from "
        f"empty. Bring it back with `perennial recover {workflow_id}`."
    )


async def _closing_failure(client: Client, workflow_id: str, run_id: str) -> tuple[str, str]:
    """(failure type, message) of the event that closed the run, as far as it says."""
    response = await client.workflow_service.get_workflow_execution_history_reverse(
        GetWorkflowExecutionHistoryReverseRequest(
            namespace=client.namespace,
            execution=WorkflowExecution(workflow_id=workflow_id, run_id=run_id),
            maximum_page_size=1,
        )
    )
    if not response.history.events:
        return "", ""
    last = response.history.events[0]
    if last.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_FAILED:
        failure = last.workflow_execution_failed_event_attributes.failure
        # Through the client's converter: with encryption on, the message is in a payload.
        error = await client.data_converter.decode_failure(failure)
        return failure.application_failure_info.type, str(error)[:300]
    if last.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_TERMINATED:
        return "", last.workflow_execution_terminated_event_attributes.reason[:300]
    return "", ""


class Recovery(NamedTuple):
    """What `recover` did."""

    #: The new run.
    run_id: str
    #: Signals the server reapplied after the reset point, or that were sent again.
    reapplied_signals: int
    #: Signals left out: ones the agent refuses anyway (over its signal size limit, not a
    #: valid argument), which only grow its history (the flood that stopped it, maybe).
    skipped_signals: int


async def recover(client: Client, workflow_id: str, *, reason: str = "perennial recover") -> Recovery:
    """Reset a stopped agent's last run to its last good workflow task, reapplying the
    signals and updates that came after it. When those are too many bytes for the server to
    reapply in one go (a flood of oversized signals stopped the agent), the run is reset
    without its signals, and the ones the agent would accept are sent again, in order.
    `InvalidRequest` if the agent is running, or its last run never completed a task."""
    run_id, reset_point = await _reset_point(client, workflow_id)
    try:
        new_run = await _reset(client, workflow_id, run_id, reset_point, reason, signals=True)
    except RPCError as err:
        if err.status != RPCStatusCode.INVALID_ARGUMENT or "size" not in err.message:
            raise
    else:
        later = [e async for e in _signals_after(client, workflow_id, run_id, reset_point)]
        return Recovery(new_run, len(later), 0)
    new_run = await _reset(client, workflow_id, run_id, reset_point, reason, signals=False)
    agent_type = workflow_id.partition("/")[0]
    largest = AGENT_TYPES.get(agent_type, AgentWorkflow).max_signal_message_bytes
    sent = skipped = 0
    handle = client.get_workflow_handle(workflow_id)
    async for name, payloads in _signals_after(client, workflow_id, run_id, reset_point):
        if len(payloads) != 1 or len(payloads[0].data) > largest:
            skipped += 1
            continue
        await handle.signal(name, RawValue(payloads[0]))
        sent += 1
    return Recovery(new_run, sent, skipped)


async def _reset_point(client: Client, workflow_id: str) -> tuple[str, int]:
    """(run id, event id of its last good completed workflow task)."""
    handle = client.get_workflow_handle(workflow_id)
    try:
        description = await handle.describe()
    except RPCError as err:
        if err.status == RPCStatusCode.NOT_FOUND:
            raise AgentNotFound(f"agent {workflow_id!r} does not exist") from None
        raise
    if description.status == WorkflowExecutionStatus.RUNNING:
        raise InvalidRequest(f"agent {workflow_id!r} is running: nothing to recover")
    run_id = description.run_id or ""
    completed = [
        event.event_id
        async for event in client.get_workflow_handle(workflow_id, run_id=run_id).fetch_history_events()
        if event.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED
    ]
    if description.status == WorkflowExecutionStatus.FAILED and len(completed) > 1:
        # The task that failed the run is not a good one. When it was the run's first (a start
        # input the code could not read: a state to migrate), the run is redone from its
        # start, by the code deployed now.
        completed = completed[:-1]
    if not completed:
        raise InvalidRequest(
            f"agent {workflow_id!r} never completed a workflow task in its last run: there is "
            "nothing to recover (a message starts it afresh)"
        )
    return run_id, completed[-1]


async def _reset(
    client: Client, workflow_id: str, run_id: str, event_id: int, reason: str, *, signals: bool
) -> str:
    excluded = [] if signals else [ResetReapplyExcludeType.RESET_REAPPLY_EXCLUDE_TYPE_SIGNAL]
    response = await client.workflow_service.reset_workflow_execution(
        ResetWorkflowExecutionRequest(
            namespace=client.namespace,
            workflow_execution=WorkflowExecution(workflow_id=workflow_id, run_id=run_id),
            reason=reason,
            workflow_task_finish_event_id=event_id,
            request_id=str(uuid.uuid4()),
            reset_reapply_exclude_types=excluded,
        )
    )
    return response.run_id


async def _signals_after(
    client: Client, workflow_id: str, run_id: str, event_id: int
) -> AsyncIterator[tuple[str, list[Payload]]]:
    """The signals the old run received after `event_id`: (name, payloads), in order."""
    handle = client.get_workflow_handle(workflow_id, run_id=run_id)
    async for event in handle.fetch_history_events():
        if event.event_id > event_id and event.event_type == _SIGNALED:
            attrs = event.workflow_execution_signaled_event_attributes
            yield attrs.signal_name, list(attrs.input.payloads)


_SIGNALED = EventType.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED


__all__ = [
    "RESTARTABLE_FAILURES",
    "Recovery",
    "check_restartable",
    "get_or_create",
    "recover",
    "signal_with_start",
    "update_with_start",
]
