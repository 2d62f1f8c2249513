"""The publisher: what the fleet sees of an agent (search attributes and current details).

`temporal workflow list --query "AgentType='notes' AND AgentStatus='idle'"` and the Web UI
read the search attributes; the workflow's current details say what the agent does now.
Every upsert is a visibility write on the server, so they are written behind:

* at most `burst` upserts per `interval`; later changes in the interval are coalesced into
  one upsert at its end (one timer);
* a change of the version alone (a busy agent's turns) at most once per `version_interval`;
* the version is published when a busy period ends, not per turn;
* what an alarm turn changes is published by a timer armed while the agent waited for the
  alarm, 1-2 intervals after it (alarms come in crowds, and the crowd's own upserts would
  delay the rest of it).

The state query is always current; visibility lags by at most a few seconds.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from temporalio import workflow

from perennial.workflows.clock import seconds_until
from perennial.workflows.visibility import (
    AGENT_LAST_ACTIVE,
    AGENT_NAME,
    AGENT_STATUS,
    AGENT_TYPE,
    AGENT_VERSION,
    AgentStatus,
)

_KEYS: dict[str, Any] = {
    key.name: key for key in (AGENT_TYPE, AGENT_NAME, AGENT_STATUS, AGENT_VERSION)
}
_IDLE = (AgentStatus.IDLE, AgentStatus.WAITING_ALARM, AgentStatus.WAITING_APPROVAL)


@dataclass(frozen=True)
class PublishPolicy:
    """How often the publisher may upsert (an agent type's class attributes)."""

    interval: timedelta
    burst: int
    version_interval: timedelta


class Publisher:
    def __init__(
        self,
        *,
        agent_type: str,
        agent_name: str,
        policy: PublishPolicy,
        version: Callable[[], int],
        details: Callable[[], str],
        next_alarm: Callable[[], datetime | None],
    ) -> None:
        self._agent_type = agent_type
        self._agent_name = agent_name
        self._policy = policy
        self._version = version
        self._details = details  # the status line under the headline (queue, version, ...)
        self._next_alarm = next_alarm
        self._run_start_version = version()  # AgentLastActive moves once this changes
        # Continue-as-new carries the search attributes: upsert only what changes.
        self._published = _search_attributes_at_start()
        self._wanted: dict[str, Any] = {}
        self._active_at: datetime | None = None  # when the published version was committed
        self._upserts: deque[datetime] = deque()  # times of the latest upserts, newest last
        self._behind = False  # the next changes are an alarm turn's: written behind
        # The timer that publishes after the next alarm, armed before it is due: (due, task).
        self._prearmed: tuple[datetime, asyncio.Task[None]] | None = None
        self._pending: asyncio.Task[None] | None = None  # the upsert written behind
        self._pending_due = datetime.min
        self.idle_since: datetime | None = None

    # ------------------------------------------------------------------ what the loop calls

    def show(self, doing: str) -> None:
        """Set the current details: headline, what the agent does, the status line."""
        workflow.set_current_details(
            f"**{self._agent_type}/{self._agent_name}**: {doing}\n\n{self._details()}"
        )

    def working(self) -> None:
        """AgentStatus 'working' (a turn is about to wait for an activity, a child, a timer)."""
        self._behind = False
        self.publish(AgentStatus.WORKING)

    def next_changes_behind(self) -> None:
        """What the coming turn changes is published later (an alarm's turn)."""
        self._behind = True

    def busy(self) -> None:
        """A wake is being applied: "idle since" counts from its end."""
        self.idle_since = None

    def publish(self, status: AgentStatus) -> None:
        """Keep search attributes and current details in step with the agent."""
        wanted: dict[str, Any] = {
            AGENT_TYPE.name: self._agent_type,
            AGENT_NAME.name: self._agent_name,
            AGENT_STATUS.name: status.value,
        }
        if status in _IDLE:
            # One upsert per busy period: the version goes out when the agent goes idle.
            wanted[AGENT_VERSION.name] = self._version()
            if self.idle_since is None:
                self.idle_since = workflow.now()
            self.show(f"idle since {self.idle_since:%Y-%m-%d %H:%M:%S} UTC")
        else:
            self.idle_since = None
        version = wanted.get(AGENT_VERSION.name)
        if version is not None and version != self._wanted.get(AGENT_VERSION.name):
            self._active_at = workflow.now()
        self._wanted = wanted
        self._upsert_changes()

    def prearm(self, alarm_due: datetime | None) -> None:
        """While idle before an alarm, arm the timer that publishes what the alarm turn will
        change, 1-2 intervals after the alarm: the alarm's own task then makes no command but
        the turn's. A timer armed for an alarm that moved or was cancelled is cancelled; one
        whose alarm fired is kept (it carries that alarm's changes)."""
        if self._prearmed is not None:
            armed_for, task = self._prearmed
            if armed_for == alarm_due or armed_for <= workflow.now():
                return
            task.cancel()
            self._prearmed = None
        if alarm_due is not None:
            at = alarm_due + self._after_alarm_delay()
            self._prearmed = (alarm_due, asyncio.create_task(self._publish_after_alarm(at)))

    # ------------------------------------------------------------------ upserts

    def _upsert_changes(self) -> None:
        """Upsert what changed since the last upsert, or leave it to the pending upsert."""
        changed = {k: v for k, v in self._wanted.items() if self._published.get(k) != v}
        if not changed:
            return
        if self._behind:
            self._behind = False
            if self._prearmed is None and self._pending is None:  # a timer from here
                self._publish_at(workflow.now() + self._after_alarm_delay())
            return
        due = self._allowed_at(status_changed=AGENT_STATUS.name in changed)
        if self._pending is not None:
            # The pending upsert publishes whatever is wanted by then, unless this change may
            # go out sooner (a status change while version-only changes wait).
            if due is not None and self._pending_due <= due:
                return
            self._pending.cancel()
            self._pending = None
        if due is not None:
            self._publish_at(due)
            return
        updates = [_KEYS[name].value_set(value) for name, value in changed.items()]
        if AGENT_VERSION.name in changed and self._version() != self._run_start_version:
            updates.append(AGENT_LAST_ACTIVE.value_set(self._active_at or workflow.now()))
        workflow.upsert_search_attributes(updates)
        self._published.update(changed)
        self._upserts.append(workflow.now())
        if len(self._upserts) > self._policy.burst:
            self._upserts.popleft()

    def _allowed_at(self, *, status_changed: bool) -> datetime | None:
        """None if an upsert may be made now, else when the next one may be."""
        if not self._upserts:
            return None
        policy = self._policy
        due: datetime | None = None
        if len(self._upserts) >= policy.burst:
            due = self._upserts[-policy.burst] + policy.interval
        if not status_changed:
            version_due = self._upserts[-1] + policy.version_interval
            due = version_due if due is None else max(due, version_due)
        return due if due is not None and workflow.now() < due else None

    def _publish_at(self, due: datetime) -> None:
        self._pending = asyncio.create_task(self._upsert_at(due))
        self._pending_due = due

    async def _upsert_at(self, due: datetime) -> None:
        await workflow.sleep(seconds_until(due), summary="publish search attributes")
        self._pending = None
        self._upsert_changes()

    def _after_alarm_delay(self) -> timedelta:
        """1-2 intervals, at random per agent: a crowd's publishes do not form a second crowd."""
        return self._policy.interval * (1 + workflow.random().random())

    async def _publish_after_alarm(self, at: datetime) -> None:
        await workflow.sleep(seconds_until(at), summary="publish after alarm")
        self._prearmed = None
        self._upsert_changes()
        self.prearm(self._next_alarm())  # a recurring schedule's next alarm


def _search_attributes_at_start() -> dict[str, Any]:
    """Ours among the search attributes this run started with (continue-as-new carries them
    over from the last run)."""
    carried = workflow.info().typed_search_attributes
    return {name: value for name, key in _KEYS.items() if (value := carried.get(key)) is not None}


__all__ = ["PublishPolicy", "Publisher"]
