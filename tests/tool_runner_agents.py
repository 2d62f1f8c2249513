"""An agent type with no model that runs an activity tool itself (`perennial.run_tool`), for
tests/test_tool_runner.py (registered on import; no I/O at import time: the sandbox re-imports
this module for every run)."""

from __future__ import annotations

from datetime import timedelta

from pydantic import BaseModel
from temporalio.common import RetryPolicy
from temporalio.exceptions import ApplicationError

from perennial import (
    AgentWorkflow,
    ToolContext,
    ToolError,
    ToolFailed,
    activity_tool,
    agent_type,
    callable_method,
    run_tool,
)

_QUICK_RETRIES = RetryPolicy(initial_interval=timedelta(milliseconds=100), maximum_attempts=3)


class Price(BaseModel):
    sku: str
    cents: int
    attempt: int


class PricerState(BaseModel):
    priced: list[str] = []


@activity_tool(
    retry_policy=_QUICK_RETRIES,
    start_to_close_timeout=timedelta(seconds=10),
    activity_name="pricing.lookup_price",  # runs as this activity type; the tool's name stays
)
async def lookup_price(sku: str, ctx: ToolContext) -> Price:
    """The price of a product, from the worker's price list (application setting `price_list`,
    `sku=cents,...`).

    Args:
        sku: The product code.
    """
    if sku == "broken":
        raise ToolError("the price list is being updated")
    if sku == "flaky" and ctx.attempt < 2:
        raise RuntimeError("the price service hiccuped")
    listed = dict(
        item.split("=") for item in (ctx.settings.app_setting("price_list") or "").split(",")
    )
    if sku not in listed and sku != "flaky":
        raise ApplicationError(f"no price for {sku}", type="UnknownSku", non_retryable=True)
    return Price(sku=sku, cents=int(listed.get(sku, "1")), attempt=ctx.attempt)


@activity_tool
async def not_listed(sku: str) -> str:
    """A tool the agent type does not list in `tools`.

    Args:
        sku: The product code.
    """
    return sku


@agent_type("test_pricer")
class Pricer(AgentWorkflow[PricerState]):
    """Prices products through an activity tool it runs itself (no model involved)."""

    tools = (lookup_price,)

    @callable_method
    async def price(self, sku: str) -> Price:
        """The typed price of a product."""
        found = await run_tool(lookup_price, {"sku": sku}, result_type=Price)
        self.state.priced.append(sku)
        return found

    @callable_method
    async def price_text(self, sku: str) -> str:
        """The tool's result as the model would read it."""
        return await run_tool(lookup_price, {"sku": sku})

    @callable_method
    async def why_not(self, sku: str) -> str:
        """How pricing failed: the tool's failure type and attempts."""
        try:
            await run_tool(lookup_price, {"sku": sku})
        except ToolFailed as failed:
            return f"{failed.tool} {failed.error_type} after {failed.attempts}"
        return "priced"

    @callable_method
    async def misuse(self, how: str) -> str:
        """Calls run_tool the wrong way (`undeclared` or `bad_arguments`)."""
        if how == "undeclared":
            return await run_tool(not_listed, {"sku": "a"})
        return await run_tool(lookup_price, {"sku": 5, "colour": "red"})
