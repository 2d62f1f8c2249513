"""People in the loop: calls that wait for a person to approve or reject them.

Every agent has:

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
inbox. While approvals wait and the agent is idle, its `AgentStatus` is `waiting_approval`.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

from temporalio import workflow

from perennial.workflows.clock import seconds_until
from perennial.workflows.errors import AlreadyDecided, ApprovalNotFound, LimitExceeded
from perennial.workflows.messages import (
    ApprovalDecidedEvent,
    ApprovalRequestedEvent,
    ApprovalsCarried,
    ApprovalWake,
    DecideRequest,
    Decision,
    PendingApproval,
    preview,
)
from perennial.workflows.parts import AgentContext, Part
from perennial.workflows.visibility import AgentStatus


class Approvals(Part):
    def __init__(
        self, ctx: AgentContext, carried: ApprovalsCarried, *, keep: int, max_pending: int
    ) -> None:
        self._ctx = ctx
        self._keep = keep
        self._max_pending = max_pending
        self._pending: dict[str, PendingApproval] = {a.approval_id: a for a in carried.pending}
        self._decided: dict[str, Decision] = {d.approval_id: d for d in carried.decided}
        self._timers: dict[str, asyncio.Task[None]] = {}
        #: Approvals the running turn asked for: withdrawn if the turn fails.
        self._asked_by_turn: list[str] | None = None

    # ------------------------------------------------------------------ for agent code

    def request(
        self,
        tool: str,
        arguments: str,
        *,
        call_id: str | None = None,
        message_id: str | None = None,
        deadline: timedelta | None = None,
    ) -> PendingApproval:
        """Record a call that waits for a person (`LimitExceeded` past the type's limit)."""
        if len(self._pending) >= self._max_pending:
            raise LimitExceeded(
                f"{len(self._pending)} approvals are already pending, the most this agent "
                "type keeps; decide some first"
            )
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
        self._pending[approval.approval_id] = approval
        if self._asked_by_turn is not None:
            self._asked_by_turn.append(approval.approval_id)
        self._ctx.record(ApprovalRequestedEvent, approval_id=approval.approval_id, tool=tool,
                         arguments=preview(arguments) or "",
                         deadline=approval.deadline)  # fmt: skip
        self._arm_timer(approval)
        return approval

    @property
    def pending(self) -> list[PendingApproval]:
        """The calls waiting for a person, oldest first."""
        return sorted(self._pending.values(), key=lambda a: a.requested_at)

    # ------------------------------------------------------------------ update `decide`

    def check_decidable(self, approval_id: str) -> None:
        decided = self._decided.get(approval_id)
        if decided is not None:
            verdict = "approved" if decided.approved else "rejected"
            by = "its deadline" if decided.by_deadline else decided.decided_by or "someone"
            raise AlreadyDecided(f"approval {approval_id} was already {verdict} by {by}")
        if approval_id not in self._pending:
            known = ", ".join(sorted(self._pending)[:20]) or "none"
            raise ApprovalNotFound(f"no pending approval {approval_id!r} (pending: {known})")

    def decide(self, request: DecideRequest) -> Decision:
        self.check_decidable(request.approval_id)  # a second decide in the same task
        return self._decide(
            request.approval_id,
            approved=request.approve,
            comment=request.comment,
            decided_by=request.decided_by,
        )

    def _decide(
        self,
        approval_id: str,
        *,
        approved: bool,
        comment: str | None,
        decided_by: str | None,
        by_deadline: bool = False,
    ) -> Decision:
        approval = self._pending.pop(approval_id)
        decision = Decision(
            approval_id=approval_id,
            approved=approved,
            comment=comment,
            decided_by=decided_by,
            decided_at=workflow.now(),
            by_deadline=by_deadline,
        )
        self._remember(decision)
        timer = self._timers.pop(approval_id, None)
        if timer is not None and not by_deadline:
            timer.cancel()
        self._ctx.queue(
            ApprovalWake(approval=approval, decision=decision, received_at=workflow.now())
        )
        self._ctx.record(ApprovalDecidedEvent, approval_id=approval_id, approved=approved,
                         comment=preview(comment), decided_by=decided_by,
                         by_deadline=by_deadline)  # fmt: skip
        return decision

    def _remember(self, decision: Decision) -> None:
        self._decided[decision.approval_id] = decision
        while len(self._decided) > self._keep:
            del self._decided[next(iter(self._decided))]

    # ------------------------------------------------------------------ deadlines

    def _arm_timer(self, approval: PendingApproval) -> None:
        if approval.deadline is not None:
            task = asyncio.create_task(self._deadline(approval))
            self._timers[approval.approval_id] = task

    async def _deadline(self, approval: PendingApproval) -> None:
        assert approval.deadline is not None
        delay = seconds_until(approval.deadline)
        await workflow.sleep(delay, summary=f"approval {approval.approval_id}: deadline")
        if approval.approval_id in self._pending:
            self._decide(
                approval.approval_id,
                approved=False,
                comment="nobody decided before the deadline",
                decided_by=None,
                by_deadline=True,
            )

    def _withdraw(self, approval_id: str) -> None:
        self._pending.pop(approval_id)
        timer = self._timers.pop(approval_id, None)
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
        self._ctx.record(ApprovalDecidedEvent, approval_id=approval_id, approved=False,
                         comment=decision.comment, decided_by=decision.decided_by)  # fmt: skip

    # ------------------------------------------------------------------ lifecycle

    def arm(self) -> None:
        for approval in self.pending:  # deadlines carried from the last run
            self._arm_timer(approval)

    def begin_turn(self) -> None:
        self._asked_by_turn = []

    def end_turn(self, *, failed: bool) -> None:
        asked, self._asked_by_turn = self._asked_by_turn or [], None
        if failed:  # the turn's state is restored: the calls it asked for are withdrawn
            for approval_id in asked:
                if approval_id in self._pending:
                    self._withdraw(approval_id)

    def idle_status(self) -> AgentStatus | None:
        return AgentStatus.WAITING_APPROVAL if self._pending else None

    def carry(self) -> ApprovalsCarried:
        return ApprovalsCarried(pending=self.pending, decided=list(self._decided.values()))


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
        if approval.deadline
        else ""
    )
    return (
        f"waiting for approval {approval.approval_id}: a person must approve this call "
        f"before it runs{deadline}. It has not run. You will be woken with the decision."
    )


__all__ = ["Approvals", "approval_pending_result", "approval_prompt"]
