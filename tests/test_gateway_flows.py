"""The gateway with richer agents: approvals decided over HTTP (the first decision wins, 409
after it), failed turns (500, state unchanged), stopped agents (409), callable methods over
HTTP, CORS, and two gateway processes serving one agent."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import sys
from collections.abc import AsyncIterator

import httpx
import pytest
from websockets.asyncio.client import connect

import tests.agents  # noqa: F401 - registers the test agent types
import tests.callable_agents  # noqa: F401
import tests.coordination_agents  # noqa: F401
from perennial.client import Perennial, Settings
from perennial.client.gateway.server import GatewayServer
from perennial.testing import eventually
from perennial.testing.scripted_llm import ScriptedLLM, call, text, tool_calls
from tests.agents import BOOM
from tests.conftest import ROOT
from tests.support import COORDINATION_MODULES, unique

pytestmark = pytest.mark.agents(
    app=(*COORDINATION_MODULES, "tests.agents", "tests.callable_agents"), llm=True
)


@pytest.fixture
async def http(gateway: GatewayServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=gateway.url, timeout=30) as client:
        yield client


async def test_an_approval_decided_over_http(
    http: httpx.AsyncClient, scripted_llm: ScriptedLLM
) -> None:
    scripted_llm.script(
        tool_calls(call("wire_money", to="bob", amount=50)),
        text("I asked for approval."),
        text("Sent 50 euros to bob."),
    )
    agent = f"/agents/test_llm_approver/{unique()}"
    asked = await http.post(f"{agent}/ask", json={"text": "send bob 50"})
    assert asked.json()["reply"] == "I asked for approval."
    [approval] = (await http.get(f"{agent}/approvals")).json()
    assert approval["tool"] == "wire_money"

    decided = await http.post(f"{agent}/approvals/{approval['approval_id']}",
                              json={"approve": True, "comment": "fine"})
    assert decided.status_code == 200, decided.text
    assert decided.json()["approved"] and decided.json()["decided_by"] == "gateway"
    again = await http.post(f"{agent}/approvals/{approval['approval_id']}",
                            json={"approve": False})
    assert again.status_code == 409 and again.json()["error"]["type"] == "AlreadyDecided"
    await eventually(lambda: scripted_llm.executions("wire_money") == 1)


async def test_a_failed_turn_is_500_and_changes_nothing(http: httpx.AsyncClient) -> None:
    agent = f"/agents/test_flaky/{unique()}"
    await http.post(f"{agent}/ask", json={"text": "fine"})
    failed = await http.post(f"{agent}/ask", json={"text": f"{BOOM} now"})
    assert failed.status_code == 500
    error = failed.json()["error"]
    assert error["type"] == "TurnFailed" and error["error_type"] == "ValueError"
    assert error["version"] == 1
    state = (await http.get(f"{agent}/state")).json()
    assert state["version"] == 1 and state["state"]["notes"] == ["fine"]


async def test_a_stopped_agent_is_409(http: httpx.AsyncClient, perennial: Perennial) -> None:
    name = unique()
    await http.post(f"/agents/notes/{name}/ask", json={"text": "hello"})
    await perennial.client.get_workflow_handle(f"notes/{name}").terminate("test")
    refused = await http.post(f"/agents/notes/{name}/messages", json={"text": "still there?"})
    assert refused.status_code == 409
    assert refused.json()["error"]["type"] == "AgentStopped"


async def test_callable_methods_over_http(http: httpx.AsyncClient) -> None:
    types = {t["name"]: t for t in (await http.get("/agent-types")).json()["types"]}
    methods = {m["name"]: m for m in types["test_cart"]["callable_methods"]}
    assert "add_item" in methods and "sku" in methods["add_item"]["parameters"]["properties"]

    cart = f"/agents/test_cart/{unique()}"
    done = await http.post(f"{cart}/call/add_item", json={"args": {"sku": "apple", "qty": 2}})
    assert done.status_code == 200, done.text
    assert done.json()["method"] == "add_item" and done.json()["version"] == 1
    bad = await http.post(f"{cart}/call/add_item", json={"args": {"sku": "apple", "qty": "2"}})
    assert bad.status_code == 400 and bad.json()["error"]["type"] == "InvalidRequest"
    missing = await http.post(f"{cart}/call/nope", json={})
    assert missing.status_code == 404, missing.text
    assert missing.json()["error"]["type"] == "MethodNotFound"
    assert (await http.get(f"{cart}/state")).json()["version"] == 1


async def test_cors_allows_only_the_configured_origins(
    perennial: Perennial, settings: Settings
) -> None:
    served = settings.model_copy(
        update={"gateway_port": 0, "gateway_cors_origins": ("http://app.example",)}
    )
    async with GatewayServer(served, perennial=perennial) as gateway:
        async with httpx.AsyncClient(base_url=gateway.url) as http:
            preflight = {"Access-Control-Request-Method": "POST",
                         "Access-Control-Request-Headers": "authorization,content-type"}
            allowed = await http.options("/agents/notes/x/ask",
                                         headers={"Origin": "http://app.example", **preflight})
            assert allowed.status_code == 200
            assert allowed.headers["access-control-allow-origin"] == "http://app.example"
            denied = await http.options("/agents/notes/x/ask",
                                        headers={"Origin": "http://evil.example", **preflight})
            assert "access-control-allow-origin" not in denied.headers


async def test_two_gateway_processes_serve_one_agent(
    gateway: GatewayServer, perennial: Perennial, settings: Settings
) -> None:
    port = _free_port()
    env = {**os.environ, "TEMPORAL_ADDRESS": settings.address,
           "PERENNIAL_TASK_QUEUE": settings.task_queue, "PERENNIAL_LOG_LEVEL": "WARNING"}  # fmt: skip
    other = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "perennial.client.cli", "gateway", "--port", str(port),
        cwd=ROOT, env=env,
    )  # fmt: skip
    try:
        second = f"http://127.0.0.1:{port}"
        await eventually(lambda: _healthy(second), timeout=60)
        name = unique()
        sockets = [await connect(f"{url.replace('http', 'ws', 1)}/agents/notes/{name}/ws")
                   for url in (gateway.url, second)]  # fmt: skip
        async with httpx.AsyncClient(timeout=30) as http:
            sends = [http.post(f"{url}/agents/notes/{name}/messages",
                               json={"text": f"m{i}", "id": f"m{i}"})
                     for i in range(40) for url in (gateway.url, second)]  # fmt: skip
            # each id twice, once through each gateway: applied once
            assert {r.status_code for r in await asyncio.gather(*sends)} == {202}
        for socket_ in sockets:
            version = 0
            while version < 40:
                frame = json.loads(await asyncio.wait_for(socket_.recv(), 20))
                version = frame.get("version", version)
            await socket_.close()
        view = await perennial.agent("notes", name).state_view()
        assert view.version == 40 and sorted(view.state["notes"]) == sorted(
            f"m{i}" for i in range(40)
        )
    finally:
        other.terminate()
        await other.wait()


async def _healthy(url: str) -> bool:
    try:
        async with httpx.AsyncClient() as http:
            return (await http.get(f"{url}/health")).status_code == 200
    except httpx.TransportError:
        return False


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])

