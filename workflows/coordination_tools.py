"""The model's coordination tools: sub-agents (`CHILD_TOOLS`: `spawn_agent`,
`list_child_agents`, `cancel_child_agent`) and agents by name (`MESSAGING_TOOLS`:
`send_to_agent`, `ask_agent`).

Workflow tools (they run inside the agent, deterministically) over the agent's children:

    class Manager(LLMAgent[LLMState]):
        spawnable_agent_types = ("researcher", "writer")
        tools = (*STATE_TOOLS, *CHILD_TOOLS)

`spawn_agent` returns as soon as the child is running; when the child's task ends, the agent
runs a turn whose user message is `workflows.children.child_prompt(wake)`: which child, how it
ended, its answer or error. The model may only spawn the types in `spawnable_agent_types`.
Likewise `ask_agent` returns at once, and the answer (or the ask's timeout) wakes the agent
with `workflows.messaging.reply_prompt(wake)`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

from pydantic import Field

from perennial.workflows.errors import (
    AgentNotFound,
    ChildAlreadyRunning,
    ChildNotFound,
    DeliveryFailed,
    InvalidMessage,
    InvalidRequest,
    NotObserving,
    UnknownAgentType,
)
from perennial.workflows.llm.tools import ToolError, workflow_tool
from perennial.workflows.visibility import agent_id

if TYPE_CHECKING:
    from perennial.workflows.entity import AgentWorkflow

Name = Annotated[str, Field(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9_.:-]+$")]


@workflow_tool
async def spawn_agent(
    agent: AgentWorkflow[Any],
    agent_type: Annotated[str, Field(min_length=1, max_length=100)],
    name: Name,
    task: Annotated[str, Field(min_length=1)],
    keep_alive: bool = False,
) -> str:
    """Start another agent (a sub-agent) on a task and carry on; you are woken with its
    answer (or its error) when it has finished. You do not wait for it here.

    Args:
        agent_type: The kind of agent to start.
        name: A name for the new agent, unique among running agents of that type.
        task: What the agent should do, as a message to it.
        keep_alive: False (default): the agent ends after answering. True: it lives on
            under its name and can be messaged later.
    """
    allowed = type(agent).spawnable_agent_types
    if agent_type not in allowed:
        known = ", ".join(allowed) or "none"
        raise ToolError(f"you cannot start agents of type {agent_type!r} (you can: {known})")
    try:
        record = await agent.spawn_child(agent_type, name, task, keep=keep_alive)
    except (ChildAlreadyRunning, InvalidMessage, InvalidRequest) as err:
        raise ToolError(str(err)) from None
    return (
        f"started {record.child_id} (task {record.task_id}); you will be woken with its "
        "answer when it finishes"
    )


@workflow_tool
def list_child_agents(agent: AgentWorkflow[Any]) -> list[dict[str, Any]]:
    """The sub-agents you started whose tasks are still running."""
    return [
        {"agent": c.child_id, "task": c.task, "keep_alive": c.mode == "named",
         "started_at": c.started_at.isoformat()}
        for c in agent.children
    ]  # fmt: skip


@workflow_tool
async def cancel_child_agent(agent: AgentWorkflow[Any], agent_type: str, name: Name) -> str:
    """Ask a sub-agent you started to stop its task. You are woken when it has stopped.

    Args:
        agent_type: The sub-agent's type.
        name: The sub-agent's name.
    """
    try:
        record = await agent.cancel_child(agent_id(agent_type, name))
    except ChildNotFound as err:
        raise ToolError(str(err)) from None
    return f"asked {record.child_id} to cancel its task"


CHILD_TOOLS = (spawn_agent, list_child_agents, cancel_child_agent)

AgentType = Annotated[str, Field(min_length=1, max_length=100)]
Text = Annotated[str, Field(min_length=1)]
_DELIVERY_ERRORS = (UnknownAgentType, InvalidMessage, InvalidRequest, DeliveryFailed)


@workflow_tool(name="send_to_agent")
async def send_to_agent_tool(
    agent: AgentWorkflow[Any], agent_type: AgentType, name: Name, text: Text
) -> str:
    """Send a message to another agent by its type and name (it is created if it does not
    exist yet). Nothing comes back; use ask_agent when you need an answer.

    Args:
        agent_type: The other agent's type.
        name: The other agent's name.
        text: The message.
    """
    try:
        message_id = await agent.send_to_agent(agent_type, name, text)
    except _DELIVERY_ERRORS as err:
        raise ToolError(str(err)) from None
    return f"delivered to {agent_id(agent_type, name)} (message {message_id})"


@workflow_tool(name="ask_agent")
async def ask_agent_tool(
    agent: AgentWorkflow[Any],
    agent_type: AgentType,
    name: Name,
    question: Text,
    timeout_seconds: Annotated[float, Field(gt=0, le=86_400)] = 300,
) -> str:
    """Ask another agent (by type and name) a question. You do not wait here: you are woken
    with its answer, or told that it did not answer within timeout_seconds.

    Args:
        agent_type: The other agent's type.
        name: The other agent's name.
        question: What you ask, as a message to it.
        timeout_seconds: How long to wait for the answer.
    """
    try:
        ask = await agent.ask_agent(agent_type, name, question, timeout_seconds=timeout_seconds)
    except _DELIVERY_ERRORS as err:
        raise ToolError(str(err)) from None
    return f"asked {ask.target_id} (ask {ask.correlation_id}); you will be woken with the answer"


MESSAGING_TOOLS = (send_to_agent_tool, ask_agent_tool)


@workflow_tool
async def observe_agent(
    agent: AgentWorkflow[Any],
    agent_type: AgentType,
    name: Name,
    debounce_seconds: Annotated[float, Field(ge=0.05, le=86_400)] = 2.0,
) -> str:
    """Watch another agent: you are woken whenever its state changes (several changes close
    together wake you once).

    Args:
        agent_type: The other agent's type.
        name: The other agent's name.
        debounce_seconds: Changes within this many seconds wake you once.
    """
    try:
        sub = await agent.observe(agent_type, name, debounce_seconds=debounce_seconds)
    except (AgentNotFound, InvalidRequest) as err:
        raise ToolError(str(err)) from None
    return f"observing {sub.peer_id}"


@workflow_tool
async def stop_observing_agent(agent: AgentWorkflow[Any], agent_type: AgentType, name: Name) -> str:
    """Stop watching an agent you observe.

    Args:
        agent_type: The other agent's type.
        name: The other agent's name.
    """
    try:
        sub = await agent.stop_observing(agent_type, name)
    except NotObserving as err:
        raise ToolError(str(err)) from None
    return f"stopped observing {sub.peer_id}"


OBSERVE_TOOLS = (observe_agent, stop_observing_agent)

__all__ = [
    "CHILD_TOOLS",
    "MESSAGING_TOOLS",
    "OBSERVE_TOOLS",
    "ask_agent_tool",
    "cancel_child_agent",
    "list_child_agents",
    "observe_agent",
    "send_to_agent_tool",
    "spawn_agent",
    "stop_observing_agent",
]
