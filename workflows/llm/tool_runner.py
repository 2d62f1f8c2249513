"""Running an activity tool from agent code, not from a model: `run_tool`.

An activity tool is Perennial's unit of I/O: a Temporal activity with its own timeout and
retry policy, settings and call ids through `ToolContext`, secrets through `ToolSecret`,
registered on every worker that runs an agent type listing it in `tools`. LLM agents call
tools when the model asks; any agent type (an `AgentWorkflow` with no model at all) can run
one itself and get its typed result back:

    @activity_tool(start_to_close_timeout=timedelta(seconds=30))
    async def fetch_price(sku: str, ctx: ToolContext) -> Price: ...

    @agent_type("pricer")
    class Pricer(AgentWorkflow[PricerState]):
        tools = (fetch_price,)  # so that the worker registers its activity

        @callable_method
        async def price(self, sku: str) -> Price:
            return await run_tool(fetch_price, {"sku": sku}, result_type=Price)

The arguments are checked against the tool's schema first (`ToolArgumentsError`, nothing
runs); a tool that fails for good (its retries ran out, it raised a non-retryable
`ApplicationError`, or it reported a failure with `ToolError`) raises `ToolFailed`, whose
`error_type` is the failure's type, so the turn can tell a refusal from an outage.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any, TypeVar, overload

from pydantic import TypeAdapter, ValidationError
from temporalio import workflow
from temporalio.exceptions import (
    ActivityError,
    ApplicationError,
    TimeoutError,
    is_cancelled_exception,
)

from perennial.workflows.errors import ToolFailed, summarize
from perennial.workflows.llm.tools import ActivityTool, ToolArgumentsError
from perennial.workflows.llm.wire import ToolActivityInput, ToolActivityResult

T = TypeVar("T")


@overload
async def run_tool(
    tool: ActivityTool, arguments: Mapping[str, Any] | None = None, *, result_type: None = None
) -> str: ...


@overload
async def run_tool(
    tool: ActivityTool, arguments: Mapping[str, Any] | None = None, *, result_type: type[T]
) -> T: ...


async def run_tool(
    tool: ActivityTool,
    arguments: Mapping[str, Any] | None = None,
    *,
    result_type: type[Any] | None = None,
) -> Any:
    """Run `tool` as its activity, from workflow code, and return its result: the text the
    model would read, or (with `result_type`, such as the pydantic model the tool returns) that
    text validated back into the type.

    Raises:
        TypeError: `tool` is not an activity tool, or the agent type does not list it in
            `tools` (no worker would run its activity).
        ToolArgumentsError: the arguments do not fit the tool's schema; nothing ran.
        ToolFailed: the tool failed for good; `error_type` says how.
    """
    _check_declared(tool)
    try:
        args = tool.args_model.model_validate(dict(arguments or {}))
    except ValidationError as err:
        raise ToolArgumentsError(f"{tool.name}: {summarize(err)}") from None
    try:
        result = await execute_tool(tool, args, call_id=str(workflow.uuid4()))
    except ActivityError as err:
        raise _failure(tool, err) from None
    if result.is_error:
        raise ToolFailed(
            f"{tool.name} reported a failure: {result.content}",
            tool=tool.name,
            error_type="ToolError",
            attempts=result.attempt,
        )
    if result_type is None:
        return result.content
    try:
        return TypeAdapter(result_type).validate_json(result.content)
    except ValidationError as err:
        raise ToolFailed(
            f"{tool.name} returned what is not a {getattr(result_type, '__name__', result_type)}:"
            f" {summarize(err)}",
            tool=tool.name,
            error_type="ToolResultInvalid",
            attempts=result.attempt,
        ) from None


async def execute_tool(tool: ActivityTool, args: Any, *, call_id: str) -> ToolActivityResult:
    """Run `tool`'s activity on validated `args` (its arguments model). Raises the activity's
    ActivityError when it fails for good, CancelledError when the turn was stopped."""
    try:
        return await workflow.execute_activity(
            tool.activity_type,
            ToolActivityInput(
                agent_id=workflow.info().workflow_id,
                call_id=call_id,
                arguments=args.model_dump(mode="json"),
            ),
            result_type=ToolActivityResult,
            start_to_close_timeout=tool.start_to_close_timeout,
            heartbeat_timeout=tool.heartbeat_timeout,
            retry_policy=tool.retry_policy,
            summary=f"tool {tool.name}",
        )
    except ActivityError as err:
        if is_cancelled_exception(err):  # the turn was stopped: not the tool's failure
            raise asyncio.CancelledError() from None
        raise


def _check_declared(tool: ActivityTool) -> None:
    if not isinstance(tool, ActivityTool):
        raise TypeError(
            f"run_tool runs activity tools, not {tool!r} (call a workflow tool's function directly)"
        )
    declared = getattr(type(workflow.instance()), "tools", ())
    if not any(t is tool for t in declared):
        raise TypeError(
            f"activity tool {tool.name!r} is not in this agent type's `tools`, so no worker "
            "registers its activity: list it there"
        )


def _failure(tool: ActivityTool, err: ActivityError) -> ToolFailed:
    cause = err.cause
    if isinstance(cause, ApplicationError):
        details = cause.details[0] if cause.details and isinstance(cause.details[0], dict) else {}
        attempt = details.get("attempt")
        return ToolFailed(
            f"{tool.name} failed: {cause.message}",
            tool=tool.name,
            error_type=cause.type or "ApplicationError",
            attempts=attempt if isinstance(attempt, int) else 0,
        )
    if isinstance(cause, TimeoutError):
        kind = cause.type.name if cause.type is not None else "TIMEOUT"
        return ToolFailed(
            f"{tool.name} timed out ({kind})", tool=tool.name, error_type="ToolTimedOut"
        )
    return ToolFailed(f"{tool.name} failed: {cause or err}", tool=tool.name, error_type="ToolError")


__all__ = ["run_tool"]
