"""The agent's WebSocket: state and patches, events with resume, ask/send/call, errors,
one watcher per agent however many sockets, and reconnecting across a gateway restart."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import jsonpatch
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from perennial.client import Perennial
from perennial.client.gateway.server import GatewayServer

#: Agent names are this session's own (the dev server outlives one test module).
N = f"-{uuid.uuid4().hex[:6]}"


def _ws_url(gateway: GatewayServer, agent: str, query: str = "") -> str:
    return f"{gateway.url.replace('http', 'ws', 1)}/agents/{agent}/ws{query}"


class Peer:
    """A socket client that keeps the state as the server describes it."""

    def __init__(self, connection: ClientConnection) -> None:
        self.connection = connection
        self.version = -1
        self.state: Any = None
        self.events: list[dict] = []
        self.replies: dict[str, dict] = {}
        self.frames: list[dict] = []

    async def next(self) -> dict:
        message = json.loads(await asyncio.wait_for(self.connection.recv(), 20))
        self.frames.append(message)
        kind = message["type"]
        if kind == "state":
            self.version, self.state = message["version"], message["state"]
        elif kind == "patch":
            assert message["from_version"] == self.version, message
            self.state = jsonpatch.apply_patch(self.state, message["ops"])
            self.version = message["version"]
        elif kind == "event":
            self.events.append(message["event"])
        elif "id" in message:
            self.replies[message["id"]] = message
        return message

    async def until(self, done: Any) -> None:
        while not done():
            await self.next()

    async def request(self, **fields: Any) -> dict:
        self.replies.pop(fields["id"], None)
        await self.connection.send(json.dumps(fields))
        await self.until(lambda: fields["id"] in self.replies)
        return self.replies[fields["id"]]


@pytest.fixture
async def peer(gateway: GatewayServer) -> AsyncIterator[Any]:
    opened: list[ClientConnection] = []

    async def open_peer(agent: str, query: str = "") -> Peer:
        connection = await connect(_ws_url(gateway, agent, query))
        opened.append(connection)
        return Peer(connection)

    yield open_peer
    for connection in opened:
        await connection.close()


async def test_state_on_connect_then_patches_per_version(peer: Any, perennial: Perennial) -> None:
    agent = perennial.agent("notes", "live" + N)
    for i in range(5):
        await agent.ask(f"a long enough note, number {i}, so that a change is smaller than all")
    client = await peer("notes/live" + N)
    first = await client.next()
    assert first["type"] == "state" and first["version"] == 5
    assert len(first["state"]["notes"]) == 5

    await agent.send("new")
    await client.until(lambda: client.version == 6)
    patch = client.frames[-1]
    assert patch["type"] == "patch" and patch["from_version"] == 5, patch
    assert {"op": "add", "path": "/notes/-", "value": "new"} in patch["ops"]
    assert client.state == (await perennial.agent("notes", "live" + N).state_view()).state


async def test_a_new_agent_starts_as_null_and_appears(peer: Any) -> None:
    client = await peer("notes/brand-new" + N)
    first = await client.next()
    assert first == {"type": "state", "version": 0, "state": None}
    reply = await client.request(type="ask", id="a-1", text="hello")
    assert reply == {"type": "reply", "id": "a-1", "reply": "Noted (note #1).", "version": 1}
    await client.until(lambda: client.version == 1)
    assert client.state["notes"] == ["hello"]


async def test_ask_send_and_errors_on_the_socket(peer: Any, perennial: Perennial) -> None:
    client = await peer("notes/talk" + N)
    await client.next()
    accepted = await client.request(type="send", id="s-1", text="note this")
    assert accepted == {"type": "accepted", "id": "s-1"}
    again = await client.request(type="ask", id="s-1", text="note this")  # same id: applied once
    assert again["type"] == "reply" and again["version"] == 1

    for bad, kind in (
        ({"type": "ask", "id": "e-1", "text": ""}, "InvalidMessage"),
        ({"type": "ask", "id": "e-2"}, "InvalidRequest"),
        ({"type": "shout", "id": "e-3", "text": "x"}, "InvalidRequest"),
        ({"type": "call", "id": "e-4", "method": "nope"}, "MethodNotFound"),
    ):
        error = await client.request(**bad)
        assert error["type"] == "error" and error["error"]["type"] == kind, error
        assert error["error"]["status"] in (400, 404)
    await client.connection.send("not json at all")
    unsolicited = await client.next()
    assert unsolicited["type"] == "error" and "id" not in unsolicited
    await client.until(lambda: client.version == 1)
    assert (await perennial.agent("notes", "talk" + N).state_view()).version == 1  # nothing changed


async def test_events_resume_after_an_offset(peer: Any, perennial: Perennial) -> None:
    agent = perennial.agent("notes", "resume" + N)
    for text in ("a", "b", "c"):
        await agent.ask(text)
    client = await peer("notes/resume" + N, "?after=2")
    await client.until(lambda: len(client.events) >= 4)
    offsets = [e["offset"] for e in client.events]
    assert offsets == list(range(3, 3 + len(offsets)))  # from 3, in order, no gaps
    await agent.send("d")
    await client.until(lambda: any(e.get("message_id") and e["kind"] == "turn" and
                                   e["version"] == 4 for e in client.events))
    offsets = [e["offset"] for e in client.events]
    assert offsets == sorted(set(offsets)) == list(range(3, 3 + len(offsets)))


async def test_many_sockets_share_one_watcher(
    peer: Any, gateway: GatewayServer, perennial: Perennial
) -> None:
    await perennial.agent("notes", "shared" + N).ask("zero")
    clients = [await peer("notes/shared" + N) for _ in range(5)]
    for client in clients:
        await client.next()
    assert gateway.gateway is not None and len(gateway.gateway.hub) == 1
    await perennial.agent("notes", "shared" + N).ask("one")
    for client in clients:
        await client.until(lambda c=client: c.version == 2)
        assert client.state["notes"] == ["zero", "one"]


async def test_unknown_type_and_bad_after_close_the_socket(gateway: GatewayServer) -> None:
    for agent, query, code in (("nope/x", "", 4404), ("notes/x", "?after=-1", 4400)):
        async with connect(_ws_url(gateway, agent, query)) as connection:
            with pytest.raises(ConnectionClosed) as closed:
                await asyncio.wait_for(connection.recv(), 10)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == code


async def test_reconnect_after_a_gateway_restart_resumes_state_and_events(
    gateway: GatewayServer, perennial: Perennial
) -> None:
    agent = perennial.agent("notes", "restarted" + N)
    await agent.ask("before")
    connection = await connect(_ws_url(gateway, "notes/restarted" + N, "?after=0"))
    client = Peer(connection)
    await client.until(lambda: client.version == 1 and len(client.events) >= 2)
    last = client.events[-1]["offset"]

    restarting = asyncio.create_task(gateway.restart())
    with pytest.raises(ConnectionClosed):
        while True:
            await client.next()
    await restarting
    await agent.ask("during the outage")  # the agent goes on without the gateway

    resumed = Peer(await connect(_ws_url(gateway, "notes/restarted" + N, f"?after={last}")))
    try:
        await resumed.until(lambda: resumed.version == 2 and any(
            e["kind"] == "turn" and e["version"] == 2 for e in resumed.events))
        assert resumed.state["notes"] == ["before", "during the outage"]
        offsets = [e["offset"] for e in client.events + resumed.events]
        assert offsets == list(range(1, len(offsets) + 1))  # each event once, none missing
    finally:
        await resumed.connection.close()
