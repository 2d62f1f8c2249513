"""The run budget: when an agent continues as new, and how long one workflow task may run.

An agent lives forever in runs of bounded size. It continues as new before any per-run limit
the server enforces (signals, updates, history events and bytes), at a moment the server
accepts the switch: the server refuses a continue-as-new while messages arrive during its
workflow task, so past the soft limits the switch waits for a task that brought no message,
and only past the `force` limits does it switch in the middle of a flood anyway.

Within a run, a backlog is applied in bounded workflow tasks: past `max_wakes_per_task` wakes
the loop lets the task end and goes on in the next one (a task that runs past the SDK's
deadlock timeout fails on every attempt, and under a flood the server fails a task once ~100
signals wait behind it).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RetryPolicy

#: The no-op activity whose completion starts an agent's next workflow task (activities.pacing).
NEXT_TASK_ACTIVITY = "perennial.next_task"


@dataclass(frozen=True)
class RunLimits:
    """The thresholds of one run (an agent type's class attributes, see AgentWorkflow)."""

    max_history_events: int
    max_history_bytes: int
    max_signals_per_run: int
    max_updates_per_run: int
    force_switch_signals: int
    force_switch_updates: int
    force_switch_history_events: int
    force_switch_history_bytes: int
    refuse_updates_history_bytes: int
    max_wakes_per_task: int
    compact_idle_after: timedelta | None
    compact_min_history_events: int


def _ignore_outcome(task: asyncio.Future[Any]) -> None:
    """Retrieve a pacing activity's outcome (a timeout is harmless), so it is not reported as
    never retrieved."""
    if not task.cancelled():
        task.exception()


class RunBudget:
    """Counts what this run has received and applied, and decides switches and task ends."""

    def __init__(self, limits: RunLimits, info: workflow.Info) -> None:
        self.limits = limits
        # Kept: its history-length methods read live values; `workflow.info()` is a lookup.
        self._info = info
        self.signals = 0
        self.updates = 0
        self.applied = 0
        self._arrival_task = -1  # history length of the workflow task the last message came in
        self._task_history_length = 0
        self._wakes_in_task = 0
        self._compaction_clock: asyncio.Task[None] | None = None
        self._compaction_tick = False

    # ------------------------------------------------------------------ arrivals

    def count_arrival(self, *, update: bool = False) -> None:
        """Count a signal or update toward the run's limits, noting the task it came in."""
        if update:
            self.updates += 1
        else:
            self.signals += 1
        self._arrival_task = self._info.get_current_history_length()

    @property
    def arrivals(self) -> int:
        return self.signals + self.updates

    def refuses_update(self, size: int) -> bool:
        """Would an update of `size` bytes push this run's history past what updates may
        add? (It is refused before history, and its caller retries once the agent switched.)"""
        history = self._info.get_current_history_size()
        return history + size > self.limits.refuse_updates_history_bytes

    # ------------------------------------------------------------------ continue-as-new

    def switch_reason(self) -> str | None:
        """Why this run should continue as new now, or None."""
        info, limits = self._info, self.limits
        if info.is_continue_as_new_suggested():
            return "suggested by the server"
        if info.get_current_history_length() >= limits.max_history_events:
            return f"history reached {limits.max_history_events} events"
        if info.get_current_history_size() >= limits.max_history_bytes:
            return f"history reached {limits.max_history_bytes} bytes"
        if self.signals >= limits.max_signals_per_run:
            return f"{limits.max_signals_per_run} signals in this run"
        if self.updates >= limits.max_updates_per_run:
            return f"{limits.max_updates_per_run} updates in this run"
        return None

    def may_switch_now(self) -> bool:
        """Switch now, or wait for a workflow task with no new messages? One that came in
        this task says more may be on the way; past the `force` limits: now."""
        info, limits = self._info, self.limits
        length = info.get_current_history_length()
        return (
            self._arrival_task != length
            or self.signals >= limits.force_switch_signals
            or self.updates >= limits.force_switch_updates
            or length >= limits.force_switch_history_events
            or info.get_current_history_size() >= limits.force_switch_history_bytes
        )

    def replay_cost(self) -> int:
        """What a wake-up after eviction replays: the run's events and the wakes applied in
        it (a carried inbox can make many in few events)."""
        return self._info.get_current_history_length() + self.applied

    # ------------------------------------------------------------------ workflow tasks

    def new_wake_ends_task(self) -> bool:
        """Count one more wake in the current workflow task; True once the task has applied
        `max_wakes_per_task`. A task is recognised by the history length, which is the same
        for every activation of one task and grows with every new task."""
        length = self._info.get_current_history_length()
        if length != self._task_history_length:
            self._task_history_length, self._wakes_in_task = length, 0
        self._wakes_in_task += 1
        return self._wakes_in_task > self.limits.max_wakes_per_task

    async def next_task(self, summary: str, *, paced: bool = False) -> None:
        """Let this workflow task end, and return in the next one: at once if a message
        arrives; else, for a backlog (`paced`), when a no-op activity completes (sub-second
        timers fire about a second late on the dev server); else after a 1 ms timer, which
        under a flood the next message beats (cheaper than an activity that would start one
        more task)."""
        arrivals = self.arrivals
        if paced:
            pacer = workflow.start_activity(
                NEXT_TASK_ACTIVITY,
                # One try, briefly: a worker without the activity falls back to ~2 s a step.
                schedule_to_close_timeout=timedelta(seconds=2),
                retry_policy=RetryPolicy(maximum_attempts=1),
                summary=summary,
            )
            pacer.add_done_callback(_ignore_outcome)
            await workflow.wait_condition(lambda: pacer.done() or self.arrivals != arrivals)
            return
        try:
            await workflow.wait_condition(
                lambda: self.arrivals != arrivals, timeout=0.001, timeout_summary=summary
            )
        except TimeoutError:
            pass

    # ------------------------------------------------------------------ idle compaction

    def wants_compaction(self) -> bool:
        """Is this run long enough that an idle agent should continue as new to wake faster
        later? Starts the compaction clock if so."""
        limits = self.limits
        if limits.compact_idle_after is None:
            return False
        if self.replay_cost() < limits.compact_min_history_events:
            return False
        if self._compaction_clock is None:
            # One timer per interval for the life of the run, not one per idle period: a
            # timer started and cancelled per wake would cost two history events per wake.
            self._compaction_clock = asyncio.create_task(self._tick(limits.compact_idle_after))
        return True

    @property
    def compaction_tick(self) -> bool:
        return self._compaction_tick

    async def _tick(self, every: timedelta) -> None:
        while True:
            await workflow.sleep(every, summary="idle compaction check")
            self._compaction_tick = True

    def compaction_due(self, idle_since: datetime | None) -> bool:
        """At a clock tick: has the agent been idle for `compact_idle_after`?"""
        if not self._compaction_tick:
            return False
        self._compaction_tick = False
        after = self.limits.compact_idle_after
        return (
            after is not None
            and idle_since is not None
            and workflow.now() - idle_since >= after
        )


__all__ = ["NEXT_TASK_ACTIVITY", "RunBudget", "RunLimits"]
