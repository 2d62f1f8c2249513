"""Perennial's typed errors as HTTP statuses and socket error messages.

Every failure a caller can see has the same body, `{"error": {"type", "message", ...}}`,
where `type` is the Python class name the client raises for it, so web apps branch on the
same names Python callers catch.
"""

from __future__ import annotations

from typing import Any

import structlog
from temporalio.service import RPCError, RPCStatusCode

from perennial.client.agents import AgentUnreachable, AskTimedOut
from perennial.client.connection import TemporalUnavailable
from perennial.client.gateway.auth import Forbidden, Unauthorized
from perennial.client.gateway.hub import TooManyUnapplied
from perennial.workflows.errors import (
    AgentBusy,
    AgentExists,
    AgentNotFound,
    AgentStopped,
    AlreadyDecided,
    ApprovalNotFound,
    ChildAlreadyRunning,
    LimitExceeded,
    MethodNotFound,
    PerennialError,
    ScheduleNotFound,
    StateMigrationFailed,
    TooManySchedules,
    TurnFailed,
    TurnInProgress,
    TurnStopped,
    UnknownAgentType,
    UsageError,
    VersionNotKept,
)

log = structlog.get_logger("perennial.gateway")


class BodyTooLarge(UsageError):
    """The request body is larger than the gateway accepts (`gateway_max_body_bytes`)."""


#: Most specific first: the first class an error is an instance of decides its status.
_STATUS: tuple[tuple[type[Exception], int], ...] = (
    (Unauthorized, 401),
    (Forbidden, 403),
    (UnknownAgentType, 404),
    (AgentNotFound, 404),
    (ScheduleNotFound, 404),
    (ApprovalNotFound, 404),
    (VersionNotKept, 404),
    (MethodNotFound, 404),
    (AlreadyDecided, 409),
    (AgentExists, 409),
    (StateMigrationFailed, 409),
    (AgentStopped, 409),
    (ChildAlreadyRunning, 409),
    (LimitExceeded, 409),
    (TooManySchedules, 409),
    # A conflict with the running turn, not "come back later": never retried automatically.
    (TurnInProgress, 409),
    (TurnStopped, 409),
    (BodyTooLarge, 413),
    (UsageError, 400),
    (AgentBusy, 429),
    (AgentUnreachable, 503),
    (TemporalUnavailable, 503),
    (AskTimedOut, 504),
    (TurnFailed, 500),
    (PerennialError, 500),
)


def classify(err: Exception) -> tuple[int, dict[str, Any], dict[str, str]]:
    """(status, error body, extra headers) for an error raised while serving a request."""
    err = _temporal(err)
    status = next((code for cls, code in _STATUS if isinstance(err, cls)), 500)
    body: dict[str, Any] = {"type": type(err).__name__, "message": str(err)}
    headers: dict[str, str] = {}
    if not isinstance(err, PerennialError):
        log.exception("unexpected error while serving a request", exc_info=err)
        body = {"type": "InternalError", "message": "the gateway failed; see its log"}
    if isinstance(err, Unauthorized):
        headers["WWW-Authenticate"] = err.www_authenticate
    if isinstance(err, AskTimedOut):
        body.update(accepted=True, id=err.message_id)
    if isinstance(err, TurnFailed):
        body.update(error_type=err.error_type, version=err.version)
    if isinstance(err, TurnStopped):
        body.update(by=err.by, kept=err.kept)
    if isinstance(err, AgentBusy) and not isinstance(err, TurnInProgress):
        retry_after = err.retry_after if isinstance(err, TooManyUnapplied) else 1
        headers["Retry-After"] = str(retry_after)
        body["retry_after"] = retry_after
    return status, {"error": body}, headers


def _temporal(err: Exception) -> Exception:
    """A connection failure to Temporal as TemporalUnavailable (other errors unchanged)."""
    if isinstance(err, RPCError) and err.status in (
        RPCStatusCode.UNAVAILABLE, RPCStatusCode.DEADLINE_EXCEEDED
    ):  # fmt: skip
        return TemporalUnavailable(f"Temporal did not answer: {err.message}")
    return err


__all__ = ["BodyTooLarge", "TemporalUnavailable", "classify"]
