"""Sub-agents: an agent starts child agents with tasks and is woken when each task ends.

Every agent has:

* `spawn_child(agent_type, name, task)`: start the agent `{agent_type}/{name}` as a child
  workflow whose first message is `task`, and go on working. `keep=False` (a *task child*)
  makes a child that completes once it has answered its task; `keep=True` (a *named child*)
  makes an ordinary long-lived agent that answers, reports, and lives on.
* `cancel_child(child_id)`, `children` (and query `children`): the tasks in flight.
* `on_child_finished`: the hook the `child_finished` wake is applied with, one at a time in the
  agent's loop like messages. By default the report is handed to `on_message` as a message
  from sender `child:<child id>`.

How a task's end reaches the parent. The child carries its parent's workflow id and a token in
its start input (`TaskAssignment`) and, when its task turn ends (answered, failed, or the child
was cancelled), signals `child_finished` to that workflow id, i.e. to whatever run of the
parent is current. The parent believes a report only with the task's token (the `children`
query does not show it), so nobody else can end a child's task on its behalf. A child handle's
completion is delivered only to the run that started the child, so the handle is only a
backstop in that run, for children that end without reporting (terminated, timed out). The
parent turns the first report of each task into a wake; later ones are ignored.

Parent-close policy. Every child is started with ABANDON: Temporal applies a parent-close
policy whenever a parent *run* closes, continue-as-new included, so REQUEST_CANCEL would cancel
every task child at the parent's first continue-as-new. Task children are still cancelled with
their parent: when the parent agent is cancelled, it requests cancellation of each task child
in flight (graceful: the child reports `cancelled` and ends).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from typing import Any, Literal

from temporalio import workflow
from temporalio.common import RawValue
from temporalio.exceptions import (
    ApplicationError,
    CancelledError,
    ChildWorkflowError,
    TerminatedError,
    TimeoutError,
    WorkflowAlreadyStartedError,
)

from perennial.workflows.errors import (
    ChildAlreadyRunning,
    ChildNotFound,
    InvalidRequest,
    LimitExceeded,
    to_application_error,
)
from perennial.workflows.messages import (
    AgentStart,
    AskReply,
    ChildFinishedEvent,
    ChildFinishedWake,
    ChildInFlight,
    ChildRecord,
    ChildrenCarried,
    ChildReport,
    ChildStartedEvent,
    ChildStatus,
    Message,
    TaskAssignment,
    clip,
    preview,
)
from perennial.workflows.parts import AgentContext, Part, SignalHandler
from perennial.workflows.payloads import decode
from perennial.workflows.visibility import agent_id

#: The signal a child reports its task's end with.
CHILD_FINISHED_SIGNAL = "child_finished"


class Children(Part):
    def __init__(
        self,
        ctx: AgentContext,
        carried: ChildrenCarried,
        *,
        max_children: int,
        parse_message: Callable[[Any], Message],
    ) -> None:
        self._ctx = ctx
        self._max_children = max_children
        self._parse_message = parse_message
        self._in_flight: dict[str, ChildInFlight] = {c.child_id: c for c in carried.in_flight}
        #: This agent's own task, while it is a child that has not reported yet.
        self.task: TaskAssignment | None = carried.task
        self._task_outcome: AskReply | Any | None = None

    def signals(self) -> Mapping[str, SignalHandler]:
        return {CHILD_FINISHED_SIGNAL: self._on_report}

    # ------------------------------------------------------------------ the parent's side

    async def spawn(
        self, agent_type: str, name: str, task: str, *, keep: bool, data: Any
    ) -> ChildRecord:
        me = self._ctx.agent_id
        child_id = agent_id(agent_type, name)
        if child_id == me:
            raise InvalidRequest(f"an agent cannot spawn itself ({child_id})")
        if child_id in self._in_flight:
            raise ChildAlreadyRunning(f"child {child_id} already has a task in flight")
        if len(self._in_flight) >= self._max_children:
            raise LimitExceeded(
                f"{len(self._in_flight)} child tasks are in flight, the most this agent type "
                "allows; wait for one to finish"
            )
        task_id = f"task-{workflow.uuid4()}"
        message = self._parse_message({"text": task, "sender": f"agent:{me}", "id": task_id,
                                       "data": data})  # fmt: skip
        mode: Literal["task", "named"] = "named" if keep else "task"
        token = self._ctx.new_token()
        assignment = TaskAssignment(
            parent_id=me, task_id=task_id, message=message, mode=mode, token=token
        )
        try:
            handle = await workflow.start_child_workflow(
                agent_type,
                AgentStart(children=ChildrenCarried(task=assignment)).wire(),
                id=child_id,
                task_queue=self._ctx.task_queue,
                parent_close_policy=workflow.ParentClosePolicy.ABANDON,
                static_summary=f"{mode} child of {me}: {preview(task)}",
            )
        except WorkflowAlreadyStartedError:
            raise ChildAlreadyRunning(f"agent {child_id} is already running") from None
        record = ChildInFlight(
            child_id=child_id,
            agent_type=agent_type,
            name=name,
            task_id=task_id,
            task=preview(task) or "",
            mode=mode,
            started_at=workflow.now(),
            token=token,
        )
        self._in_flight[child_id] = record
        self._ctx.record(ChildStartedEvent, child_id=child_id, task_id=task_id, mode=mode,
                         task=record.task)  # fmt: skip
        asyncio.create_task(self._watch(handle, record))
        return _public(record)

    async def cancel(self, child_id: str) -> ChildRecord:
        record = self._in_flight.get(child_id)
        if record is None:
            raise ChildNotFound(f"no child task in flight for {child_id}")
        await workflow.get_external_workflow_handle(child_id).cancel()
        return _public(record)

    @property
    def in_flight(self) -> list[ChildRecord]:
        """The children whose tasks are in flight, oldest first."""
        return [_public(c) for c in sorted(self._in_flight.values(), key=lambda c: c.started_at)]

    def _on_report(self, raw: RawValue) -> None:
        report = decode(raw, ChildReport)
        record = self._in_flight.get(report.child_id)
        if record is None or record.task_id != report.task_id:
            workflow.logger.info("ignored child report for %s (not in flight)", report.child_id)
            return
        if report.token != record.token:
            self._ctx.reject(CHILD_FINISHED_SIGNAL, f"report for {report.child_id} without its token")
            return
        self._done(record, report)

    def _done(self, record: ChildInFlight, report: ChildReport) -> None:
        """Turn the first report of a task in flight into a wake."""
        del self._in_flight[record.child_id]
        self._ctx.queue(
            ChildFinishedWake(child=_public(record), report=report, received_at=workflow.now())
        )
        self._ctx.record(
            ChildFinishedEvent,
            child_id=record.child_id,
            task_id=record.task_id,
            status=report.status,
            result=preview(report.result),
            error=preview(report.error),
        )

    async def _watch(
        self, handle: workflow.ChildWorkflowHandle[Any, Any], record: ChildInFlight
    ) -> None:
        """Backstop in the run that started the child: a child that ended without reporting
        (terminated, timed out) still wakes this agent."""
        try:
            await handle
        except ChildWorkflowError as err:
            if self._in_flight.get(record.child_id) is record:
                status, error_type = _status_of(err.cause)
                self._done(record, ChildReport(child_id=record.child_id, task_id=record.task_id,
                                               status=status, error=str(err.cause or err)[:2000],
                                               error_type=error_type))  # fmt: skip
            return
        # A child reports before it completes; let a report in the same activation land first.
        await asyncio.sleep(0)
        if self._in_flight.get(record.child_id) is record:
            self._done(record, ChildReport(child_id=record.child_id, task_id=record.task_id,
                                           status="completed",
                                           error="the child completed without reporting a result"))  # fmt: skip

    async def cancel_task_children(self) -> None:
        """This agent is being cancelled: ask its task children to cancel too."""
        for record in self.in_flight:
            if record.mode == "task":
                try:
                    await workflow.get_external_workflow_handle(record.child_id).cancel()
                except ApplicationError as err:  # already gone
                    workflow.logger.info("could not cancel %s: %s", record.child_id, err)

    # ------------------------------------------------------------------ the child's side

    def note_outcome(self, message_id: str, outcome: Any) -> None:
        """A turn ended: remember its outcome if it was this child's task."""
        if self.task is not None and message_id == self.task.task_id:
            self._task_outcome = outcome

    async def report_task(self) -> bool:
        """After a turn: if it was this child's task, report to the parent. True when this run
        should now end (a task child whose task is done)."""
        task, outcome = self.task, self._task_outcome
        if task is None or outcome is None:
            return False
        self.task, self._task_outcome = None, None
        if isinstance(outcome, AskReply):
            report = self._report(task, "completed", result=outcome.reply)
        else:
            report = self._report(task, "failed", error=str(outcome), error_type=outcome.error_type)
        await self._signal_parent(task, report)
        if task.mode == "named":
            return False
        if not isinstance(outcome, AskReply):
            raise to_application_error(outcome)  # the task child's run fails, visibly
        return True

    async def report_cancelled(self) -> None:
        """This agent is being cancelled: tell the parent (if its task is open) and pass the
        cancellation on to its own task children."""
        task, self.task = self.task, None
        if task is not None:
            report = self._report(task, "cancelled", error="the child was cancelled")
            await self._signal_parent(task, report)
        await self.cancel_task_children()

    def _report(
        self,
        task: TaskAssignment,
        status: ChildStatus,
        *,
        result: str | None = None,
        error: str | None = None,
        error_type: str | None = None,
    ) -> ChildReport:
        return ChildReport(
            child_id=self._ctx.agent_id,
            task_id=task.task_id,
            status=status,
            result=clip(result),
            error=clip(error),
            error_type=error_type[:200] if error_type else None,
            token=task.token,
        )

    async def _signal_parent(self, task: TaskAssignment, report: ChildReport) -> None:
        try:
            await workflow.get_external_workflow_handle(task.parent_id).signal(
                CHILD_FINISHED_SIGNAL, report
            )
        except ApplicationError as err:  # the parent is gone: nobody is left to tell
            workflow.logger.warning("could not report to parent %s: %s", task.parent_id, err)

    def carry(self) -> ChildrenCarried:
        in_flight = sorted(self._in_flight.values(), key=lambda c: c.started_at)
        return ChildrenCarried(task=self.task, in_flight=in_flight)


def _public(record: ChildInFlight) -> ChildRecord:
    """The record as queries and agent code see it: without the token."""
    return ChildRecord.model_construct(**record.model_dump(exclude={"token"}))


def _status_of(cause: BaseException | None) -> tuple[ChildStatus, str]:
    if isinstance(cause, CancelledError):
        return "cancelled", "CancelledError"
    if isinstance(cause, TerminatedError):
        return "terminated", "TerminatedError"
    if isinstance(cause, TimeoutError):
        return "timed_out", "TimeoutError"
    if isinstance(cause, ApplicationError):
        return "failed", (cause.type or "ApplicationError")[:200]
    return "failed", type(cause).__name__


def child_prompt(wake: ChildFinishedWake) -> str:
    """How a child's report reads to a model: the user message of the turn it wakes."""
    child, report = wake.child, wake.report
    head = (
        f"[child agent {child.child_id} {report.status}] The task you gave it was: {child.task}\n"
    )
    if report.status == "completed":
        return head + f"Its answer:\n{report.result or '(no answer)'}"
    return head + f"Error ({report.error_type or 'unknown'}): {report.error or '(none)'}"


__all__ = ["CHILD_FINISHED_SIGNAL", "Children", "child_prompt"]
