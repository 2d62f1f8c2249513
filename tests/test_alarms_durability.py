"""Each due time fires exactly once: across a worker that is down when it falls due, a server
restart, and continue-as-new (pending schedules carry their absolute due times)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import pytest_asyncio
from temporalio.worker import Worker

import tests.alarm_agents  # noqa: F401  (registers the test agent types)
from perennial.client import AgentHandle, Perennial, Settings
from perennial.client.server import DevServer, free_port
from perennial.worker import build_worker
from perennial.workflows.messages import AlarmEvent, ContinuedAsNewEvent
from tests.alarm_agents import AlarmRecord, RecorderState
from tests.conftest import WorkerProcess, eventually
from tests.support import unique

#: Worker processes (`worker_process`) also run the test agent types.
pytestmark = pytest.mark.agents(app=("tests.alarm_agents",))

RECORDER = "test_alarm_recorder"


async def alarms(agent: AgentHandle, schedule_id: str | None = None) -> list[AlarmRecord]:
    state = (await agent.state()).state
    assert isinstance(state, RecorderState)
    return [a for a in state.alarms if schedule_id in (None, a.schedule_id)]


def assert_on_grid(records: list[AlarmRecord], first_due: datetime, step: timedelta) -> None:
    """Each due time fired once: alarm k stands for its own due time and the `missed` ones
    before it, so together they cover the grid from `first_due` without a gap or a repeat."""
    covered = 0
    for record in records:
        covered += 1 + record.missed
        assert record.due_at == first_due + (covered - 1) * step, records


# --------------------------------------------------------------------------- worker down


async def test_alarms_due_while_no_worker_runs_fire_once_when_one_returns(
    perennial: Perennial, worker_process: Callable[[], WorkerProcess]
) -> None:
    first_worker = worker_process()
    agent = perennial.agent(RECORDER, unique("down"))
    tick = (await agent.schedule("tick", "tick", every_seconds=1)).schedule

    async def ticking() -> bool:
        return len(await alarms(agent, "tick")) >= 1

    await eventually(ticking)
    once = (await agent.schedule("once", "once", after_seconds=2)).schedule
    # A time zone this worker process has not loaded yet: read inside the workflow sandbox.
    zoned = await agent.schedule("zoned", "zoned", cron="0 9 * * *", timezone="Pacific/Auckland")
    first_worker.kill()
    killed_at = datetime.now(UTC)
    # With no worker, the one-shot's time and several ticks pass (the server fires the timer;
    # nothing can apply it yet).
    outage_until = max(once.next_due, killed_at + timedelta(seconds=4)) + timedelta(seconds=0.5)
    await eventually(lambda: datetime.now(UTC) > outage_until, timeout=15)
    worker_process()

    async def caught_up() -> bool:
        ticks = await alarms(agent, "tick")
        return len(await alarms(agent, "once")) == 1 and any(t.missed >= 2 for t in ticks)

    await eventually(caught_up)
    [fired_once] = await alarms(agent, "once")
    assert fired_once.due_at == once.next_due and fired_once.fired_at >= outage_until
    ticks = await alarms(agent, "tick")
    assert_on_grid(ticks, tick.next_due, timedelta(seconds=1))
    # The ticks missed during the outage came as one alarm, not a burst.
    assert len([t for t in ticks if t.missed >= 2]) == 1

    async def ticks_again() -> bool:
        return len(await alarms(agent, "tick")) >= len(ticks) + 2

    await eventually(ticks_again)  # and it goes on ticking on the same grid
    assert_on_grid(await alarms(agent, "tick"), tick.next_due, timedelta(seconds=1))
    assert [s.next_due for s in await agent.schedules() if s.id == "zoned"] == [
        zoned.schedule.next_due
    ]


# --------------------------------------------------------------------------- continue-as-new


@pytest.mark.usefixtures("worker")
async def test_a_cron_schedule_survives_continue_as_new(perennial: Perennial) -> None:
    agent = perennial.agent(RECORDER, unique("cron-can"))
    created = (
        await agent.schedule("cron", "cron", cron="* * * * * */2", timezone="America/New_York")
    ).schedule
    first_run = (await agent.describe()).run_id

    async def fired_in(run: int, n: int) -> bool:
        return len([a for a in await alarms(agent) if a.run == run]) >= n

    await eventually(lambda: fired_in(1, 1))
    for i in range(5):  # the recorder continues as new after every 4 signals
        await agent.send(f"m{i}")

    async def switched() -> bool:
        return (await agent.describe()).run_id != first_run

    await eventually(switched)
    [carried] = await agent.schedules()
    assert carried.id == "cron" and carried.created_at == created.created_at
    assert carried.next_due.second % 2 == 0 and carried.fired >= 1
    await eventually(lambda: fired_in(2, 2))

    records = await alarms(agent, "cron")
    assert {r.run for r in records} >= {1, 2}
    assert_on_grid(records, created.next_due, timedelta(seconds=2))
    log = (await agent.events(limit=1000)).events
    assert [e for e in log if isinstance(e, ContinuedAsNewEvent)]
    fired = [e for e in log if isinstance(e, AlarmEvent)]
    assert len({e.due_at for e in fired}) == len(fired)  # no due time twice


@pytest.mark.usefixtures("worker")
async def test_an_alarm_pending_across_continue_as_new_fires_once(perennial: Perennial) -> None:
    agent = perennial.agent(RECORDER, unique("once-can"))
    schedule = (await agent.schedule("later", "later", after_seconds=3)).schedule
    first_run = (await agent.describe()).run_id
    for i in range(4):
        await agent.send(f"m{i}")

    async def switched() -> bool:
        return (await agent.describe()).run_id != first_run

    await eventually(switched)
    [carried] = await agent.schedules()
    assert carried.next_due == schedule.next_due  # the absolute due time, not a new delay

    async def fired() -> bool:
        return len(await alarms(agent)) >= 1

    await eventually(fired)
    [record] = await alarms(agent)
    assert record.due_at == schedule.next_due and record.run == 2
    assert await agent.schedules() == []
    log = (await agent.events(limit=1000)).events
    assert len([e for e in log if isinstance(e, AlarmEvent)]) == 1


# --------------------------------------------------------------------------- server restart


@pytest_asyncio.fixture(loop_scope="session")
async def own_server(tmp_path: Path) -> AsyncIterator[tuple[DevServer, Settings]]:
    """A dev server of this test's own, so it can be restarted without disturbing others."""
    settings = Settings(
        state_dir=tmp_path,
        server_port=free_port(),
        ui_port=free_port(),
        task_queue=f"restart-{uuid.uuid4().hex[:8]}",
        sticky_timeout_seconds=1.0,
    )
    server = DevServer(settings, headless=True)
    await server.start()
    try:
        yield server, settings.model_copy(update={"temporal_address": server.address})
    finally:
        await server.stop()


async def test_an_alarm_fires_once_across_a_server_restart(
    own_server: tuple[DevServer, Settings],
) -> None:
    server, settings = own_server
    perennial = await Perennial.connect(settings)
    agent = perennial.agent("notes", unique("restart"))
    worker: Worker = build_worker(perennial.client, settings)
    async with worker:
        schedule = (await agent.schedule("wake", "wake up", after_seconds=3)).schedule
        await server.stop()
        await eventually(lambda: datetime.now(UTC) > schedule.next_due, timeout=15)
        await server.start()

        async def noted() -> bool:
            try:
                return (await agent.state_view()).state["notes"] == ["wake up"]
            except Exception:  # the server is still coming back
                return False

        await eventually(noted, timeout=60)
        log = (await agent.events(limit=1000)).events
        [alarm] = [e for e in log if isinstance(e, AlarmEvent)]
        assert alarm.due_at == schedule.next_due and alarm.fired_at >= schedule.next_due
        assert await agent.schedules() == []
