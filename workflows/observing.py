"""Observing another agent: be woken (debounced) when it changes.

`AgentWorkflow` inherits `Observing`, so every agent type has:

* `observe(agent_type, name, watch="state", debounce_seconds=2)`: from now on, this agent is
  woken with a `peer_changed` wake when that agent's state gets a new version (`watch="state"`)
  or its event log grows (`watch="events"`); changes within one debounce window are reported
  once. `stop_observing(agent_type, name)` ends it; `observed` lists the observations.
* `on_peer_changed`: the hook the wake is applied with (default: to `on_message` as a message
  from `peer:<peer id>`); LLM agents run a turn that tells the model who changed.

How. The observer signals `subscribe` to the observed agent (which must be running:
`AgentNotFound` otherwise), which keeps its subscribers and, per subscriber, one task that waits
for a change, waits out the debounce window (a timer summarised `debounce ... for <id>`), and
signals `peer_changed` (the version and last event offset) to the subscriber's workflow id.
Pushing beats polling here: nothing runs while nothing changes, and each window costs the
observed agent one timer and one signal per subscriber. The observer coalesces a
`peer_changed` that arrives while an earlier one still waits in its inbox into that one
(debounced on both sides). Both sides carry their halves across continue-as-new, with the last
reported version and offset, so a change made just before a switch is still reported once.
A subscriber that no longer exists is dropped at its next report.

Two agents that observe each other's state wake each other forever (every applied wake makes
a new version), one round per debounce window: observe one way, or stop when done.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Literal

from temporalio import workflow
from temporalio.exceptions import ApplicationError

from workflows.errors import AgentNotFound, InvalidRequest, NotObserving, parse_input
from workflows.messages import (
    AgentStart,
    PeerChange,
    PeerChangedEvent,
    PeerChangedWake,
    RejectedEvent,
    SubscribeRequest,
    Subscription,
    SubscriptionEvent,
    UnsubscribeRequest,
    Wake,
)
from workflows.visibility import agent_id

if TYPE_CHECKING:
    from workflows.errors import TurnFailed
    from workflows.eventlog import EventLog
    from workflows.messages import AskReply, Event

SUBSCRIBE_SIGNAL = "subscribe"
UNSUBSCRIBE_SIGNAL = "unsubscribe"
PEER_CHANGED_SIGNAL = "peer_changed"


class Observing:
    """Observations between agents for `AgentWorkflow` (see the module docstring)."""

    if TYPE_CHECKING:  # provided by AgentWorkflow
        _inbox: deque[Wake]
        _events: EventLog

        @property
        def version(self) -> int: ...
        def _log(self, kind: type[Event], **fields: Any) -> int: ...  # type: ignore[valid-type]
        def _count_arrival(self, *, update: bool = False) -> None: ...
        async def on_message(self, message: Any) -> str | None: ...
        async def _run_turn(
            self, key: str, label: str, turn: Callable[[], Awaitable[str | None]]
        ) -> AskReply | TurnFailed: ...

    def _init_observing(self, start: AgentStart) -> None:
        #: Agents this one observes, by their ids.
        self._subscriptions: dict[str, Subscription] = {s.peer_id: s for s in start.subscriptions}
        #: Agents observing this one, by their ids.
        self._subscribers: dict[str, Subscription] = {s.subscriber_id: s for s in start.subscribers}
        self._notifiers: dict[str, asyncio.Task[None]] = {}

    # ------------------------------------------------------------------ for agent types

    async def observe(
        self,
        agent_type: str,
        name: str,
        *,
        watch: Literal["state", "events"] = "state",
        debounce_seconds: float = 2.0,
    ) -> Subscription:
        """Be woken with `peer_changed` when `{agent_type}/{name}` changes (see the module
        docstring). Observing an agent again replaces the earlier observation. Raises
        `InvalidRequest` for bad options or this agent itself, `AgentNotFound` if the agent
        is not running."""
        me = workflow.info().workflow_id
        peer_id = agent_id(agent_type, name)
        if peer_id == me:
            raise InvalidRequest("an agent cannot observe itself")
        request = parse_input(
            SubscribeRequest,
            {"subscriber_id": me, "watch": watch, "debounce_seconds": debounce_seconds},
        )
        try:
            await workflow.get_external_workflow_handle(peer_id).signal(SUBSCRIBE_SIGNAL, request)
        except ApplicationError as err:
            raise AgentNotFound(f"cannot observe {peer_id}: {err}") from None
        subscription = Subscription(**request.model_dump(), peer_id=peer_id, since=workflow.now())
        self._subscriptions[peer_id] = subscription
        self._log(SubscriptionEvent, role="observer", peer_id=peer_id, active=True)
        return subscription

    async def stop_observing(self, agent_type: str, name: str) -> Subscription:
        """End an observation (`NotObserving` if there is none). A `peer_changed` already
        in the inbox is still applied; later ones are ignored."""
        peer_id = agent_id(agent_type, name)
        subscription = self._subscriptions.pop(peer_id, None)
        if subscription is None:
            raise NotObserving(f"this agent does not observe {peer_id}")
        request = UnsubscribeRequest(subscriber_id=workflow.info().workflow_id)
        try:
            await workflow.get_external_workflow_handle(peer_id).signal(UNSUBSCRIBE_SIGNAL, request)
        except ApplicationError as err:  # the peer is gone: nothing left to stop
            workflow.logger.info("could not unsubscribe from %s: %s", peer_id, err)
        self._log(SubscriptionEvent, role="observer", peer_id=peer_id, active=False)
        return subscription

    @property
    def observed(self) -> list[Subscription]:
        """The agents this one observes."""
        return sorted(self._subscriptions.values(), key=lambda s: s.since)

    async def on_peer_changed(self, wake: PeerChangedWake) -> str | None:
        """Apply a peer's change to `self.state`; the default hands it to `on_message` as
        `wake.as_message()`."""
        return await self.on_message(wake.as_message())

    # ------------------------------------------------------------------ wire

    @workflow.signal(name=SUBSCRIBE_SIGNAL)
    def subscribe_signal(self, raw: Any) -> None:
        self._count_arrival()
        try:
            request = parse_input(SubscribeRequest, raw)
        except InvalidRequest as err:
            self._log(RejectedEvent, error=str(err))
            return
        subscriber = Subscription(
            **request.model_dump(),
            peer_id=workflow.info().workflow_id,
            since=workflow.now(),
            reported_version=self.version,
            reported_offset=self._events.last_offset,
        )
        self._subscribers[request.subscriber_id] = subscriber
        self._log(SubscriptionEvent, role="observed", peer_id=request.subscriber_id, active=True)
        self._start_notifier(request.subscriber_id)

    @workflow.signal(name=UNSUBSCRIBE_SIGNAL)
    def unsubscribe_signal(self, raw: Any) -> None:
        self._count_arrival()
        try:
            request = parse_input(UnsubscribeRequest, raw)
        except InvalidRequest as err:
            self._log(RejectedEvent, error=str(err))
            return
        self._drop_subscriber(request.subscriber_id)

    @workflow.signal(name=PEER_CHANGED_SIGNAL)
    def peer_changed_signal(self, raw: Any) -> None:
        self._count_arrival()
        try:
            change = parse_input(PeerChange, raw)
        except InvalidRequest as err:
            self._log(RejectedEvent, error=str(err))
            return
        if change.peer_id not in self._subscriptions:
            return  # a report that crossed our unsubscribe
        for index, wake in enumerate(self._inbox):
            if isinstance(wake, PeerChangedWake) and wake.change.peer_id == change.peer_id:
                self._inbox[index] = wake.model_copy(
                    update={"change": change, "signals": wake.signals + 1}
                )
                return
        self._inbox.append(PeerChangedWake(change=change, received_at=workflow.now()))
        self._log(PeerChangedEvent, peer_id=change.peer_id, version=change.version,
                  last_offset=change.last_offset)  # fmt: skip

    @workflow.query(name="subscriptions")
    def subscriptions_query(self) -> dict[str, list[Subscription]]:
        """What this agent observes, and who observes it."""
        return {
            "observing": self.observed,
            "observed_by": sorted(self._subscribers.values(), key=lambda s: s.since),
        }

    # ------------------------------------------------------------------ the observed side

    def _arm_notifiers(self) -> None:
        """At the start of a run: one notifier per carried subscriber."""
        for subscriber_id in list(self._subscribers):
            self._start_notifier(subscriber_id)

    def _start_notifier(self, subscriber_id: str) -> None:
        previous = self._notifiers.pop(subscriber_id, None)
        if previous is not None:
            previous.cancel()
        self._notifiers[subscriber_id] = asyncio.create_task(self._notify(subscriber_id))

    def _drop_subscriber(self, subscriber_id: str) -> None:
        if self._subscribers.pop(subscriber_id, None) is None:
            return
        notifier = self._notifiers.pop(subscriber_id, None)
        if notifier is not None:
            notifier.cancel()
        self._log(SubscriptionEvent, role="observed", peer_id=subscriber_id, active=False)

    def _changed_for(self, subscriber: Subscription) -> bool:
        if subscriber.watch == "events":
            return self._events.last_offset != subscriber.reported_offset
        return self.version != subscriber.reported_version

    async def _notify(self, subscriber_id: str) -> None:
        """Report changes to one subscriber, at most one signal per debounce window."""
        me = workflow.info().workflow_id
        while (subscriber := self._subscribers.get(subscriber_id)) is not None:
            await workflow.wait_condition(lambda s=subscriber: self._changed_for(s))
            await workflow.sleep(
                subscriber.debounce_seconds, summary=f"debounce changes for {subscriber_id}"
            )
            if self._subscribers.get(subscriber_id) is not subscriber:
                return
            change = PeerChange(peer_id=me, version=self.version,
                                last_offset=self._events.last_offset,
                                changed_at=workflow.now())  # fmt: skip
            try:
                await workflow.get_external_workflow_handle(subscriber_id).signal(
                    PEER_CHANGED_SIGNAL, change
                )
            except ApplicationError as err:  # the subscriber is gone
                workflow.logger.info("dropping subscriber %s: %s", subscriber_id, err)
                self._notifiers.pop(subscriber_id, None)
                self._drop_subscriber(subscriber_id)
                return
            # Reported once delivered: a continue-as-new while the signal is on its way
            # carries the older mark, and the next run reports the change again.
            subscriber.reported_version = change.version
            subscriber.reported_offset = change.last_offset

    def _carried_observations(self) -> dict[str, Any]:
        return {
            "subscriptions": self.observed,
            "subscribers": list(self._subscribers.values()),
        }


def peer_prompt(wake: PeerChangedWake) -> str:
    """How a peer's change reads to a model: the user message of the turn it wakes."""
    change = wake.change
    several = f" ({wake.signals} reports folded into one)" if wake.signals > 1 else ""
    return (
        f"[agent {change.peer_id} changed{several}] It is now at state version "
        f"{change.version} (event offset {change.last_offset}), as of "
        f"{change.changed_at.isoformat()}."
    )


__all__ = ["Observing", "peer_prompt"]
