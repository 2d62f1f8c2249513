"""The Python client: talk to named agents without caring whether they exist yet.

    perennial = await Perennial.connect()
    alice = perennial.agent("notes", "alice")
    await alice.send("buy milk")                 # creates alice if needed
    reply = await alice.ask("what's note 1?")    # waits for the reply
    async for event in alice.watch(after=0):     # follow the event log live
        ...

Any agent type works, known to this process or not: a type registered here (an application
module imported, or `--app`) gets its own limits and its callable methods' arguments checked
before sending and its state parsed into its model; any other type is spoken to with the base
limits (calls unchecked: the agent checks them), its state as JSON.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, NoReturn, TypeVar

import structlog
from pydantic import BaseModel, ConfigDict, JsonValue, TypeAdapter, ValidationError
from pydantic_core import PydanticSerializationError, to_jsonable_python
from temporalio.api.errordetails.v1 import (
    MultiOperationExecutionFailure,
    QueryFailedFailure,
    WorkflowNotReadyFailure,
)
from temporalio.client import (
    Client,
    WorkflowExecutionStatus,
    WorkflowQueryFailedError,
    WorkflowUpdateFailedError,
    WorkflowUpdateRPCTimeoutOrCancelledError,
)
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError, RPCStatusCode

from perennial.client.connection import connect
from perennial.client.lifecycle import (
    Recovery,
    recover,
    signal_with_start,
    update_with_start,
)
from perennial.client.settings import Settings
from perennial.client.streaming import TurnFollower
from perennial.client.transfer import (
    ExportSource,
    InvalidExport,
    check_bundle,
    read_export,
    start_from_export,
)
from perennial.workflows.entity import AgentWorkflow
from perennial.workflows.errors import (
    AgentBusy,
    AgentExists,
    AgentNotFound,
    InvalidMessage,
    InvalidRequest,
    InvalidSchedule,
    PerennialError,
    RunError,
    VersionNotKept,
    from_application_error,
    parse_input,
    summarize,
)
from perennial.workflows.llm.budget import SET_BUDGET_UPDATE, USAGE_QUERY
from perennial.workflows.messages import (
    AgentExport,
    AgentName,
    AgentTypeName,
    AskReply,
    Budget,
    BusyPolicy,
    CallReply,
    CallRequest,
    CancelScheduleRequest,
    DecideRequest,
    Decision,
    Event,
    EventsPage,
    EventsQuery,
    ExportRequest,
    Message,
    PendingApproval,
    RollbackRequest,
    RollbackResult,
    Schedule,
    ScheduleList,
    ScheduleRequest,
    ScheduleResult,
    SendReceipt,
    SetBudgetRequest,
    SqlBlob,
    SqlRequest,
    SqlRows,
    StateView,
    StopRequest,
    StopResult,
    StreamItem,
    StreamPosition,
    UsageReport,
    WaitEventsRequest,
)
from perennial.workflows.registry import AGENT_TYPES, agent_types
from perennial.workflows.schedules import check_request
from perennial.workflows.visibility import (
    AGENT_LAST_ACTIVE,
    AGENT_NAME,
    AGENT_STATUS,
    AGENT_TYPE,
    AGENT_VERSION,
    agent_id,
)

log = structlog.get_logger("perennial.client")

_AGENT_TYPE = TypeAdapter(AgentTypeName)
_AGENT_NAME = TypeAdapter(AgentName)


class AskTimedOut(RunError):
    """No reply within the timeout. The message (or call) was accepted and will be applied
    when a worker runs the agent: ask (or call) again with the same id to get its reply
    without applying it twice."""

    def __init__(self, message: str, *, message_id: str):
        super().__init__(message)
        self.message_id = message_id


class EventsMissed(RunError):
    """A watcher fell behind the agent's bounded event log: `missed` events left the log
    before it read them. `watch(after=err.resume_after)` goes on from the oldest event kept."""

    def __init__(self, message: str, *, missed: int, resume_after: int):
        super().__init__(message)
        self.missed = missed
        self.resume_after = resume_after


class AgentUnreachable(RunError):
    """The agent exists, but no worker answered for it in time: none is running on its task
    queue, or all are too busy. Nothing was changed; try again once a worker runs."""


class AgentSummary(BaseModel):
    """One agent as the visibility API sees it (`perennial list`)."""

    model_config = ConfigDict(frozen=True)

    agent_type: str
    name: str
    workflow_id: str
    run_id: str | None
    running: bool
    status: str | None = None
    version: int | None = None
    last_active: datetime | None = None


class AgentState(BaseModel):
    """The last committed state of an agent: its agent type's state model when this process
    knows the type, else the state as JSON."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    version: int
    state: BaseModel | dict[str, JsonValue]
    versions_kept: list[int]
    busy: bool
    inbox: int


