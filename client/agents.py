"""The Python client: talk to named agents without caring whether they exist yet.

perennial = await Perennial.connect()
alice = perennial.agent("notes", "alice")
await alice.send("buy milk")                 # signal-with-start
reply = await alice.ask("what's note 1?")    # update-with-start, waits for the reply
async for event in alice.watch(after=0):     # follow the event log live
    ...
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any, NoReturn, TypeVar

import structlog
from pydantic import BaseModel, ConfigDict, JsonValue
from temporalio.api.errordetails.v1 import MultiOperationExecutionFailure, WorkflowNotReadyFailure
from temporalio.client import (
    Client,
    WithStartWorkflowOperation,
    WorkflowExecutionStatus,
    WorkflowQueryFailedError,
    WorkflowUpdateFailedError,
)
from temporalio.common import WorkflowIDConflictPolicy
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError, RPCStatusCode

from client.connection import connect
from client.settings import Settings
from workflows.errors import (
    AgentNotFound,
    InvalidMessage,
    InvalidRequest,
    InvalidSchedule,
    PerennialError,
    RunError,
    from_application_error,
    parse_input,
)
from workflows.messages import (
    AgentStart,
    AskReply,
    CancelScheduleRequest,
    Event,
    EventsPage,
    EventsQuery,
    Message,
    RollbackRequest,
    RollbackResult,
    Schedule,
    ScheduleList,
    ScheduleRequest,
    ScheduleResult,
    StateView,
    WaitEventsRequest,
)
from workflows.registry import agent_class
from workflows.schedules import check_request
from workflows.visibility import (
    AGENT_LAST_ACTIVE,
    AGENT_NAME,
    AGENT_STATUS,
    AGENT_TYPE,
    AGENT_VERSION,
    agent_id,
)

log = structlog.get_logger("perennial.client")


class AskTimedOut(RunError):
    """No reply within the timeout. The message may still be applied later: ask again with
    the same message id to get its reply without applying it twice."""

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
    """The last committed state of an agent, as its agent type's state model."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    version: int
    state: BaseModel
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

#: Delays (seconds) between attempts of an update that the server aborted unadmitted.
_NOT_READY_DELAYS = (0.1, 0.2, 0.4, 0.8, 1.6, 2.0, 2.0, 2.0)


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


async def _retry_not_ready(call: Callable[[], Awaitable[T]], *, workflow_id: str) -> T:
    """`call()`, again after a short wait while the server aborts it as not ready. Found by
    the entity tests: under load about one `ask` in ten that met a continue-as-new failed with
    a raw RPCError ("unexpected workflow task failure") instead of getting its reply."""
    for delay in _NOT_READY_DELAYS:
        try:
            return await call()
        except RPCError as err:
            if not _not_ready(err):
                raise
            log.info("update aborted by a failed workflow task; retrying", agent=workflow_id,
                     delay=delay)  # fmt: skip
        await asyncio.sleep(delay)
    return await call()


