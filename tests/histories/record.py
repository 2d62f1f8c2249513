"""Record the replay-test histories: `python -m tests.histories.record`.

Run it when a release adds behaviour worth guarding; keep the old files: every checked-in
history must keep replaying, because real agents live through deploys.
"""

from __future__ import annotations

import asyncio
import json
import sys
import tempfile
from collections.abc import Awaitable, Callable
from datetime import date
from pathlib import Path
from typing import Any

from perennial.client import Perennial, Settings
from perennial.client.server import DevServer, free_port
from perennial.worker import build_worker

HERE = Path(__file__).parent


async def notes_scenario(perennial: Perennial, name: str) -> str:
    """Exercise every handler of the notes agent; returns the workflow id."""
    agent = perennial.agent("notes", name)
    await agent.ask("first", id="h1", sender="recorder")
    await agent.send("second", id="h2")
    await agent.ask("first", id="h1")  # duplicate
    await agent.ask("third", data={"tags": ["x"]})
    await agent.rollback(1)
    await agent.wait_events(after=0, timeout=1)
    await agent.events(after=2)
    handle = perennial.client.get_workflow_handle(agent.id)
    await handle.signal("message", {"txt": "malformed"})
    await handle.signal("message", args=[{"text": "one"}, {"text": "two"}])
    await handle.signal("no_such_signal", {"text": "x"})
    await agent.send("a large one, by update", data="d" * 20_000)
    await agent.ask("after the malformed signals")
    return agent.id


async def record(
    prefix: str,
    scenario: Callable[[Perennial], Awaitable[str]],
    **settings: Any,
) -> Path:
    """Run `scenario` on a fresh embedded server and worker; save the history it returns
    the workflow id of as `<prefix>-<date>.json` beside this file."""
    with tempfile.TemporaryDirectory() as tmp:
        config = Settings(
            state_dir=Path(tmp), server_port=free_port(), task_queue="record", **settings
        )
        async with DevServer(config, headless=True):
            perennial = await Perennial.connect(config)
            async with build_worker(perennial.client, config):
                workflow_id = await scenario(perennial)
                history = await perennial.client.get_workflow_handle(workflow_id).fetch_history()
    out = HERE / f"{prefix}-{date.today():%Y%m%d}.json"
    doc = {"workflow_id": history.workflow_id, "history": json.loads(history.to_json())}
    out.write_text(json.dumps(doc, indent=1))
    print(f"wrote {out}", file=sys.stderr)
    return out


async def main() -> None:
    await record("notes", lambda perennial: notes_scenario(perennial, "replayed"))


if __name__ == "__main__":
    asyncio.run(main())
