"""Record the alarm replay-test history: `python -m tests.histories.record_alarms`.

A `notes` agent through every alarm path: each timing kind, replace, cancel, a refused
request, alarms firing and being applied. Keep old files: each must keep replaying.
"""

from __future__ import annotations

import asyncio
import json
import sys
import tempfile
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from client import InvalidSchedule, Perennial, Settings
from client.server import DevServer, free_port
from worker import build_worker
from workflows.messages import AlarmEvent

HERE = Path(__file__).parent


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
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(state_dir=Path(tmp), server_port=free_port(), task_queue="record")
        async with DevServer(settings, headless=True):
            perennial = await Perennial.connect(settings)
            async with build_worker(perennial.client, settings):
                workflow_id = await alarms_scenario(perennial, "alarms-replayed")
                history = await perennial.client.get_workflow_handle(workflow_id).fetch_history()
    out = HERE / f"alarms-{date.today():%Y%m%d}.json"
    doc = {"workflow_id": history.workflow_id, "history": json.loads(history.to_json())}
    out.write_text(json.dumps(doc, indent=1))
    print(f"wrote {out}", file=sys.stderr)


if __name__ == "__main__":
    asyncio.run(main())
