"""People in the loop, from the caller's side: list pending approvals and decide on them.

    from client.approvals import pending_approvals, decide, waiting_for_approval

    for summary, approvals in await waiting_for_approval(perennial):
        ...
    await decide(perennial.agent("assistant", "alice"), "appr-...", approve=True,
                 comment="go ahead", decided_by="bob")

`decide` is update `decide` on the agent: the first decision wins; a second one raises
`AlreadyDecided`, an unknown id `ApprovalNotFound` (both before anything enters history).
"""

from __future__ import annotations

from temporalio.client import WorkflowQueryFailedError, WorkflowUpdateFailedError
from temporalio.service import RPCError

from client.agents import AgentHandle, AgentSummary, Perennial, _reraise
from workflows.errors import parse_input
from workflows.messages import DecideRequest, Decision, PendingApproval
from workflows.visibility import AgentStatus


async def pending_approvals(agent: AgentHandle) -> list[PendingApproval]:
    """The agent's calls waiting for a person, oldest first (query `approvals`)."""
    handle = agent._client.get_workflow_handle(agent.id)
    try:
        raw = await handle.query("approvals")
    except (WorkflowQueryFailedError, RPCError) as err:
        _reraise(err, workflow_id=agent.id)
    return [PendingApproval.model_validate(item) for item in raw]


async def decide(
    agent: AgentHandle,
    approval_id: str,
    *,
    approve: bool,
    comment: str | None = None,
    decided_by: str | None = None,
) -> Decision:
    """Approve or reject a pending approval; the agent is woken with the decision."""
    request = parse_input(
        DecideRequest,
        {"approval_id": approval_id, "approve": approve, "comment": comment,
         "decided_by": decided_by},
    )  # fmt: skip
    handle = agent._client.get_workflow_handle(agent.id)
    try:
        return await handle.execute_update("decide", request, result_type=Decision)
    except (WorkflowUpdateFailedError, RPCError) as err:
        _reraise(err, workflow_id=agent.id)


async def waiting_for_approval(
    perennial: Perennial, *, agent_type: str | None = None, limit: int = 100
) -> list[tuple[AgentSummary, list[PendingApproval]]]:
    """Every running agent whose `AgentStatus` is `waiting_approval`, with its pending
    approvals (visibility is eventually consistent: an agent may lag a moment)."""
    found = []
    summaries = await perennial.list_agents(
        agent_type=agent_type, status=AgentStatus.WAITING_APPROVAL.value, limit=limit
    )
    for summary in summaries:
        agent = perennial.agent(summary.agent_type, summary.name)
        found.append((summary, await pending_approvals(agent)))
    return found


__all__ = ["decide", "pending_approvals", "waiting_for_approval"]
