"""Auth at the gateway's doors: tokens and scopes on HTTP and the socket, open mode on
loopback only, and tokens kept out of the logs."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from temporalio.worker import Worker
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from perennial.client import Perennial
from perennial.client.gateway.auth import InsecureGateway, hash_token
from perennial.client.gateway.server import GatewayServer
from perennial.client.settings import Settings

WRITER = "writer-token-0123456789abcdef"
READER = "reader-token-0123456789abcdef"
DECIDER = "decider-token-0123456789abcdef"


@pytest.fixture
async def secured(
    perennial: Perennial, settings: Settings, worker: Worker, tmp_path: Path
) -> AsyncIterator[GatewayServer]:
    """A gateway with three tokens, scoped to `notes/alice` (on this test's task queue:
    the name is the task queue's, so each test has an alice of its own)."""
    alice = f"alice-{settings.task_queue}"
    tokens = tmp_path / "tokens.toml"
    tokens.write_text(f"""
[[token]]
name = "writer"
sha256 = "{hash_token(WRITER)}"
scopes = ["read:notes/alice", "write:notes/alice"]

[[token]]
name = "reader"
sha256 = "{hash_token(READER)}"
scopes = ["read:notes/*"]

[[token]]
name = "decider"
token = "{DECIDER}"
scopes = ["decide:notes/alice"]
""")
    served = settings.model_copy(update={"gateway_port": 0, "gateway_tokens_file": tokens})
    tokens.write_text(tokens.read_text().replace("notes/alice", f"notes/{alice}"))
    async with GatewayServer(served, perennial=perennial) as gateway:
        gateway.alice = alice  # type: ignore[attr-defined]
        yield gateway


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_tokens_and_scopes_on_http(secured: GatewayServer) -> None:
    async with httpx.AsyncClient(base_url=secured.url, timeout=30) as http:
        missing = await http.get(f"/agents/notes/{secured.alice}/state")
        assert missing.status_code == 401 and missing.json()["error"]["type"] == "Unauthorized"
        assert missing.headers["WWW-Authenticate"].startswith("Bearer")
        wrong = await http.get(f"/agents/notes/{secured.alice}/state", headers=_bearer("nope" * 8))
        assert wrong.status_code == 401

        asked = await http.post(f"/agents/notes/{secured.alice}/ask", json={"text": "hi"},
                                headers=_bearer(WRITER))
        assert asked.status_code == 200, asked.text
        elsewhere = await http.post("/agents/notes/bob/ask", json={"text": "hi"},
                                    headers=_bearer(WRITER))
        assert elsewhere.status_code == 403
        assert elsewhere.json()["error"]["type"] == "Forbidden"

        read = await http.get(f"/agents/notes/{secured.alice}/state", headers=_bearer(READER))
        assert read.status_code == 200 and read.json()["version"] == 1
        write = await http.post(f"/agents/notes/{secured.alice}/messages", json={"text": "x"},
                                headers=_bearer(READER))
        assert write.status_code == 403
        decide = await http.post(f"/agents/notes/{secured.alice}/approvals/a-1", json={"approve": True},
                                 headers=_bearer(WRITER))
        assert decide.status_code == 403  # writing is not deciding
        decided = await http.post(f"/agents/notes/{secured.alice}/approvals/a-1", json={"approve": True},
                                  headers=_bearer(DECIDER))
        assert decided.status_code == 404  # allowed in; the agent has no such approval
        via_query = await http.get(f"/agents/notes/{secured.alice}/state",
                                   params={"access_token": READER})
        assert via_query.status_code == 200
        assert (await http.get("/health")).status_code == 200  # health needs no token


async def test_tokens_and_scopes_on_the_socket(secured: GatewayServer) -> None:
    base = secured.url.replace("http", "ws", 1) + f"/agents/notes/{secured.alice}/ws"
    async with connect(base) as anonymous:
        with pytest.raises(ConnectionClosed) as closed:
            await asyncio.wait_for(anonymous.recv(), 10)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 4401

    async with connect(base.replace(secured.alice, "carol") + f"?access_token={WRITER}") as other:
        with pytest.raises(ConnectionClosed) as closed:
            await asyncio.wait_for(other.recv(), 10)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 4403

    async with connect(f"{base}?access_token={READER}") as reader:
        first = json.loads(await asyncio.wait_for(reader.recv(), 10))
        assert first["type"] == "state"
        await reader.send(json.dumps({"type": "ask", "id": "r-1", "text": "let me in"}))
        while True:
            answer = json.loads(await asyncio.wait_for(reader.recv(), 10))
            if answer.get("id") == "r-1":
                break
        assert answer["type"] == "error" and answer["error"]["type"] == "Forbidden"
        assert answer["error"]["status"] == 403


async def test_tokens_never_reach_the_log(
    secured: GatewayServer, capsys: pytest.CaptureFixture[str]
) -> None:
    async with httpx.AsyncClient(base_url=secured.url, timeout=30) as http:
        await http.get(f"/agents/notes/{secured.alice}/state", params={"access_token": READER})
        await http.get(f"/agents/notes/{secured.alice}/state", headers=_bearer(WRITER))
        await http.get(f"/agents/notes/{secured.alice}/state", headers=_bearer("bad-" + WRITER))
    ws = secured.url.replace("http", "ws", 1) + f"/agents/notes/{secured.alice}/ws?access_token={READER}"
    async with connect(ws) as socket:
        await asyncio.wait_for(socket.recv(), 10)
    logged = capsys.readouterr()
    text = logged.out + logged.err
    assert f"/agents/notes/{secured.alice}/state" in text  # requests are logged ...
    for token in (READER, WRITER):
        assert token not in text  # ... their tokens are not


async def test_open_only_on_loopback(perennial: Perennial, settings: Settings, tmp_path: Path) -> None:
    public = settings.model_copy(update={"gateway_port": 0, "gateway_host": "0.0.0.0"})
    with pytest.raises(InsecureGateway):
        await GatewayServer(public, perennial=perennial).start()
    tokens = tmp_path / "tokens.toml"
    tokens.write_text(f'[[token]]\nname = "x"\nsha256 = "{hash_token(WRITER)}"\n'
                      'scopes = ["read:*"]\n')
    guarded = public.model_copy(update={"gateway_tokens_file": tokens})
    async with GatewayServer(guarded, perennial=perennial) as gateway:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{gateway.port}") as http:
            response = await http.get("/agents/notes/x/state")
        assert response.status_code == 401
