"""The router agent: the model picks which agent handles a request, forwards it, and relays
the answer (the brief's `AgentCoordinator`).

    @agent_type("concierge")
    class Concierge(RouterAgent):
        routes = {
            "travel": "Plans trips: flights, hotels, itineraries.",
            "notes": "Takes notes and reads them back.",
        }

The system prompt lists the routes; the model calls `route_to(agent_type, request)` once or
several times (a sequence of specialists), each call an `ask_agent` to the agent
`{agent_type}/{router's name}` (one specialist conversation per router conversation) that the
turn waits for, up to `route_timeout`. The answer (or the failure, or the timeout) is the tool's
result, and the model's final text relays it: an `ask` to the router returns the relayed
answer. The model can only reach the types in `routes`.

The built-in `router` type routes between the built-in `notes` and `assistant` agents.
"""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING, Annotated, ClassVar

from pydantic import Field

from perennial.workflows.errors import DeliveryFailed, InvalidMessage, UnknownAgentType
from perennial.workflows.llm import STATE_TOOLS, LLMAgent, LLMState, ToolError, workflow_tool
from perennial.workflows.registry import agent_type

if TYPE_CHECKING:
    from perennial.workflows.llm.tools import AnyTool

INSTRUCTIONS = """\
You are a router. You do not answer requests yourself: for each request, pick the agent best \
suited to it from the list below and forward the request with route_to, rewritten so that it \
stands on its own. If a request needs several agents, call route_to for each, in order. Then \
relay what the agents answered, faithfully and briefly. If no agent fits, say so."""


@workflow_tool
async def route_to(
    agent: RouterAgent,
    agent_type: Annotated[str, Field(min_length=1, max_length=100)],
    request: Annotated[str, Field(min_length=1)],
) -> str:
    """Forward a request to the agent of this type and return its answer.

    Args:
        agent_type: One of the agent types you may route to.
        request: The request, complete in itself.
    """
    routes = type(agent).routes
    if agent_type not in routes:
        raise ToolError(f"no route to {agent_type!r} (routes: {', '.join(routes) or 'none'})")
    try:
        answer = await agent.ask_agent_and_wait(
            agent_type,
            agent.agent_name,
            request,
            timeout_seconds=type(agent).route_timeout.total_seconds(),
        )
    except (UnknownAgentType, InvalidMessage, DeliveryFailed) as err:
        raise ToolError(str(err)) from None
    if answer.status == "answered":
        return answer.reply or "(the agent gave no answer)"
    raise ToolError(f"{agent_type} did not answer: {answer.error_type}: {answer.error}")


class RouterAgent(LLMAgent[LLMState]):
    """Base of router agent types: set `routes` (agent type → what it is good at)."""

    instructions: ClassVar[str] = INSTRUCTIONS
    #: The agent types the model may forward to, with what each is for.
    routes: ClassVar[dict[str, str]] = {}
    #: How long one forwarded request may take.
    route_timeout: ClassVar[timedelta] = timedelta(minutes=2)
    tools: ClassVar[tuple[AnyTool, ...]] = (route_to, *STATE_TOOLS)

    def system_prompt(self) -> str:
        listed = "\n".join(f"- {name}: {what}" for name, what in self.routes.items())
        return f"{super().system_prompt()}\n\nAgents you can route to:\n{listed}"


@agent_type("router")
class DefaultRouter(RouterAgent):
    """Routes between the built-in agents."""

    routes: ClassVar[dict[str, str]] = {
        "notes": "Writes down whatever it is sent, as a numbered note.",
        "assistant": "A personal assistant with a long-term memory; answers questions.",
    }


__all__ = ["DefaultRouter", "RouterAgent", "route_to"]