def _translate(err: Exception, *, workflow_id: str) -> Exception:
    """Temporal's errors to Perennial's typed errors (or the original if not ours)."""
    if isinstance(err, WorkflowUpdateFailedError) and isinstance(err.cause, ApplicationError):
        return from_application_error(err.cause) or err
    if isinstance(err, WorkflowQueryFailedError):
        return InvalidRequest(str(err))
    if isinstance(err, RPCError) and err.status == RPCStatusCode.NOT_FOUND:
        return AgentNotFound(f"agent {workflow_id!r} does not exist (or is not running)")
    if isinstance(err, RPCError) and err.status == RPCStatusCode.RESOURCE_EXHAUSTED:
        return AgentBusy(
            f"agent {workflow_id!r} has as many requests in flight as the server allows "
            f"({err.message}); retry shortly"
        )
    if isinstance(err, RPCError) and _no_worker_answered(err):
        return AgentUnreachable(
            f"agent {workflow_id!r} did not answer ({err.message}): is a worker running on "
            "its task queue?"
        )
    return err


def _no_worker_answered(err: RPCError) -> bool:
    """A query (or update) that no worker picked up: the server gives up at once when the
    task queue has had no poller lately, or the call runs into its deadline (the server's,
    or the client's `rpc_timeout`, which the SDK reports as CANCELLED "Timeout expired")."""
    message = err.message.lower()
    return (
        err.status == RPCStatusCode.DEADLINE_EXCEEDED
        or (err.status == RPCStatusCode.CANCELLED and "timeout" in message)
        or (err.status == RPCStatusCode.FAILED_PRECONDITION and "no poller" in message)
    )


def _reraise(err: Exception, *, workflow_id: str) -> NoReturn:
    """Raise `err` as Perennial's typed error, or as itself when it is not one of ours
    (`raise err from err` would make it its own cause and hide the real one)."""
    translated = _translate(err, workflow_id=workflow_id)
    if translated is err:
        raise err
    raise translated from err


T = TypeVar("T")

#: Delays (seconds) between attempts of a request the agent could not take yet: an update
#: the server aborted unadmitted, or one refused with AgentBusy (about 12 s in all).
_RETRY_DELAYS = (0.1, 0.2, 0.4, 0.8, 1.6, 2.0, 2.0, 2.0, 2.0)


def _not_ready(err: RPCError) -> bool:
    """True when the server aborted an update before admitting it because the workflow task
    carrying it failed: a continue-as-new raced by new messages (UnhandledCommand), or a task
    the server force-failed under a flood of signals. Nothing reached the agent, so the same
    request may be sent again; the SDK does not retry this case by itself."""
    if err.status != RPCStatusCode.FAILED_PRECONDITION:
        return False
    details = list(err.grpc_status.details)
    multi = MultiOperationExecutionFailure()
    if details and details[0].Unpack(multi):  # update-with-start: a status per operation
        details = [detail for status in multi.statuses for detail in status.details]
    return any(detail.Is(WorkflowNotReadyFailure.DESCRIPTOR) for detail in details)


def _busy(err: BaseException) -> bool:
    """The agent refused for now: its update slots are full, or its run is too full."""
    if isinstance(err, RPCError):
        return err.status == RPCStatusCode.RESOURCE_EXHAUSTED
    if isinstance(err, WorkflowUpdateFailedError) and isinstance(err.cause, ApplicationError):
        return err.cause.type == AgentBusy.__name__
    return False


async def _retrying(
    call: Callable[[], Awaitable[T]], *, workflow_id: str, busy: bool = True
) -> T:
    """`call()`, again after a short wait while the agent cannot take it yet (see
    `_RETRY_DELAYS`; `busy`: also while it says AgentBusy); the last failure is raised."""
    for delay in _RETRY_DELAYS:
        try:
            return await call()
        except (RPCError, WorkflowUpdateFailedError) as err:
            if not ((isinstance(err, RPCError) and _not_ready(err)) or (busy and _busy(err))):
                raise
            log.info("agent not ready for the request; retrying", agent=workflow_id, delay=delay)
        await asyncio.sleep(delay)
    return await call()


def _query_failure(err: WorkflowQueryFailedError) -> PerennialError:
    """A failed query `sql` as Perennial's typed error. Its type is the failure's type where
    the server passes it on (QueryFailedFailure, in the RPC error the SDK raised this from),
    else the name its message starts with (`workflows.sql.query_failure`)."""
    message, kind = err.message, ""
    rpc = err.__context__
    found = QueryFailedFailure()
    if isinstance(rpc, RPCError):
        for detail in rpc.grpc_status.details:
            if detail.Unpack(found) and found.failure.HasField("application_failure_info"):
                kind = found.failure.application_failure_info.type
    if not kind:
        kind = message.partition(": ")[0]
    if message.startswith(f"{kind}: "):
        message = message[len(kind) + 2 :]
    return from_application_error(ApplicationError(message, type=kind)) or InvalidRequest(str(err))


