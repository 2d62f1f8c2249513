"""People in the loop: calls that wait for a person to approve or reject them.

`AgentWorkflow` inherits `Approvals`, so every agent type has:

* `request_approval(tool, arguments, ...)`: record a pending approval (with an optional
  deadline) and return it at once. LLM agents do this for every call of a tool declared with
  `needs_approval=True` (`workflows.llm.tools`).
* update `decide` (`DecideRequest`: approval id, approve, comment, who): the first decision
  wins; a second one is refused with `AlreadyDecided`, an unknown id with `ApprovalNotFound`,
  both by the validator, before anything enters history. Query `approvals` lists what waits.
* `on_approval`: the hook the `approval` wake (the decision) is applied with, one at a time in
  the agent's loop; by default handed to `on_message` as a message from `approval:<id>`.
  An LLM agent runs the approved call then, and tells the model the outcome.

Why the call waits and not the turn. The turn that asked ends at once, telling the model the
call awaits a person; the decision comes back as a wake. So an agent waiting days for a
person still answers its other messages, never holds a turn open across a worker restart,
and can continue as new while it waits: pending approvals (with absolute deadlines) and
recent decisions are carried over like schedules, and a decision already queued travels in the
inbox. While approvals wait and the agent is idle, its `AgentStatus` search attribute is
`waiting_approval`, so `temporal workflow list --query "AgentStatus='waiting_approval'"`
finds every agent waiting for a person.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import TYPE_CHECKING, Any, ClassVar

from temporalio import workflow

from workflows.clock import seconds_until
from workflows.errors import (
    AlreadyDecided,
    ApprovalNotFound,
    parse_input,
    to_application_error,
)
from workflows.messages import (
    AgentStart,
    ApprovalDecidedEvent,
    ApprovalRequestedEvent,
    ApprovalWake,
    DecideRequest,
    Decision,
    PendingApproval,
    Wake,
    preview,
)
from workflows.visibility import AgentStatus

if TYPE_CHECKING:
    from workflows.errors import TurnFailed
    from workflows.messages import AskReply, Event


class Approvals:
    """Approvals for `AgentWorkflow` (see the module docstring)."""

    #: Decisions remembered, so that a late second `decide` gets `AlreadyDecided`.
    decisions_kept: ClassVar[int] = 200

    if TYPE_CHECKING:  # provided by AgentWorkflow
        _inbox: deque[Wake]

        def _log(self, kind: type[Event], **fields: Any) -> int: ...  # type: ignore[valid-type]
        def _count_arrival(self, *, update: bool = False) -> None: ...
        def _rejecting(self, check: Callable[[], object]) -> None: ...
        async def on_message(self, message: Any) -> str | None: ...
        async def _run_turn(
            self, key: str, label: str, turn: Callable[[], Awaitable[str | None]]
        ) -> AskReply | TurnFailed: ...

    def _init_approvals(self, start: AgentStart) -> None:
        self._approvals: dict[str, PendingApproval] = {a.approval_id: a for a in start.approvals}
        self._decided: dict[str, Decision] = {d.approval_id: d for d in start.decided}
        self._approval_timers: dict[str, asyncio.Task[None]] = {}
        #: Approvals the running turn asked for: withdrawn if the turn fails.
        self._turn_approvals: list[str] | None = None

    # ------------------------------------------------------------------ for agent types

    def request_approval(
        self,
        tool: str,
        arguments: str,
        *,
        call_id: str | None = None,
        message_id: str | None = None,
        deadline: timedelta | None = None,
    ) -> PendingApproval:
        """Record a call that waits for a person and return it; this agent is woken with the
        decision (`on_approval`). With a `deadline`, nobody deciding in time rejects it."""
        now = workflow.now()
        approval = PendingApproval(
            approval_id=f"appr-{workflow.uuid4().hex[:12]}",
            tool=tool,
            arguments=arguments,
            call_id=call_id,
            message_id=message_id,
            requested_at=now,
            deadline=now + deadline if deadline is not None else None,
        )
        self._approvals[approval.approval_id] = approval
        if self._turn_approvals is not None:
            self._turn_approvals.append(approval.approval_id)
        self._log(ApprovalRequestedEvent, approval_id=approval.approval_id, tool=tool,
                  arguments=preview(arguments) or "", deadline=approval.deadline)  # fmt: skip
        self._arm_approval_timer(approval)
        return approval

    @property
    def pending_approvals(self) -> list[PendingApproval]:
        """The calls waiting for a person, oldest first."""
        return sorted(self._approvals.values(), key=lambda a: a.requested_at)

    async def on_approval(self, wake: ApprovalWake) -> str | None:
        """Apply a decision to `self.state` and return a reply (kept in the event log). The
        default hands it to `on_message` as `wake.as_message()`."""
        return await self.on_message(wake.as_message())

    # ------------------------------------------------------------------ wire

    @workflow.update(name="decide")
    def decide_update(self, raw: Any) -> Decision:
        self._count_arrival(update=True)
        request = parse_input(DecideRequest, raw)
        try:
            self._check_decidable(request.approval_id)
        except (ApprovalNotFound, AlreadyDecided) as err:  # a second decide in the same task
            raise to_application_error(err) from None
        return self._decide(
            request.approval_id,
            approved=request.approve,
            comment=request.comment,
            decided_by=request.decided_by,
        )

    @decide_update.validator
    def _validate_decide(self, raw: Any) -> None:
        self._rejecting(lambda: self._check_decidable(parse_input(DecideRequest, raw).approval_id))

    @workflow.query(name="approvals")
    def approvals_query(self) -> list[PendingApproval]:
        return self.pending_approvals

    # ------------------------------------------------------------------ the loop's side

    def _check_decidable(self, approval_id: str) -> None:
        decided = self._decided.get(approval_id)
        if decided is not None:
            verdict = "approved" if decided.approved else "rejected"
            by = "its deadline" if decided.by_deadline else decided.decided_by or "someone"
            raise AlreadyDecided(f"approval {approval_id} was already {verdict} by {by}")
        if approval_id not in self._approvals:
            known = ", ".join(sorted(self._approvals)) or "none"
            raise ApprovalNotFound(f"no pending approval {approval_id!r} (pending: {known})")

    def _decide(
        self,
        approval_id: str,
        *,
        approved: bool,
        comment: str | None,
        decided_by: str | None,
        by_deadline: bool = False,
    ) -> Decision:
        approval = self._approvals.pop(approval_id)
        decision = Decision(
            approval_id=approval_id,
            approved=approved,
            comment=comment,
            decided_by=decided_by,
            decided_at=workflow.now(),
            by_deadline=by_deadline,
        )
        self._remember(decision)
        timer = self._approval_timers.pop(approval_id, None)
        if timer is not None and not by_deadline:
            timer.cancel()
        self._inbox.append(
            ApprovalWake(approval=approval, decision=decision, received_at=workflow.now())
        )
        self._log(ApprovalDecidedEvent, approval_id=approval_id, approved=approved,
                  comment=preview(comment), decided_by=decided_by,
                  by_deadline=by_deadline)  # fmt: skip
        return decision

    def _remember(self, decision: Decision) -> None:
        self._decided[decision.approval_id] = decision
        while len(self._decided) > self.decisions_kept:
            del self._decided[next(iter(self._decided))]

    def _arm_approval_timer(self, approval: PendingApproval) -> None:
        if approval.deadline is not None:
            task = asyncio.create_task(self._approval_deadline(approval))
            self._approval_timers[approval.approval_id] = task

    def _arm_approval_timers(self) -> None:
        """At the start of a run: one timer per carried approval with a deadline."""
        for approval in self.pending_approvals:
            self._arm_approval_timer(approval)

    async def _approval_deadline(self, approval: PendingApproval) -> None:
        assert approval.deadline is not None
        delay = seconds_until(approval.deadline)
        await workflow.sleep(delay, summary=f"approval {approval.approval_id}: deadline")
        if approval.approval_id in self._approvals:
            self._decide(
                approval.approval_id,
                approved=False,
                comment="nobody decided before the deadline",
                decided_by=None,
                by_deadline=True,
            )

    # A turn's bookkeeping hooks (called by `_run_turn` for schedules; `Approvals` comes first
    # in `AgentWorkflow`'s bases, so it sees them and passes them on).

    def _begin_turn_schedules(self) -> None:
        self._turn_approvals = []
        super()._begin_turn_schedules()  # type: ignore[misc]

    def _end_turn_schedules(self, *, failed: bool) -> None:
        super()._end_turn_schedules(failed=failed)  # type: ignore[misc]
        asked, self._turn_approvals = self._turn_approvals or [], None
        if failed:  # the turn's state is restored: the calls it asked for are withdrawn
            for approval_id in asked:
                if approval_id in self._approvals:
                    self._withdraw(approval_id)

    def _withdraw(self, approval_id: str) -> None:
        self._approvals.pop(approval_id)
        timer = self._approval_timers.pop(approval_id, None)
        if timer is not None:
            timer.cancel()
        decision = Decision(
            approval_id=approval_id,
            approved=False,
            comment="withdrawn: the turn that asked for it failed",
            decided_by="perennial",
            decided_at=workflow.now(),
        )
        self._remember(decision)
        self._log(ApprovalDecidedEvent, approval_id=approval_id, approved=False,
                  comment=decision.comment, decided_by=decision.decided_by)  # fmt: skip

    def _idle_status(self) -> AgentStatus:
        """`waiting_approval` when idle with approvals pending, else what the next base says."""
        if self._approvals:
            return AgentStatus.WAITING_APPROVAL
        return super()._idle_status()  # type: ignore[misc]

    def _carried_approvals(self) -> dict[str, Any]:
        return {"approvals": self.pending_approvals, "decided": list(self._decided.values())}


def approval_prompt(wake: ApprovalWake, outcome: str | None) -> str:
    """How a decision reads to a model: the user message of the turn it wakes. `outcome` is
    what the approved call returned (None when it was rejected and did not run)."""
    approval, decision = wake.approval, wake.decision
    call = f"{approval.tool}({approval.arguments})"
    comment = f" Comment: {decision.comment}" if decision.comment else ""
    if decision.approved:
        who = decision.decided_by or "a person"
        return (
            f"[approval {approval.approval_id}: approved by {who}] The call you asked for, "
            f"{call}, ran.{comment}\nIts result:\n{outcome}"
        )
    who = "its deadline passed" if decision.by_deadline else f"{decision.decided_by or 'a person'}"
    return (
        f"[approval {approval.approval_id}: rejected ({who})] The call you asked for, {call}, "
        f"did not run.{comment}"
    )


def approval_pending_result(approval: PendingApproval) -> str:
    """The tool result the model reads in the turn that asked for approval."""
    deadline = (
        f" (rejected if nobody decides by {approval.deadline.isoformat()})"
        if (approval.deadline)
        else ""
    )
    return (
        f"waiting for approval {approval.approval_id}: a person must approve this call "
        f"before it runs{deadline}. It has not run. You will be woken with the decision."
    )


__all__ = ["Approvals", "approval_pending_result", "approval_prompt"]
