"""LLM agent types and activity tools that exist only for the tests.

Registered on import. A worker subprocess imports this module through
`PERENNIAL_APP=tests.llm_agents`. The activity tools are real I/O: they call the
scripted LLM server's tool backend (`POST {root}/tools/{name}`, where root is the worker's
`OPENAI_BASE_URL` without `/v1`), which counts every execution.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Any, Literal

from pydantic import Field
from temporalio.common import RetryPolicy

from perennial.workflows.llm import (
    CONTEXT_TOOLS,
    STATE_TOOLS,
    ContextWindow,
    LLMAgent,
    LLMState,
    ToolContext,
    ToolError,
    activity_tool,
)
from perennial.workflows.registry import agent_type

MODEL = "scripted-model"

_FAST_RETRIES = RetryPolicy(
    initial_interval=timedelta(milliseconds=200),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=1),
    maximum_attempts=3,
)


async def _backend(ctx: ToolContext, name: str, arguments: dict[str, Any]) -> Any:
    import httpx2  # the openai client's HTTP library; imported here, outside the sandbox

    root = ctx.settings.openai_base_url.removesuffix("/").removesuffix("/v1")
    async with httpx2.AsyncClient(timeout=150) as http:
        response = await http.post(f"{root}/tools/{name}", json=arguments)
        response.raise_for_status()
        answer = response.json()
    if "fail" in answer:
        raise RuntimeError(answer["fail"])
    if "tool_error" in answer:
        raise ToolError(answer["tool_error"])
    return answer["result"]


@activity_tool(
    start_to_close_timeout=timedelta(seconds=30),
    heartbeat_timeout=timedelta(seconds=2),
    retry_policy=_FAST_RETRIES,
)
async def get_weather(
    ctx: ToolContext,
    city: Annotated[str, Field(min_length=1, description="The city, like 'Paris'")],
    unit: Literal["C", "F"] = "C",
) -> str:
    """The current weather in a city.

    Args:
        unit: Degrees Celsius ("C") or Fahrenheit ("F").
    """
    return await _backend(ctx, "get_weather", {"city": city, "unit": unit})


@activity_tool(
    start_to_close_timeout=timedelta(seconds=30),
    heartbeat_timeout=timedelta(seconds=2),
    retry_policy=_FAST_RETRIES,
)
async def book_table(ctx: ToolContext, restaurant: str, people: int = 2) -> Any:
    """Book a table at a restaurant (a side effect: it must never run twice).

    Args:
        restaurant: The restaurant's name.
        people: How many people.
    """
    return await _backend(ctx, "book_table", {"restaurant": restaurant, "people": people})


class BaseScriptedAgent(LLMAgent[LLMState]):
    """Shared settings of the test LLM agents: short timeouts, fast retries."""

    instructions = "You are a test agent."
    model = MODEL
    tools = (*STATE_TOOLS, *CONTEXT_TOOLS, get_weather, book_table)
    max_steps = 5
    model_heartbeat_timeout = timedelta(seconds=2)
    model_start_to_close_timeout = timedelta(seconds=30)
    model_retry_policy = RetryPolicy(
        initial_interval=timedelta(milliseconds=200),
        backoff_coefficient=2.0,
        maximum_interval=timedelta(seconds=2),
        maximum_attempts=4,
    )


@agent_type("test_llm")
class ScriptedAgent(BaseScriptedAgent):
    """The scripted LLM agent with the default limits."""


@agent_type("test_llm_short_runs")
class ShortRunsAgent(BaseScriptedAgent):
    """Continues as new after every few updates, to test what crosses the switch."""

    max_updates_per_run = 2


@agent_type("test_llm_small_window")
class SmallWindowAgent(BaseScriptedAgent):
    """Sends at most a few exchanges: older ones are dropped from the context."""

    context_window = ContextWindow(max_items=6, max_chars=10_000)


@agent_type("test_llm_no_tools")
class NoToolsAgent(BaseScriptedAgent):
    """No tools: its first requests are small enough to travel inline."""

    tools = ()
