"""Sub-agents: an agent starts child agents with tasks and is woken when each task ends.

`AgentWorkflow` inherits `Children`, so every agent type has:

* `spawn_child(agent_type, name, task)`: start the agent `{agent_type}/{name}` as a child
  workflow whose first message is `task`, and go on working. `keep=False` (a *task child*)
  makes a child that completes once it has answered its task; `keep=True` (a *named child*)
  makes an ordinary long-lived agent that answers, reports, and lives on.
* `cancel_child(child_id)`, `children` (and query `children`): the tasks in flight.
* `on_child_finished`: the hook the `child_finished` wake is applied with, one at a time in the
  agent's loop like messages. By default the report is handed to `on_message` as a message
  from sender `child:<child id>`.

How a task's end reaches the parent. The child carries its parent's workflow id in its start
input (`AgentStart.task`) and, when its task turn ends (answered, failed, or the child was
cancelled), signals `child_finished` to that workflow id, i.e. to whatever run of the parent
is current. A child handle's completion is delivered only to the run that started the child,
so the handle alone would lose the wake once the parent continued as new; the handle is only a
backstop in that run, for children that end without reporting (terminated, timed out). The
parent keeps the children in flight (carried across continue-as-new) and turns the first
report of each into a wake; later duplicates are ignored, so each task wakes the parent once.

Parent-close policy. Every child is started with ABANDON, on purpose: Temporal applies a
parent-close policy whenever a parent *run* closes, continue-as-new included, so REQUEST_CANCEL
would cancel every task child at the parent's first continue-as-new, and TERMINATE would kill
children mid-turn. A named child must outlive its parent anyway. Task children are still
cancelled with their parent: when the parent agent is cancelled, it requests cancellation of
each task child in flight (graceful: the child reports `cancelled` and ends; never a
termination mid-turn).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from temporalio import workflow
from temporalio.exceptions import (
    ApplicationError,
    CancelledError,
    ChildWorkflowError,
    TerminatedError,
    TimeoutError,
    WorkflowAlreadyStartedError,
)

from workflows.errors import (
    ChildAlreadyRunning,
    ChildNotFound,
    InvalidRequest,
    parse_input,
    to_application_error,
)
from workflows.messages import (
    AgentStart,
    AskReply,
    ChildFinishedEvent,
    ChildFinishedWake,
    ChildRecord,
    ChildReport,
    ChildStartedEvent,
    ChildStatus,
    Message,
    RejectedEvent,
    TaskAssignment,
    Wake,
    preview,
)
from workflows.visibility import agent_id

if TYPE_CHECKING:
    from workflows.errors import TurnFailed
    from workflows.messages import Event

#: The signal a child reports its task's end with.
CHILD_FINISHED_SIGNAL = "child_finished"


class Children:
    """Child agents for `AgentWorkflow` (see the module docstring)."""

    #: Agent types the model may start with the `spawn_agent` tool (code is not limited).
    spawnable_agent_types: ClassVar[tuple[str, ...]] = ()

    if TYPE_CHECKING:  # provided by AgentWorkflow
        agent_type: str
        agent_name: str
        _inbox: deque[Wake]

        def _log(self, kind: type[Event], **fields: Any) -> int: ...  # type: ignore[valid-type]
        def _count_arrival(self, *, update: bool = False) -> None: ...
        def _admit(self, message: Message, *, awaited: bool) -> str: ...
        def _parse_message(self, raw: Any) -> Message: ...
        async def on_message(self, message: Any) -> str | None: ...
        async def _run_turn(
            self, key: str, label: str, turn: Callable[[], Awaitable[str | None]]
        ) -> AskReply | TurnFailed: ...

    def _init_children(self, start: AgentStart) -> None:
        self._children: dict[str, ChildRecord] = {c.child_id: c for c in start.children}
        #: This agent's own task, while it is a child that has not reported yet.
        self._task: TaskAssignment | None = start.task
        self._task_outcome: AskReply | TurnFailed | None = None
        if start.task is not None and start.generation == 0:
            # The task is the first message; a later run finds it in the carried inbox.
            self._admit(start.task.message, awaited=False)

    # ------------------------------------------------------------------ for agent types

    async def spawn_child(
        self,
        agent_type: str,
        name: str,
        task: str,
        *,
        keep: bool = False,
        data: Any = None,
    ) -> ChildRecord:
        """Start the agent `{agent_type}/{name}` as a child whose first message is `task`;
        return at once (the child runs on its own). When the task turn ends, this agent is
        woken with a `child_finished` wake. `keep=True` lets the child live on afterwards.

        Raises `InvalidMessage` for a bad task, `InvalidRequest` for a child id equal to this
        agent's, `ChildAlreadyRunning` if that agent id is running. The agent type is not
        checked here (workflow code cannot see the worker's registry): a type no worker runs
        starts a child that never makes progress. Spawning is bookkeeping beside the state: a
        turn that spawns and then fails leaves the child running, and its end still wakes
        this agent."""
        me = workflow.info().workflow_id
        child_id = agent_id(agent_type, name)
        if child_id == me:
            raise InvalidRequest(f"an agent cannot spawn itself ({child_id})")
        if child_id in self._children:
            raise ChildAlreadyRunning(f"child {child_id} already has a task in flight")
        task_id = f"task-{workflow.uuid4()}"
        message = self._parse_message({"text": task, "sender": f"agent:{me}", "id": task_id,
                                       "data": data})  # fmt: skip
        mode: Literal["task", "named"] = "named" if keep else "task"
        assignment = TaskAssignment(parent_id=me, task_id=task_id, message=message, mode=mode)
        try:
            handle = await workflow.start_child_workflow(
                agent_type,
                AgentStart(task=assignment).wire(),
                id=child_id,
                task_queue=workflow.info().task_queue,
                parent_close_policy=workflow.ParentClosePolicy.ABANDON,
                static_summary=f"{mode} child of {me}: {preview(task)}",
            )
        except WorkflowAlreadyStartedError:
            raise ChildAlreadyRunning(f"agent {child_id} is already running") from None
        record = ChildRecord(
            child_id=child_id,
            agent_type=agent_type,
            name=name,
            task_id=task_id,
            task=preview(task) or "",
            mode=mode,
            started_at=workflow.now(),
        )
        self._children[child_id] = record
        self._log(ChildStartedEvent, child_id=child_id, task_id=task_id, mode=mode,
                  task=record.task)  # fmt: skip
        asyncio.create_task(self._watch_child(handle, record))
        return record

    async def cancel_child(self, child_id: str) -> ChildRecord:
        """Ask a child to cancel its task (graceful: it reports `cancelled`, then this agent
        is woken as for any other end). `ChildNotFound` if no task of it is in flight."""
        record = self._children.get(child_id)
        if record is None:
            raise ChildNotFound(f"no child task in flight for {child_id}")
        await workflow.get_external_workflow_handle(child_id).cancel()
        return record

    @property
    def children(self) -> list[ChildRecord]:
        """The children whose tasks are in flight, oldest first."""
        return sorted(self._children.values(), key=lambda c: c.started_at)

    async def on_child_finished(self, wake: ChildFinishedWake) -> str | None:
        """Apply a child's report to `self.state` and return a reply (kept in the event log).
        The default hands it to `on_message` as `wake.as_message()`."""
        return await self.on_message(wake.as_message())

    # ------------------------------------------------------------------ wire

    @workflow.signal(name=CHILD_FINISHED_SIGNAL)
    def child_finished_signal(self, raw: Any) -> None:
        self._count_arrival()
        try:
            report = parse_input(ChildReport, raw)
        except InvalidRequest as err:
            self._log(RejectedEvent, error=str(err))
            return
        self._child_done(report)

    @workflow.query(name="children")
    def children_query(self) -> list[ChildRecord]:
        return self.children

    # ------------------------------------------------------------------ the parent's side

    def _child_done(self, report: ChildReport) -> None:
        """Turn the first report of a task in flight into a wake; ignore any later one."""
        record = self._children.get(report.child_id)
        if record is None or record.task_id != report.task_id:
            workflow.logger.info("ignored child report for %s (not in flight)", report.child_id)
            return
        del self._children[report.child_id]
        self._inbox.append(
            ChildFinishedWake(child=record, report=report, received_at=workflow.now())
        )
        self._log(
            ChildFinishedEvent,
            child_id=record.child_id,
            task_id=record.task_id,
            status=report.status,
            result=preview(report.result),
            error=preview(report.error),
        )

    async def _watch_child(
        self, handle: workflow.ChildWorkflowHandle[Any, Any], record: ChildRecord
    ) -> None:
        """Backstop in the run that started the child: a child that ended without reporting
        (terminated, timed out) still wakes this agent."""
        try:
            await handle
        except ChildWorkflowError as err:
            status, error_type = _status_of(err.cause)
            self._child_done(
                ChildReport(
                    child_id=record.child_id,
                    task_id=record.task_id,
                    status=status,
                    error=str(err.cause or err),
                    error_type=error_type,
                )
            )
            return
        # A child reports before it completes; let a report in the same activation land first.
        await asyncio.sleep(0)
        if record.child_id in self._children:
            self._child_done(
                ChildReport(
                    child_id=record.child_id,
                    task_id=record.task_id,
                    status="completed",
                    error="the child completed without reporting a result",
                )
            )

    async def _cancel_task_children(self) -> None:
        """This agent is being cancelled: ask its task children to cancel too."""
        for record in self.children:
            if record.mode == "task":
                try:
                    await workflow.get_external_workflow_handle(record.child_id).cancel()
                except ApplicationError as err:  # already gone
                    workflow.logger.info("could not cancel %s: %s", record.child_id, err)

    # ------------------------------------------------------------------ the child's side

    def _note_task_outcome(self, message_id: str, outcome: AskReply | TurnFailed) -> None:
        if self._task is not None and message_id == self._task.task_id:
            self._task_outcome = outcome

    async def _report_task(self) -> bool:
        """After a turn: if it was this child's task, report to the parent. True when this run
        should now end (a task child whose task is done)."""
        task, outcome = self._task, self._task_outcome
        if task is None or outcome is None:
            return False
        self._task, self._task_outcome = None, None
        if isinstance(outcome, AskReply):
            report = self._task_report(task, "completed", result=outcome.reply)
        else:
            report = self._task_report(
                task, "failed", error=str(outcome), error_type=outcome.error_type
            )
        await self._signal_parent(task, report)
        if task.mode == "named":
            return False
        if not isinstance(outcome, AskReply):
            raise to_application_error(outcome)  # the task child's run fails, visibly
        return True

    async def _report_cancelled(self) -> None:
        """This agent is being cancelled: tell the parent (if its task is open) and pass the
        cancellation on to its own task children."""
        task, self._task = self._task, None
        if task is not None:
            report = self._task_report(task, "cancelled", error="the child was cancelled")
            await self._signal_parent(task, report)
        await self._cancel_task_children()

    def _task_report(
        self,
        task: TaskAssignment,
        status: ChildStatus,
        *,
        result: str | None = None,
        error: str | None = None,
        error_type: str | None = None,
    ) -> ChildReport:
        return ChildReport(
            child_id=workflow.info().workflow_id,
            task_id=task.task_id,
            status=status,
            result=result,
            error=error,
            error_type=error_type,
        )

    async def _signal_parent(self, task: TaskAssignment, report: ChildReport) -> None:
        try:
            await workflow.get_external_workflow_handle(task.parent_id).signal(
                CHILD_FINISHED_SIGNAL, report
            )
        except ApplicationError as err:  # the parent is gone: nobody is left to tell
            workflow.logger.warning("could not report to parent %s: %s", task.parent_id, err)

    def _carried_children(self) -> dict[str, Any]:
        """What continue-as-new carries for children and for this agent's own task."""
        return {"children": self.children, "task": self._task}


def _status_of(cause: BaseException | None) -> tuple[ChildStatus, str]:
    if isinstance(cause, CancelledError):
        return "cancelled", "CancelledError"
    if isinstance(cause, TerminatedError):
        return "terminated", "TerminatedError"
    if isinstance(cause, TimeoutError):
        return "timed_out", "TimeoutError"
    if isinstance(cause, ApplicationError):
        return "failed", cause.type or "ApplicationError"
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
