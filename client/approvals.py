"""People in the loop, from the caller's side: list pending approvals and decide on them.

    from perennial.client.approvals import pending_approvals, decide, waiting_for_approval

    for summary, approvals, unreachable in await waiting_for_approval(perennial):
        ...
    await decide(perennial.agent("assistant", "alice"), "appr-...", approve=True,
                 comment="go ahead", decided_by="bob")

`decide` is update `decide` on the agent: the first decision wins; a second one raises
`AlreadyDecided`, an unknown id `ApprovalNotFound` (both before anything enters history).
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import NamedTuple

from perennial.client.agents import AgentHandle, AgentSummary, AgentUnreachable, Perennial
from perennial.workflows.messages import Decision, PendingApproval
from perennial.workflows.visibility import AgentStatus


async def pending_approvals(
    agent: AgentHandle, *, timeout: timedelta | None = None
) -> list[PendingApproval]:
    """The agent's calls waiting for a person, oldest first (query `approvals`).
    `AgentUnreachable` if no worker answers (within `timeout`, if given)."""
    return await agent.approvals(timeout=timeout)


async def decide(
    agent: AgentHandle,
    approval_id: str,
    *,
    approve: bool,
    comment: str | None = None,
    decided_by: str | None = None,
) -> Decision:
    """Approve or reject a pending approval; the agent is woken with the decision."""
    return await agent.decide(approval_id, approve=approve, comment=comment, decided_by=decided_by)


class AgentApprovals(NamedTuple):
    agent: AgentSummary
    approvals: list[PendingApproval]
    #: Set when the agent did not answer (no worker on its task queue): approvals unknown.
    unreachable: AgentUnreachable | None = None


async def waiting_for_approval(
    perennial: Perennial,
    *,
    agent_type: str | None = None,
    limit: int = 100,
    timeout: timedelta = timedelta(seconds=5),
) -> list[AgentApprovals]:
    """Every running agent whose `AgentStatus` is `waiting_approval`, with its pending
    approvals (visibility is eventually consistent: an agent may lag a moment). Agents are
    asked at once; one that does not answer within `timeout` is listed as unreachable
    instead of failing the whole listing."""
    summaries = await perennial.list_agents(
        agent_type=agent_type, status=AgentStatus.WAITING_APPROVAL.value, limit=limit
    )

    async def approvals_of(summary: AgentSummary) -> AgentApprovals:
        agent = perennial.agent(summary.agent_type, summary.name)
        try:
            return AgentApprovals(summary, await pending_approvals(agent, timeout=timeout))
        except AgentUnreachable as err:
            return AgentApprovals(summary, [], unreachable=err)

    return list(await asyncio.gather(*(approvals_of(summary) for summary in summaries)))


__all__ = ["AgentApprovals", "decide", "pending_approvals", "waiting_for_approval"]
