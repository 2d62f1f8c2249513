"""Perennial's exceptions, shared by the client and the workflows.

    PerennialError
    ├── UsageError            you used the API wrong; nothing was changed
    │   ├── InvalidMessage        empty, blank, oversized or malformed message
    │   ├── InvalidRequest        any other malformed request (events, rollback, ...)
    │   ├── UnknownAgentType      no agent type of that name is registered
    │   ├── VersionNotKept        rollback to a version that is not (or no longer) kept
    │   └── AgentNotFound         the agent does not exist (reads never create agents)
    └── RunError              the request was valid but the agent could not complete it
        └── TurnFailed            the turn raised; the state was restored to before the turn

Inside Temporal these travel as `ApplicationError(type=<class name>)`; the client turns them
back into these classes, so callers catch Python exceptions, never match strings.
"""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from temporalio.exceptions import ApplicationError

ModelT = TypeVar("ModelT", bound=BaseModel)


class PerennialError(Exception):
    """Base of every error Perennial raises on purpose."""

    #: Retrying the same request cannot succeed.
    non_retryable = True


class UsageError(PerennialError):
    """The request was wrong; nothing was changed."""


class InvalidMessage(UsageError):
    pass


class InvalidRequest(UsageError):
    pass


class UnknownAgentType(UsageError):
    pass


class VersionNotKept(UsageError):
    pass


class AgentNotFound(UsageError):
    pass


class RunError(PerennialError):
    """The request was valid, but the agent could not complete it."""


class TurnFailed(RunError):
    """The agent's turn raised; its state is as it was before the turn."""

    def __init__(self, message: str, *, error_type: str = "", version: int | None = None):
        super().__init__(message)
        self.error_type = error_type
        self.version = version


_BY_NAME: dict[str, type[PerennialError]] = {
    cls.__name__: cls
    for cls in (
        InvalidMessage,
        InvalidRequest,
        UnknownAgentType,
        VersionNotKept,
        AgentNotFound,
        TurnFailed,
    )
}


def to_application_error(err: PerennialError) -> ApplicationError:
    """The form an error takes inside Temporal (update rejections and failures)."""
    details = []
    if isinstance(err, TurnFailed):
        details = [{"error_type": err.error_type, "version": err.version}]
    return ApplicationError(
        str(err), *details, type=type(err).__name__, non_retryable=err.non_retryable
    )


def from_application_error(err: ApplicationError) -> PerennialError | None:
    """Back to the Python exception, or None if the failure is not one of ours."""
    cls = _BY_NAME.get(err.type or "")
    if cls is None:
        return None
    if cls is TurnFailed:
        info = err.details[0] if err.details and isinstance(err.details[0], dict) else {}
        return TurnFailed(
            err.message, error_type=info.get("error_type", ""), version=info.get("version")
        )
    return cls(err.message)


def parse_input(
    model: type[ModelT], raw: Any, *, error: type[UsageError] = InvalidRequest
) -> ModelT:
    """Validate a wire payload (None means "all defaults") into `model`, or raise `error`
    with a readable summary of what is wrong."""
    if isinstance(raw, model):
        return raw
    try:
        return model.model_validate({} if raw is None else raw)
    except ValidationError as err:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'input'}: {e['msg']}" for e in err.errors()
        )
        raise error(f"invalid {model.__name__}: {problems}") from None
