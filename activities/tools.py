"""Activity tools as Temporal activities: one activity type per tool, named like the tool.

The agent workflow has already checked the model's arguments against the tool's schema; the
activity checks them again (the schema is the contract), injects the `ToolContext` if the tool
asks for one and its `ToolSecret` parameters from the worker's settings (here, never in the
workflow: a secret that crossed it would be in history), heartbeats while the tool runs (if it
has a heartbeat timeout), and turns the outcome into a `ToolActivityResult`:

* the return value becomes the text the model reads, redacted of the worker's secrets;
* a `ToolSecret` the worker does not have fails the call (`ToolSecretMissing`, no retry);
* `ToolError` becomes a result marked as an error (the model reads it; no retry);
* any other exception fails the attempt, and Temporal retries it by the tool's retry policy
  (the failure carries the attempt number, so the tool-call event can say how many ran).

Every error text and result is redacted of the worker's secrets first: a tool may quote a key
it used, and these texts reach history, the model, the agent's events and the logs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from pydantic import ValidationError
from temporalio import activity
from temporalio.exceptions import ApplicationError

from perennial.activities.heartbeat import heartbeating
from perennial.client.redaction import Redactor
from perennial.client.settings import TOOL_SECRET_ENV_PREFIX, Settings
from perennial.workflows.llm.tools import ActivityTool, ToolContext, ToolError, render_result
from perennial.workflows.llm.wire import ToolActivityInput, ToolActivityResult, ToolFailureDetail


def tool_activity(tool: ActivityTool, settings: Settings) -> Callable[..., Any]:
    """The Temporal activity that runs `tool` on this worker."""
    redact = Redactor.from_settings(settings)
    # A result is data, not an error text: the secrets whole, not words that look like them.
    redact_result = Redactor(settings.secrets, shapes=False, echoes=False)

    async def run_tool(call: ToolActivityInput) -> ToolActivityResult:
        attempt = activity.info().attempt
        try:
            args = tool.args_model.model_validate(call.arguments)
        except ValidationError as err:
            raise ApplicationError(
                redact(f"arguments do not fit the schema of {tool.name}: {err}"),
                ToolFailureDetail(attempt=attempt).model_dump(),
                type="ToolArgumentsInvalid",
                non_retryable=True,
            ) from None
        kwargs = tool.kwargs(args)
        if tool.context_param:
            kwargs[tool.context_param] = ToolContext(
                settings=settings, agent_id=call.agent_id, call_id=call.call_id, attempt=attempt
            )
        kwargs.update(_secrets_for(tool, settings, attempt))
        try:
            async with heartbeating(f"running {tool.name}"):
                value = await tool.fn(**kwargs)
        except ToolError as err:
            return ToolActivityResult(content=redact(str(err)), is_error=True, attempt=attempt)
        except ApplicationError as err:
            raise ApplicationError(
                redact(err.message),
                ToolFailureDetail(attempt=attempt).model_dump(),
                type=err.type,
                non_retryable=err.non_retryable,
                next_retry_delay=err.next_retry_delay,
            ) from _redacted(err, redact)
        except Exception as err:
            text = redact(repr(err))
            activity.logger.warning("tool %s failed (attempt %d): %s", tool.name, attempt, text)
            raise ApplicationError(
                redact(f"{type(err).__name__}: {err}"),
                ToolFailureDetail(attempt=attempt).model_dump(),
                type=type(err).__name__,
            ) from _redacted(err, redact)
        return ToolActivityResult(content=redact_result(render_result(value)), attempt=attempt)

    run_tool.__name__ = run_tool.__qualname__ = f"tool_{tool.name}"
    run_tool.__doc__ = tool.description
    return activity.defn(name=tool.activity_type)(run_tool)


def _secrets_for(tool: ActivityTool, settings: Settings, attempt: int) -> dict[str, Any]:
    """The tool's `ToolSecret` arguments, from this worker's settings."""
    values: dict[str, Any] = {}
    for param in tool.secret_params:
        secret = settings.tool_secrets.get(param.secret.key)
        if secret is None or not secret.get_secret_value():
            if param.optional:
                continue  # the function's default applies
            raise ApplicationError(
                f"tool {tool.name} needs the secret {param.secret.key!r}, which this worker "
                f"does not have (set {TOOL_SECRET_ENV_PREFIX}{param.secret.key.upper()})",
                ToolFailureDetail(attempt=attempt).model_dump(),
                type="ToolSecretMissing",
                non_retryable=True,
            )
        values[param.param] = secret if param.wrapped else secret.get_secret_value()
    return values


def _redacted(err: BaseException, redact: Redactor) -> ApplicationError:
    """`err` as a cause safe to record: its text redacted, its traceback kept.

    Temporal records a failure's cause chain (messages included) in history, and the SDK logs
    it, so the original exception cannot be the cause.
    """
    if isinstance(err, ApplicationError):
        cause = ApplicationError(redact(err.message), type=err.type)
    else:
        cause = ApplicationError(redact(str(err)), type=type(err).__name__)
    return cause.with_traceback(err.__traceback__)


def collect_activity_tools(agent_types: Iterable[type]) -> list[ActivityTool]:
    """Every activity tool the given agent types use (each once)."""
    found: dict[str, ActivityTool] = {}
    for cls in agent_types:
        for tool in getattr(cls, "tools", ()):
            if not isinstance(tool, ActivityTool):
                continue
            other = found.setdefault(tool.activity_type, tool)
            if other is not tool and other.fn is not tool.fn:
                raise ValueError(
                    f"two different activity tools run as the activity {tool.activity_type!r} "
                    f"({other.fn.__module__}.{other.fn.__qualname__} and "
                    f"{tool.fn.__module__}.{tool.fn.__qualname__}): give one of them another "
                    "`activity_name=`"
                )
    return list(found.values())


__all__ = ["collect_activity_tools", "tool_activity"]
