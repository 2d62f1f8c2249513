"""The agent entity: one long-lived workflow per named agent.

An agent type subclasses `AgentWorkflow`, names its state model, and implements `on_message`:

    @workflow.defn(name="notes")
    class NotesAgent(AgentWorkflow[NotesState]):
        state_model = NotesState

        @workflow.run
        async def run(self, start: AgentStart) -> None:
            await self.serve()

        async def on_message(self, message: Message) -> str:
            ...

The base class owns everything else: the inbox (handlers only enqueue; one loop applies one
wake at a time, in arrival order), duplicate suppression, state versions and rollback, the event
log, search attributes and current details, and continue-as-new before any per-run limit.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any, ClassVar, Generic, TypeVar, assert_never

from temporalio import workflow
from temporalio.common import RetryPolicy

from workflows.alarms import Alarms
from workflows.approvals import Approvals
from workflows.children import Children
from workflows.clock import seconds_until
from workflows.dedup import SeenWindow
from workflows.errors import (
    InvalidMessage,
    PerennialError,
    StateTooLarge,
    TurnFailed,
    parse_input,
    to_application_error,
)
from workflows.eventlog import EventLog
from workflows.messages import (
    MAX_TEXT_CHARS,
    AgentReplyWake,
    AgentStart,
    AlarmWake,
    ApprovalWake,
    AskReply,
    ChildFinishedWake,
    ContinuedAsNewEvent,
    Event,
    EventsPage,
    EventsQuery,
    Message,
    MessageWake,
    PeerChangedWake,
    ReceivedEvent,
    RejectedEvent,
    RollbackRequest,
    RollbackResult,
    RollbackWake,
    RolledBackEvent,
    StateView,
    TurnEvent,
    TurnFailedEvent,
    WaitEventsRequest,
    Wake,
    preview,
)
from workflows.messaging import Messaging
from workflows.observing import Observing
from workflows.packing import pack_carried, unpack_carried
from workflows.versions import Versions, json_size
from workflows.visibility import (
    AGENT_LAST_ACTIVE,
    AGENT_NAME,
    AGENT_STATUS,
    AGENT_TYPE,
    AGENT_VERSION,
    AgentStatus,
    split_agent_id,
)

with workflow.unsafe.imports_passed_through():
    from pydantic import BaseModel

StateT = TypeVar("StateT", bound=BaseModel)

#: Errors that mean the workflow code itself is broken for this history: they must fail the
#: workflow task (so a fixed deploy can resume it), never be turned into a failed turn.
_CODE_ERRORS = (workflow.NondeterminismError, workflow.ReadOnlyContextError)


_KEYS: dict[str, Any] = {
    key.name: key for key in (AGENT_TYPE, AGENT_NAME, AGENT_STATUS, AGENT_VERSION)
}

#: JSON characters of a message besides the contents of its strings (see `check_message`).
_MESSAGE_KEYS_CHARS = len(Message.model_construct(text="").model_dump_json())


#: Patch ids (workflow.patched): each marks a change in the commands agents emit, so that
#: agents whose history predates it keep replaying the old way.
#: Leaner history per wake: no "working" upsert per wake, none at start with work queued, and
#: the idle-compaction check on a clock instead of a timer started and cancelled per wake.
_PATCH_LEAN = "perennial-lean-history-per-wake"
#: Search attributes written behind (at most one upsert per `publish_interval`) and seeded
#: from the ones a run starts with. Implies the lean history above: a run checks this patch
#: first, so a new run records one patch marker, not two (the SDK adds a
#: TemporalChangeVersion upsert, a visibility write, for every patch a run records).
_PATCH_WRITE_BEHIND = "perennial-write-behind-search-attributes"
#: Continue-as-new waits for a workflow task that brought no new messages (see
#: `_may_switch_now`). Implies both patches above (checked first, one marker per new run).
_PATCH_QUIET_SWITCH = "perennial-switch-between-arrivals"
#: Search attributes written behind only past `publish_burst` upserts per `publish_interval`
#: (was: past one), a version-only change at most once per `publish_version_interval`, and
#: what an alarm turn changed published after it (see `_apply`). Implies the three patches
#: above (checked first, one marker per new run).
_PATCH_PUBLISH_IN_BURSTS = "perennial-publish-in-bursts-alarms-behind"
#: `_next_task` with nothing arriving is started by a no-op activity instead of a timer.
#: Implies all four patches above (checked first, one marker per new run).
_PATCH_PACED_BY_ACTIVITY = "perennial-backlog-paced-by-activity"
_PATCH_BOUNDED_TASKS = "perennial-bounded-workflow-tasks"

#: The no-op activity whose completion starts an agent's next workflow task (activities.pacing).
NEXT_TASK_ACTIVITY = "perennial.next_task"


def _ignore_outcome(task: asyncio.Future[Any]) -> None:
    """Retrieve a pacing activity's outcome (a timeout is harmless), so it is not reported as
    never retrieved."""
    if not task.cancelled():
        task.exception()


class _Pending:
    """A queued request whose outcome one or more `ask`/`rollback` callers may await."""

    __slots__ = ("waiters", "outcome")

    def __init__(self) -> None:
        self.waiters = 0
        self.outcome: AskReply | RollbackResult | PerennialError | None = None


class AgentWorkflow(Approvals, Alarms, Children, Messaging, Observing, Generic[StateT]):
    """Base of every agent type. Subclasses set `state_model`, define `run` (calling
    `serve()`), and implement `on_message` (and, if alarms should do something other than
    arrive as messages, `on_alarm`). The class attributes below (and those of `Alarms`:
    `max_schedules`, `min_every_seconds`) are the knobs."""

    state_model: ClassVar[type[BaseModel]]

    #: Committed versions kept for rollback (each is a full copy of the state).
    max_versions: ClassVar[int] = 10
    #: Events kept in the log (older ones are dropped; offsets keep counting).
    event_log_size: ClassVar[int] = 500
    #: Message ids remembered for duplicate suppression (with their replies).
    dedup_window: ClassVar[int] = 2_000
    #: Longest message text accepted.
    max_text_chars: ClassVar[int] = MAX_TEXT_CHARS
    #: Largest message accepted, as JSON (text, sender, id and data together).
    max_message_bytes: ClassVar[int] = 128 * 1024
    #: Continue-as-new thresholds for one run. The dev server rejects a run's 10,001st signal
    #: and 2,001st update; replay costs ~0.4 ms per event, so shorter runs also wake faster.
    max_history_events: ClassVar[int] = 2_500
    max_signals_per_run: ClassVar[int] = 5_000
    max_updates_per_run: ClassVar[int] = 1_000
    #: Past those, the switch waits for a workflow task that brought no new message: the
    #: server refuses a continue-as-new while messages arrive during its task, the worker
    #: then replays the whole run, and under a flood that replay let >100 signals pile up,
    #: which made the server fail the next task too, over and over (measured: 6,000 messages
    #: flooded into one agent at 90-230/s with the switch in mid-flood, ~535/s without).
    #: Only past these does it switch in the middle of a flood anyway: a run's tasks grow
    #: slower as it grows (at ~7,000 events a task took long enough for 100 signals to pile
    #: up under a flood of ~550/s), and the server refuses a run's 10,001st signal.
    force_switch_signals: ClassVar[int] = 6_000
    force_switch_updates: ClassVar[int] = 1_800
    force_switch_history_events: ClassVar[int] = 6_000
    force_switch_history_bytes: ClassVar[int] = 20 * 1024 * 1024
    #: An idle agent whose run has at least this many events continues-as-new after this long
    #: without work, so a hibernated agent replays a short history when it wakes.
    compact_idle_after: ClassVar[timedelta | None] = timedelta(seconds=30)
    compact_min_history_events: ClassVar[int] = 200
    #: Wakes applied in one workflow task before the loop ends that task (with a 1 ms timer)
    #: and goes on in the next. Without a cap, a backlog (a flood of signals, a carried inbox,
    #: messages queued while no worker ran) is applied in one activation: past the SDK's 2 s
    #: deadlock timeout that task fails on every attempt (the agent is stuck for good), and
    #: under a flood the server fails a task once ~100 signals are buffered behind it.
    max_wakes_per_task: ClassVar[int] = 100
    #: Byte budgets. Continue-as-new carries the state's kept versions, the inbox, the dedup
    #: window and the event-log tail in one payload, and Temporal refuses payloads over 2 MB
    #: (the agent would be stuck for good). A turn that leaves the state larger than
    #: `max_state_bytes` fails (StateTooLarge) and is rolled back; older versions, older
    #: dedup entries and, before the switch, inbox wakes (by applying them) give way to fit.
    max_state_bytes: ClassVar[int] = 256 * 1024
    max_versions_bytes: ClassVar[int] = 768 * 1024
    max_dedup_bytes: ClassVar[int] = 256 * 1024
    max_carried_inbox_bytes: ClassVar[int] = 384 * 1024
    #: Default and longest wait of `wait_events`.
    wait_events_default_seconds: ClassVar[float] = 30.0
    #: Search attributes are written behind: at most `publish_burst` upserts per interval.
    #: Changes within the budget are upserted at once; later ones in the interval are
    #: coalesced into one upsert at its end (one timer). Each upsert is a visibility write
    #: on the server: one per turn made a stream of asks ~15% slower end to end. The state
    #: query is always current; the visibility API lags by at most this much.
    publish_interval: ClassVar[timedelta] = timedelta(seconds=2)
    #: Two, not one: an agent that changes now and then (a message, an alarm a few seconds
    #: after it was scheduled) publishes in the task that made the change. With one, such a
    #: change waited for a timer: a workflow task more per change, and for a crowd of alarms
    #: due together, that many more tasks competing with the alarms themselves.
    publish_burst: ClassVar[int] = 2
    #: A change of the version alone (a busy agent's turns; its status stays the same) is
    #: upserted at most once per this interval. Measured (100 agents, 40 messages each):
    #: upserting at the 2 s budget made ~one visibility write per workflow task and the
    #: flood ran at ~0.7x raw; with next to no upserts it ran at 0.9-1.0x.
    publish_version_interval: ClassVar[timedelta] = timedelta(seconds=10)

    @workflow.init
    def __init__(self, start: AgentStart) -> None:
        info = workflow.info()
        # The run's Info, kept: its history-length / continue-as-new methods read the live
        # values, and `workflow.info()` itself is a runtime lookup (several per message).
        self._info = info
        self.agent_type = info.workflow_type
        self.agent_name = split_agent_id(info.workflow_id, info.workflow_type)
        self._generation = start.generation
        self._lean = False
        self._compaction_clock: asyncio.Task[None] | None = None
        self._compaction_tick = False
        self._applied_this_run = 0
        start = unpack_carried(start)
        self._versions = Versions(
            keep=self.max_versions, max_bytes=self.max_versions_bytes, snapshots=start.snapshots
        )
        if self._versions.empty:
            self._versions.commit(self.initial_state().model_dump_json())
        self.state: StateT = self._restore(self._versions.current_json)
        self._run_start_version = self.version  # AgentLastActive moves once this changes
        self._inbox: deque[Wake] = deque(start.inbox)
        self._pending: dict[str, _Pending] = {
            wake.message.id: _Pending()
            for wake in start.inbox
            if isinstance(wake, MessageWake) and wake.message.id
        }
        self._seen = SeenWindow(
            capacity=self.dedup_window, max_bytes=self.max_dedup_bytes, seen=start.seen
        )
        self._init_alarms(start)
        self._events = EventLog(
            capacity=self.event_log_size, events=start.events, next_offset=start.next_offset
        )
        self._init_children(start)
        self._init_messaging(start)
        self._init_approvals(start)
        self._init_observing(start)
        self._busy = False
        self._draining = False
        self._signals_this_run = 0
        self._updates_this_run = 0
        self._arrival_task = -1  # history length of the workflow task the last message came in
        self._quiet_switch = False
        self._write_behind = False
        self._published: dict[str, Any] = {}  # search attributes as last upserted
        self._wanted: dict[str, Any] = {}  # and as they should be
        self._active_at: datetime | None = None  # when the published version was committed
        self._upserts: deque[datetime] = deque()  # times of the latest upserts, newest last
        self._publish_in_bursts = False
        self._paced_by_activity = False
        self._publish_behind = False  # the next changes are written behind (an alarm turn's)
        # The timer that publishes after the next alarm, armed before it is due: (due, task).
        self._prearmed: tuple[datetime, asyncio.Task[None]] | None = None
        self._publisher: asyncio.Task[None] | None = None  # the pending upsert, written behind
        self._publisher_due = datetime.min
        self._task_history_length = 0
        self._wakes_in_task = 0
        self._idle_since: datetime | None = None

    # ------------------------------------------------------------------ for agent types

    def initial_state(self) -> StateT:
        """The state of a brand-new agent; the default builds `state_model()`."""
        return self.state_model()  # type: ignore[return-value]

    async def on_message(self, message: Message) -> str | None:
        """Apply one message to `self.state` and return the reply. Raising fails the turn:
        the state is restored to the last committed version and `ask` callers get
        `TurnFailed`."""
        raise NotImplementedError

    @property
    def version(self) -> int:
        """The last committed state version."""
        return self._versions.version

    # ------------------------------------------------------------------ wire: signals

    @workflow.signal(name="message")
    def message_signal(self, raw: Any) -> None:
        # Typed as Any so a malformed payload is recorded as a rejection in the event log
        # instead of being dropped by the SDK's decoder with only a worker-side warning.
        self._count_arrival()
        try:
            message = self._parse_message(raw)
        except InvalidMessage as err:
            self._log(RejectedEvent, error=str(err))
            workflow.logger.warning("rejected message signal: %s", err)
            return
        self._admit(message, awaited=False)

    # ------------------------------------------------------------------ wire: updates

    @workflow.update(name="ask")
    async def ask(self, raw: Any) -> AskReply:
        self._count_arrival(update=True)
        message_id = self._admit(self._parse_message(raw), awaited=True)
        seen = self._seen.get(message_id)
        if seen is not None:
            return AskReply(id=seen.id, reply=seen.reply, version=seen.version)
        outcome = await self._await_outcome(message_id)
        assert isinstance(outcome, AskReply)
        return outcome

    @ask.validator
    def _validate_ask(self, raw: Any) -> None:
        self._rejecting(lambda: self._parse_message(raw))

    @workflow.update(name="rollback")
    async def rollback(self, raw: Any) -> RollbackResult:
        self._count_arrival(update=True)
        request = parse_input(RollbackRequest, raw)
        update = workflow.current_update_info()
        request_id = request.id or (update.id if update else str(workflow.uuid4()))
        if request_id not in self._pending:
            self._pending[request_id] = _Pending()
            self._inbox.append(
                RollbackWake(
                    request_id=request_id,
                    to_version=request.version,
                    received_at=workflow.now(),
                )
            )
        outcome = await self._await_outcome(request_id)
        assert isinstance(outcome, RollbackResult)
        return outcome

    @rollback.validator
    def _validate_rollback(self, raw: Any) -> None:
        def check() -> None:
            self._versions.get(parse_input(RollbackRequest, raw).version)

        self._rejecting(check)

    @workflow.update(name="wait_events")
    async def wait_events(self, raw: Any = None) -> EventsPage:
        self._count_arrival(update=True)
        request = parse_input(WaitEventsRequest, raw)
        timeout = request.timeout_seconds or self.wait_events_default_seconds
        try:
            await workflow.wait_condition(
                lambda: self._events.has_after(request.after) or self._draining,
                timeout=timeout,
                timeout_summary=f"wait_events after {request.after}",
            )
        except TimeoutError:
            pass
        return self._events.page(after=request.after, limit=request.limit)

    @wait_events.validator
    def _validate_wait_events(self, raw: Any = None) -> None:
        self._rejecting(lambda: parse_input(WaitEventsRequest, raw))

    # ------------------------------------------------------------------ wire: queries

    @workflow.query(name="state")
    def state_query(self) -> StateView:
        committed = self._versions.current
        return StateView(
            version=committed.version,
            state=committed.state,
            versions_kept=self._versions.kept(),
            busy=self._busy,
            inbox=len(self._inbox),
        )

    @workflow.query(name="events")
    def events_query(self, raw: Any = None) -> EventsPage:
        query = parse_input(EventsQuery, raw)
        return self._events.page(after=query.after, limit=query.limit or 100)

    # ------------------------------------------------------------------ the loop

    async def serve(self) -> None:
        """Apply wakes one at a time, forever (a task child: until its task is answered);
        continue-as-new before any per-run limit."""
        try:
            await self._serve()
        except asyncio.CancelledError:
            await self._report_cancelled()  # see workflows.children
            raise

    async def _serve(self) -> None:
        self._arm_ask_timers()  # asks carried from the last run (see workflows.messaging)
        self._arm_approval_timers()  # approval deadlines (see workflows.approvals)
        self._arm_notifiers()  # agents observing this one (see workflows.observing)
        self._take_due_alarms()
        # Fewer search-attribute upserts (one history event each): none per wake, and none
        # at start when there is work queued (the upsert after it says it all). Histories
        # recorded before this change keep replaying through the patch.
        self._paced_by_activity = workflow.patched(_PATCH_PACED_BY_ACTIVITY)
        self._publish_in_bursts = self._paced_by_activity or workflow.patched(
            _PATCH_PUBLISH_IN_BURSTS
        )
        self._quiet_switch = self._publish_in_bursts or workflow.patched(_PATCH_QUIET_SWITCH)
        self._write_behind = self._quiet_switch or workflow.patched(_PATCH_WRITE_BEHIND)
        self._lean = self._write_behind or workflow.patched(_PATCH_LEAN)
        if self._write_behind:  # continue-as-new carries them: upsert only what changes
            self._published = self._search_attributes_at_start()
        if not (self._lean and self._inbox):
            self._publish(self._idle_status() if not self._inbox else AgentStatus.WORKING)
        while True:
            self._take_due_alarms()  # alarms that fell due while the last turn ran
            if not self._inbox:
                self._publish(self._idle_status())
                if not await self._wait_for_work():
                    await self._continue_as_new("idle compaction")
            reason = self._continue_as_new_reason()
            if reason is not None:
                if self._may_switch_now():
                    await self._continue_as_new(reason)
                elif not self._inbox:  # messages keep coming: switch in a quieter task
                    await self._next_task("continue-as-new: between messages")
                    continue
            # No "working" upsert per wake: a turn that finishes within its workflow task
            # would flip the status back before visibility ever saw it, at the cost of one
            # history event. Turns that wait (LLM calls, long backlogs) call mark_working().
            # Histories recorded before this change keep replaying through the patch.
            if not self._lean:
                self._publish(AgentStatus.WORKING)
            await self._end_long_task()
            await self._apply(self._inbox.popleft())
            if await self._report_task():  # a task child whose task is done
                return

    async def _wait_for_work(self) -> bool:
        """Wait until there is work (a wake, or an alarm falling due) or a run limit is
        near. False: idle long enough to compact the history by continuing as new.

        One timer at a time: for the earliest due alarm or the compaction, whichever comes
        first; a schedule added or cancelled meanwhile re-arms it."""
        # What a wake-up after eviction replays: the run's events, and (in lean runs) the
        # wakes applied in it, which a carried inbox can make many in few events.
        replay_cost = self._info.get_current_history_length() + (
            self._applied_this_run if self._lean else 0
        )
        compact = (
            self.compact_idle_after is not None and replay_cost >= self.compact_min_history_events
        )
        compact_at = None
        if compact and self._lean:
            self._start_compaction_clock()
        elif compact and self.compact_idle_after is not None:
            compact_at = workflow.now() + self.compact_idle_after
        published = self._alarm_revision  # serve() published the idle status just before
        while True:
            self._take_due_alarms()
            if self._inbox or self._continue_as_new_reason() is not None:
                return True
            if compact_at is not None and workflow.now() >= compact_at:
                return False
            if self._compaction_due():
                return False
            if self._alarm_revision != published:  # schedules changed: status, details
                self._publish(self._idle_status())
                published = self._alarm_revision
            wake_at, summary = compact_at, "idle: compact history"
            alarm = self._alarm_timer()
            self._prearm_publish(alarm[0] if alarm is not None else None)
            if alarm is not None and (wake_at is None or alarm[0] < wake_at):
                wake_at, summary = alarm
            revision = self._alarm_revision

            def woken(revision: int = revision) -> bool:
                return (
                    bool(self._inbox)
                    or self._continue_as_new_reason() is not None
                    or self._alarm_revision != revision  # a schedule added or cancelled
                    or self._compaction_tick
                )

            timeout = None
            if wake_at is not None:
                timeout = seconds_until(wake_at)
            try:
                await workflow.wait_condition(
                    woken, timeout=timeout, timeout_summary=summary if timeout else None
                )
            except TimeoutError:
                pass  # an alarm or the compaction is due: the loop above sees which

    def _start_compaction_clock(self) -> None:
        """A timer per `compact_idle_after`, for the life of the run, instead of one started
        on going idle and cancelled by the next wake: two history events saved per wake."""
        if self._compaction_clock is None and self.compact_idle_after is not None:
            self._compaction_clock = asyncio.create_task(self._tick(self.compact_idle_after))

    async def _tick(self, every: timedelta) -> None:
        while True:
            await workflow.sleep(every, summary="idle compaction check")
            self._compaction_tick = True

    def _compaction_due(self) -> bool:
        """At a clock tick: has the agent been idle for `compact_idle_after`?"""
        if not self._compaction_tick:
            return False
        self._compaction_tick = False
        return (
            self.compact_idle_after is not None
            and self._idle_since is not None
            and workflow.now() - self._idle_since >= self.compact_idle_after
        )

    async def _apply(self, wake: Wake) -> None:
        self._applied_this_run += 1
        # What an alarm turn changes is published a little later (see `_prearm_publish`):
        # alarms come in crowds (schedules due on the same second across many agents), and
        # an upsert is a visibility write the server makes while the rest of the crowd
        # waits. Measured (bench/bench_alarms.py, 200 alarms due together): upserting in the
        # alarm's own task made the last alarms ~2x as late as raw timers; without it they
        # were as late as raw. A turn that waits (mark_working) publishes as usual: by then
        # the crowd has gone.
        self._publish_behind = self._publish_in_bursts and isinstance(wake, AlarmWake)
        self._busy = True
        self._idle_since = None  # "idle since" counts from the end of this wake
        try:
            if isinstance(wake, MessageWake):
                await self._apply_message(wake)
            elif isinstance(wake, RollbackWake):
                self._apply_rollback(wake)
            elif isinstance(wake, AlarmWake):
                await self._apply_alarm(wake)
            elif isinstance(wake, ChildFinishedWake):
                await self._apply_child_finished(wake)
            elif isinstance(wake, ApprovalWake):
                await self._run_turn(
                    wake.key, f"decision {wake.key}", lambda: self.on_approval(wake)
                )
            elif isinstance(wake, PeerChangedWake):
                await self._run_turn(
                    wake.key, f"change of {wake.change.peer_id}", lambda: self.on_peer_changed(wake)
                )
            elif isinstance(wake, AgentReplyWake):
                await self._run_turn(
                    wake.key, f"answer {wake.key}", lambda: self.on_agent_reply(wake)
                )
            else:
                assert_never(wake)
        finally:
            self._busy = False

    async def _apply_message(self, wake: MessageWake) -> None:
        message = wake.message
        assert message.id is not None
        self._details(f"working on message `{message.id}` from {message.sender or 'anonymous'}")
        outcome = await self._run_turn(
            message.id, f"message {message.id!r}", lambda: self.on_message(message)
        )
        if isinstance(outcome, AskReply):
            self._seen.remember(message.id, outcome.reply, outcome.version)
        self._settle(message.id, outcome)
        self._note_task_outcome(message.id, outcome)
        await self._answer_asker(message, outcome)

    async def _apply_child_finished(self, wake: ChildFinishedWake) -> None:
        self._details(f"applying the {wake.report.status} task of child `{wake.child.child_id}`")
        await self._run_turn(
            wake.key, f"child {wake.child.child_id}", lambda: self.on_child_finished(wake)
        )

    async def _run_turn(
        self, key: str, label: str, turn: Callable[[], Awaitable[str | None]]
    ) -> AskReply | TurnFailed:
        """Run one turn (a message's or an alarm's). If it returns, its state becomes a new
        version and `turn` is logged; if it raises, the state is restored to the last
        committed version, schedules the turn itself changed are put back, and `turn_failed`
        is logged. `key` names the turn in the log."""
        self._begin_turn_schedules()
        try:
            reply = await turn()
            state_json, state_bytes = self._dump_state()
        except _CODE_ERRORS:
            raise
        except Exception as err:  # a failed turn: restore, record, tell the caller
            self.state = self._restore(self._versions.current_json)
            self._end_turn_schedules(failed=True)
            failure = TurnFailed(
                f"turn for {label} failed: {type(err).__name__}: {err}",
                error_type=type(err).__name__,
                version=self.version,
            )
            workflow.logger.warning("turn failed, state restored: %s", failure)
            self._log(
                TurnFailedEvent,
                message_id=key,
                error_type=type(err).__name__,
                error=str(err),
                version=self.version,
            )
            return failure
        self._end_turn_schedules(failed=False)
        version = self._versions.commit(state_json, size=state_bytes)
        self._log(TurnEvent, message_id=key, version=version, reply=preview(reply))
        return AskReply(id=key, reply=reply, version=version)

    def _dump_state(self) -> tuple[str, int]:
        """The state as JSON text, and its bytes; StateTooLarge past `max_state_bytes`."""
        encoded = self.state.__pydantic_serializer__.to_json(self.state)
        size = len(encoded)
        if size > self.max_state_bytes:
            raise StateTooLarge(
                f"the state would be {size} bytes as JSON; {self.agent_type} agents keep at "
                f"most {self.max_state_bytes} (max_state_bytes)"
            )
        return encoded.decode(), size

    def _apply_rollback(self, wake: RollbackWake) -> None:
        try:
            target = self._versions.get(wake.to_version)
        except PerennialError as err:  # evicted from the ring while the request was queued
            self._settle(wake.request_id, err)
            return
        self.state = self._restore(target.state_json)
        version = self._versions.commit(target.state_json)
        self._log(RolledBackEvent, to_version=target.version, version=version)
        self._settle(
            wake.request_id, RollbackResult(restored_version=target.version, version=version)
        )

    # ------------------------------------------------------------------ continue-as-new

    def _continue_as_new_reason(self) -> str | None:
        info = self._info
        if info.is_continue_as_new_suggested():
            return "suggested by the server"
        if info.get_current_history_length() >= self.max_history_events:
            return f"history reached {self.max_history_events} events"
        if self._signals_this_run >= self.max_signals_per_run:
            return f"{self.max_signals_per_run} signals in this run"
        if self._updates_this_run >= self.max_updates_per_run:
            return f"{self.max_updates_per_run} updates in this run"
        return None

    async def _continue_as_new(self, reason: str) -> None:
        """Finish every request someone is waiting for, then carry everything else over.

        Callers of `ask`/`rollback` are waiting on wakes in the inbox, so those are applied
        first (in arrival order, with whatever came before them); long-polls are released.
        Signals that are not awaited stay in the inbox and travel to the next run, as far as
        `max_carried_inbox_bytes` allows; the oldest beyond that are applied here first.
        """
        self._draining = True
        self._details(f"continuing as new: {reason}")
        while True:
            # Apply everything up to the last awaited wake. The inbox is scanned once per
            # batch, not before every wake: that was quadratic in a large carried inbox.
            while (last := self._last_awaited_index()) >= 0:
                for _ in range(last + 1):
                    await self._end_long_task()
                    await self._apply(self._inbox.popleft())
            await self._shrink_inbox_to_budget()
            await workflow.wait_condition(
                lambda: (
                    workflow.all_handlers_finished()
                    or any(self._is_awaited(wake) for wake in self._inbox)
                )
            )
            if workflow.all_handlers_finished() and self._inbox_fits():
                break
        self._log(ContinuedAsNewEvent, reason=reason, carried_wakes=len(self._inbox))
        workflow.logger.info("continuing as new (%s), carrying %d wakes", reason, len(self._inbox))
        workflow.continue_as_new(
            pack_carried(
                AgentStart(
                    snapshots=self._versions.snapshots(),
                    inbox=list(self._inbox),
                    seen=self._seen.entries(),
                    events=self._events.tail(),
                    next_offset=self._events.next_offset,
                    generation=self._generation + 1,
                    schedules=self.list_schedules(),
                    **self._carried_children(),
                    **self._carried_asks(),
                    **self._carried_approvals(),
                    **self._carried_observations(),
                )
            ).wire()
        )

    def _inbox_sizes(self) -> deque[int]:
        return deque(json_size(wake) for wake in self._inbox)

    def _inbox_fits(self) -> bool:
        return sum(self._inbox_sizes()) <= self.max_carried_inbox_bytes

    async def _shrink_inbox_to_budget(self) -> None:
        """Apply the oldest wakes until the rest fits in the continue-as-new payload."""
        sizes = self._inbox_sizes()  # once: wakes arriving meanwhile are seen next round
        total = sum(sizes)
        while sizes and total > self.max_carried_inbox_bytes:
            total -= sizes.popleft()
            await self._end_long_task()
            await self._apply(self._inbox.popleft())

    def _last_awaited_index(self) -> int:
        """Index in the inbox of the last wake a caller waits for (-1 if none)."""
        for index in range(len(self._inbox) - 1, -1, -1):
            if self._is_awaited(self._inbox[index]):
                return index
        return -1

    async def _end_long_task(self) -> None:
        """Call before applying each wake: after `max_wakes_per_task` wakes in one workflow
        task, let the task end, and go on when the next one starts. A task is recognised by
        the history length, which is the same for every activation of one task and grows
        with every new task.

        The next task starts as soon as anything arrives (under a flood: at once). With
        nothing arriving, a short timer starts it; a plain timer alone is no good, as sub-second
        timers fire only ~1 s late on the dev server and the loop would idle under a flood."""
        length = self._info.get_current_history_length()
        if length != self._task_history_length:
            self._task_history_length, self._wakes_in_task = length, 0
        self._wakes_in_task += 1
        if self._wakes_in_task <= self.max_wakes_per_task:
            return
        if not workflow.patched(_PATCH_BOUNDED_TASKS):  # histories from before this change
            return
        self.mark_working()
        await self._next_task("backlog: next batch", paced=True)

    async def _next_task(self, summary: str, *, paced: bool = False) -> None:
        """Let this workflow task end, and return in the next one: at once if a message
        arrives, else (`paced`: a backlog waits) when a no-op activity completes (~11 ms;
        activities.pacing says why not a timer), else after a short timer (waiting for a
        quiet task to switch in: under a flood the next message comes first and the timer
        is cancelled, cheaper than an activity that would start one more task)."""
        arrivals = self._signals_this_run + self._updates_this_run
        if paced and self._paced_by_activity:
            pacer = workflow.start_activity(
                NEXT_TASK_ACTIVITY,
                # One try, briefly: a worker without the activity falls back to ~2 s a step.
                schedule_to_close_timeout=timedelta(seconds=2),
                retry_policy=RetryPolicy(maximum_attempts=1),
                summary=summary,
            )
            pacer.add_done_callback(_ignore_outcome)
            await workflow.wait_condition(
                lambda: pacer.done() or self._signals_this_run + self._updates_this_run != arrivals
            )
            return
        try:
            await workflow.wait_condition(
                lambda: self._signals_this_run + self._updates_this_run != arrivals,
                timeout=0.001,
                timeout_summary=summary,
            )
        except TimeoutError:
            pass

    def _count_arrival(self, *, update: bool = False) -> None:
        """Count a signal or update toward the run's limits, noting the task it came in."""
        if update:
            self._updates_this_run += 1
        else:
            self._signals_this_run += 1
        self._arrival_task = self._info.get_current_history_length()

    def _may_switch_now(self) -> bool:
        """Continue-as-new now, or wait for a workflow task with no new messages? The server
        refuses the switch if messages arrive while its task runs; one that came in this
        task says more may be on the way. Past the `force_switch_*` limits: now."""
        info = self._info
        length = info.get_current_history_length()
        return (
            not self._quiet_switch
            or self._arrival_task != length
            or self._signals_this_run >= self.force_switch_signals
            or self._updates_this_run >= self.force_switch_updates
            or length >= self.force_switch_history_events
            or info.get_current_history_size() >= self.force_switch_history_bytes
        )

    def _is_awaited(self, wake: Wake) -> bool:
        if not isinstance(wake, MessageWake | RollbackWake):  # nobody waits for these turns
            return False
        key = wake.message.id if isinstance(wake, MessageWake) else wake.request_id
        pending = self._pending.get(key or "")
        return pending is not None and pending.waiters > 0

    # ------------------------------------------------------------------ helpers

    def _parse_message(self, raw: Any) -> Message:
        message = parse_input(Message, raw, error=InvalidMessage)
        return self.check_message(message, agent_type=self.agent_type)

    @classmethod
    def check_message(cls, message: Message, *, agent_type: str) -> Message:
        """The agent type's limits on one message (`max_text_chars`, `max_message_bytes` of
        JSON), checked by the client before sending and by the agent on arrival."""
        if len(message.text) > cls.max_text_chars:
            raise InvalidMessage(
                f"text has {len(message.text)} characters; {agent_type} agents accept at "
                f"most {cls.max_text_chars}"
            )
        # The size is the length of the JSON text (characters: what agents have always
        # counted, so histories replay the same; for non-ASCII text it is below the bytes).
        # Serialising a message only to measure it was a visible share of a flooded agent's
        # work: one without `data` or `reply_to` is at most 6 characters of JSON per
        # character of its strings (a \u00XX escape) plus its keys.
        if message.data is None and message.reply_to is None:
            strings = len(message.text) + len(message.sender or "") + len(message.id or "")
            if 6 * strings + _MESSAGE_KEYS_CHARS <= cls.max_message_bytes:
                return message
        size = len(message.model_dump_json())
        if size > cls.max_message_bytes:
            raise InvalidMessage(
                f"message is {size} bytes as JSON; {agent_type} agents accept at most "
                f"{cls.max_message_bytes}"
            )
        return message

    @staticmethod
    def _rejecting(check: Any) -> None:
        """Run a validator check; a PerennialError becomes a typed update rejection."""
        try:
            check()
        except PerennialError as err:
            raise to_application_error(err) from None

    def _admit(self, message: Message, *, awaited: bool) -> str:
        """Queue a message unless its id was already applied or is already queued."""
        if message.id is None:
            message = message.model_copy(update={"id": str(workflow.uuid4())})
        message_id = message.id
        assert message_id is not None
        if message_id in self._seen or message_id in self._pending:
            return message_id
        self._pending[message_id] = _Pending()
        now = workflow.now()
        self._inbox.append(MessageWake(message=message, awaited=awaited, received_at=now))
        self._log(
            ReceivedEvent,
            at=now,
            message_id=message_id,
            sender=message.sender,
            text=preview(message.text) or "",
            awaited=awaited,
        )
        return message_id

    async def _await_outcome(self, key: str) -> AskReply | RollbackResult:
        pending = self._pending[key]
        pending.waiters += 1
        try:
            await workflow.wait_condition(lambda: pending.outcome is not None)
        finally:
            pending.waiters -= 1
            if pending.waiters == 0 and self._pending.get(key) is pending:
                del self._pending[key]
        outcome = pending.outcome
        if isinstance(outcome, PerennialError):
            raise to_application_error(outcome)
        assert outcome is not None
        return outcome

    def _settle(self, key: str, outcome: AskReply | RollbackResult | PerennialError) -> None:
        pending = self._pending.get(key)
        if pending is None:
            return
        pending.outcome = outcome
        if pending.waiters == 0:  # nobody waits (a signal): forget it now
            del self._pending[key]

    def _restore(self, state_json: str) -> StateT:
        return self.state_model.model_validate_json(state_json)  # type: ignore[return-value]

    def _log(  # type: ignore[valid-type]
        self, kind: type[Event], *, at: datetime | None = None, **fields: Any
    ) -> int:
        """Record an event stamped `at` (default: now); returns its offset."""
        return self._events.record(kind, at=at or workflow.now(), **fields)

    def _details(self, doing: str) -> None:
        alarm = self._alarm_details()
        workflow.set_current_details(
            f"**{self.agent_type}/{self.agent_name}**: {doing}\n\n"
            f"version {self.version} · {len(self._inbox)} queued · "
            f"run {self._generation + 1} · events up to {self._events.last_offset}"
            + (f"\n\n{alarm}" if alarm else "")
        )

    def mark_working(self) -> None:
        """Publish AgentStatus 'working': call it when a turn is about to wait (for an
        activity, a child, a timer), so `AgentStatus='working'` finds agents mid-turn."""
        self._publish_behind = False
        self._publish(AgentStatus.WORKING)

    def _publish(self, status: AgentStatus) -> None:
        """Keep search attributes and current details in step with the agent."""
        wanted: dict[str, Any] = {
            AGENT_TYPE.name: self.agent_type,
            AGENT_NAME.name: self.agent_name,
            AGENT_STATUS.name: status.value,
        }
        if status in (
            AgentStatus.IDLE,
            AgentStatus.WAITING_ALARM,
            AgentStatus.WAITING_APPROVAL,
        ):
            # The version is published when a busy period ends, not after every turn: one
            # upsert per busy period keeps history small under a flood of messages.
            wanted[AGENT_VERSION.name] = self.version
            if self._idle_since is None:
                self._idle_since = workflow.now()
            self._details(f"idle since {self._idle_since:%Y-%m-%d %H:%M:%S} UTC")
        else:
            self._idle_since = None
        version = wanted.get(AGENT_VERSION.name)
        if version is not None and version != self._wanted.get(AGENT_VERSION.name):
            self._active_at = workflow.now()
        self._wanted = wanted
        self._upsert_changes()

    def _upsert_changes(self) -> None:
        """Upsert the search attributes that changed since the last upsert, or, written
        behind, leave them to the end of the current `publish_interval`."""
        changed = {k: v for k, v in self._wanted.items() if self._published.get(k) != v}
        if not changed:
            return
        if self._publish_behind:
            self._publish_behind = False
            if self._prearmed is None and self._publisher is None:  # a timer from here
                self._publish_at(workflow.now() + self._after_alarm_delay())
            return
        due = self._upsert_allowed_at(status_changed=AGENT_STATUS.name in changed)
        if self._publish_in_bursts and self._publisher is not None:
            # The pending upsert publishes whatever is wanted by then, unless this change
            # may go out sooner (a status change while version-only changes wait).
            if due is not None and self._publisher_due <= due:
                return
            self._publisher.cancel()
            self._publisher = None
        if due is not None:
            if self._publisher is None:
                self._publish_at(due)
            return
        updates = [_KEYS[name].value_set(value) for name, value in changed.items()]
        if AGENT_VERSION.name in changed and self.version != self._run_start_version:
            updates.append(AGENT_LAST_ACTIVE.value_set(self._active_at or workflow.now()))
        workflow.upsert_search_attributes(updates)
        self._published.update(changed)
        self._upserts.append(workflow.now())
        if len(self._upserts) > self.publish_burst:
            self._upserts.popleft()

    def _upsert_allowed_at(self, *, status_changed: bool) -> datetime | None:
        """None if an upsert may be made now, else when the next one may be made: once
        `publish_burst` upserts (one, in runs from before that patch) were made within the
        last `publish_interval`, at the end of the interval after the oldest of them; and
        when only the version changed, not before `publish_version_interval` after the last."""
        if not self._write_behind or not self._upserts:
            return None
        due: datetime | None = None
        burst = self.publish_burst if self._publish_in_bursts else 1
        if len(self._upserts) >= burst:
            due = self._upserts[-burst] + self.publish_interval
        if self._publish_in_bursts and not status_changed:
            version_due = self._upserts[-1] + self.publish_version_interval
            due = version_due if due is None else max(due, version_due)
        return due if due is not None and workflow.now() < due else None

    def _publish_at(self, due: datetime) -> None:
        self._publisher = asyncio.create_task(self._upsert_at(due))
        self._publisher_due = due

    async def _upsert_at(self, due: datetime) -> None:
        await workflow.sleep(seconds_until(due), summary="publish search attributes")
        self._publisher = None
        self._upsert_changes()

    def _prearm_publish(self, alarm_due: datetime | None) -> None:
        """Arm, while idle before an alarm, the timer that publishes what the alarm turn
        will change, due at a random point 2-4 s after the alarm: the alarm's own workflow
        task then has no command to make but the turn's (a timer started there was a
        measurable part of what made a crowd of alarms late). A timer armed for an alarm
        that was moved or cancelled is cancelled; one whose alarm has fired is kept, as it
        carries that alarm's changes."""
        if not self._publish_in_bursts:
            return
        if self._prearmed is not None:
            armed_for, task = self._prearmed
            if armed_for == alarm_due or armed_for <= workflow.now():
                return
            task.cancel()
            self._prearmed = None
        if alarm_due is not None:
            at = alarm_due + self._after_alarm_delay()
            self._prearmed = (alarm_due, asyncio.create_task(self._publish_after_alarm(at)))

    def _after_alarm_delay(self) -> timedelta:
        """1-2 publish intervals, at random per agent: a crowd's publishes do not form a
        second crowd."""
        return self.publish_interval * (1 + workflow.random().random())

    async def _publish_after_alarm(self, at: datetime) -> None:
        await workflow.sleep(seconds_until(at), summary="publish after alarm")
        self._prearmed = None
        self._upsert_changes()
        alarm = self._alarm_timer()  # a recurring schedule's next alarm
        self._prearm_publish(alarm[0] if alarm is not None else None)

    @staticmethod
    def _search_attributes_at_start() -> dict[str, Any]:
        """Ours among the search attributes this run started with (continue-as-new carries
        them over from the last run)."""
        carried = workflow.info().typed_search_attributes
        return {
            name: value for name, key in _KEYS.items() if (value := carried.get(key)) is not None
        }