#: Events before the newest that a turn's stream reads first (see `AgentHandle._start_offset`).
STREAM_LOOKBACK_EVENTS = 50

#: How long a read (a query) waits for a worker to answer before AgentUnreachable.
READ_TIMEOUT = timedelta(seconds=10)


def known_agent_class(agent_type: str) -> type[AgentWorkflow[Any]]:
    """The registered class of `agent_type`, or the base class (its default limits) for a
    type this process does not know."""
    if agent_type not in AGENT_TYPES:
        agent_types()  # loads the built-in types
    return AGENT_TYPES.get(agent_type, AgentWorkflow)


class AgentHandle:
    """One named agent. Cheap to create; nothing is sent until you call a method."""

    def __init__(self, client: Client, settings: Settings, agent_type: str, name: str) -> None:
        self.id = agent_id(agent_type, name)
        try:
            _AGENT_TYPE.validate_python(agent_type)
            _AGENT_NAME.validate_python(name)
        except ValidationError as err:
            raise InvalidRequest(
                f"invalid agent {self.id[:80]!r}: a type of 1-100 letters, digits and '_.:-', "
                f"and a name of 1-200 printable characters ({summarize(err)})"
            ) from None
        self._agent = known_agent_class(agent_type)
        self._client = client
        self._settings = settings
        self.agent_type = agent_type
        self.name = name
        #: Seen to exist by this handle: calls go to the workflow directly (see `_get_or_create`).
        self._exists = False

    def __repr__(self) -> str:
        return f"AgentHandle({self.id!r})"

    # ------------------------------------------------------------------ messages

    def _message(
        self,
        text: str,
        sender: str | None,
        id: str | None,
        data: JsonValue,
        on_busy: BusyPolicy | None = None,
    ) -> Message:
        # Only a missing id gets a fresh one: an empty id is a mistake (an unset variable?)
        # and is refused like the agent refuses it, not silently replaced, which would turn
        # off duplicate suppression for a caller who believes it passed an id.
        message_id = str(uuid.uuid4()) if id is None else id
        raw = {"text": text, "sender": sender, "id": message_id, "data": data, "on_busy": on_busy}
        message = parse_input(Message, raw, error=InvalidMessage)
        return self._agent.check_message(message, self.agent_type)

    async def _update_with_start(self, update: str, arg: BaseModel, result_type: type[T]) -> T:
        return await update_with_start(
            self._client, agent_type=self.agent_type, name=self.name,
            task_queue=self._settings.task_queue, update=update, arg=arg, result_type=result_type,
        )  # fmt: skip

    async def _signal_with_start(self, signal: str, arg: BaseModel) -> None:
        await signal_with_start(
            self._client, agent_type=self.agent_type, name=self.name,
            task_queue=self._settings.task_queue, signal=signal, arg=arg,
        )  # fmt: skip

    async def _get_or_create(
        self, existing: Callable[[], Awaitable[T]], with_start: Callable[[], Awaitable[T]]
    ) -> T:
        """Get-or-create on the first call, a plain call after it (signal-with-start and
        update-with-start cost the server more). Once this handle has seen the agent exist it
        calls it directly, and falls back to the with-start call if the run is gone (the
        server says NOT_FOUND and has delivered nothing): a task child that finished starts
        afresh, a terminated agent raises AgentStopped."""
        if self._exists:
            try:
                return await existing()
            except RPCError as err:
                if err.status != RPCStatusCode.NOT_FOUND:
                    raise
                self._exists = False
        result = await with_start()
        self._exists = True
        return result

    async def send(
        self,
        text: str,
        *,
        sender: str | None = None,
        id: str | None = None,
        data: JsonValue = None,
        on_busy: BusyPolicy | None = None,
    ) -> str:
        """Fire-and-forget into the inbox, creating the agent if needed. Returns the message
        id (pass your own `id` to make retries safe: a repeated id is applied once).

        A message up to the type's `max_signal_message_bytes` goes by signal; a larger one by
        update `send`, which the agent may refuse (AgentBusy, retried here) while its run is
        too full to take it."""
        message = self._message(text, sender, id, data, on_busy)
        assert message.id is not None
        if self._agent.fits_in_signal(message):
            try:
                await self._get_or_create(
                    lambda: self._client.get_workflow_handle(self.id).signal("message", message),
                    lambda: self._signal_with_start("message", message),
                )
            except RPCError as err:
                _reraise(err, workflow_id=self.id)
            return message.id
        await self._update(
            lambda: self._client.get_workflow_handle(self.id).execute_update(
                "send", message, result_type=SendReceipt
            ),
            lambda: self._update_with_start("send", message, SendReceipt),
        )
        return message.id

    async def ask(
        self,
        text: str,
        *,
        sender: str | None = None,
        id: str | None = None,
        data: JsonValue = None,
        timeout: float | None = None,
        on_busy: BusyPolicy | None = None,
    ) -> AskReply:
        """Send a message and wait for the agent's reply, creating the agent if needed.

        Raises `TurnFailed` if the turn raised (the agent's state is as before), the
        `UsageError` subclasses for bad input, `AgentStopped` if the agent's last run was
        terminated, and `AskTimedOut` after `timeout` seconds (the message is applied when a
        worker runs: ask again with the same id for its reply). `on_busy` says what the
        message does if a turn is running when it arrives (default: the agent type's
        `busy_policy`): see `perennial.workflows.turn_control`."""
        message = self._message(text, sender, id, data, on_busy)
        return await self._ask(message, timeout)

    async def _ask(self, message: Message, timeout: float | None) -> AskReply:
        assert message.id is not None
        # The update id is left to the SDK (unique per call): duplicate suppression is the
        # agent's, by message id, so a retried failed turn is applied afresh rather than
        # answered from the server's per-run update cache.
        call = self._update(
            lambda: self._client.get_workflow_handle(self.id).execute_update(
                "ask", message, result_type=AskReply
            ),
            lambda: self._update_with_start("ask", message, AskReply),
        )
        return await self._answered(call, timeout, message.id, asked="reply",
                                    accepted="message", again="ask", answer="reply")  # fmt: skip

    async def ask_stream(
        self,
        text: str,
        *,
        sender: str | None = None,
        id: str | None = None,
        data: JsonValue = None,
        timeout: float | None = None,
        on_busy: BusyPolicy | None = None,
        resume: StreamPosition | None = None,
    ) -> AsyncIterator[StreamItem]:
        """`ask`, answered as it is written: text deltas (`DeltaItem`), tool calls and their
        results, a `RestartItem` if a model call is retried (discard that step's text so far),
        and last the `ReplyItem` (the whole reply, as `ask` returns it). Errors are raised as
        `ask` raises them, after the items that came before.

        Each item carries its `position`: to resume after losing the stream, ask again with
        the same `id` and `resume=<the last item's position>`; nothing is applied twice and
        nothing delivered is repeated."""
        message = self._message(text, sender, id, data, on_busy)
        assert message.id is not None
        answer = asyncio.ensure_future(self._ask(message, timeout))
        try:
            if resume is None:  # read while the ask travels (see `_start_offset`)
                resume = StreamPosition(offset=await self._start_offset())
            follower = TurnFollower(
                self._client,
                agent_id=self.id,
                turn=message.id,
                answer=answer,
                position=resume,
                interval=self._settings.stream_interval,
            )
        except BaseException:
            answer.cancel()
            raise
        async for item in follower.items():
            yield item

    async def _start_offset(self) -> int:
        """Where to start reading the agent's log for a turn just asked: a little before its
        newest event, so the turn's first events are read even if the ask was applied before
        this query (events of other turns are skipped by id). 0 for an agent that does not
        exist yet."""
        try:
            return max(0, (await self.state_view()).last_event_offset - STREAM_LOOKBACK_EVENTS)
        except AgentNotFound:
            return 0

    async def stop(self, *, reason: str | None = None, turn: str | None = None) -> StopResult:
        """Stop the turn the agent is running (only if it is `turn`, when given): its model
        and tool calls are cancelled, its caller gets `TurnStopped`, and this returns once
        the turn has ended, with the version after it (`stopped` False: no such turn ran)."""
        request = parse_input(StopRequest, {"reason": reason, "turn": turn})
        handle = self._client.get_workflow_handle(self.id)
        try:
            return await _retrying(
                lambda: handle.execute_update("stop", request, result_type=StopResult),
                workflow_id=self.id,
            )
        except (WorkflowUpdateFailedError, RPCError) as err:
            _reraise(err, workflow_id=self.id)

    async def call(
        self,
        method: str,
        args: Mapping[str, Any] | None = None,
        *,
        id: str | None = None,
        sender: str | None = None,
        timeout: float | None = None,
    ) -> CallReply:
        """Call one of the agent type's callable methods and wait for its result (JSON, in
        `.result`), creating the agent if needed. The call is a turn like a message: a new
        version if it returns, nothing changed if it raises, applied once per `id`.

        `args` are the method's arguments by name (pydantic models, datetimes and the like
        are sent as JSON). When this process knows the agent type they are checked here,
        before anything is sent (`MethodNotFound`, `InvalidRequest`); otherwise the agent
        checks them. Raises `TurnFailed` if the method raised, and `AskTimedOut` after
        `timeout` seconds (call again with the same id for its result)."""
        request = self._call_request(method, args, id, sender)
        assert request.id is not None
        call = self._update(
            lambda: self._client.get_workflow_handle(self.id).execute_update(
                "call", request, result_type=CallReply
            ),
            lambda: self._update_with_start("call", request, CallReply),
        )
        return await self._answered(call, timeout, request.id, asked=f"result of {method}",
                                    accepted="call", again="call", answer="result")  # fmt: skip

    async def _answered(
        self, call: Awaitable[T], timeout: float | None, request_id: str, *,
        asked: str, accepted: str, again: str, answer: str,
    ) -> T:  # fmt: skip
        """`call`'s answer, or AskTimedOut after `timeout` (or the server's own deadline)."""
        try:
            async with asyncio.timeout(timeout):  # no inner task left behind when cancelled
                return await call
        except (TimeoutError, WorkflowUpdateRPCTimeoutOrCancelledError):
            waited = f"within {timeout}s" if timeout is not None else "before the server gave up"
            raise AskTimedOut(
                f"no {asked} from {self.id} {waited}: is a worker running on task queue "
                f"{self._settings.task_queue!r}? The {accepted} was accepted and will be applied "
                f"when one runs; {again} again with id={request_id!r} for its {answer}",
                message_id=request_id,
            ) from None

    def _call_request(
        self, method: str, args: Mapping[str, Any] | None, id: str | None, sender: str | None
    ) -> CallRequest:
        """The wire request, checked against the agent type when this process knows it (so a
        bad first call does not create the agent)."""
        if args is not None and not isinstance(args, Mapping):
            raise InvalidRequest(f"arguments of {method!r} go by name: pass a mapping")
        try:
            jsonable = to_jsonable_python(dict(args or {}))
        except PydanticSerializationError as err:
            raise InvalidRequest(f"arguments of {method!r} cannot be sent as JSON: {err}") from None
        request = parse_input(
            CallRequest,
            {"method": method, "args": jsonable, "sender": sender,
             "id": str(uuid.uuid4()) if id is None else id},
        )  # fmt: skip
        if self._agent is not AgentWorkflow:
            self._agent.check_message(request.as_message(), self.agent_type)
        return request

    async def _update(
        self, existing: Callable[[], Awaitable[T]], with_start: Callable[[], Awaitable[T]]
    ) -> T:
        """A get-or-create update, retried while the agent cannot take it yet, with Temporal's
        errors as Perennial's."""
        try:
            return await _retrying(
                lambda: self._get_or_create(existing, with_start), workflow_id=self.id
            )
        except (WorkflowUpdateFailedError, RPCError) as err:
            _reraise(err, workflow_id=self.id)

    # ------------------------------------------------------------------ reads

    async def state_view(self) -> StateView:
        """The last committed state as JSON, with its version (query `state`)."""
        return await self._query("state", None, StateView)

    async def sql(self, query: str, *params: Any, max_rows: int = 100) -> SqlRows:
        """One read-only SQL statement on the agent's database (query `sql`), with `?`
        parameters (None, bool, int, float, str, bytes): its columns and at most `max_rows`
        rows. Raises `SqlReadOnly` (a write), `SqlNotDeterministic`, `SqlError`,
        `AgentNotFound`. While a turn holds uncommitted changes the agent answers AgentBusy;
        this retries for about 12 s first."""
        values = [SqlBlob.of(bytes(p)) if isinstance(p, bytes | bytearray) else p for p in params]
        request = parse_input(SqlRequest, {"query": query, "params": values, "max_rows": max_rows})
        handle = self._client.get_workflow_handle(self.id)
        for delay in (*_RETRY_DELAYS, None):
            try:
                rows: SqlRows = await handle.query(
                    "sql", request, result_type=SqlRows, rpc_timeout=READ_TIMEOUT
                )
                return rows
            except WorkflowQueryFailedError as err:
                failure = _query_failure(err)
                if delay is None or not isinstance(failure, AgentBusy):
                    raise failure from err
            except RPCError as err:
                _reraise(err, workflow_id=self.id)
            await asyncio.sleep(delay)
        raise AssertionError("unreachable: the last attempt returns or raises")

    async def state(self) -> AgentState:
        """The last committed state, parsed into the agent type's state model when this
        process knows the type."""
        view = await self.state_view()
        model = getattr(self._agent, "state_model", None) if self._agent is not AgentWorkflow else None
        return AgentState(
            version=view.version,
            state=model.model_validate(view.state) if model is not None else view.state,
            versions_kept=view.versions_kept,
            busy=view.busy,
            inbox=view.inbox,
        )

    async def usage(self) -> UsageReport:
        """What this LLM agent's model calls spent (today, UTC, and over its life), the budget
        in force and what is left of it (query `usage`)."""
        self._check_calls_models()
        return await self._query(USAGE_QUERY, None, UsageReport)

    async def set_budget(self, budget: Budget | Mapping[str, Any] | None) -> UsageReport:
        """Give this LLM agent its own budget, which replaces its agent type's whole (None:
        the type's again), and return its usage. An agent of a type this process knows is
        created if needed; any other must exist (`AgentNotFound`). `InvalidRequest` for a bad
        budget or an agent type that calls no model; nothing is changed then."""
        self._check_calls_models()
        request = parse_input(SetBudgetRequest, {"budget": budget})
        handle = self._client.get_workflow_handle(self.id)

        def existing() -> Awaitable[UsageReport]:
            return handle.execute_update(SET_BUDGET_UPDATE, request, result_type=UsageReport)

        if self._agent is AgentWorkflow:  # a type unknown here: a refusal must not create it
            try:
                return await _retrying(existing, workflow_id=self.id)
            except (WorkflowUpdateFailedError, RPCError) as err:
                _reraise(err, workflow_id=self.id)
        return await self._update(
            existing, lambda: self._update_with_start(SET_BUDGET_UPDATE, request, UsageReport)
        )

    def _check_calls_models(self) -> None:
        from perennial.workflows.llm.agent import LLMAgent

        if self._agent is not AgentWorkflow and not issubclass(self._agent, LLMAgent):
            raise InvalidRequest(
                f"{self.agent_type} agents call no model: they have no usage or budget"
            )

    async def events(self, *, after: int = 0, limit: int | None = None) -> EventsPage:
        """Events with offset > `after` (query `events`)."""
        query = parse_input(EventsQuery, {"after": after, "limit": limit})
        return await self._query("events", query, EventsPage)

    async def wait_events(
        self, *, after: int = 0, timeout: float = 30.0, limit: int | None = None
    ) -> EventsPage:
        """Long-poll (at most 60 s): returns as soon as events after `after` exist, or empty
        at the timeout. `AgentBusy` when as many readers wait already as the agent allows."""
        request = parse_input(
            WaitEventsRequest, {"after": after, "timeout_seconds": timeout, "limit": limit}
        )
        handle = self._client.get_workflow_handle(self.id)
        try:
            return await _retrying(
                lambda: handle.execute_update("wait_events", request, result_type=EventsPage),
                workflow_id=self.id,
                busy=False,  # a busy agent's follower polls instead (see `watch`)
            )
        except (WorkflowUpdateFailedError, RPCError) as err:
            _reraise(err, workflow_id=self.id)

    async def watch(self, *, after: int = 0, poll_seconds: float = 30.0) -> AsyncIterator[Event]:
        """Every event after `after`, live, forever (break out when you are done). Survives the
        agent's continue-as-new; resume later by passing the last offset you saw. Raises
        `EventsMissed` if events after `after` have already left the bounded log (nothing is
        skipped silently); resume from its `resume_after`.

        Long-polls (update `wait_events`) while the agent has a waiter slot free, and polls
        query `events` when it has not, so followers never take the slots writes need."""
        polling = _Backoff()
        while True:
            try:
                page = await self._next_page(after, poll_seconds, polling)
            except AgentNotFound:
                # The run may be switching (continue-as-new); only give up if it is gone.
                if not (await self.describe()).running:
                    raise
                await asyncio.sleep(0.2)
                continue
            if page.missed:
                raise EventsMissed(
                    f"{page.missed} events of {self.id} after offset {after} left its event "
                    f"log (it keeps the newest) before they were read; the oldest kept is "
                    f"{page.oldest_offset}",
                    missed=page.missed,
                    resume_after=page.oldest_offset - 1,
                )
            for event in page.events:
                yield event
            after = page.next_after

    async def _next_page(self, after: int, poll_seconds: float, polling: _Backoff) -> EventsPage:
        if not polling.active:
            try:
                return await self.wait_events(after=after, timeout=min(poll_seconds, 60.0))
            except AgentBusy:
                polling.start()
        page = await self.events(after=after)
        if page.events:
            polling.reset()
        else:
            await polling.wait()
        return page

    async def rollback(self, version: int) -> RollbackResult:
        """Restore a kept version; the restored state becomes a new version."""
        request = parse_input(RollbackRequest, {"version": version})
        handle = self._client.get_workflow_handle(self.id)
        try:
            return await _retrying(
                lambda: handle.execute_update("rollback", request, result_type=RollbackResult),
                workflow_id=self.id,
            )
        except (WorkflowUpdateFailedError, RPCError) as err:
            _reraise(err, workflow_id=self.id)

    async def recover(self) -> Recovery:
        """Bring back an agent whose last run was terminated or failed: its last run is
        reset to its last good workflow task, and the signals and updates it received after
        that are applied again (see `client.lifecycle.recover`)."""
        return await recover(self._client, self.id)

    # ------------------------------------------------------------------ fork and export

    async def export(
        self, *, version: int | None = None, with_schedules: bool = False
    ) -> AgentExport:
        """The agent as a bundle (query `export`; the agent goes on undisturbed): its kept
        state versions, or only `version` (`VersionNotKept`), and its pending schedules with
        `with_schedules`. Write it with `bundle.model_dump_json()`; `import_agent` reads it."""
        request = parse_input(ExportRequest, {"version": version, "with_schedules": with_schedules})
        try:
            bundle: AgentExport = await self._query("export", request, AgentExport)
        except InvalidRequest:  # a failed query says no more than its message: which was it?
            if version is not None and version not in (await self.state_view()).versions_kept:
                raise VersionNotKept(f"version {version} of {self.id} is not kept") from None
            raise
        return bundle.model_copy(update={"exported_at": datetime.now(UTC)})

    async def fork(
        self, new_name: str, *, version: int | None = None, with_schedules: bool = False
    ) -> AgentHandle:
        """A new agent `{type}/{new_name}` whose state starts as this agent's at `version`
        (default: the current one, with every kept version); its first event (`forked`) names
        this agent and the version. Schedules are copied with `with_schedules` (recurring
        ones keep their next due time; one-shots already past fire at once); the inbox,
        children, asks, approvals and observations are not. This agent is not touched.
        Raises `AgentExists` (nothing started), `VersionNotKept`."""
        target = AgentHandle(self._client, self._settings, self.agent_type, new_name)
        if target.id == self.id:
            raise AgentExists(f"cannot fork {self.id} onto itself: pick a new name")
        bundle = await self.export(version=version, with_schedules=with_schedules)
        await start_from_export(self._client, bundle, name=new_name,
                                task_queue=self._settings.task_queue, kind="forked")  # fmt: skip
        return target

    # ------------------------------------------------------------------ schedules

    async def schedule(
        self,
        id: str,
        payload: str,
        *,
        after_seconds: float | None = None,
        at: datetime | None = None,
        every_seconds: float | None = None,
        cron: str | None = None,
        timezone: str | None = None,
        created_by: str | None = "client",
    ) -> ScheduleResult:
        """Create the schedule `id`, or replace the agent's schedule with that id (never a
        duplicate), creating the agent if needed. When it falls due, the agent is woken with
        an alarm carrying `payload`.

        Exactly one of: `after_seconds` (once, that long from now), `at` (once; a naive
        datetime is read in `timezone`, else UTC), `every_seconds` (recurring), `cron`
        (recurring; 5 fields, or 6 with seconds last; read in `timezone`, else UTC).

        Raises `InvalidSchedule` (bad timing, cron or time zone; a one-shot time that is not
        in the future by the agent's clock) and `TooManySchedules`; nothing is changed then.
        """
        request = self._schedule_request(
            id=id,
            payload=payload,
            after_seconds=after_seconds,
            at=at,
            every_seconds=every_seconds,
            cron=cron,
            timezone=timezone,
            created_by=created_by,
        )
        try:
            return await self._update_with_start("schedule", request, ScheduleResult)
        except (WorkflowUpdateFailedError, RPCError) as err:
            _reraise(err, workflow_id=self.id)

    def _schedule_request(self, **fields: Any) -> ScheduleRequest:
        """Refuse what can be refused here, before the agent is created for it."""
        request = parse_input(ScheduleRequest, fields, error=InvalidSchedule)
        check_request(request)
        longest = self._agent.max_schedule_payload_chars
        if len(request.payload) > longest:
            raise InvalidSchedule(
                f"payload has {len(request.payload)} characters; {self.agent_type} agents "
                f"accept at most {longest}"
            )
        shortest = self._agent.min_every_seconds
        if request.every_seconds is not None and request.every_seconds < shortest:
            raise InvalidSchedule(
                f"every_seconds={request.every_seconds:g} is below the minimum of "
                f"{shortest:g} for {self.agent_type} agents"
            )
        return request

    async def cancel_schedule(self, id: str) -> Schedule:
        """Cancel a pending schedule and return it (raises `ScheduleNotFound`). An alarm of
        it that already fell due and waits in the inbox is still applied."""
        request = parse_input(CancelScheduleRequest, {"id": id}, error=InvalidSchedule)
        handle = self._client.get_workflow_handle(self.id)
        try:
            return await handle.execute_update("cancel_schedule", request, result_type=Schedule)
        except (WorkflowUpdateFailedError, RPCError) as err:
            _reraise(err, workflow_id=self.id)

    async def schedules(self) -> list[Schedule]:
        """The agent's pending schedules, soonest first (query `schedules`)."""
        found: ScheduleList = await self._query("schedules", None, ScheduleList)
        return found.schedules

    # ------------------------------------------------------------------ approvals

    async def approvals(self, *, timeout: timedelta | None = None) -> list[PendingApproval]:
        """The calls waiting for a person, oldest first (query `approvals`)."""
        found: list[PendingApproval] = await self._query(
            "approvals", None, list[PendingApproval], timeout=timeout
        )
        return found

    async def decide(
        self,
        approval_id: str,
        *,
        approve: bool,
        comment: str | None = None,
        decided_by: str | None = None,
    ) -> Decision:
        """Approve or reject a pending approval; the first decision wins (`AlreadyDecided`,
        `ApprovalNotFound`). The agent is woken with the decision."""
        request = parse_input(
            DecideRequest,
            {"approval_id": approval_id, "approve": approve, "comment": comment,
             "decided_by": decided_by},
        )  # fmt: skip
        handle = self._client.get_workflow_handle(self.id)
        try:
            return await _retrying(
                lambda: handle.execute_update("decide", request, result_type=Decision),
                workflow_id=self.id,
            )
        except (WorkflowUpdateFailedError, RPCError) as err:
            _reraise(err, workflow_id=self.id)

    async def describe(self) -> AgentSummary:
        """The agent's visibility record (raises `AgentNotFound` if it never existed)."""
        try:
            desc = await self._client.get_workflow_handle(self.id).describe()
        except RPCError as err:
            _reraise(err, workflow_id=self.id)
        return _summary(desc)

    async def _query(
        self,
        name: str,
        arg: BaseModel | None,
        result_type: Any,
        *,
        timeout: timedelta | None = None,
    ) -> Any:
        handle = self._client.get_workflow_handle(self.id)
        args = () if arg is None else (arg,)
        try:
            return await handle.query(
                name, *args, result_type=result_type, rpc_timeout=timeout or READ_TIMEOUT
            )
        except (WorkflowQueryFailedError, RPCError) as err:
            _reraise(err, workflow_id=self.id)


