"""The agent entity: one long-lived workflow per named agent.

An agent type subclasses `AgentWorkflow`, names its state model, and implements `on_message`
(and, for typed calls from clients, methods decorated with `callable_method`):

    @agent_type("notes")
    class NotesAgent(AgentWorkflow[NotesState]):
        state_model = NotesState

        async def on_message(self, message: Message) -> str:
            ...

`AgentWorkflow` is a small loop that applies one wake at a time from its inbox, commits each
turn's state as a version, and records events; everything else is a part it owns
(`workflows.parts`): the dedup window, the event log, the versions, the publisher, the run
budget, and one part per feature (alarms, children, messaging, observing, approvals). Wire
handlers stay thin: they decode their argument strictly (`workflows.payloads`), hand it to the
part that owns it, and only ever enqueue.

Inputs never break an agent: every argument is bounded and strictly typed before it can reach
a command, a signal that cannot be applied becomes a `rejected` event, an update is refused
with a typed error before it enters history, and a start input the agent cannot start from
fails the run at once (`InvalidStart`), so the name stays usable.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import timedelta
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, ClassVar, Generic, Literal, TypeVar, assert_never

from pydantic import JsonValue, ValidationError
from pydantic_core import from_json
from temporalio import workflow
from temporalio.common import RawValue, RetryPolicy

from perennial.workflows.alarms import AlarmLimits, Alarms
from perennial.workflows.approvals import Approvals
from perennial.workflows.children import Children
from perennial.workflows.clock import seconds_until
from perennial.workflows.dedup import SeenWindow
from perennial.workflows.errors import (
    AgentBusy,
    InvalidMessage,
    InvalidRequest,
    InvalidSchedule,
    InvalidStart,
    MethodNotFound,
    PerennialError,
    StateMigrationFailed,
    StateTooLarge,
    TurnFailed,
    TurnInProgress,
    TurnStopped,
    UsageError,
    parse_input,
    summarize,
    to_application_error,
)
from perennial.workflows.eventlog import EventLog
from perennial.workflows.export import EXPORT_QUERY, build_export, record_origin
from perennial.workflows.inbox import Inbox
from perennial.workflows.messages import (
    MAX_TEXT_CHARS,
    AgentExport,
    AgentReplyWake,
    AgentStart,
    AlarmWake,
    ApprovalWake,
    AskReply,
    BusyPolicy,
    CallReply,
    CallRequest,
    CancelScheduleRequest,
    ChildFinishedWake,
    ChildRecord,
    ContinuedAsNewEvent,
    DecideRequest,
    Decision,
    Event,
    EventsPage,
    EventsQuery,
    ExportRequest,
    Message,
    MessageWake,
    MethodCall,
    PeerChangedWake,
    PendingApproval,
    PendingAsk,
    RollbackRequest,
    RollbackResult,
    RollbackWake,
    RolledBackEvent,
    Schedule,
    ScheduleList,
    ScheduleRequest,
    ScheduleResult,
    SendReceipt,
    SqlRequest,
    SqlRows,
    StateView,
    StopRequest,
    StopResult,
    Subscription,
    SubscriptionCheck,
    TurnEvent,
    TurnFailedEvent,
    TurnStoppedEvent,
    UsageReport,
    WaitEventsRequest,
    Wake,
    preview,
)
from perennial.workflows.messaging import Messaging
from perennial.workflows.migrations import Migration, StateSchema
from perennial.workflows.observing import CONFIRM_SUBSCRIPTION_QUERY, Observing
from perennial.workflows.packing import pack_carried, unpack_carried
from perennial.workflows.parts import AgentContext, Part, SignalHandler, overrides
from perennial.workflows.payloads import MISSING, decode
from perennial.workflows.publisher import Publisher, PublishPolicy
from perennial.workflows.run_budget import NEXT_TASK_ACTIVITY, RunBudget, RunLimits
from perennial.workflows.sql import (
    SqlDatabase,
    SqlLimits,
    SqlResult,
    check_carried,
    query_failure,
)
from perennial.workflows.turn_control import StopRequested, TurnControl
from perennial.workflows.versions import Versions
from perennial.workflows.visibility import AgentStatus, split_agent_id

with workflow.unsafe.imports_passed_through():
    from pydantic import BaseModel

if TYPE_CHECKING:  # workflows.callables imports the LLM tools, which import this module
    from perennial.workflows.callables import CallableMethod

StateT = TypeVar("StateT", bound=BaseModel)

#: Errors that mean the workflow code itself is broken for this history: they must fail the
#: workflow task (so a fixed deploy can resume it), never be turned into a failed turn.
_CODE_ERRORS = (workflow.NondeterminismError, workflow.ReadOnlyContextError)

#: JSON characters of a message besides the contents of its strings (see `check_message`).
_MESSAGE_KEYS_CHARS = len(Message.model_construct(text="").model_dump_json())

#: The wire signal that delivers a message.
MESSAGE_SIGNAL = "message"

__all__ = ["MESSAGE_SIGNAL", "NEXT_TASK_ACTIVITY", "AgentWorkflow"]


class AgentWorkflow(Generic[StateT]):
    """Base of every agent type. Subclasses set `state_model` and implement `on_message` (and
    optionally the other `on_*` hooks); `perennial.agent_type` makes one a workflow. The class
    attributes below are the knobs."""

    state_model: ClassVar[type[BaseModel]]
    #: The agent type's name (set by `agent_type`; the workflow type name).
    agent_type_name: ClassVar[str]
    #: The methods clients may call, by name (`callable_method`; collected by `agent_type`).
    callable_methods: ClassVar[Mapping[str, CallableMethod]] = MappingProxyType({})

    # --- state and history kept per agent
    #: Committed versions kept for rollback (each is a full copy of the state).
    max_versions: ClassVar[int] = 10
    #: The version of the state's shape, and the steps from each older one (k -> k + 1) that
    #: kept states written before are migrated with when read (workflows.migrations).
    state_schema_version: ClassVar[int] = 0
    state_migrations: ClassVar[Mapping[int, Migration]] = MappingProxyType({})
    #: Events kept in the log (older ones are dropped; offsets keep counting).
    event_log_size: ClassVar[int] = 500
    #: Message ids remembered for duplicate suppression (with their replies).
    dedup_window: ClassVar[int] = 2_000

    # --- messages
    #: What a message arriving mid-turn does unless it says (`Message.on_busy`): see
    #: `workflows.turn_control`.
    busy_policy: ClassVar[BusyPolicy] = "queue"
    #: Longest message text accepted.
    max_text_chars: ClassVar[int] = MAX_TEXT_CHARS
    #: Largest message accepted, as JSON (text, sender, id and data together), by update.
    max_message_bytes: ClassVar[int] = 128 * 1024
    #: Largest message accepted by signal. A signal cannot be refused: it is in history
    #: before the agent sees it. At most 100 signals wait behind a running workflow task (the
    #: server's buffered-events limit), so 16 KiB keeps them under its 2 MiB buffered-bytes
    #: limit too; larger messages go by update (`send`, `ask`), which can be refused.
    max_signal_message_bytes: ClassVar[int] = 16 * 1024

    # --- the run budget (see workflows.run_budget)
    #: Continue-as-new past these, at a quiet moment. The dev server rejects a run's
    #: 10,001st signal and 2,001st update; shorter runs also wake faster after eviction.
    max_history_events: ClassVar[int] = 2_500
    max_history_bytes: ClassVar[int] = 8 * 1024 * 1024
    max_signals_per_run: ClassVar[int] = 5_000
    max_updates_per_run: ClassVar[int] = 1_000
    #: ... and past these at once, even in the middle of a flood.
    force_switch_signals: ClassVar[int] = 6_000
    force_switch_updates: ClassVar[int] = 1_800
    force_switch_history_events: ClassVar[int] = 6_000
    force_switch_history_bytes: ClassVar[int] = 16 * 1024 * 1024
    #: Updates that would grow the run's history past this are refused (`AgentBusy`; the
    #: client retries after the switch), far below the server's 50 MB history limit.
    refuse_updates_history_bytes: ClassVar[int] = 24 * 1024 * 1024
    #: An idle agent whose run replays at least this many events continues as new after
    #: this long without work, so a hibernated agent replays a short history when it wakes.
    compact_idle_after: ClassVar[timedelta | None] = timedelta(seconds=30)
    compact_min_history_events: ClassVar[int] = 200
    #: Wakes applied in one workflow task before the loop lets the task end.
    max_wakes_per_task: ClassVar[int] = 100

    # --- byte budgets of what continue-as-new carries (Temporal refuses payloads over 2 MB)
    #: A turn that leaves the state larger fails (StateTooLarge) and is rolled back.
    max_state_bytes: ClassVar[int] = 256 * 1024
    max_versions_bytes: ClassVar[int] = 768 * 1024
    max_dedup_bytes: ClassVar[int] = 256 * 1024
    max_carried_inbox_bytes: ClassVar[int] = 384 * 1024

    # --- the SQL database (`self.sql`; see workflows.sql)
    #: Its size (page_count * page_size): a statement that would grow it further fails
    #: (StateTooLarge) and changes nothing.
    max_sql_bytes: ClassVar[int] = 1024 * 1024
    #: The log that restores older versions; past it, the oldest versions are dropped.
    max_sql_log_bytes: ClassVar[int] = 256 * 1024
    #: What continue-as-new carries of it (compressed); past it, only the current version.
    max_sql_carried_bytes: ClassVar[int] = 1024 * 1024
    #: SQLite steps one statement may take (a count, so the limit replays the same).
    max_sql_steps: ClassVar[int] = 50_000_000

    # --- reads
    #: Default wait of `wait_events` (at most 60 s), and how many may wait at once: each
    #: holds one of the workflow's 10 in-flight update slots, which writes need.
    wait_events_default_seconds: ClassVar[float] = 30.0
    max_event_waiters: ClassVar[int] = 3

    # --- search attributes (see workflows.publisher)
    publish_interval: ClassVar[timedelta] = timedelta(seconds=2)
    publish_burst: ClassVar[int] = 2
    publish_version_interval: ClassVar[timedelta] = timedelta(seconds=10)

    # --- features
    #: Most schedules one agent may have at once; shortest `every_seconds`; longest payload.
    max_schedules: ClassVar[int] = 100
    min_every_seconds: ClassVar[float] = 1.0
    max_schedule_payload_chars: ClassVar[int] = 4_000
    #: Child tasks in flight; agent types the model may spawn (code is not limited).
    max_children: ClassVar[int] = 100
    spawnable_agent_types: ClassVar[tuple[str, ...]] = ()
    #: `ask_agent` requests waiting for answers; their default deadline; delivery.
    max_pending_asks: ClassVar[int] = 100
    ask_timeout: ClassVar[timedelta] = timedelta(minutes=5)
    delivery_timeout: ClassVar[timedelta] = timedelta(seconds=30)
    delivery_retry_policy: ClassVar[RetryPolicy] = RetryPolicy(
        initial_interval=timedelta(milliseconds=500),
        backoff_coefficient=2.0,
        maximum_interval=timedelta(seconds=10),
        maximum_attempts=10,
    )
    #: Agents this one may observe, and (confirmed) agents that may observe it.
    max_observing: ClassVar[int] = 32
    max_observers: ClassVar[int] = 32
    #: Pending approvals; decisions remembered (a late second `decide` gets AlreadyDecided).
    max_pending_approvals: ClassVar[int] = 100
    decisions_kept: ClassVar[int] = 200

    @workflow.init
    def __init__(self, start: RawValue = MISSING) -> None:
        info = workflow.info()
        self._info = info
        self.agent_type = info.workflow_type
        self.agent_name = split_agent_id(info.workflow_id, info.workflow_type)
        self._schema = StateSchema(self.agent_type, self.state_schema_version,
                                   self.state_migrations, self.state_model)  # fmt: skip
        carried, self._bad_start = self._read_start(start)
        self._generation = carried.generation
        self._versions = Versions(
            keep=self.max_versions, max_bytes=self.max_versions_bytes, snapshots=carried.snapshots,
            schema_version=self.state_schema_version,
        )  # fmt: skip
        if self._versions.empty:
            self._versions.commit(self.initial_state().model_dump_json())
        self.state: StateT = self._restore(self._versions.current_json)
        self._events = EventLog(
            capacity=self.event_log_size, events=carried.events, next_offset=carried.next_offset
        )
        if carried.origin is not None and carried.generation == 0:  # a fork's or import's start
            record_origin(self._events, carried.origin)
        self._seen = SeenWindow(
            capacity=self.dedup_window, max_bytes=self.max_dedup_bytes, seen=carried.seen
        )
        self._inbox = Inbox(carried.inbox, seen=self._seen, events=self._events)
        self._budget = RunBudget(self._run_limits(), info)
        self._build_parts(carried)
        self._busy = False
        self._draining = False
        self._event_waiters = 0

    def _read_start(
        self, raw: RawValue
    ) -> tuple[AgentStart, InvalidStart | StateMigrationFailed | None]:
        """The start input, or (an empty start, why it is unusable): the run then fails at
        once instead of failing its first workflow task forever. The current state is migrated
        to the type's state schema here (StateMigrationFailed fails the run the same way; its
        input stays in history for `recover` after a fixed deploy: workflows.migrations)."""
        try:
            carried = unpack_carried(
                decode(raw, AgentStart, error=InvalidStart, default=AgentStart())
            )
            if carried.snapshots:
                current = self._schema.migrate(carried.snapshots[-1])
                carried.snapshots[-1] = current
                self._restore(current.state_json)  # the state it would restore must load
            check_carried(
                carried.sql, version=carried.snapshots[-1].version if carried.snapshots else 0
            )
        except (InvalidStart, StateMigrationFailed) as err:
            return AgentStart(), err
        except Exception as err:  # a snapshot or packed bulk that is bad
            detail = summarize(err) if isinstance(err, ValidationError) else str(err)[:200]
            return AgentStart(), InvalidStart(f"invalid AgentStart: {type(err).__name__}: {detail}")
        return carried, None

    def _run_limits(self) -> RunLimits:
        return RunLimits(
            max_history_events=self.max_history_events,
            max_history_bytes=self.max_history_bytes,
            max_signals_per_run=self.max_signals_per_run,
            max_updates_per_run=self.max_updates_per_run,
            force_switch_signals=self.force_switch_signals,
            force_switch_updates=self.force_switch_updates,
            force_switch_history_events=self.force_switch_history_events,
            force_switch_history_bytes=self.force_switch_history_bytes,
            refuse_updates_history_bytes=self.refuse_updates_history_bytes,
            max_wakes_per_task=self.max_wakes_per_task,
            compact_idle_after=self.compact_idle_after,
            compact_min_history_events=self.compact_min_history_events,
        )

    def _build_parts(self, carried: AgentStart) -> None:
        ctx = AgentContext(
            agent_id=self._info.workflow_id,
            agent_type=self.agent_type,
            task_queue=self._info.task_queue,
            events=self._events,
            inbox=self._inbox,
            version=lambda: self._versions.version,
        )
        self._ctx = ctx
        self._turns = TurnControl(ctx, inbox=self._inbox, default_policy=self.busy_policy)
        self._alarms = Alarms(
            ctx,
            carried.alarms,
            limits=AlarmLimits(
                max_schedules=self.max_schedules,
                min_every_seconds=self.min_every_seconds,
                max_payload_chars=self.max_schedule_payload_chars,
            ),
            inbox=self._inbox,
        )
        self._children = Children(
            ctx, carried.children, max_children=self.max_children, parse_message=self._parse_message
        )
        self._messaging = Messaging(
            ctx,
            carried.messaging,
            max_pending_asks=self.max_pending_asks,
            delivery_timeout=self.delivery_timeout,
            delivery_retry_policy=self.delivery_retry_policy,
            parse_message=self._parse_message,
        )
        self._observing = Observing(
            ctx,
            carried.observing,
            inbox=self._inbox,
            max_observing=self.max_observing,
            max_observers=self.max_observers,
        )
        self._approvals = Approvals(
            ctx, carried.approvals, keep=self.decisions_kept, max_pending=self.max_pending_approvals
        )
        self._sql = SqlDatabase(ctx, carried.sql, versions=self._versions, limits=SqlLimits(
            max_bytes=self.max_sql_bytes, max_log_bytes=self.max_sql_log_bytes,
            max_carried_bytes=self.max_sql_carried_bytes, max_steps=self.max_sql_steps,
        ))  # fmt: skip
        #: Idle status: the first part with a say wins (a waiting approval beats an alarm).
        self._parts: tuple[Part, ...] = (
            self._approvals,
            self._alarms,
            self._children,
            self._messaging,
            self._observing,
            self._sql,
        )
        self._turn_parts = [
            p for p in self._parts if overrides(p, "begin_turn") or overrides(p, "end_turn")
        ]
        self._signal_handlers: dict[str, SignalHandler] = {MESSAGE_SIGNAL: self._on_message}
        for part in self._parts:
            self._signal_handlers.update(part.signals())
        self._publisher = Publisher(
            agent_type=self.agent_type,
            agent_name=self.agent_name,
            policy=PublishPolicy(
                interval=self.publish_interval,
                burst=self.publish_burst,
                version_interval=self.publish_version_interval,
            ),
            version=lambda: self._versions.version,
            details=self._status_line,
            next_alarm=self._alarms.next_due,
        )
        task = carried.children.task
        if task is not None and carried.generation == 0:
            # A child's task is its first message; a later run finds it in the carried inbox.
            self._inbox.admit(task.message, awaited=False, now=workflow.now())

    # ------------------------------------------------------------------ for agent types

    def initial_state(self) -> StateT:
        """The state of a brand-new agent; the default builds `state_model()`."""
        return self.state_model()  # type: ignore[return-value]

    async def on_message(self, message: Message) -> str | None:
        """Apply one message to `self.state` and return the reply. Raising fails the turn:
        the state is restored to the last committed version and `ask` callers get
        `TurnFailed`."""
        raise NotImplementedError(f"{type(self).__name__} does not implement on_message")

    async def on_alarm(self, alarm: AlarmWake) -> str | None:
        """Apply a due alarm; the default hands it to `on_message` as `alarm.as_message()`:
        text = payload, sender `alarm:<schedule id>`, data = due time, fire time, missed."""
        return await self.on_message(alarm.as_message())

    async def on_child_finished(self, wake: ChildFinishedWake) -> str | None:
        """Apply a child's report; the default hands it to `on_message`."""
        return await self.on_message(wake.as_message())

    async def on_agent_reply(self, wake: AgentReplyWake) -> str | None:
        """Apply an answer to `ask_agent` (or its timeout); the default hands it to
        `on_message`."""
        return await self.on_message(wake.as_message())

    async def on_peer_changed(self, wake: PeerChangedWake) -> str | None:
        """Apply an observed agent's change; the default hands it to `on_message`."""
        return await self.on_message(wake.as_message())

    async def on_approval(self, wake: ApprovalWake) -> str | None:
        """Apply a decision on a call that waited for a person; the default hands it to
        `on_message`."""
        return await self.on_message(wake.as_message())

    def on_turn_stopped(self, *, by: str, reason: str | None) -> bool:
        """A running turn was stopped (by "stop" or by the id of an interrupting message):
        True keeps what it did so far as a new version, False (the default) rolls it back.
        The turn's coroutine was cancelled at an `await`, so only keep a state that is
        consistent at every await point."""
        return False

    def take_steering(self) -> list[Message]:
        """Messages that arrived during this turn with policy `steer`: they leave the inbox
        and join this turn (their callers get its reply). Call it where the turn can take
        more input, e.g. between steps; messages not taken get their own turn."""
        return self._turns.take_steering()

    @property
    def version(self) -> int:
        """The last committed state version."""
        return self._versions.version

    @property
    def generation(self) -> int:
        """How many runs this agent had before this one (continue-as-new starts a run)."""
        return self._generation

    def record(self, kind: type[Event], **fields: Any) -> int:  # type: ignore[valid-type]
        """Add an event to this agent's log, stamped now; returns its offset."""
        return self._ctx.record(kind, **fields)

    def show(self, doing: str) -> None:
        """Say what the agent is doing in its current details (Web UI, `describe`)."""
        self._publisher.show(doing)

    def usage_report(self) -> UsageReport | None:
        """Model usage and budget, for `StateView.usage`; None: an agent that calls no model
        (LLM agents answer, see `workflows.llm.budget`)."""
        return None

    def mark_working(self) -> None:
        """Publish AgentStatus 'working': call it when a turn is about to wait (for an
        activity, a child, a timer), so `AgentStatus='working'` finds agents mid-turn."""
        self._publisher.working()

    # Schedules (see workflows.alarms). Changes a turn makes are undone if the turn fails.

    def add_schedule(
        self, request: ScheduleRequest, *, created_by: str | None = None
    ) -> ScheduleResult:
        """Create a schedule, or replace the one with its id (`InvalidSchedule`,
        `TooManySchedules`)."""
        return self._alarms.store(self._alarms.plan(request, created_by=created_by), by_turn=True)

    def cancel_schedule(self, schedule_id: str) -> Schedule:
        """Remove a pending schedule and return it (`ScheduleNotFound`)."""
        return self._alarms.drop(schedule_id, by_turn=True)

    def list_schedules(self) -> list[Schedule]:
        """The pending schedules, soonest first."""
        return self._alarms.entries()

    @property
    def next_alarm(self) -> Schedule | None:
        return self._alarms.earliest()

    # Children (see workflows.children).

    async def spawn_child(
        self, agent_type: str, name: str, task: str, *, keep: bool = False, data: Any = None
    ) -> ChildRecord:
        """Start `{agent_type}/{name}` as a child whose first message is `task`; this agent
        is woken with a `child_finished` wake when the task ends. `keep=True`: the child lives
        on afterwards. Raises `InvalidMessage`, `InvalidRequest`, `ChildAlreadyRunning`,
        `LimitExceeded`. The agent type is not checked here (workflow code cannot see the
        worker's registry). A turn that spawns and then fails leaves the child running."""
        return await self._children.spawn(agent_type, name, task, keep=keep, data=data)

    async def cancel_child(self, child_id: str) -> ChildRecord:
        """Ask a child to cancel its task (`ChildNotFound` if none is in flight)."""
        return await self._children.cancel(child_id)

    @property
    def children(self) -> list[ChildRecord]:
        """The children whose tasks are in flight, oldest first."""
        return self._children.in_flight

    # Messages to other agents (see workflows.messaging).

    async def send_to_agent(
        self, agent_type: str, name: str, text: str, *, data: Any = None
    ) -> str:
        """Deliver `text` into `{agent_type}/{name}`'s inbox (creating it if needed); returns
        the message id. Raises `InvalidMessage`, `UnknownAgentType`, `DeliveryFailed`."""
        return await self._messaging.send(agent_type, name, text, data=data)

    async def ask_agent(
        self,
        agent_type: str,
        name: str,
        text: str,
        *,
        timeout_seconds: float | None = None,
        data: Any = None,
    ) -> PendingAsk:
        """Ask `{agent_type}/{name}` and return at once; this agent is woken with an
        `agent_reply` wake when the answer arrives or the ask times out."""
        return await self._messaging.ask(
            agent_type, name, text, timeout=self._ask_timeout(timeout_seconds), data=data
        )

    async def ask_agent_and_wait(
        self,
        agent_type: str,
        name: str,
        text: str,
        *,
        timeout_seconds: float | None = None,
        data: Any = None,
    ) -> AgentReplyWake:
        """Ask, and wait inside the running turn for the answer (or the timeout: status
        `timed_out`); no wake is queued. The agent handles nothing else meanwhile."""
        ask = await self._messaging.ask(
            agent_type,
            name,
            text,
            timeout=self._ask_timeout(timeout_seconds),
            data=data,
            in_turn=True,
        )
        return await self._messaging.wait_for(ask.correlation_id)

    def _ask_timeout(self, seconds: float | None) -> timedelta:
        return self.ask_timeout if seconds is None else timedelta(seconds=seconds)

    @property
    def pending_asks(self) -> list[PendingAsk]:
        return self._messaging.pending

    # Observing other agents (see workflows.observing).

    async def observe(
        self,
        agent_type: str,
        name: str,
        *,
        watch: Literal["state", "events"] = "state",
        debounce_seconds: float = 2.0,
    ) -> Subscription:
        """Be woken with `peer_changed` when `{agent_type}/{name}` changes."""
        return await self._observing.observe(agent_type, name, watch=watch,
                                             debounce=debounce_seconds)  # fmt: skip

    async def stop_observing(self, agent_type: str, name: str) -> Subscription:
        return await self._observing.stop(agent_type, name)

    @property
    def observed(self) -> list[Subscription]:
        """The agents this one observes."""
        return self._observing.observing

    # Approvals (see workflows.approvals).

    def request_approval(
        self,
        tool: str,
        arguments: str,
        *,
        call_id: str | None = None,
        message_id: str | None = None,
        deadline: timedelta | None = None,
    ) -> PendingApproval:
        """Record a call that waits for a person; this agent is woken with the decision."""
        return self._approvals.request(
            tool, arguments, call_id=call_id, message_id=message_id, deadline=deadline
        )

    @property
    def pending_approvals(self) -> list[PendingApproval]:
        return self._approvals.pending

    # The SQL database (see workflows.sql). Part of the state: a failed turn undoes it.

    def sql(self, query: str, *params: Any) -> SqlResult:
        """Run one SQLite statement on this agent's database, with `?` parameters (None, int,
        float, str, bytes): `self.sql("SELECT name FROM t WHERE id = ?", 7).rows`. Only in a
        turn. Raises `SqlError` (`SqlNotDeterministic` for clocks, randomness, files and
        transactions) and `StateTooLarge` past `max_sql_bytes`; the statement then changed
        nothing."""
        return self._sql.execute(query, params)

    def sql_read(self, query: str, *params: Any, max_rows: int = 100) -> SqlRows:
        """A read-only statement (`SqlReadOnly` for a write), at most `max_rows` rows; it
        sees what this turn changed so far. Only in a turn."""
        return self._sql.read(query, params, max_rows=max_rows, in_turn=True)

    def sql_schema(self) -> str:
        """The database's CREATE statements, one per line ("" while it is empty)."""
        return self._sql.schema()

    # ------------------------------------------------------------------ wire: signals

    @workflow.signal(dynamic=True)
    def _signal(self, name: str, args: Sequence[RawValue]) -> None:
        # One handler for every signal: the SDK drops a signal whose argument it cannot
        # decode, and a handler raising fails the workflow task for good (the signal stays
        # in history). Here each becomes a `rejected` event instead.
        self._budget.count_arrival()
        handler = self._signal_handlers.get(name)
        if handler is None:
            known = ", ".join(sorted(self._signal_handlers))
            self._ctx.reject(f"signal {name[:60]!r}", f"no such signal (known: {known})")
            return
        if len(args) > 1:
            self._ctx.reject(f"signal {name!r}", f"takes one argument, got {len(args)}")
            return
        try:
            handler(args[0] if args else MISSING)
        except _CODE_ERRORS:
            raise
        except (UsageError, TurnInProgress) as err:
            self._ctx.reject(f"signal {name!r}", str(err))
        except Exception as err:  # a bug that an input found: recorded, never a wedge
            workflow.logger.exception("signal %s could not be applied", name)
            self._ctx.reject(f"signal {name!r}", f"{type(err).__name__}: {str(err)[:200]}")

    def _on_message(self, raw: RawValue) -> None:
        size = len(raw.payload.data)
        if size > self.max_signal_message_bytes:
            raise InvalidMessage(
                f"message is {size} bytes; by signal {self.agent_type} agents accept at most "
                f"{self.max_signal_message_bytes} (send larger ones with update `send` or `ask`)"
            )
        message = self.check_message(decode(raw, Message, error=InvalidMessage), self.agent_type)
        self._admit(message, awaited=False)

    def _admit(self, message: Message, *, awaited: bool, update: bool = False) -> tuple[str, bool]:
        """Into the inbox, as the message's busy policy says (see `workflows.turn_control`);
        its id and whether it was queued now. TurnInProgress: refused, and logged as such."""
        if not self._inbox.knows(message.id):  # a repeat gets the first one's answer
            try:
                self._turns.before_admit(message)
            except TurnInProgress as err:
                if update:  # a signal's refusal is logged by `_signal`
                    self._ctx.reject(f"message {message.id!r}", str(err))
                raise
        message_id, queued = self._inbox.admit(message, awaited=awaited, now=workflow.now())
        if queued:
            self._turns.after_admit(message_id, message)
        return message_id, queued

    # ------------------------------------------------------------------ wire: updates

    @workflow.update(name="ask")
    async def ask_update(self, raw: RawValue = MISSING) -> AskReply:
        self._budget.count_arrival(update=True)
        with _typed_failure():
            message_id, _ = self._admit(self._read_message(raw), awaited=True, update=True)
        seen = self._seen.get(message_id)
        if seen is not None:
            return AskReply(id=seen.id, reply=seen.reply, version=seen.version)
        outcome = await self._inbox.outcome("message", message_id)
        assert isinstance(outcome, AskReply)
        return outcome

    @ask_update.validator
    def _validate_ask(self, raw: RawValue = MISSING) -> None:
        with _typed_failure():
            self._admission_check(raw)

    @workflow.update(name="send")
    def send_update(self, raw: RawValue = MISSING) -> SendReceipt:
        self._budget.count_arrival(update=True)
        with _typed_failure():
            message_id, queued = self._admit(self._read_message(raw), awaited=False, update=True)
        return SendReceipt(id=message_id, queued=queued)

    @send_update.validator
    def _validate_send(self, raw: RawValue = MISSING) -> None:
        with _typed_failure():
            self._admission_check(raw)

    @workflow.update(name="call")
    async def call_update(self, raw: RawValue = MISSING) -> CallReply:
        self._budget.count_arrival(update=True)
        with _typed_failure():
            request = decode(raw, CallRequest)
            message = self.check_message(request.as_message(), self.agent_type)
            message_id, _ = self._admit(message, awaited=True, update=True)
        seen = self._seen.get(message_id)
        if seen is None:
            outcome = await self._inbox.outcome("message", message_id)
            assert isinstance(outcome, AskReply)
            reply, version = outcome.reply, outcome.version
        else:
            reply, version = seen.reply, seen.version
        with _typed_failure():
            result = _call_result(message_id, reply)
        return CallReply(id=message_id, method=request.method, result=result, version=version)

    @call_update.validator
    def _validate_call(self, raw: RawValue = MISSING) -> None:
        with _typed_failure():
            request = decode(raw, CallRequest)
            self.check_message(request.as_message(), self.agent_type)
            self._check_room(raw)
            seen = self._seen.get(request.id) if request.id is not None else None
            if seen is not None:
                _call_result(seen.id, seen.reply)

    @workflow.update(name="stop")
    async def stop_update(self, raw: RawValue = MISSING) -> StopResult:
        """Stop the running turn; answers once it has ended (its model and tool calls are
        cancelled; what it leaves is `on_turn_stopped`'s choice)."""
        self._budget.count_arrival(update=True)
        with _typed_failure():
            request = decode(raw, StopRequest)
        stopped = self._turns.stop(by="stop", reason=request.reason, turn=request.turn)
        if stopped is not None:
            await workflow.wait_condition(lambda: self._turns.running != stopped)
        return StopResult(stopped=stopped is not None, turn=stopped, version=self.version)

    @stop_update.validator
    def _validate_stop(self, raw: RawValue = MISSING) -> None:
        with _typed_failure():
            decode(raw, StopRequest)

    @workflow.update(name="rollback")
    async def rollback_update(self, raw: RawValue = MISSING) -> RollbackResult:
        self._budget.count_arrival(update=True)
        with _typed_failure():
            request = decode(raw, RollbackRequest)
        update = workflow.current_update_info()
        request_id = request.id or (update.id if update else str(workflow.uuid4()))
        if self._inbox.open("rollback", request_id):
            self._inbox.queue(
                RollbackWake(
                    request_id=request_id, to_version=request.version, received_at=workflow.now()
                )  # fmt: skip
            )
        outcome = await self._inbox.outcome("rollback", request_id)
        assert isinstance(outcome, RollbackResult)
        return outcome

    @rollback_update.validator
    def _validate_rollback(self, raw: RawValue = MISSING) -> None:
        with _typed_failure():
            self._schema.migrate(self._versions.get(decode(raw, RollbackRequest).version))

    @workflow.update(name="wait_events")
    async def wait_events_update(self, raw: RawValue = MISSING) -> EventsPage:
        self._budget.count_arrival(update=True)
        with _typed_failure():
            request = decode(raw, WaitEventsRequest, default=WaitEventsRequest())
        timeout = request.timeout_seconds or self.wait_events_default_seconds
        self._event_waiters += 1
        try:
            await workflow.wait_condition(
                lambda: self._events.has_after(request.after) or self._draining,
                timeout=timeout,
                timeout_summary=f"wait_events after {request.after}",
            )
        except TimeoutError:
            pass
        finally:
            self._event_waiters -= 1
        return self._events.page(after=request.after, limit=request.limit)

    @wait_events_update.validator
    def _validate_wait_events(self, raw: RawValue = MISSING) -> None:
        with _typed_failure():
            decode(raw, WaitEventsRequest, default=WaitEventsRequest())
            if self._event_waiters >= self.max_event_waiters:
                raise AgentBusy(
                    f"{self._event_waiters} readers already wait for events of this agent, "
                    "the most it lets hold an update slot; read with query `events` instead"
                )

    @workflow.update(name="schedule")
    def schedule_update(self, raw: RawValue = MISSING) -> ScheduleResult:
        self._budget.count_arrival(update=True)
        with _typed_failure():
            request = decode(raw, ScheduleRequest, error=InvalidSchedule)
            return self._alarms.store(self._alarms.plan(request), by_turn=False)

    @schedule_update.validator
    def _validate_schedule(self, raw: RawValue = MISSING) -> None:
        with _typed_failure():
            self._alarms.plan(decode(raw, ScheduleRequest, error=InvalidSchedule))

    @workflow.update(name="cancel_schedule")
    def cancel_schedule_update(self, raw: RawValue = MISSING) -> Schedule:
        self._budget.count_arrival(update=True)
        with _typed_failure():
            return self._alarms.drop(decode(raw, CancelScheduleRequest).id, by_turn=False)

    @cancel_schedule_update.validator
    def _validate_cancel_schedule(self, raw: RawValue = MISSING) -> None:
        with _typed_failure():
            self._alarms.check_exists(decode(raw, CancelScheduleRequest).id)

    @workflow.update(name="decide")
    def decide_update(self, raw: RawValue = MISSING) -> Decision:
        self._budget.count_arrival(update=True)
        with _typed_failure():
            return self._approvals.decide(decode(raw, DecideRequest))

    @decide_update.validator
    def _validate_decide(self, raw: RawValue = MISSING) -> None:
        with _typed_failure():
            self._approvals.check_decidable(decode(raw, DecideRequest).approval_id)

    @workflow.update(dynamic=True)
    def _unknown_update(self, name: str, args: Sequence[RawValue]) -> None:
        raise AssertionError("refused by its validator; never admitted")

    @_unknown_update.validator
    def _validate_unknown_update(self, name: str, args: Sequence[RawValue]) -> None:
        # Without a dynamic handler the SDK refuses an unknown update with an untyped error.
        with _typed_failure():
            raise InvalidRequest(f"no such update {name[:60]!r}")

    # ------------------------------------------------------------------ wire: queries

    @workflow.query(name="state")
    def state_query(self) -> StateView:
        self._check_started()
        committed = self._versions.current
        return StateView(
            version=committed.version,
            state=committed.state,
            versions_kept=self._versions.kept(),
            busy=self._busy,
            inbox=len(self._inbox),
            last_event_offset=self._events.last_offset,
            turn=self._turns.running,
            usage=self.usage_report(),
        )

    @workflow.query(name="events")
    def events_query(self, raw: RawValue = MISSING) -> EventsPage:
        with _typed_failure():
            query = decode(raw, EventsQuery, default=EventsQuery())
        return self._events.page(after=query.after, limit=query.limit or 100)

    @workflow.query(name="schedules")
    def schedules_query(self) -> ScheduleList:
        return ScheduleList(schedules=self.list_schedules(), max_schedules=self.max_schedules)

    @workflow.query(name="sql")
    def sql_query(self, raw: RawValue = MISSING) -> SqlRows:
        """One read-only statement on the agent's database (SqlReadOnly for a write)."""
        try:
            request = decode(raw, SqlRequest)
            return self._sql.read(request.query, request.params, max_rows=request.max_rows)
        except PerennialError as err:
            raise query_failure(err) from None

    @workflow.query(name=EXPORT_QUERY)
    def export_query(self, raw: RawValue = MISSING) -> AgentExport:
        """The agent as a bundle to fork or import (workflows.export); VersionNotKept."""
        self._check_started()
        with _typed_failure():
            return build_export(
                decode(raw, ExportRequest, default=ExportRequest()),
                agent_id=self._info.workflow_id, agent_type=self.agent_type,
                versions=self._versions, schedules=self.list_schedules(), sql=self._sql,
                schema_version=self.state_schema_version, now=workflow.now(),
            )  # fmt: skip

    @workflow.query(name="children")
    def children_query(self) -> list[ChildRecord]:
        return self.children

    @workflow.query(name="asks")
    def asks_query(self) -> list[PendingAsk]:
        return self.pending_asks

    @workflow.query(name="approvals")
    def approvals_query(self) -> list[PendingApproval]:
        return self.pending_approvals

    @workflow.query(name="subscriptions")
    def subscriptions_query(self) -> dict[str, list[Subscription]]:
        """What this agent observes, and who observes it."""
        return {"observing": self._observing.observing, "observed_by": self._observing.observers}

    @workflow.query(name=CONFIRM_SUBSCRIPTION_QUERY)
    def confirm_subscription_query(self, raw: RawValue = MISSING) -> bool:
        with _typed_failure():
            return self._observing.confirms(decode(raw, SubscriptionCheck))

    def _check_started(self) -> None:
        """A run that could not read its start holds an empty state: never show it as the
        agent's (a backup exported from it would be empty)."""
        if self._bad_start is not None:
            raise to_application_error(self._bad_start)

    # ------------------------------------------------------------------ messages

    def _read_message(self, raw: RawValue) -> Message:
        return self.check_message(decode(raw, Message, error=InvalidMessage), self.agent_type)

    def _admission_check(self, raw: RawValue) -> None:
        """Validator of the updates that carry a message: the message's limits, and room in
        this run's history for it."""
        self._read_message(raw)
        self._check_room(raw)

    def _check_room(self, raw: RawValue) -> None:
        """AgentBusy when this run's history has no room left for the update `raw`."""
        if self._budget.refuses_update(len(raw.payload.data)):
            raise AgentBusy(
                f"{self.agent_type}/{self.agent_name} is about to continue as new (its run's "
                "history is full); retry in a moment"
            )

    def _parse_message(self, raw: Any) -> Message:
        """A message built by agent code (a dict), checked like one from the wire."""
        return self.check_message(parse_input(Message, raw, error=InvalidMessage), self.agent_type)

    @classmethod
    def check_message(cls, message: Message, agent_type: str) -> Message:
        """The agent type's limits on one message (`max_text_chars`, `max_message_bytes` of
        JSON) and, for a call, its method and arguments (`MethodNotFound`, `InvalidRequest`),
        checked by the client before sending and by the agent on arrival."""
        if len(message.text) > cls.max_text_chars:
            raise InvalidMessage(
                f"text has {len(message.text)} characters; {agent_type} agents accept at "
                f"most {cls.max_text_chars}"
            )
        bound = _json_bound(message)
        if bound is None or bound > cls.max_message_bytes:
            size = len(message.model_dump_json())
            if size > cls.max_message_bytes:
                raise InvalidMessage(
                    f"message is {size} bytes as JSON; {agent_type} agents accept at most "
                    f"{cls.max_message_bytes}"
                )
        if message.call is not None:  # after the size check: validating is bounded by it
            cls.callable_method_named(message.call.method, agent_type).validate_args(
                message.call.args
            )
        return message

    @classmethod
    def callable_method_named(cls, method: str, agent_type: str) -> CallableMethod:
        """The callable method `method` of this agent type, or MethodNotFound."""
        found = cls.callable_methods.get(method)
        if found is None:
            known = ", ".join(cls.callable_methods) or "none"
            raise MethodNotFound(
                f"{agent_type} agents have no callable method {method!r} (callable: {known})"
            )
        return found

    @classmethod
    def fits_in_signal(cls, message: Message) -> bool:
        """Whether `message` may go by signal (`max_signal_message_bytes` of JSON); larger
        ones go by update `send`. Serialises only when the string lengths cannot tell."""
        bound = _json_bound(message)
        if bound is not None and bound <= cls.max_signal_message_bytes:
            return True
        return len(message.model_dump_json()) <= cls.max_signal_message_bytes

    # ------------------------------------------------------------------ the loop

    async def serve(self) -> None:
        """Apply wakes one at a time, forever (a task child: until its task is answered);
        continue-as-new before any per-run limit."""
        if self._bad_start is not None:
            if isinstance(self._bad_start, StateMigrationFailed) and workflow.unsafe.is_replaying():
                # Older code already ran this run past its start: failing the run now would
                # not replay; fail the task instead, and a fixed deploy resumes the agent.
                raise self._bad_start
            raise to_application_error(self._bad_start)
        try:
            await self._serve()
        except asyncio.CancelledError:
            await self._children.report_cancelled()
            raise

    async def _serve(self) -> None:
        for part in self._parts:
            part.arm()
        self._alarms.take_due()
        if not self._inbox:  # with work queued, the publish after it says it all
            self._publisher.publish(self._idle_status())
        while True:
            self._alarms.take_due()  # alarms that fell due while the last turn ran
            if not self._inbox:
                self._publisher.publish(self._idle_status())
                if not await self._wait_for_work():
                    await self._continue_as_new("idle compaction")
            reason = self._budget.switch_reason()
            if reason is not None:
                if self._budget.may_switch_now():
                    await self._continue_as_new(reason)
                elif not self._inbox:  # messages keep coming: switch in a quieter task
                    await self._budget.next_task("continue-as-new: between messages")
                    continue
            await self._end_long_task()
            await self._apply(self._inbox.take())
            if await self._children.report_task():  # a task child whose task is done
                return

    def _idle_status(self) -> AgentStatus:
        for part in self._parts:
            status = part.idle_status()
            if status is not None:
                return status
        return AgentStatus.IDLE

    def _status_line(self) -> str:
        alarm = self._alarms.details()
        return (
            f"version {self.version} · {len(self._inbox)} queued · "
            f"run {self._generation + 1} · events up to {self._events.last_offset}"
            + (f"\n\n{alarm}" if alarm else "")
        )

    async def _wait_for_work(self) -> bool:
        """Wait until there is work (a wake, or an alarm falling due) or a run limit is
        near. False: idle long enough to compact the history by continuing as new.

        One timer at a time, for the earliest due alarm; a schedule added or cancelled
        meanwhile re-arms it. Idle compaction runs on its own clock (see RunBudget)."""
        budget = self._budget
        budget.wants_compaction()
        published = self._alarms.revision  # serve() published the idle status just before
        while True:
            self._alarms.take_due()
            if self._inbox or budget.switch_reason() is not None:
                return True
            if budget.compaction_due(self._publisher.idle_since):
                return False
            if self._alarms.revision != published:  # schedules changed: status, details
                self._publisher.publish(self._idle_status())
                published = self._alarms.revision
            alarm = self._alarms.timer()
            self._publisher.prearm(alarm[0] if alarm is not None else None)
            revision = self._alarms.revision

            def woken(revision: int = revision) -> bool:
                return (
                    bool(self._inbox)
                    or budget.switch_reason() is not None
                    or self._alarms.revision != revision  # a schedule added or cancelled
                    or budget.compaction_tick
                )

            try:
                await workflow.wait_condition(
                    woken,
                    timeout=seconds_until(alarm[0]) if alarm else None,
                    timeout_summary=alarm[1] if alarm else None,
                )
            except TimeoutError:
                pass  # an alarm is due: the loop above takes it

    async def _end_long_task(self) -> None:
        """Before each wake: past `max_wakes_per_task` in one workflow task, let the task
        end and go on in the next (see workflows.run_budget)."""
        if self._budget.new_wake_ends_task():
            self.mark_working()
            await self._budget.next_task("backlog: next batch", paced=True)

    async def _apply(self, wake: Wake) -> None:
        self._budget.applied += 1
        if isinstance(wake, AlarmWake):
            # What an alarm turn changes is published a little later (see Publisher.prearm).
            self._publisher.next_changes_behind()
        self._busy = True
        self._publisher.busy()
        try:
            if isinstance(wake, MessageWake):
                await self._apply_message(wake)
            elif isinstance(wake, RollbackWake):
                self._apply_rollback(wake)
            else:
                key, label, turn = self._turn_of(wake)
                await self._run_turn(key, label, turn)
        finally:
            self._busy = False

    def _turn_of(self, wake: Wake) -> tuple[str, str, Callable[[], Awaitable[str | None]]]:
        """A feature wake's turn: its key in the log, what the details say, the hook."""
        if isinstance(wake, AlarmWake):
            late = (wake.fired_at - wake.due_at).total_seconds()
            missed = f", {wake.missed} missed" if wake.missed else ""
            self.show(f"alarm `{wake.schedule_id}` ({late:.1f}s late{missed})")
            return wake.key, f"alarm {wake.schedule_id!r}", lambda: self.on_alarm(wake)
        if isinstance(wake, ChildFinishedWake):
            self.show(f"applying the {wake.report.status} task of child `{wake.child.child_id}`")
            return wake.key, f"child {wake.child.child_id}", lambda: self.on_child_finished(wake)
        if isinstance(wake, ApprovalWake):
            return wake.key, f"decision {wake.key}", lambda: self.on_approval(wake)
        if isinstance(wake, PeerChangedWake):
            label = f"change of {wake.change.peer_id}"
            return wake.key, label, lambda: self.on_peer_changed(wake)
        if isinstance(wake, AgentReplyWake):
            return wake.key, f"answer {wake.key}", lambda: self.on_agent_reply(wake)
        if isinstance(wake, MessageWake | RollbackWake):
            raise AssertionError("messages and rollbacks are applied by the loop itself")
        assert_never(wake)

    async def _apply_message(self, wake: MessageWake) -> None:
        message, merged = self._turns.merge_queued(wake)
        assert message.id is not None
        sender = message.sender or "anonymous"
        call = message.call
        if call is None:
            self.show(f"working on message `{message.id}` from {sender}")
            label, turn = f"message {message.id!r}", lambda: self.on_message(message)
        else:
            self.show(f"working on call `{call.method}` (`{message.id}`) from {sender}")
            label, turn = f"call {call.method} {message.id!r}", lambda: self._run_call(call)
        outcome = await self._run_turn(message.id, label, turn)
        for each in (wake, *merged):
            await self._settle_message(each.message, outcome)

    async def _settle_message(self, message: Message, outcome: AskReply | TurnFailed) -> None:
        """A message's turn ended (its own, or one it was merged into or steered): tell its
        callers, remember its reply, answer the agent that asked."""
        assert message.id is not None
        if isinstance(outcome, AskReply):
            if outcome.id != message.id:
                outcome = outcome.model_copy(update={"id": message.id})
            self._seen.remember(message.id, outcome.reply, outcome.version)
        self._inbox.settle("message", message.id, outcome)
        self._children.note_outcome(message.id, outcome)
        await self._messaging.answer(message, outcome)

    async def _run_call(self, call: MethodCall) -> str:
        """A call's turn: the method run with its arguments validated again (the type may have
        changed since the call was queued: a failure fails the turn), its result as JSON."""
        return await self.callable_method_named(call.method, self.agent_type).invoke(
            self, call.args
        )

    async def _run_turn(
        self, key: str, label: str, turn: Callable[[], Awaitable[str | None]]
    ) -> AskReply | TurnFailed:
        """Run one turn. If it returns, its state becomes a new version and `turn` is logged;
        if it raises, the state is restored to the last committed version, the parts undo
        what the turn did (schedules, approvals), and `turn_failed` is logged. Messages that
        joined it (policy `steer`) get its outcome too."""
        outcome = await self._turn_outcome(key, label, turn)
        for wake in self._turns.finished_steered():
            await self._settle_message(wake.message, outcome)
        return outcome

    async def _turn_outcome(
        self, key: str, label: str, turn: Callable[[], Awaitable[str | None]]
    ) -> AskReply | TurnFailed:
        for part in self._turn_parts:
            part.begin_turn()
        try:
            reply = await self._turns.run(key, turn)
            state_json, state_bytes = self._dump_state()
        except _CODE_ERRORS:
            raise
        except StopRequested as stop:
            return self._stopped(key, label, stop)
        except Exception as err:  # a failed turn: restore, record, tell the caller
            self._restore_committed()
            failure = TurnFailed(
                f"turn for {label} failed: {type(err).__name__}: {err}",
                error_type=type(err).__name__,
                version=self.version,
            )
            workflow.logger.warning("turn failed, state restored: %s", failure)
            self.record(TurnFailedEvent, message_id=key, error_type=type(err).__name__,
                        error=str(err), version=self.version)  # fmt: skip
            return failure
        version = self._commit(state_json, state_bytes)
        self.record(TurnEvent, message_id=key, version=version, reply=preview(reply))
        return AskReply(id=key, reply=reply, version=version)

    def _commit(self, state_json: str, size: int) -> int:
        for part in self._turn_parts:
            part.end_turn(failed=False)
        return self._versions.commit(state_json, size=size)

    def _restore_committed(self) -> None:
        self.state = self._restore(self._versions.current_json)
        for part in self._turn_parts:
            part.end_turn(failed=True)

    def _stopped(self, key: str, label: str, stop: StopRequested) -> TurnStopped:
        """A stopped turn: kept as a new version if `on_turn_stopped` says so (and the state
        fits), else rolled back like a failed turn."""
        kept: tuple[str, int] | None = None
        try:
            if self.on_turn_stopped(by=stop.by, reason=stop.reason):
                kept = self._dump_state()
        except _CODE_ERRORS:
            raise
        except Exception as err:  # the hook failed, or the state is too large: roll back
            workflow.logger.warning("a stopped turn could not be kept: %s", err)
        if kept is not None:
            version = self._commit(*kept)
        else:
            self._restore_committed()
            version = self.version
        self.record(TurnStoppedEvent, message_id=key, by=stop.by, reason=stop.reason,
                    kept=kept is not None, version=version)  # fmt: skip
        return TurnStopped(
            f"turn for {label} was stopped: {stop}", by=stop.by, kept=kept is not None,
            version=version,
        )  # fmt: skip

    def _dump_state(self) -> tuple[str, int]:
        """The state as JSON text, and its bytes; StateTooLarge past `max_state_bytes`."""
        encoded = self.state.__pydantic_serializer__.to_json(self.state)
        size = len(encoded)
        if size > self.max_state_bytes:
            raise StateTooLarge(
                f"the state would be {size} bytes as JSON; {self.agent_type} agents keep at "
                f"most {self.max_state_bytes} (max_state_bytes)"
            )
        self._sql.commit_turn()  # last: nothing may fail once the database has committed
        return encoded.decode(), size

    def _restore(self, state_json: str) -> StateT:
        return self.state_model.model_validate_json(state_json)  # type: ignore[return-value]

    def _apply_rollback(self, wake: RollbackWake) -> None:
        try:
            # Evicted from the ring while the request was queued, or kept in a schema that
            # cannot be migrated: refused, the state stays as it is.
            target = self._schema.migrate(self._versions.get(wake.to_version))
            self._sql.check_restorable(wake.to_version)
        except PerennialError as err:
            self._inbox.settle("rollback", wake.request_id, err)
            return
        self.state = self._restore(target.state_json)
        version = self._versions.commit(target.state_json)
        self._sql.restore(target.version, version=version)
        self.record(RolledBackEvent, to_version=target.version, version=version)
        self._inbox.settle(
            "rollback",
            wake.request_id,
            RollbackResult(restored_version=target.version, version=version),
        )

    # ------------------------------------------------------------------ continue-as-new

    async def _continue_as_new(self, reason: str) -> None:
        """Finish every request someone is waiting for, then carry everything else over.

        Callers of `ask`/`rollback` are waiting on wakes in the inbox, so those are applied
        first (in arrival order, with whatever came before them); long-polls are released.
        Signals that are not awaited stay in the inbox and travel to the next run, as far as
        `max_carried_inbox_bytes` allows; the oldest beyond that are applied here first."""
        self._draining = True
        self.show(f"continuing as new: {reason}")
        while True:
            # The inbox is scanned once per batch, not before every wake (quadratic otherwise).
            while (last := self._inbox.last_awaited_index()) >= 0:
                for _ in range(last + 1):
                    await self._end_long_task()
                    await self._apply(self._inbox.take())
            await self._shrink_inbox_to_budget()
            await workflow.wait_condition(
                lambda: (
                    workflow.all_handlers_finished()
                    or any(self._inbox.is_awaited(wake) for wake in self._inbox)
                )
            )
            if workflow.all_handlers_finished() and self._inbox_fits():
                break
        self.record(ContinuedAsNewEvent, reason=reason, carried_wakes=len(self._inbox))
        workflow.logger.info("continuing as new (%s), carrying %d wakes", reason, len(self._inbox))
        workflow.continue_as_new(pack_carried(self._carried()).wire())

    def _carried(self) -> AgentStart:
        sql = self._sql.carry()  # first: it may drop versions its log cannot restore any more
        return AgentStart(
            sql=sql,
            snapshots=self._versions.snapshots(),
            inbox=self._inbox.wakes(),
            seen=self._seen.entries(),
            events=self._events.tail(),
            next_offset=self._events.next_offset,
            generation=self._generation + 1,
            alarms=self._alarms.carry(),
            children=self._children.carry(),
            messaging=self._messaging.carry(),
            approvals=self._approvals.carry(),
            observing=self._observing.carry(),
        )

    def _inbox_fits(self) -> bool:
        return sum(self._inbox.sizes()) <= self.max_carried_inbox_bytes

    async def _shrink_inbox_to_budget(self) -> None:
        """Apply the oldest wakes until the rest fits in the continue-as-new payload."""
        sizes = self._inbox.sizes()  # once: wakes arriving meanwhile are seen next round
        total = sum(sizes)
        while sizes and total > self.max_carried_inbox_bytes:
            total -= sizes.popleft()
            await self._end_long_task()
            await self._apply(self._inbox.take())


def _json_bound(message: Message) -> int | None:
    """An upper bound of a message's JSON length without serialising it, when it has no
    `data`, `reply_to` or `call`: at most 6 characters per character of its strings (a \\u00XX
    escape) plus its keys. None when only serialising can tell."""
    if message.data is not None or message.reply_to is not None or message.call is not None:
        return None
    strings = len(message.text) + len(message.sender or "") + len(message.id or "")
    return 6 * strings + _MESSAGE_KEYS_CHARS


def _call_result(message_id: str, reply: str | None) -> JsonValue:
    """A call's result from its turn's reply (JSON text); InvalidRequest when the id belongs
    to a message that was not a call (its reply is not JSON)."""
    try:
        if reply is not None:
            result: JsonValue = from_json(reply, allow_inf_nan=False)
            return result
    except ValueError:
        pass
    raise InvalidRequest(
        f"id {message_id!r} was already used by a message that is not a method call; use a new id"
    )


@contextmanager
def _typed_failure() -> Iterator[None]:
    """In an update or query: a PerennialError becomes the typed failure the caller gets
    (raised in a handler, anything else would fail the workflow task instead)."""
    try:
        yield
    except PerennialError as err:
        raise to_application_error(err) from None
