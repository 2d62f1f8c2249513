"""Agents reaching other agents by name: delivering a message, confirming a subscriber.

Workflow code cannot signal-with-start (an external workflow handle can only signal an agent
that is already running), and a message to an agent must create it if needed, like the
client's `send`. So delivery is an activity: get-or-create through the worker's own client
(never re-creating an agent whose run was terminated: see client.lifecycle), with Temporal's
retries. The message id is fixed by the sending workflow, so a retried delivery is applied
once by the receiving agent's duplicate suppression.
"""

from __future__ import annotations

from temporalio import activity
from temporalio.client import Client, WithStartWorkflowOperation, WorkflowQueryFailedError
from temporalio.common import WorkflowIDConflictPolicy, WorkflowIDReusePolicy
from temporalio.service import RPCError

from perennial.client.lifecycle import get_or_create
from perennial.workflows.errors import PerennialError, to_application_error
from perennial.workflows.messages import AgentDelivery, AgentStart, SendReceipt, SubscriberCheck
from perennial.workflows.messaging import DELIVER_ACTIVITY
from perennial.workflows.observing import CONFIRM_SUBSCRIBER_ACTIVITY, CONFIRM_SUBSCRIPTION_QUERY
from perennial.workflows.visibility import agent_id


@activity.defn(name=DELIVER_ACTIVITY)
async def deliver_message(delivery: AgentDelivery) -> None:
    """Queue `message` into `{agent_type}/{name}`, creating the agent if needed. Messages the
    target type would refuse, and agents that were stopped, fail at once (non-retryable,
    typed); a message too large for a signal goes by update `send`."""
    from perennial.workflows.registry import (
        agent_class,  # the worker's registry, outside the sandbox
    )

    message = delivery.message
    try:
        # A type this worker does not run would start an agent no worker ever runs.
        target = agent_class(delivery.agent_type)
        target.check_message(message, delivery.agent_type)
    except PerennialError as err:
        raise to_application_error(err) from None
    client: Client = activity.client()
    target_id = agent_id(delivery.agent_type, delivery.name)
    by_signal = target.fits_in_signal(message)

    async def start(reuse: WorkflowIDReusePolicy) -> None:
        options = {
            "id": target_id,
            "task_queue": delivery.task_queue,
            "id_conflict_policy": WorkflowIDConflictPolicy.USE_EXISTING,
            "id_reuse_policy": reuse,
            "static_summary": f"{delivery.agent_type} agent {delivery.name!r}",
        }
        if by_signal:
            await client.start_workflow(
                delivery.agent_type,
                AgentStart().wire(),
                start_signal="message",
                start_signal_args=[message],
                **options,  # type: ignore[arg-type]
            )
            return
        operation = WithStartWorkflowOperation(delivery.agent_type, AgentStart().wire(), **options)  # type: ignore[arg-type]
        await client.execute_update_with_start_workflow(
            "send", message, start_workflow_operation=operation, result_type=SendReceipt
        )

    try:
        await get_or_create(client, target_id, start)
    except PerennialError as err:  # AgentStopped: the sender's turn learns it, typed
        raise to_application_error(err) from None
    activity.logger.info("delivered %s from %s to %s", message.id, delivery.sender_id, target_id)


@activity.defn(name=CONFIRM_SUBSCRIBER_ACTIVITY)
async def confirm_subscriber(check: SubscriberCheck) -> bool:
    """Ask the would-be subscriber whether it wants the subscription (query
    `confirm_subscription`); an agent that does not exist or does not answer does not."""
    handle = activity.client().get_workflow_handle(check.subscriber_id)
    try:
        answer = await handle.query(CONFIRM_SUBSCRIPTION_QUERY, check.check, result_type=bool)
    except (WorkflowQueryFailedError, RPCError) as err:
        activity.logger.info("subscriber %s did not confirm: %s", check.subscriber_id, err)
        return False
    return answer is True


__all__ = ["confirm_subscriber", "deliver_message"]