class _Backoff:
    """Polling delays for a follower that could not long-poll: 0.25 s doubling to 2 s,
    back to the start when something arrives."""

    def __init__(self) -> None:
        self.active = False
        self._delay = 0.25

    def start(self) -> None:
        self.active = True

    def reset(self) -> None:
        self._delay = 0.25

    async def wait(self) -> None:
        await asyncio.sleep(self._delay)
        self._delay = min(self._delay * 2, 2.0)


def _summary(execution: Any) -> AgentSummary:
    attrs = execution.typed_search_attributes
    agent_type = attrs.get(AGENT_TYPE) or execution.workflow_type
    name = attrs.get(AGENT_NAME) or execution.id.removeprefix(f"{agent_type}/")
    return AgentSummary(
        agent_type=agent_type,
        name=name,
        workflow_id=execution.id,
        run_id=execution.run_id,
        running=execution.status == WorkflowExecutionStatus.RUNNING,
        status=attrs.get(AGENT_STATUS),
        version=attrs.get(AGENT_VERSION),
        last_active=attrs.get(AGENT_LAST_ACTIVE),
    )


def _quote(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


class Perennial:
    """Entry point of the Python client. Build it with `await Perennial.connect()`."""

    def __init__(self, client: Client, settings: Settings) -> None:
        self.client = client
        self.settings = settings

    @classmethod
    async def connect(cls, settings: Settings | None = None) -> Perennial:
        settings = settings or Settings.from_env()
        return cls(await connect(settings), settings)

    def agent(self, agent_type: str, name: str) -> AgentHandle:
        """A handle on the agent `{agent_type}/{name}`; it is created on first message."""
        return AgentHandle(self.client, self.settings, agent_type, name)

    async def import_agent(
        self, bundle: ExportSource, *, name: str | None = None, agent_type: str | None = None
    ) -> AgentHandle:
        """Start an agent from an export (an `AgentExport`, its JSON text or data, or a
        `pathlib.Path` to the file) as `{type}/{name}` (default: the source's name) on this
        client's server, namespace and task queue; its first event (`imported`) names the
        source. `agent_type`, when given, must be the bundle's. Raises `InvalidExport` (a
        bad or foreign file, a type mismatch), `StateMigrationFailed`, `AgentExists`;
        nothing is started then."""
        found = read_export(bundle)
        if agent_type is not None and agent_type != found.agent_type:
            raise InvalidExport(
                f"the export holds a {found.agent_type!r} agent, not a {agent_type!r} one"
            )
        handle = self.agent(found.agent_type, name or found.source_id.partition("/")[2])
        check_bundle(found, known_agent_class(found.agent_type))
        await start_from_export(self.client, found, name=handle.name,
                                task_queue=self.settings.task_queue, kind="imported")  # fmt: skip
        return handle

    async def list_agents(
        self,
        *,
        agent_type: str | None = None,
        status: str | None = None,
        running_only: bool = True,
        limit: int = 100,
    ) -> list[AgentSummary]:
        """Agents by type and status, through the visibility API (newest first)."""
        clauses = ["AgentType IS NOT NULL"]
        if agent_type:
            clauses.append(f"AgentType = {_quote(agent_type)}")
        if status:
            clauses.append(f"AgentStatus = {_quote(status)}")
        if running_only:
            clauses.append("ExecutionStatus = 'Running'")
        found: list[AgentSummary] = []
        async for execution in self.client.list_workflows(" AND ".join(clauses), limit=limit):
            found.append(_summary(execution))
        return found


__all__ = [
    "AgentHandle",
    "AgentState",
    "AgentSummary",
    "AskTimedOut",
    "Perennial",
    "PerennialError",
    "known_agent_class",
]
