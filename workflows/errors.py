"""Perennial's exceptions, shared by the client and the workflows.

    PerennialError
    ├── UsageError            you used the API wrong; nothing was changed
    │   ├── InvalidMessage        empty, blank, oversized or malformed message
    │   ├── InvalidRequest        any other malformed request (events, rollback, ...)
    │   ├── InvalidStart          a workflow input an agent cannot start from (the run fails
    │   │                         at once; the agent's name stays usable)
    │   ├── LimitExceeded         the agent already holds as many of something (pending asks,
    │   │                         child tasks, observations, approvals) as its type allows
    │   ├── UnknownAgentType      no agent type of that name is registered
    │   ├── VersionNotKept        rollback to a version that is not (or no longer) kept
    │   ├── InvalidSchedule       a schedule that cannot be honoured: timing fields, cron, time
    │   │                         zone, a one-shot time in the past
    │   ├── TooManySchedules      the agent already has as many schedules as its type allows
    │   ├── ScheduleNotFound      cancel of a schedule id the agent does not have
    │   ├── AgentNotFound         the agent does not exist (reads never create agents)
    │   ├── MethodNotFound        a call of a method the agent type does not declare callable
    │   ├── ChildAlreadyRunning   spawn of a child whose agent id is already running
    │   ├── ChildNotFound         cancel of a child this agent has no task in flight with
    │   ├── NotObserving          stop observing an agent that is not observed
    │   ├── ApprovalNotFound      decide on an approval id the agent never asked for
    │   ├── AlreadyDecided        decide on an approval that was already decided (the
    │   │                         first decision wins)
    │   ├── PricesFileInvalid     the worker's price table (PERENNIAL_PRICES_FILE) cannot be
    │   │                         read, or a model's prices are wrong
    │   ├── AgentExists           fork or import into a name that is already an agent
    │   └── SqlError              an SQL statement that failed or was refused (syntax, a
    │       │                     constraint, a missing table, a bad parameter, a step limit)
    │       ├── SqlNotDeterministic   it reads a clock, randomness, the SQLite build or files,
    │       │                         or sets a PRAGMA: it would not replay the same
    │       └── SqlReadOnly           a write through a read-only path (query `sql`,
    │                                 `sql_query`)
    └── RunError              the request was valid but the agent could not complete it
        ├── AgentBusy             not now: the agent's update slots are taken, or its run is
        │   │                     full and about to continue as new; retry shortly
        │   └── TurnInProgress    a message whose busy policy is `reject` arrived mid-turn
        │                         (not retried: send it again when the turn is over)
        ├── AgentStopped          the agent's last run was terminated or failed; nothing was
        │                         sent (`perennial recover` brings it back)
        ├── TurnFailed            the turn raised; the state was restored to before the turn
        │   └── TurnStopped       the turn was stopped (`stop`, or an interrupting message)
        ├── ModelCallFailed       an LLM agent's model call failed for good (raised in a
        │   │                     turn, so callers see TurnFailed with this error_type)
        │   ├── ModelRequestRejected  the endpoint refused the request (4xx): retrying
        │   │                         the same request cannot help
        │   ├── ModelUnavailable      retries ran out (rate limits, 5xx, timeouts)
        │   └── SummaryFailed         the call that summarises older exchanges failed (the
        │                             turn fails; nothing is lost)
        ├── BudgetExceeded        the agent reached a limit of its budget; no model call was
        │                         made (raised in a turn, so callers see TurnFailed)
        ├── StepLimitExceeded     the model kept calling tools past the agent's step limit
        ├── StateTooLarge         the turn grew the state past the agent type's byte limit
        │                         (raised in a turn, so callers see TurnFailed)
        ├── DeliveryFailed        a message to another agent could not be delivered
        ├── AskAgentTimedOut      no answer to `ask_agent` before its deadline (the asker is
        │                         woken with this error type)
        ├── ToolFailed            an activity tool that agent code ran itself (`run_tool`)
        │                         failed for good; `error_type` says how
        └── StateMigrationFailed  a kept state could not be migrated to the agent type's
                                  state schema (a missing or raising step, or a newer state)

Inside Temporal these travel as `ApplicationError(type=<class name>)`; the client turns them
back into these classes, so callers catch Python exceptions, never match strings.
"""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from temporalio.exceptions import ApplicationError

