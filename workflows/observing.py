"""Observing another agent: be woken (debounced) when it changes.

Every agent has:

* `observe(agent_type, name, watch="state", debounce_seconds=2)`: from now on, this agent is
  woken with a `peer_changed` wake when that agent's state gets a new version (`watch="state"`)
  or its event log grows (`watch="events"`); changes within one debounce window are reported
  once. `stop_observing(agent_type, name)` ends it; `observed` lists the observations.
* `on_peer_changed`: the hook the wake is applied with (default: to `on_message` as a message
  from `peer:<peer id>`); LLM agents run a turn that tells the model who changed.

How. The observer keeps the observation with a fresh token and signals `subscribe` (with the
token) to the observed agent, which must be running (`AgentNotFound` otherwise). The observed
agent believes nobody on their word: an activity asks the claimed subscriber (query
`confirm_subscription`, which answers yes or no and reveals nothing) whether it wants these
changes under this token; only then does it keep the subscriber, at most `max_observers` of
them. Per subscriber, one task waits for a change, waits out the debounce window, and signals
`peer_changed` (version, last event offset and the token) to the subscriber, which ignores a
change without the token. Both sides carry their halves across continue-as-new, with the last
reported version and offset, so a change made just before a switch is still reported once. A
subscriber that no longer exists is dropped at its next report.

Two agents that observe each other's state wake each other forever (every applied wake makes
a new version), one round per debounce window: observe one way, or stop when done.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from datetime import timedelta
from typing import Literal

from temporalio import workflow
from temporalio.common import RawValue, RetryPolicy
from temporalio.exceptions import ApplicationError

from perennial.workflows.errors import (
    AgentNotFound,
    InvalidRequest,
    LimitExceeded,
    NotObserving,
    parse_input,
)
from perennial.workflows.inbox import Inbox
from perennial.workflows.messages import (
    Observation,
    ObservingCarried,
    PeerChange,
    PeerChangedEvent,
    PeerChangedWake,
    SubscriberCheck,
    SubscribeRequest,
    Subscription,
    SubscriptionCheck,
    SubscriptionEvent,
    UnsubscribeRequest,
)
from perennial.workflows.parts import AgentContext, Part, SignalHandler
from perennial.workflows.payloads import decode
from perennial.workflows.visibility import agent_id

SUBSCRIBE_SIGNAL = "subscribe"
UNSUBSCRIBE_SIGNAL = "unsubscribe"
PEER_CHANGED_SIGNAL = "peer_changed"
#: The query a subscriber answers to confirm its subscription.
CONFIRM_SUBSCRIPTION_QUERY = "confirm_subscription"
#: The activity that asks it.
CONFIRM_SUBSCRIBER_ACTIVITY = "confirm_subscriber"


class Observing(Part):
    def __init__(
        self,
        ctx: AgentContext,
        carried: ObservingCarried,
        *,
        inbox: Inbox,
        max_observing: int,
        max_observers: int,
    ) -> None:
        self._ctx = ctx
        self._inbox = inbox
        self._max_observing = max_observing
        self._max_observers = max_observers
        #: Agents this one observes, by their ids.
        self._observing: dict[str, Observation] = {s.peer_id: s for s in carried.observing}
        #: Confirmed agents observing this one, by their ids.
        self._observers: dict[str, Observation] = {s.subscriber_id: s for s in carried.observers}
        #: Subscribers being asked to confirm, with their would-be observations.
        self._confirming: dict[str, tuple[Observation, asyncio.Task[None]]] = {}
        self._carried_confirming = carried.confirming
        self._notifiers: dict[str, asyncio.Task[None]] = {}

    def signals(self) -> Mapping[str, SignalHandler]:
        return {
            SUBSCRIBE_SIGNAL: self._on_subscribe,
            UNSUBSCRIBE_SIGNAL: self._on_unsubscribe,
            PEER_CHANGED_SIGNAL: self._on_peer_changed,
        }

    # ------------------------------------------------------------------ the observer's side

    async def observe(
        self, agent_type: str, name: str, *, watch: Literal["state", "events"], debounce: float
    ) -> Subscription:
        me = self._ctx.agent_id
        peer_id = agent_id(agent_type, name)
        if peer_id == me:
            raise InvalidRequest("an agent cannot observe itself")
        if peer_id not in self._observing and len(self._observing) >= self._max_observing:
            raise LimitExceeded(
                f"this agent observes {len(self._observing)} agents, the most its type allows"
            )
        token = self._ctx.new_token()
        request = parse_input(
            SubscribeRequest,
            {"subscriber_id": me, "watch": watch, "debounce_seconds": debounce, "token": token},
        )
        observation = Observation(**request.model_dump(exclude={"token"}), peer_id=peer_id,
                                  since=workflow.now(), token=token)  # fmt: skip
        # Kept before the signal goes out: the peer's confirmation query may come at once.
        previous = self._observing.get(peer_id)
        self._observing[peer_id] = observation
        try:
            await workflow.get_external_workflow_handle(peer_id).signal(SUBSCRIBE_SIGNAL, request)
        except ApplicationError as err:
            if previous is None:
                self._observing.pop(peer_id, None)
            else:
                self._observing[peer_id] = previous
            raise AgentNotFound(f"cannot observe {peer_id}: {err}") from None
        self._ctx.record(SubscriptionEvent, role="observer", peer_id=peer_id, active=True)
        return _public(observation)

    async def stop(self, agent_type: str, name: str) -> Subscription:
        peer_id = agent_id(agent_type, name)
        observation = self._observing.pop(peer_id, None)
        if observation is None:
            raise NotObserving(f"this agent does not observe {peer_id}")
        request = UnsubscribeRequest(subscriber_id=self._ctx.agent_id, token=observation.token)
        try:
            await workflow.get_external_workflow_handle(peer_id).signal(UNSUBSCRIBE_SIGNAL, request)
        except ApplicationError as err:  # the peer is gone: nothing left to stop
            workflow.logger.info("could not unsubscribe from %s: %s", peer_id, err)
        self._ctx.record(SubscriptionEvent, role="observer", peer_id=peer_id, active=False)
        return _public(observation)

    @property
    def observing(self) -> list[Subscription]:
        return [_public(s) for s in sorted(self._observing.values(), key=lambda s: s.since)]

    @property
    def observers(self) -> list[Subscription]:
        return [_public(s) for s in sorted(self._observers.values(), key=lambda s: s.since)]

    def confirms(self, check: SubscriptionCheck) -> bool:
        """Query `confirm_subscription`: does this agent observe `peer_id` under `token`?"""
        observation = self._observing.get(check.peer_id)
        return observation is not None and observation.token == check.token

    def _on_peer_changed(self, raw: RawValue) -> None:
        change = decode(raw, PeerChange)
        observation = self._observing.get(change.peer_id)
        if observation is None:
            return  # a report that crossed our unsubscribe
        if change.token != observation.token:
            self._ctx.reject(PEER_CHANGED_SIGNAL, f"change of {change.peer_id} without its token")
            return
        for index, wake in enumerate(self._inbox):
            if isinstance(wake, PeerChangedWake) and wake.change.peer_id == change.peer_id:
                self._inbox[index] = wake.model_copy(
                    update={"change": change, "signals": wake.signals + 1}
                )
                return
        self._ctx.queue(PeerChangedWake(change=change, received_at=workflow.now()))
        self._ctx.record(PeerChangedEvent, peer_id=change.peer_id, version=change.version,
                         last_offset=change.last_offset)  # fmt: skip

    # ------------------------------------------------------------------ the observed side

    def _on_subscribe(self, raw: RawValue) -> None:
        request = decode(raw, SubscribeRequest)
        subscriber_id = request.subscriber_id
        if subscriber_id == self._ctx.agent_id or request.token is None:
            self._ctx.reject(SUBSCRIBE_SIGNAL, f"{subscriber_id} cannot subscribe without a token")
            return
        known = self._observers.get(subscriber_id)
        if known is None and subscriber_id not in self._confirming:
            if len(self._observers) + len(self._confirming) >= self._max_observers:
                self._ctx.reject(
                    SUBSCRIBE_SIGNAL,
                    f"{subscriber_id} cannot subscribe: {self._max_observers} agents already do",
                )
                return
        pending = Observation(**request.model_dump(exclude={"token"}), peer_id=self._ctx.agent_id,
                              since=workflow.now(), token=request.token,
                              reported_version=self._ctx.version,
                              reported_offset=self._ctx.events.last_offset)  # fmt: skip
        self._start_confirming(pending)

    def _start_confirming(self, pending: Observation) -> None:
        previous = self._confirming.pop(pending.subscriber_id, None)
        if previous is not None:
            previous[1].cancel()
        task = asyncio.create_task(self._confirm(pending))
        self._confirming[pending.subscriber_id] = (pending, task)

    async def _confirm(self, pending: Observation) -> None:
        """Keep a subscriber once it confirms the subscription (query, by an activity)."""
        subscriber_id = pending.subscriber_id
        check = SubscriberCheck(
            subscriber_id=subscriber_id,
            check=SubscriptionCheck(peer_id=self._ctx.agent_id, token=pending.token),
        )
        try:
            confirmed = await workflow.execute_activity(
                CONFIRM_SUBSCRIBER_ACTIVITY,
                check,
                result_type=bool,
                start_to_close_timeout=timedelta(seconds=10),
                retry_policy=RetryPolicy(maximum_attempts=3),
                summary=f"confirm subscriber {subscriber_id}",
            )
        except Exception as err:  # the activity failed for good: not confirmed
            workflow.logger.info("could not confirm subscriber %s: %s", subscriber_id, err)
            confirmed = False
        finally:
            entry = self._confirming.get(subscriber_id)
            if entry is not None and entry[0] is pending:  # not replaced by a newer request
                del self._confirming[subscriber_id]
        if not confirmed:
            self._ctx.reject(SUBSCRIBE_SIGNAL, f"{subscriber_id} did not confirm the subscription")
            return
        self._observers[subscriber_id] = pending
        self._ctx.record(SubscriptionEvent, role="observed", peer_id=subscriber_id, active=True)
        self._start_notifier(subscriber_id)

    def _on_unsubscribe(self, raw: RawValue) -> None:
        request = decode(raw, UnsubscribeRequest)
        known = self._observers.get(request.subscriber_id)
        if known is None:
            return
        if request.token != known.token:
            self._ctx.reject(UNSUBSCRIBE_SIGNAL, f"for {request.subscriber_id} without its token")
            return
        self._drop_observer(request.subscriber_id)

    def _start_notifier(self, subscriber_id: str) -> None:
        previous = self._notifiers.pop(subscriber_id, None)
        if previous is not None:
            previous.cancel()
        self._notifiers[subscriber_id] = asyncio.create_task(self._notify(subscriber_id))

    def _drop_observer(self, subscriber_id: str) -> None:
        if self._observers.pop(subscriber_id, None) is None:
            return
        notifier = self._notifiers.pop(subscriber_id, None)
        if notifier is not None:
            notifier.cancel()
        self._ctx.record(SubscriptionEvent, role="observed", peer_id=subscriber_id, active=False)

    def _changed_for(self, observer: Observation) -> bool:
        if observer.watch == "events":
            return self._ctx.events.last_offset != observer.reported_offset
        return self._ctx.version != observer.reported_version

    async def _notify(self, subscriber_id: str) -> None:
        """Report changes to one subscriber, at most one signal per debounce window."""
        while (observer := self._observers.get(subscriber_id)) is not None:
            await workflow.wait_condition(lambda o=observer: self._changed_for(o))
            await workflow.sleep(
                observer.debounce_seconds, summary=f"debounce changes for {subscriber_id}"
            )
            if self._observers.get(subscriber_id) is not observer:
                return
            change = PeerChange(peer_id=self._ctx.agent_id, version=self._ctx.version,
                                last_offset=self._ctx.events.last_offset,
                                changed_at=workflow.now(), token=observer.token)  # fmt: skip
            try:
                await workflow.get_external_workflow_handle(subscriber_id).signal(
                    PEER_CHANGED_SIGNAL, change
                )
            except ApplicationError as err:  # the subscriber is gone
                workflow.logger.info("dropping subscriber %s: %s", subscriber_id, err)
                self._notifiers.pop(subscriber_id, None)
                self._drop_observer(subscriber_id)
                return
            # Reported once delivered: a continue-as-new while the signal is on its way
            # carries the older mark, and the next run reports the change again.
            observer.reported_version = change.version
            observer.reported_offset = change.last_offset

    # ------------------------------------------------------------------ lifecycle

    def arm(self) -> None:
        for subscriber_id in list(self._observers):  # observers carried from the last run
            self._start_notifier(subscriber_id)
        for pending in self._carried_confirming:  # and subscriptions still to confirm
            self._start_confirming(pending)
        self._carried_confirming = []

    def carry(self) -> ObservingCarried:
        return ObservingCarried(
            observing=sorted(self._observing.values(), key=lambda s: s.since),
            observers=sorted(self._observers.values(), key=lambda s: s.since),
            confirming=[pending for pending, _ in self._confirming.values()],
        )


def _public(observation: Observation) -> Subscription:
    """The observation as queries and agent code see it: without the token."""
    return Subscription.model_construct(**observation.model_dump(exclude={"token"}))


def peer_prompt(wake: PeerChangedWake) -> str:
    """How a peer's change reads to a model: the user message of the turn it wakes."""
    change = wake.change
    several = f" ({wake.signals} reports folded into one)" if wake.signals > 1 else ""
    return (
        f"[agent {change.peer_id} changed{several}] It is now at state version "
        f"{change.version} (event offset {change.last_offset}), as of "
        f"{change.changed_at.isoformat()}."
    )


__all__ = [
    "CONFIRM_SUBSCRIBER_ACTIVITY",
    "CONFIRM_SUBSCRIPTION_QUERY",
    "Observing",
    "peer_prompt",
]
