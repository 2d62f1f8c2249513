"""The planner under load and through a crash: many sessions at once through the HTTP service,
each answered and none lost; a worker killed in the middle of a plan, and the plan completing
on another worker with each page fetched once.

`TRAVEL_LOAD_SESSIONS` sets how many sessions the load test runs at once (30 in the suite, to
keep it fast on two cores; 100 for the issue's figure: `bench/bench_travel.py` measures it).
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from examples.travel.factory import DEFAULT_FILE, FILE_ENV
from examples.travel.provider_server import ProviderServer
from examples.travel.tests.fixtures import planner, providers, settings  # noqa: F401
from examples.travel.tests.planner_model import PlannerModel, relay, route, tool_result
from perennial.client import Perennial
from perennial.client.gateway.server import GatewayServer
from perennial.testing import call, text, tool_calls
from tests.conftest import WorkerProcess
from tests.support import unique

SESSIONS = int(os.environ.get("TRAVEL_LOAD_SESSIONS", "30"))


async def test_many_sessions_at_once_all_complete_and_nothing_is_lost(
    gateway: GatewayServer, perennial: Perennial, planner: PlannerModel
) -> None:
    prefix = unique("load")
    limits = httpx.Limits(max_connections=SESSIONS)
    async with httpx.AsyncClient(base_url=gateway.url, timeout=240, limits=limits) as http:

        async def chat(i: int) -> dict:
            body = {"message": f"trip number {i}", "sessionId": f"{prefix}-{i}", "id": f"m-{i}"}
            for _ in range(20):  # 429 (the edge's backpressure) says when to come back
                answer = await http.post("/chat", json=body)
                if answer.status_code != 429:
                    break
                await asyncio.sleep(float(answer.headers.get("retry-after", "1")))
            assert answer.status_code == 200, answer.text
            return answer.json()

        started = time.monotonic()
        answers = await asyncio.gather(*(chat(i) for i in range(SESSIONS)))
        elapsed = time.monotonic() - started
    print(f"{SESSIONS} sessions through /chat in {elapsed:.1f} s")
    for i, answer in enumerate(answers):
        assert answer["sessionId"] == f"{prefix}-{i}"
        assert answer["reply"] == f"travel: Planning: trip number {i}"
        assert answer["session"]["messages"] == 1

    async def turns(i: int) -> tuple[int, int, int]:
        name = f"{prefix}-{i}"
        views = await asyncio.gather(*(perennial.agent(kind, name).state_view()
                                       for kind in ("session", "conversation", "travel")))  # fmt: skip
        return views[0].state["messages"], views[1].state["turns"], views[2].version

    # Nothing lost, nothing twice: each session opened once, one conversation turn, one plan.
    assert await asyncio.gather(*(turns(i) for i in range(SESSIONS))) == [(1, 1, 1)] * SESSIONS


async def test_a_worker_killed_mid_plan_and_the_plan_completes_with_each_page_fetched_once(
    perennial: Perennial,
    planner: PlannerModel,
    providers: ProviderServer,
    worker_process: Callable[[], WorkerProcess],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The worker processes read an agents file whose model calls are retried sooner after
    # their worker is gone (a heartbeat timeout of 3 s instead of 10): a shorter test.
    agents = tmp_path / "agents.toml"
    agents.write_text(DEFAULT_FILE.read_text().replace("model_heartbeat_seconds = 10",
                                                       "model_heartbeat_seconds = 3"))  # fmt: skip
    monkeypatch.setenv(FILE_ENV, str(agents))
    session = unique("crash")
    lisbon, porto = f"{providers.url}/guides/lisbon", f"{providers.url}/guides/porto"
    planner.script("conversation", route("travel", "Read both guides"), relay)
    planner.script(
        "travel",
        tool_calls(call("read_page", url=lisbon), call("read_page", url=porto)),
        text("(the worker dies before this answer arrives)", hold=True),
        lambda r: text(f"Both guides read; {len(tool_result(r, 'read_page'))} characters."),
    )
    first = worker_process()
    asking = asyncio.create_task(
        perennial.agent("conversation", session).ask(
            "Read the Lisbon and Porto guides", timeout=120
        )
    )
    await planner.llm.wait_for(lambda: planner.seen["travel"] >= 2, timeout=60)  # pages read
    assert providers.hits("/guides/lisbon") == providers.hits("/guides/porto") == 1
    first.kill()
    killed = time.monotonic()
    planner.llm.release()  # the held answer goes to a dead worker
    worker_process()
    reply = await asyncio.wait_for(asking, 120)
    print(f"recovered {time.monotonic() - killed:.1f} s after the kill")
    assert reply.reply is not None and reply.reply.startswith("Both guides read")
    assert providers.hits("/guides/lisbon") == providers.hits("/guides/porto") == 1
    plan = (await perennial.agent("travel", session).state_view()).state
    assert sorted(plan["pages"]) == sorted([lisbon, porto])
    talk = (await perennial.agent("conversation", session).state_view()).state
    assert talk["turns"] == 1 and talk["transcript"][0]["reply"] == reply.reply