#: How much of a validation error a rejection quotes: a few problems, each shortened.
_MAX_PROBLEMS = 3
_MAX_PART_CHARS = 60

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


class InvalidStart(UsageError):
    pass


class LimitExceeded(UsageError):
    pass


class UnknownAgentType(UsageError):
    pass


class VersionNotKept(UsageError):
    pass


class AgentNotFound(UsageError):
    pass


class MethodNotFound(UsageError):
    pass


class InvalidSchedule(UsageError):
    pass


class TooManySchedules(UsageError):
    pass


class ScheduleNotFound(UsageError):
    pass


class ChildAlreadyRunning(UsageError):
    pass


class ChildNotFound(UsageError):
    pass


class NotObserving(UsageError):
    pass


class ApprovalNotFound(UsageError):
    pass


class AlreadyDecided(UsageError):
    pass


class RunError(PerennialError):
    """The request was valid, but the agent could not complete it."""


class AgentBusy(RunError):
    """The agent cannot take this request right now; the same request may succeed shortly."""

    non_retryable = False


class TurnInProgress(AgentBusy):
    """The agent is running a turn and the message's busy policy is `reject`."""

    non_retryable = True


class AgentStopped(RunError):
    """The agent's last run was terminated or failed; nothing was sent to it."""


class TurnFailed(RunError):
    """The agent's turn raised; its state is as it was before the turn."""

    def __init__(self, message: str, *, error_type: str = "", version: int | None = None):
        super().__init__(message)
        self.error_type = error_type
        self.version = version


class TurnStopped(TurnFailed):
    """The turn was stopped before it answered: `kept` says whether its work so far became
    `version` (an LLM agent keeps the conversation, marked stopped) or was rolled back; `by`
    is "stop" or the id of the message that interrupted it."""

    def __init__(
        self, message: str, *, by: str = "stop", kept: bool = False, version: int | None = None
    ):
        super().__init__(message, error_type="TurnStopped", version=version)
        self.by = by
        self.kept = kept


class ModelCallFailed(RunError):
    """An LLM agent's model call failed for good; `failure` is the activity's stable error type
    (like `ModelBadRequest`), `status_code` the HTTP status if there was one."""

    def __init__(self, message: str, *, failure: str = "", status_code: int | None = None):
        super().__init__(message)
        self.failure = failure
        self.status_code = status_code


class ModelRequestRejected(ModelCallFailed):
    pass


class ModelUnavailable(ModelCallFailed):
    pass


class SummaryFailed(ModelCallFailed):
    """The model call that summarises the exchanges leaving an LLM agent's context window
    failed (raised in a turn: the turn fails and the conversation is kept whole)."""


class BudgetExceeded(RunError):
    """An LLM agent reached a limit of its budget, so no model call was made (raised in a
    turn, so callers see TurnFailed with this error_type). `limit` names it
    (`tokens_per_day`, `tokens_total`, `cost_per_day_usd`, `cost_total_usd`); `spent` and
    `allowed` are in tokens or USD."""

    def __init__(self, message: str, *, limit: str = "", spent: float = 0, allowed: float = 0):
        super().__init__(message)
        self.limit = limit
        self.spent = spent
        self.allowed = allowed


class PricesFileInvalid(UsageError):
    """The price table (`PERENNIAL_PRICES_FILE`) cannot be read, is not TOML, or a model's
    prices are missing or wrong; the message names the file and the line or model."""


class StepLimitExceeded(RunError):
    """The model was still asking for tools when the turn reached its step limit."""


class StateTooLarge(RunError):
    """The turn left the state larger than its agent type allows (`max_state_bytes`): the
    state, its kept versions and the rest of what continue-as-new carries must stay under
    Temporal's 2 MB payload limit, or the agent could never continue."""


