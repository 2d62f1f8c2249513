"""Delivering a message from one agent to another, by name.

Workflow code cannot signal-with-start (an external workflow handle can only signal an agent
that is already running), and a message to an agent must create it if needed, like the
client's `send`. So delivery is an activity: signal-with-start through the worker's own client
(`activity.client()`), with Temporal's retries. The message id is fixed by the sending
workflow, so a retried delivery is applied once by the receiving agent's duplicate suppression.
"""

from __future__ import annotations

from temporalio import activity
from temporalio.client import Client
from temporalio.common import WorkflowIDConflictPolicy

from workflows.errors import InvalidMessage, PerennialError, to_application_error
from workflows.messages import AgentDelivery, AgentStart
from workflows.messaging import DELIVER_ACTIVITY
from workflows.visibility import agent_id


@activity.defn(name=DELIVER_ACTIVITY)
async def deliver_message(delivery: AgentDelivery) -> None:
    """Signal-with-start `message` into `{agent_type}/{name}`. Unknown agent types and
    messages the target type would refuse fail at once (non-retryable, typed)."""
    from workflows.registry import agent_class  # the worker's registry, outside the sandbox

    try:
        target = agent_class(delivery.agent_type)
        if len(delivery.message.text) > target.max_text_chars:
            raise InvalidMessage(
                f"text has {len(delivery.message.text)} characters; {delivery.agent_type} "
                f"agents accept at most {target.max_text_chars}"
            )
    except PerennialError as err:
        raise to_application_error(err) from None
    client: Client = activity.client()
    target_id = agent_id(delivery.agent_type, delivery.name)
    await client.start_workflow(
        delivery.agent_type,
        AgentStart(),
        id=target_id,
        task_queue=delivery.task_queue,
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        start_signal="message",
        start_signal_args=[delivery.message],
        static_summary=f"{delivery.agent_type} agent {delivery.name!r}",
    )
    activity.logger.info("delivered %s from %s to %s", delivery.message.id,
                         delivery.sender_id, target_id)  # fmt: skip


__all__ = ["deliver_message"]
