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
from temporalio.client import Client, WorkflowQueryFailedError
from temporalio.service import RPCError

from perennial.client.lifecycle import signal_with_start, update_with_start
from perennial.workflows.errors import PerennialError, to_application_error
from perennial.workflows.messages import AgentDelivery, SendReceipt, SubscriberCheck
from perennial.workflows.messaging import DELIVER_ACTIVITY
from perennial.workflows.observing import CONFIRM_SUBSCRIBER_ACTIVITY, CONFIRM_SUBSCRIPTION_QUERY
from perennial.workflows.registry import agent_class
from perennial.workflows.visibility import agent_id


@activity.defn(name=DELIVER_ACTIVITY)
async def deliver_message(delivery: AgentDelivery) -> None:
    """Queue `message` into `{agent_type}/{name}`, creating the agent if needed. Messages the
    target type would refuse, and agents that were stopped, fail at once (non-retryable,
    typed); a message too large for a signal goes by update `send`."""
    message = delivery.message
    try:
        # A type this worker does not run would start an agent no worker ever runs.
        target = agent_class(delivery.agent_type)
        target.check_message(message, delivery.agent_type)
    except PerennialError as err:
        raise to_application_error(err) from None
    client: Client = activity.client()
    target_id = agent_id(delivery.agent_type, delivery.name)
    where = {"agent_type": delivery.agent_type, "name": delivery.name,
             "task_queue": delivery.task_queue}  # fmt: skip
    try:
        if target.fits_in_signal(message):
            await signal_with_start(client, **where, signal="message", arg=message)
        else:
            await update_with_start(client, **where, update="send", arg=message,
                                    result_type=SendReceipt)  # fmt: skip
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