class AgentHandle:
    """One named agent. Cheap to create; nothing is sent until you call a method."""

    def __init__(self, client: Client, settings: Settings, agent_type: str, name: str) -> None:
        if not name or not name.strip():
            raise InvalidRequest("an agent name must not be empty")
        self._agent = agent_class(agent_type)  # UnknownAgentType before anything is sent
        self._client = client
        self._settings = settings
        self.agent_type = agent_type
        self.name = name
        self.id = agent_id(agent_type, name)
        #: Seen to exist by this handle: calls go to the workflow directly (see `_get_or_create`).
        self._exists = False

    def __repr__(self) -> str:
        return f"AgentHandle({self.id!r})"

    # ------------------------------------------------------------------ messages

    def _message(self, text: str, sender: str | None, id: str | None, data: JsonValue) -> Message:
        # Only a missing id gets a fresh one: an empty id is a mistake (an unset variable?)
        # and is refused like the agent refuses it, not silently replaced, which would turn
        # off duplicate suppression for a caller who believes it passed an id.
        message_id = str(uuid.uuid4()) if id is None else id
        raw = {"text": text, "sender": sender, "id": message_id, "data": data}
        message = parse_input(Message, raw, error=InvalidMessage)
        return self._agent.check_message(message, agent_type=self.agent_type)

    async def _update_with_start(self, update: str, arg: BaseModel, result_type: type[T]) -> T:
        """Update the agent, creating it if needed (a start operation is single-use: a new
        one for every call)."""
        start = WithStartWorkflowOperation(
            self.agent_type, AgentStart().wire(), **self._start_args()
        )
        try:
            return await self._client.execute_update_with_start_workflow(
                update, arg, start_workflow_operation=start, result_type=result_type
            )
        except BaseException:
            # When the call fails, the SDK also fails the start operation's own future, which
            # nobody awaits: asyncio then logs "Future exception was never retrieved" with a
            # traceback at garbage collection, for every retried call. Collect it here (the
            # SDK has no public way to look without waiting).
            outcome = getattr(start, "_workflow_handle", None)
            if isinstance(outcome, asyncio.Future) and outcome.done() and not outcome.cancelled():
                outcome.exception()
            raise

    async def _get_or_create(
        self, existing: Callable[[], Awaitable[T]], with_start: Callable[[], Awaitable[T]]
    ) -> T:
        """Get-or-create on the first call, a plain call after it. Signal-with-start and
        update-with-start cost the server more than a signal or update to a workflow that
        exists (measured: ~19% fewer signals/s into one agent). Once this handle has seen
        the agent exist it calls it directly, and falls back to the with-start call if the
        agent is gone (a task child that finished, a terminated workflow): the server says
        NOT_FOUND and has delivered nothing."""
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

    def _start_args(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "task_queue": self._settings.task_queue,
            "id_conflict_policy": WorkflowIDConflictPolicy.USE_EXISTING,
            # Shown in the Web UI's workflow list and header.
            "static_summary": f"{self.agent_type} agent {self.name!r}",
        }

    async def send(
        self,
        text: str,
        *,
        sender: str | None = None,
        id: str | None = None,
        data: JsonValue = None,
    ) -> str:
        """Fire-and-forget into the inbox, creating the agent if needed. Returns the message
        id (pass your own `id` to make retries safe: a repeated id is applied once)."""
        message = self._message(text, sender, id, data)
        await self._get_or_create(
            lambda: self._client.get_workflow_handle(self.id).signal("message", message),
            lambda: self._client.start_workflow(
                self.agent_type,
                AgentStart().wire(),
                start_signal="message",
                start_signal_args=[message],
                **self._start_args(),
            ),
        )
        assert message.id is not None
        return message.id

    async def ask(
        self,
        text: str,
        *,
        sender: str | None = None,
        id: str | None = None,
        data: JsonValue = None,
        timeout: float | None = None,
    ) -> AskReply:
        """Send a message and wait for the agent's reply, creating the agent if needed.

        Raises `TurnFailed` if the turn raised (the agent's state is as before), the
        `UsageError` subclasses for bad input, and `AskTimedOut` after `timeout` seconds.
        """
        message = self._message(text, sender, id, data)
        assert message.id is not None

        def call() -> Awaitable[AskReply]:
            # The update id is left to the SDK (unique per call): duplicate suppression is
            # the agent's, by message id, so a retried failed turn is applied afresh rather
            # than answered from the server's per-run update cache.
            return self._get_or_create(
                lambda: self._client.get_workflow_handle(self.id).execute_update(
                    "ask", message, result_type=AskReply
                ),
                lambda: self._update_with_start("ask", message, AskReply),
            )

        try:
            return await asyncio.wait_for(_retry_not_ready(call, workflow_id=self.id), timeout)
        except TimeoutError:
            raise AskTimedOut(
                f"no reply from {self.id} within {timeout}s (is a worker running?); the "
                f"message may still be applied: ask again with id={message.id!r}",
                message_id=message.id,
            ) from None
        except (WorkflowUpdateFailedError, RPCError) as err:
            _reraise(err, workflow_id=self.id)

    # ------------------------------------------------------------------ reads

    async def state_view(self) -> StateView:
        """The last committed state as JSON, with its version (query `state`)."""
        return await self._query("state", None, StateView)

    async def state(self) -> AgentState:
        """The last committed state, parsed into the agent type's state model."""
        view = await self.state_view()
        return AgentState(
            version=view.version,
            state=self._agent.state_model.model_validate(view.state),
            versions_kept=view.versions_kept,
            busy=view.busy,
            inbox=view.inbox,
        )

    async def events(self, *, after: int = 0, limit: int | None = None) -> EventsPage:
        """Events with offset > `after` (query `events`)."""
        query = parse_input(EventsQuery, {"after": after, "limit": limit})
        return await self._query("events", query, EventsPage)

    async def wait_events(
        self, *, after: int = 0, timeout: float = 30.0, limit: int | None = None
    ) -> EventsPage:
        """Long-poll: returns as soon as events after `after` exist, or empty at the timeout."""
        request = parse_input(
            WaitEventsRequest, {"after": after, "timeout_seconds": timeout, "limit": limit}
        )
        handle = self._client.get_workflow_handle(self.id)
        try:
            return await _retry_not_ready(
                lambda: handle.execute_update("wait_events", request, result_type=EventsPage),
                workflow_id=self.id,
            )
        except (WorkflowUpdateFailedError, RPCError) as err:
            _reraise(err, workflow_id=self.id)

    async def watch(self, *, after: int = 0, poll_seconds: float = 30.0) -> AsyncIterator[Event]:
        """Every event after `after`, live, forever (break out when you are done). Survives the
        agent's continue-as-new; resume later by passing the last offset you saw. Raises
        `EventsMissed` if events after `after` have already left the bounded log (nothing is
        skipped silently); resume from its `resume_after`."""
        while True:
            try:
                page = await self.wait_events(after=after, timeout=poll_seconds)
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

    async def rollback(self, version: int) -> RollbackResult:
        """Restore a kept version; the restored state becomes a new version."""
        request = parse_input(RollbackRequest, {"version": version})
        handle = self._client.get_workflow_handle(self.id)
        try:
            return await _retry_not_ready(
                lambda: handle.execute_update("rollback", request, result_type=RollbackResult),
                workflow_id=self.id,
            )
        except (WorkflowUpdateFailedError, RPCError) as err:
            _reraise(err, workflow_id=self.id)

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
            return await handle.query(name, *args, result_type=result_type, rpc_timeout=timeout)
        except (WorkflowQueryFailedError, RPCError) as err:
            _reraise(err, workflow_id=self.id)


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
            agent_class(agent_type)
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
]