class DeliveryFailed(RunError):
    """A message to another agent could not be delivered (retries ran out)."""


class AskAgentTimedOut(RunError):
    """No answer to an `ask_agent` came before its deadline."""


class ToolFailed(RunError):
    """An activity tool that agent code ran itself (`perennial.run_tool`) failed for good:
    `tool` names it, `error_type` is the failure's type (the class name of what the tool
    raised, `ToolError` when it reported a failure, `ToolTimedOut`, `ToolResultInvalid`) and
    `attempts` how many attempts ran (0 when unknown)."""

    def __init__(self, message: str, *, tool: str = "", error_type: str = "", attempts: int = 0):
        super().__init__(message)
        self.tool = tool
        self.error_type = error_type
        self.attempts = attempts


class AgentExists(UsageError):
    """A fork or an import named an agent that already exists (running, or stopped and
    waiting for `recover`); nothing was started."""


class SqlError(UsageError):
    """An SQL statement on the agent's database failed or was refused; the database is as it
    was before the statement."""


class SqlNotDeterministic(SqlError):
    """The statement uses something that would not give the same result when the agent's
    history is replayed: a clock (`date('now')`, `current_timestamp`), randomness
    (`random()`), the SQLite build (`sqlite_version()`), files (`ATTACH`, `VACUUM`,
    `load_extension`), transactions (each turn is one) or a PRAGMA that is not read-only."""


class SqlReadOnly(SqlError):
    """A statement that would change the database, sent through a read-only path."""


class StateMigrationFailed(RunError):
    """A kept state was written with an older (or newer) state schema than the agent type's,
    and could not be migrated: a step is missing, a step raised, or its result does not fit
    the state model. The agent is left as it was."""


_BY_NAME: dict[str, type[PerennialError]] = {
    cls.__name__: cls
    for cls in (
        InvalidMessage,
        InvalidRequest,
        InvalidStart,
        LimitExceeded,
        UnknownAgentType,
        VersionNotKept,
        AgentNotFound,
        MethodNotFound,
        InvalidSchedule,
        TooManySchedules,
        ScheduleNotFound,
        ChildAlreadyRunning,
        ChildNotFound,
        NotObserving,
        ApprovalNotFound,
        AlreadyDecided,
        AgentExists,
        SqlError,
        SqlNotDeterministic,
        SqlReadOnly,
        AgentBusy,
        TurnInProgress,
        AgentStopped,
        StateMigrationFailed,
        TurnFailed,
        TurnStopped,
    )
}


def to_application_error(err: PerennialError) -> ApplicationError:
    """The form an error takes inside Temporal (update rejections and failures)."""
    details = []
    if isinstance(err, TurnStopped):
        details = [{"by": err.by, "kept": err.kept, "version": err.version}]
    elif isinstance(err, TurnFailed):
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
    if cls is TurnStopped:
        info = err.details[0] if err.details and isinstance(err.details[0], dict) else {}
        return TurnStopped(err.message, by=str(info.get("by", "stop")),
                           kept=bool(info.get("kept")), version=info.get("version"))  # fmt: skip
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
        raise error(f"invalid {model.__name__}: {summarize(err)}") from None


def summarize(err: ValidationError) -> str:
    """A validation error in one short line: where and what, never the offending value (it
    may be megabytes, or a secret)."""
    problems = err.errors(include_url=False, include_input=False, include_context=False)
    parts = [
        f"{_where(problem['loc'])}: {_short(problem['msg'])}" for problem in problems[:_MAX_PROBLEMS]
    ]
    more = len(problems) - _MAX_PROBLEMS
    return "; ".join(parts) + (f"; and {more} more" if more > 0 else "")


def _where(loc: tuple[Any, ...]) -> str:
    return ".".join(_short(str(part)) for part in loc) or "input"


def _short(text: str) -> str:
    return text if len(text) <= _MAX_PART_CHARS else text[: _MAX_PART_CHARS - 1] + "…"
