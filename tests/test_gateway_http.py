"""The gateway's HTTP routes, every error status, and its event stream (SSE)."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator

import httpx
import pytest
from temporalio.client import Client

from perennial.client import Perennial
from perennial.client.gateway.server import GatewayServer
from perennial.client.settings import Settings
from perennial.testing import eventually

#: Agent names are this session's own (the dev server outlives one test module).
N = f"-{uuid.uuid4().hex[:6]}"


@pytest.fixture
async def http(gateway: GatewayServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=gateway.url, timeout=30) as client:
        yield client


def _error(response: httpx.Response, status: int, kind: str) -> dict:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["type"] == kind, error
    assert error["message"]
    return error


async def test_health_counts_the_workers(http: httpx.AsyncClient) -> None:
    response = await http.get("/health")
    assert response.status_code == 200, response.text
    assert response.json() == {"status": "ok", "temporal": "ok", "workers": 1, "reason": None}


async def test_health_is_503_without_a_worker(perennial: Perennial, settings: Settings) -> None:
    served = settings.model_copy(update={"gateway_port": 0, "task_queue": "nobody-polls-this"})
    async with GatewayServer(served, perennial=perennial) as gateway:
        async with httpx.AsyncClient(base_url=gateway.url) as http:
            response = await http.get("/health")
    assert response.status_code == 503
    body = response.json()
    assert body["temporal"] == "ok" and body["workers"] == 0
    assert "nobody-polls-this" in body["reason"]


async def test_health_is_503_without_temporal(settings: Settings) -> None:
    unreachable = settings.model_copy(update={"gateway_port": 0, "temporal_address": "127.0.0.1:9"})
    client = await Client.connect(unreachable.address, lazy=True)  # nothing listens there
    async with GatewayServer(unreachable, perennial=Perennial(client, unreachable)) as gateway:
        async with httpx.AsyncClient(base_url=gateway.url, timeout=30) as http:
            response = await http.get("/health")
    assert response.status_code == 503
    body = response.json()
    assert body["temporal"] == "unreachable" and body["workers"] == 0 and body["reason"]


async def test_send_ask_state_events(http: httpx.AsyncClient) -> None:
    sent = await http.post(f"/agents/notes/alice{N}/messages", json={"text": "buy milk", "id": "m-1"})
    assert sent.status_code == 202 and sent.json() == {"id": "m-1"}
    asked = await http.post(f"/agents/notes/alice{N}/ask", json={"text": "call bob"})
    assert asked.status_code == 200, asked.text
    reply = asked.json()
    assert reply["reply"] == "Noted (note #2)." and reply["version"] == 2

    state = (await http.get(f"/agents/notes/alice{N}/state")).json()
    assert state["version"] == 2
    assert state["state"]["notes"] == ["buy milk", "call bob"]

    page = (await http.get(f"/agents/notes/alice{N}/events", params={"after": 0})).json()
    kinds = [e["kind"] for e in page["events"]]
    assert kinds.count("turn") == 2 and kinds.count("received") == 2
    limited = (await http.get(f"/agents/notes/alice{N}/events", params={"limit": 1})).json()
    assert len(limited["events"]) == 1 and limited["next_after"] == limited["events"][0]["offset"]


async def test_a_repeated_message_id_is_applied_once(http: httpx.AsyncClient) -> None:
    for _ in range(3):
        response = await http.post(f"/agents/notes/once{N}/messages", json={"text": "x", "id": "same"})
        assert response.status_code == 202
    reply = (await http.post(f"/agents/notes/once{N}/ask", json={"text": "y"})).json()
    assert reply["reply"] == "Noted (note #2)."


async def test_agents_and_types_are_listed(http: httpx.AsyncClient) -> None:
    await http.post(f"/agents/notes/listed{N}/ask", json={"text": "hello"})
    types = (await http.get("/agent-types")).json()["types"]
    assert "notes" in {t["name"] for t in types}

    async def listed() -> bool:
        found = (await http.get("/agents", params={"type": "notes"})).json()["agents"]
        return any(a["name"] == "listed" + N for a in found)

    await eventually(listed)


async def test_bad_input_is_400_and_changes_nothing(http: httpx.AsyncClient) -> None:
    await http.post(f"/agents/notes/strict{N}/ask", json={"text": "first"})
    for body in ({"text": ""}, {"text": "   "}, {}, {"text": 5}, {"text": "x", "extra": 1}):
        _error(await http.post(f"/agents/notes/strict{N}/messages", json=body), 400, "InvalidRequest"
               if "extra" in body or "text" not in body or body["text"] == 5 else "InvalidMessage")
    _error(await http.post(f"/agents/notes/strict{N}/ask", content=b"{not json"), 400, "InvalidRequest")
    _error(await http.get(f"/agents/notes/strict{N}/events", params={"after": -1}), 400,
           "InvalidRequest")
    state = (await http.get(f"/agents/notes/strict{N}/state")).json()
    assert state["version"] == 1


async def test_not_found_statuses(http: httpx.AsyncClient) -> None:
    _error(await http.get("/agents/no-such-type/x/state"), 404, "UnknownAgentType")
    _error(await http.post("/agents/no-such-type/x/messages", json={"text": "hi"}), 404,
           "UnknownAgentType")
    _error(await http.get(f"/agents/notes/never-created{N}/state"), 404, "AgentNotFound")
    await http.post(f"/agents/notes/nf{N}/ask", json={"text": "hi"})
    _error(await http.delete(f"/agents/notes/nf{N}/schedules/nope"), 404, "ScheduleNotFound")
    _error(await http.post(f"/agents/notes/nf{N}/approvals/nope", json={"approve": True}), 404,
           "ApprovalNotFound")
    _error(await http.post(f"/agents/notes/nf{N}/rollback", json={"version": 99}), 404,
           "VersionNotKept")


async def test_rollback_and_schedules(http: httpx.AsyncClient) -> None:
    for text in ("one", "two"):
        await http.post(f"/agents/notes/rb{N}/ask", json={"text": text})
    restored = (await http.post(f"/agents/notes/rb{N}/rollback", json={"version": 1})).json()
    assert restored == {"restored_version": 1, "version": 3}
    assert (await http.get(f"/agents/notes/rb{N}/state")).json()["state"]["notes"] == ["one"]

    made = await http.post(f"/agents/notes/rb{N}/schedules",
                           json={"id": "later", "payload": "ping", "after_seconds": 3600})
    assert made.status_code == 200, made.text
    listed = (await http.get(f"/agents/notes/rb{N}/schedules")).json()
    assert [s["id"] for s in listed] == ["later"]
    _error(await http.post(f"/agents/notes/rb{N}/schedules", json={"id": "x", "payload": "p"}), 400,
           "InvalidSchedule")
    _error(await http.post(f"/agents/notes/rb{N}/schedules", json={"id": "x", "payload": "p",
                                                               "after_seconds": 5, "bogus": 1}),
           400, "InvalidRequest")
    cancelled = await http.delete(f"/agents/notes/rb{N}/schedules/later")
    assert cancelled.status_code == 200 and cancelled.json()["id"] == "later"


async def test_body_too_large_is_413(perennial: Perennial, settings: Settings, worker) -> None:
    served = settings.model_copy(update={"gateway_port": 0, "gateway_max_body_bytes": 2048})
    async with GatewayServer(served, perennial=perennial) as gateway:
        async with httpx.AsyncClient(base_url=gateway.url) as http:
            response = await http.post(f"/agents/notes/big{N}/messages", json={"text": "x" * 5000})
            _error(response, 413, "BodyTooLarge")

            async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: counted as read
                yield b'{"text": "'
                for _ in range(10):
                    yield b"x" * 500
                yield b'"}'

            streamed = await http.post(f"/agents/notes/big{N}/messages", content=chunks(),
                                       headers={"Content-Type": "application/json"})
            _error(streamed, 413, "BodyTooLarge")
            _error(await http.get(f"/agents/notes/big{N}/state"), 404, "AgentNotFound")


async def test_ask_timeout_is_504_and_says_the_message_was_accepted(
    perennial: Perennial, settings: Settings
) -> None:
    # no worker on this task queue: the ask cannot be answered
    served = settings.model_copy(update={"gateway_port": 0})
    async with GatewayServer(served, perennial=perennial) as gateway:
        async with httpx.AsyncClient(base_url=gateway.url, timeout=30) as http:
            response = await http.post(f"/agents/notes/late{N}/ask",
                                       json={"text": "anyone?", "id": "q-1", "timeout": 1})
    error = _error(response, 504, "AskTimedOut")
    assert error["accepted"] is True and error["id"] == "q-1"


async def test_backpressure_is_429_with_retry_after(
    perennial: Perennial, settings: Settings
) -> None:
    # no worker yet: nothing is applied, so the gateway's count of unapplied messages fills
    served = settings.model_copy(update={"gateway_port": 0, "gateway_max_unapplied": 5})
    async with GatewayServer(served, perennial=perennial) as gateway:
        async with httpx.AsyncClient(base_url=gateway.url, timeout=30) as http:
            for i in range(5):
                ok = await http.post(f"/agents/notes/flooded{N}/messages", json={"text": f"m{i}"})
                assert ok.status_code == 202, ok.text
            refused = await http.post(f"/agents/notes/flooded{N}/messages", json={"text": "m5"})
            error = _error(refused, 429, "TooManyUnapplied")
            assert int(refused.headers["Retry-After"]) >= 1
            assert error["retry_after"] >= 1


async def test_sse_follows_events_and_resumes_from_last_event_id(
    http: httpx.AsyncClient,
) -> None:
    await http.post(f"/agents/notes/streamed{N}/ask", json={"text": "first"})

    async def read(headers: dict[str, str], want: int) -> list[tuple[int, dict]]:
        got: list[tuple[int, dict]] = []
        async with http.stream("GET", f"/agents/notes/streamed{N}/events",
                               headers={"Accept": "text/event-stream", **headers}) as stream:
            assert stream.headers["content-type"].startswith("text/event-stream")
            offset = None
            async for line in stream.aiter_lines():
                if line.startswith("id: "):
                    offset = int(line[4:])
                elif line.startswith("data: "):
                    got.append((offset, json.loads(line[6:])))
                    if len(got) == want:
                        return got
        return got

    first = await asyncio.wait_for(read({}, 2), 20)  # received + turn of "first"
    assert [e["kind"] for _, e in first] == ["received", "turn"]
    assert [o for o, _ in first] == [e["offset"] for _, e in first]

    live = asyncio.create_task(read({"Last-Event-ID": str(first[-1][0])}, 2))
    await http.post(f"/agents/notes/streamed{N}/messages", json={"text": "second"})
    resumed = await asyncio.wait_for(live, 20)
    assert [e["kind"] for _, e in resumed] == ["received", "turn"]
    assert resumed[0][0] == first[-1][0] + 1


async def test_openapi_schema_lists_the_routes(http: httpx.AsyncClient) -> None:
    schema = (await http.get("/openapi.json")).json()
    paths = schema["paths"]
    for path in ("/health", "/agents", "/agents/{agent_type}/{name}/messages",
                 "/agents/{agent_type}/{name}/ask", "/agents/{agent_type}/{name}/state",
                 "/agents/{agent_type}/{name}/events", "/agents/{agent_type}/{name}/call/{method}"):
        assert path in paths, path
