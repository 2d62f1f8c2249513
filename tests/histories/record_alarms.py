"""Record the alarm replay-test history: `python -m tests.histories.record_alarms`.

A `notes` agent through every alarm path: each timing kind, replace, cancel, a refused
request, alarms firing and being applied. Keep old files: each must keep replaying.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from perennial.client import InvalidSchedule, Perennial
from perennial.workflows.messages import AlarmEvent
from tests.histories.record import record


async def _fired(perennial: Perennial, workflow_id: str, n: int, timeout: float = 30) -> None:
    agent = perennial.agent("notes", workflow_id.removeprefix("notes/"))
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        page = await agent.events(limit=1000)
        if len([e for e in page.events if isinstance(e, AlarmEvent)]) >= n:
            return
        if asyncio.get_running_loop().time() > deadline:
            raise TimeoutError(f"{n} alarms did not fire within {timeout}s")
        await asyncio.sleep(0.2)


async def alarms_scenario(perennial: Perennial, name: str) -> str:
    """Exercise every schedule handler and the alarm path; returns the workflow id."""
    agent = perennial.agent("notes", name)
    await agent.schedule("later", "far away", after_seconds=3600)
    await agent.schedule("later", "soon", after_seconds=1)  # replaces
    await agent.schedule("at", "at a time", at=datetime.now(UTC) + timedelta(seconds=2))
    await agent.schedule("tick", "tick", every_seconds=1)
    await agent.schedule("cron", "cron", cron="* * * * * */2", timezone="Europe/Paris")
    await agent.schedule("daily", "daily", cron="0 9 * * 1-5", timezone="America/New_York")
    try:
        await agent.schedule("bad", "bad", cron="not a cron")
    except InvalidSchedule:
        pass
    await agent.send("a message between alarms")
    await _fired(perennial, agent.id, 5)
    await agent.cancel_schedule("tick")
    await agent.cancel_schedule("cron")
    await agent.schedules()
    await agent.ask("after the alarms")
    return agent.id


async def main() -> None:
    await record("alarms", lambda perennial: alarms_scenario(perennial, "alarms-replayed"))


if __name__ == "__main__":
    asyncio.run(main())
