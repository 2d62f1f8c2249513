"""One watcher per agent per gateway process, fanning its state and events out to every
socket and stream that follows the agent, and pacing the messages sent into it.

A watcher follows the agent's event log (long-polls `wait_events`, or polls `events` when the
agent's waiter slots are taken), and after each committed version (`turn`, `rolled_back`)
reads the state once and sends every subscriber the JSON Patch from the last version it sent.
State reads are coalesced: a burst of turns costs one query per read, not one per turn.

Backpressure: messages accepted through this process and not yet applied are counted per
agent (by message id, until their `turn` or `turn_failed` event); past the limit a sender is
told to come back later (`TooManyUnapplied`, 429 with Retry-After), so a flood waits at the
edge instead of piling up in the agent's history.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import time
from collections import OrderedDict, deque
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import NamedTuple, TypeVar

import structlog
from pydantic import JsonValue

from perennial.client.agents import AgentHandle, AgentUnreachable, EventsMissed, Perennial
from perennial.client.gateway.patch import diff
from perennial.workflows.errors import AgentBusy, AgentNotFound
from perennial.workflows.messages import Event, StateView
from perennial.workflows.visibility import agent_id

log = structlog.get_logger("perennial.gateway")

T = TypeVar("T")

#: Frames a subscriber may have queued before it counts as too slow and is disconnected (it
#: reconnects and resumes from its last offset, so nothing is lost).
SUBSCRIBER_QUEUE = 1000
#: An unapplied message not seen applied after this long stops counting (its id may have
#: been a duplicate the agent dropped, or its events scrolled out unread).
PENDING_TTL_SECONDS = 120.0
#: How long a watcher nobody uses stays up (a page reload reconnects within it).
LINGER_SECONDS = 5.0
#: Agent handles a gateway process keeps (see `Hub.handle`).
HANDLES_KEPT = 10_000
#: Event kinds after which the agent's committed state may have changed.
_COMMITS = frozenset({"turn", "rolled_back"})
#: Event kinds that end a message's turn.
_APPLIED = frozenset({"turn", "turn_failed"})


class TooManyUnapplied(AgentBusy):
    """Too many messages sent to this agent through this gateway are not applied yet;
    retry after `retry_after` seconds."""

    def __init__(self, message: str, *, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class SubscriberTooSlow(Exception):
    """A subscriber did not read its frames fast enough and was dropped."""


class Frame(NamedTuple):
    """One thing to send a subscriber: `kind` is the socket message type, `data` the JSON
    text of the whole socket message, `offset` the event's offset (events only)."""

    kind: str
    data: str
    offset: int = 0
    #: For events: the event alone, as JSON (what an SSE stream sends).
    event: str = ""


class Subscriber:
    """One socket or event stream following one agent: a bounded queue of frames."""

    def __init__(self, *, events: bool, state: bool) -> None:
        self.wants_events = events
        self.wants_state = state
        self._queue: asyncio.Queue[Frame] = asyncio.Queue(maxsize=SUBSCRIBER_QUEUE)
        self.too_slow = False

    def push(self, frame: Frame) -> None:
        if self.too_slow:
            return
        try:
            self._queue.put_nowait(frame)
        except asyncio.QueueFull:
            self.too_slow = True  # a full queue has a reader to come: next() raises then

    async def next(self) -> Frame:
        """The next frame; SubscriberTooSlow once frames were dropped for this subscriber."""
        if self.too_slow:
            raise SubscriberTooSlow
        return await self._queue.get()


def state_frame(version: int, state: JsonValue | None) -> Frame:
    return Frame("state", json.dumps({"type": "state", "version": version, "state": state}))


def event_frame(event: Event) -> Frame:  # type: ignore[valid-type]
    text = event.model_dump_json()
    return Frame("event", f'{{"type":"event","event":{text}}}', event.offset, text)


def error_frame(err: Exception) -> Frame:
    """An unsolicited error (no request id): the agent cannot be followed right now."""
    body = {"type": "error", "error": {"type": type(err).__name__, "message": str(err)}}
    return Frame("error", json.dumps(body))


def missed_frame(missed: int, resume_after: int) -> Frame:
    body = {"type": "events_missed", "missed": missed, "resume_after": resume_after}
    return Frame("events_missed", json.dumps(body), resume_after)


