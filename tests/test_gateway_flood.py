"""A flood into one agent through the gateway: paced at the edge (429 + Retry-After), every
message applied once, and no workflow task failed or force-closed by the server."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections import Counter
from collections.abc import Callable

import httpx

from perennial.client import Perennial, Settings
from perennial.client.gateway.server import GatewayServer
from perennial.testing import eventually
from tests.support import run_histories, task_failure_causes

MESSAGES = int(os.environ.get("FLOOD_MESSAGES", "10000"))
SENDERS = int(os.environ.get("FLOOD_SENDERS", "16"))


async def test_10000_messages_through_the_gateway_are_applied_once(
    perennial: Perennial, settings: Settings, worker_process: Callable[[], object]
) -> None:
    worker_process()  # its own process, as deployed: the gateway and senders share this one
    served = settings.model_copy(update={"gateway_port": 0})
    async with GatewayServer(served, perennial=perennial) as gateway:
        await _flood(gateway, perennial)


async def _flood(gateway: GatewayServer, perennial: Perennial) -> None:
    name = f"flood-{uuid.uuid4().hex[:8]}"
    refused: Counter[int] = Counter()
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(MESSAGES):
        queue.put_nowait(i)

    async def sender(http: httpx.AsyncClient) -> None:
        while not queue.empty():
            i = queue.get_nowait()
            while True:
                response = await http.post(f"/agents/notes/{name}/messages",
                                           json={"text": f"m{i}", "id": f"m{i}"})
                if response.status_code != 429:
                    break
                refused[429] += 1
                await asyncio.sleep(float(response.headers["Retry-After"]) / 10)
            assert response.status_code == 202, response.text

    limits = httpx.Limits(max_connections=SENDERS)
    async with httpx.AsyncClient(base_url=gateway.url, timeout=60, limits=limits) as http:
        await asyncio.gather(*(sender(http) for _ in range(SENDERS)))

    agent = perennial.agent("notes", name)

    async def all_applied() -> bool:
        return (await agent.state_view()).state["counter"] >= MESSAGES

    await eventually(all_applied, timeout=300)
    view = await agent.state_view()
    assert view.state["counter"] == MESSAGES
    assert sorted(view.state["notes"]) == sorted(f"m{i}" for i in range(MESSAGES))
    assert refused[429] > 0  # the edge did pace the senders

    runs = await run_histories(perennial.client, agent.id)
    causes = [c for run in runs for c in task_failure_causes(run)]
    # A continue-as-new raced by a message is refused by the server and retried at once; a
    # task the server force-closes (past 100 buffered signals) is what pacing prevents.
    assert set(causes) <= {"WORKFLOW_TASK_FAILED_CAUSE_UNHANDLED_COMMAND"}, Counter(causes)
    print(f"{MESSAGES} messages, {refused[429]} refusals (429), {len(runs)} runs, "
          f"task failures: {dict(Counter(causes))}")
