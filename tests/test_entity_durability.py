"""An agent's state outlives the processes around it: a killed worker, a restarted server."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.service import RPCError, RPCStatusCode

import tests.agents  # noqa: F401  (registers the test agent types before a worker is built)
from perennial.client import AgentHandle, AgentUnreachable, Perennial, Settings, StateView
from perennial.client.approvals import pending_approvals
from perennial.client.server import DevServer, free_port
from perennial.worker import build_worker
from perennial.workflows.entity import NEXT_TASK_ACTIVITY
from tests.agents import SlowAgent
from tests.conftest import WorkerProcess, eventually
from tests.support import (
    TASK_COMPLETED,
    history,
    signals,
    task_failure_causes,
    unique,
)


async def test_state_survives_a_killed_worker(
    perennial: Perennial, worker_process: Callable[[], WorkerProcess]
) -> None:
    agent = perennial.agent("notes", unique())
    first = worker_process()
    assert (await agent.ask("before the crash", timeout=60)).reply == "Noted (note #1)."
    await agent.send("also before the crash")
    assert (await agent.ask("still before", timeout=60)).version == 3

    first.kill()  # SIGKILL: no shutdown; the agent was cached on this worker
    # A message sent while no worker runs waits in the agent's history.
    await agent.send("while no worker runs", id="orphan")

    worker_process()
    reply = await agent.ask("after the crash", timeout=60)
    assert (reply.reply, reply.version) == ("Noted (note #5).", 5)
    state = await agent.state()
    assert state.state.notes == [
        "before the crash",
        "also before the crash",
        "still before",
        "while no worker runs",
        "after the crash",
    ]
    assert state.versions_kept == [0, 1, 2, 3, 4, 5]


async def _first_state(agent: AgentHandle) -> StateView:
    """The state, once a worker that just started polls (a query needs one; until the
    server has seen its poller it refuses the query rather than wait)."""
    views: list[StateView] = []

    async def answered() -> bool:
        try:
            views.append(await agent.state_view())
        except RPCError as err:
            if err.status != RPCStatusCode.FAILED_PRECONDITION:
                raise
            return False
        return True

    await eventually(answered)
    return views[-1]


async def test_state_survives_a_server_restart_on_the_same_database(tmp_path: Path) -> None:
    settings = Settings(
        state_dir=tmp_path,
        server_port=free_port(),
        ui_port=free_port(),
        task_queue="restart",
        sticky_timeout_seconds=1.0,
    )
    name = unique()
    database = settings.database

    async with DevServer(settings, headless=True):
        perennial = await Perennial.connect(settings)
        agent = perennial.agent("notes", name)
        async with build_worker(perennial.client, settings):
            for i in range(3):
                await agent.ask(f"note {i}", id=f"m{i}")
            await agent.send("sent last", id="m3")
            assert (await agent.ask("barrier", id="m4")).version == 5
            before = await agent.state_view()
            events_before = await agent.events()
    assert database.exists()

    # A new server process on the same SQLite file (and a new port: nothing is left over).
    settings = settings.model_copy(update={"server_port": free_port(), "ui_port": free_port()})
    async with DevServer(settings, headless=True):
        perennial = await Perennial.connect(settings)
        agent = perennial.agent("notes", name)
        async with build_worker(perennial.client, settings):
            after = await _first_state(agent)
            assert after.version == before.version == 5
            assert after.state == before.state
            assert after.versions_kept == before.versions_kept
            assert (await agent.events()).events == events_before.events
            # The dedup window survived too: an old id is not applied again.
            assert (await agent.ask("note 0", id="m0")).version == 1
            reply = await agent.ask("after the restart")
            assert (reply.reply, reply.version) == ("Noted (note #6).", 6)
            assert (await agent.state()).state.notes == [
                "note 0",
                "note 1",
                "note 2",
                "sent last",
                "barrier",
                "after the restart",
            ]


async def test_a_backlog_queued_while_no_worker_ran_is_applied_in_bounded_tasks(
    perennial: Perennial, settings: Settings
) -> None:
    """300 messages of ~10 ms each wait for a worker: applying them all in one workflow
    activation (3 s) would trip the SDK's 2 s deadlock detector on every attempt, and the
    agent would never move again. The runtime ends the task every `max_wakes_per_task`."""
    agent = perennial.agent("test_slow", unique())
    total = 300
    await asyncio.gather(*(agent.send(f"n{i}", id=f"n{i}") for i in range(total)))

    async with build_worker(perennial.client, settings):

        async def applied() -> bool:
            return (await agent.state_view()).version == total

        await eventually(applied, timeout=90)
        state = await agent.state()
    events = await history(agent, perennial.client)
    assert sorted(state.state.notes) == sorted(f"n{i}" for i in range(total))
    assert state.state.notes == [s.input["text"] for s in signals(events)]
    assert task_failure_causes(events) == []  # no task failed (no deadlock, no retry)
    completed = sum(e.event_type == TASK_COMPLETED for e in events)
    assert completed >= total // SlowAgent.max_wakes_per_task
    # With nothing else arriving, each next batch was started by the no-op pacing activity
    # (a short timer fires ~1 s late on the dev server), not by a timer.
    paced = [
        e.activity_task_scheduled_event_attributes.activity_type.name
        for e in events
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
    ]
    assert paced and set(paced) == {NEXT_TASK_ACTIVITY}
    assert "backlog: next batch" not in [
        json.loads(e.user_metadata.summary.data)
        for e in events
        if e.event_type == EventType.EVENT_TYPE_TIMER_STARTED
    ]


async def test_an_agent_without_a_worker_is_reported_unreachable(
    perennial: Perennial, settings: Settings
) -> None:
    """A read that no worker answers is a typed `AgentUnreachable`, not a raw RPC error, and
    the approvals listing names such an agent instead of failing as a whole."""
    agent = perennial.agent("notes", unique())
    async with build_worker(perennial.client, settings):
        await agent.ask("while a worker runs", timeout=60)
    with pytest.raises(AgentUnreachable) as err:
        await pending_approvals(agent, timeout=timedelta(seconds=1))
    assert agent.id in str(err.value) and "worker" in str(err.value)
    async with build_worker(perennial.client, settings):  # and nothing was lost meanwhile
        assert (await agent.state_view()).version == 1