class AgentWatcher:
    """Follows one agent for everyone in this process who watches or writes to it."""

    def __init__(self, hub: Hub, handle: AgentHandle) -> None:
        self._hub = hub
        self.handle = handle
        self.users = 0
        self.subscribers: set[Subscriber] = set()
        #: None until the agent is seen to exist.
        self.state: JsonValue | None = None
        self.version = 0
        #: The offset of the last event fanned out (None until the first state read).
        self.position: int | None = None
        self.ready = asyncio.Event()
        #: Message ids sent through this process and not seen applied: when they were sent.
        self._pending: dict[str, float] = {}
        self._applied_at: deque[float] = deque(maxlen=50)
        self._dirty = asyncio.Event()
        #: The cached state missed commits (nobody wanted state): the next read is sent whole.
        self._stale = False
        #: Set when a request through this process may have created the agent.
        self._poked = asyncio.Event()
        self._stopping: asyncio.TimerHandle | None = None
        self._task = asyncio.create_task(self._run(), name=f"watch {handle.id}")
        self._task.add_done_callback(_quietly)

    # ------------------------------------------------------------------ subscribers

    def subscribe(self, subscriber: Subscriber) -> None:
        """Start fanning out to `subscriber`; it first gets the current state (when it
        wants state and the watcher has read it)."""
        self.subscribers.add(subscriber)
        if subscriber.wants_state and self.ready.is_set():
            if self._stale:
                self._dirty.set()  # the read sends everyone the whole state
            else:
                subscriber.push(state_frame(self.version, self.state))

    def unsubscribe(self, subscriber: Subscriber) -> None:
        self.subscribers.discard(subscriber)

    def _wanted(self, *, events: bool) -> bool:
        return any(s.wants_events if events else s.wants_state for s in self.subscribers)

    def _fan_out(self, frame: Frame, *, events: bool) -> None:
        for subscriber in self.subscribers:
            if subscriber.wants_events if events else subscriber.wants_state:
                subscriber.push(frame)

    # ------------------------------------------------------------------ backpressure

    def reserve(self, message_id: str) -> None:
        """Count a message about to be sent; TooManyUnapplied when the agent is too far
        behind on what this process sent it."""
        now = time.monotonic()
        for stale in [i for i, at in self._pending.items() if now - at > PENDING_TTL_SECONDS]:
            del self._pending[stale]
        if message_id in self._pending:
            return
        self._hub.check_room(self.handle.id, len(self._pending), self._retry_after())
        self._pending[message_id] = now

    def poke(self) -> None:
        """A request through this process reached the agent: if the watcher is waiting for
        the agent to exist, look again now."""
        self._poked.set()

    def release(self, message_id: str) -> None:
        """Stop counting a message (it was refused, or its caller saw it applied)."""
        self._pending.pop(message_id, None)

    def _retry_after(self) -> int:
        """Seconds until about a tenth of the backlog is applied, at the recent apply rate."""
        if len(self._applied_at) < 2:
            return 1
        span = self._applied_at[-1] - self._applied_at[0]
        rate = (len(self._applied_at) - 1) / span if span > 0 else 1000.0
        return max(1, min(30, math.ceil(len(self._pending) / 10 / rate)))

    @property
    def unapplied(self) -> int:
        return len(self._pending)

    # ------------------------------------------------------------------ following

    async def _run(self) -> None:
        backoff = _Backoff()
        while True:
            try:
                await self._until_exists(backoff)
                await asyncio.gather(self._follow(), self._refresh_state())
            except AgentNotFound:
                log.info("watched agent is gone; waiting for it", agent=self.handle.id)
                self._lost()
            except (AgentUnreachable, AgentBusy, OSError, RuntimeError) as err:
                log.warning("watching failed; retrying", agent=self.handle.id, error=str(err))
                self._fan_out(error_frame(err), events=False)  # say why nothing comes
                await backoff.wait()

    async def _until_exists(self, backoff: _Backoff) -> None:
        while True:
            try:
                view = await self.handle.state_view()
            except AgentNotFound:
                if not self.ready.is_set():
                    self.position = 0  # a new agent's events start at offset 1
                    self.ready.set()
                    self._fan_out(state_frame(0, None), events=False)
                self._poked.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._poked.wait(), backoff.next_delay())
                continue
            backoff.reset()
            if self.position is None or view.last_event_offset < self.position:
                # first read, or an agent started afresh under this name
                self.position = view.last_event_offset
            self._take_state(view, started=time.monotonic())
            self.ready.set()
            return

    def _lost(self) -> None:
        self.state, self.version = None, 0
        self._fan_out(state_frame(0, None), events=False)

    async def _follow(self) -> None:
        while True:
            assert self.position is not None
            try:
                async for event in self.handle.watch(after=self.position):
                    self._on_event(event)
            except EventsMissed as err:
                self._fan_out(missed_frame(err.missed, err.resume_after), events=True)
                self.position = err.resume_after
                self._dirty.set()  # the state read reconciles the unapplied count

    def _on_event(self, event: Event) -> None:  # type: ignore[valid-type]
        self.position = event.offset
        if self._wanted(events=True):  # a watcher for backpressure alone builds no frames
            self._fan_out(event_frame(event), events=True)
        if event.kind in _APPLIED and self._pending.pop(event.message_id, None) is not None:
            self._applied_at.append(time.monotonic())
        if event.kind in _COMMITS:
            if self._wanted(events=False):
                self._dirty.set()
            else:
                self._stale = True

    async def _refresh_state(self) -> None:
        while True:
            await self._dirty.wait()
            self._dirty.clear()
            started = time.monotonic()
            self._take_state(await self.handle.state_view(), started=started)

    def _take_state(self, view: StateView, *, started: float) -> None:
        """Adopt a state read: fan out the change, and forget unapplied messages the agent
        no longer has (an empty, idle inbox holds none sent before the read began)."""
        if view.inbox == 0 and not view.busy:
            for message_id in [i for i, at in self._pending.items() if at < started]:
                del self._pending[message_id]
        if self.state is not None and view.version == self.version and not self._stale:
            return
        frame = state_frame(view.version, view.state) if self._stale else self._change(view)
        self.state, self.version, self._stale = view.state, view.version, False
        self._fan_out(frame, events=False)

    def _change(self, view: StateView) -> Frame:
        """A patch from the last version sent, or the whole state when it is smaller."""
        if self.state is None or view.version < self.version:
            return state_frame(view.version, view.state)
        ops = diff(self.state, view.state)
        patch = {"type": "patch", "from_version": self.version, "version": view.version,
                 "ops": ops}  # fmt: skip
        whole = state_frame(view.version, view.state)
        text = json.dumps(patch)
        return whole if len(text) > len(whole.data) else Frame("patch", text)

    # ------------------------------------------------------------------ lifetime

    def acquire(self) -> None:
        self.users += 1
        if self._stopping is not None:
            self._stopping.cancel()
            self._stopping = None

    def release_user(self) -> None:
        self.users -= 1
        if self.users == 0:
            self._stop_later()

    def _stop_later(self) -> None:
        loop = asyncio.get_running_loop()
        self._stopping = loop.call_later(LINGER_SECONDS, self._stop_if_idle)

    def _stop_if_idle(self) -> None:
        self._stopping = None
        if self.users or self.subscribers:
            return
        if self._pending:  # keep counting what was sent until it is applied
            self._stop_later()
            return
        self._hub._forget(self)
        self._task.cancel()

    async def close(self) -> None:
        if self._stopping is not None:
            self._stopping.cancel()
        self._task.cancel()
        await asyncio.wait({self._task})


class Hub:
    """The watchers of one gateway process, one per agent."""

    def __init__(self, perennial: Perennial, *, max_unapplied: int) -> None:
        self.perennial = perennial
        self.max_unapplied = max_unapplied
        self._watchers: dict[str, AgentWatcher] = {}
        #: Asks and calls through this process waiting for their answers, per agent id.
        self._waiting: dict[str, int] = {}
        #: Handles kept per agent: a handle that has seen its agent calls it directly, a new
        #: one starts with signal-/update-with-start, which costs the server more.
        self._handles: OrderedDict[str, AgentHandle] = OrderedDict()

    def handle(self, agent_type: str, name: str) -> AgentHandle:
        """The agent's handle, kept for the next request (the newest HANDLES_KEPT)."""
        key = agent_id(agent_type, name)
        found = self._handles.get(key)
        if found is None:
            found = self._handles[key] = self.perennial.agent(agent_type, name)
            if len(self._handles) > HANDLES_KEPT:
                self._handles.popitem(last=False)
        else:
            self._handles.move_to_end(key)
        return found

    def __len__(self) -> int:
        return len(self._watchers)

    @contextlib.asynccontextmanager
    async def use(self, agent_type: str, name: str) -> AsyncIterator[AgentWatcher]:
        """The agent's watcher, started if needed, kept up while in use."""
        handle = self.handle(agent_type, name)
        watcher = self._watchers.get(handle.id)
        if watcher is None:
            watcher = self._watchers[handle.id] = AgentWatcher(self, handle)
        watcher.acquire()
        try:
            yield watcher
        finally:
            watcher.release_user()

    async def paced(
        self, agent_type: str, name: str, message_id: str,
        request: Callable[[], Awaitable[T]], *, until_applied: bool = False,
    ) -> T:  # fmt: skip
        """Run a request that puts message `message_id` into the agent's inbox, counted as
        unapplied while it runs, or (`until_applied`, for a send) until the agent's log shows
        it applied, which takes a watcher. An ask or a call is applied when it returns: it is
        counted here without one, so the agent is not followed for nothing."""
        if until_applied:
            async with self.use(agent_type, name) as watcher:
                watcher.reserve(message_id)
                try:
                    result = await request()
                except BaseException:
                    watcher.release(message_id)
                    raise
                watcher.poke()
                return result
        key = agent_id(agent_type, name)
        watcher = self._watchers.get(key)
        self.check_room(key, watcher.unapplied if watcher else 0, 1)
        self._waiting[key] = self._waiting.get(key, 0) + 1
        try:
            result = await request()
        finally:
            self._waiting[key] -= 1
            if not self._waiting[key]:
                del self._waiting[key]
        if watcher is not None:
            watcher.poke()
        return result

    def check_room(self, key: str, sent: int, retry_after: int) -> None:
        """TooManyUnapplied when the agent `key` has as many messages from this process not
        applied yet (`sent` by send, plus asks and calls waiting) as the limit allows."""
        unapplied = sent + self._waiting.get(key, 0)
        if unapplied >= self.max_unapplied:
            raise TooManyUnapplied(
                f"{unapplied} messages sent to {key} through this gateway are not applied yet "
                f"(at most {self.max_unapplied}); retry later",
                retry_after=retry_after,
            )

    def _forget(self, watcher: AgentWatcher) -> None:
        if self._watchers.get(watcher.handle.id) is watcher:
            del self._watchers[watcher.handle.id]

    async def close(self) -> None:
        watchers, self._watchers = list(self._watchers.values()), {}
        await asyncio.gather(*(w.close() for w in watchers))


async def follow(
    watcher: AgentWatcher, subscriber: Subscriber, *, after: int | None
) -> AsyncIterator[Frame]:
    """A subscriber's frames: its backlog of events after `after` (read from the agent's
    log), then the live frames, each event once and in offset order."""
    watcher.subscribe(subscriber)
    try:
        await watcher.ready.wait()
        sent = after if after is not None else (watcher.position or 0)
        if subscriber.wants_events and after is not None:
            async for frame in _backlog(watcher, after=after, until=watcher.position or 0):
                sent = frame.offset
                yield frame
        while True:
            frame = await subscriber.next()
            if frame.kind == "event":
                if frame.offset <= sent:
                    continue
                sent = frame.offset
            elif frame.kind == "events_missed":
                if frame.offset <= sent:
                    continue
                sent = frame.offset
            yield frame
    finally:
        watcher.unsubscribe(subscriber)


async def _backlog(watcher: AgentWatcher, *, after: int, until: int) -> AsyncIterator[Frame]:
    """Events after `after` up to offset `until`, page by page from query `events`."""
    while after < until:
        try:
            page = await watcher.handle.events(after=after, limit=500)
        except AgentNotFound:
            return
        if page.missed:
            yield missed_frame(page.missed, page.oldest_offset - 1)
        for event in page.events:
            if event.offset > until:
                return
            yield event_frame(event)
        if not page.events:
            return
        after = page.next_after


def _quietly(task: asyncio.Task[None]) -> None:
    """A stopped watcher's end: cancelled, or the SDK's own error for a cancelled call."""
    if not task.cancelled() and task.exception() is not None:
        log.debug("watcher ended", task=task.get_name(), error=repr(task.exception()))


class _Backoff:
    """Waits of 0.1 s doubling to 2 s; back to the start after a success."""

    def __init__(self) -> None:
        self._delay = 0.1

    def reset(self) -> None:
        self._delay = 0.1

    def next_delay(self) -> float:
        delay, self._delay = self._delay, min(self._delay * 2, 2.0)
        return delay

    async def wait(self) -> None:
        await asyncio.sleep(self.next_delay())


__all__ = [
    "AgentWatcher",
    "Frame",
    "Hub",
    "Subscriber",
    "SubscriberTooSlow",
    "TooManyUnapplied",
    "follow",
]
