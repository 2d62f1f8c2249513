"""The codec server: Temporal's codec protocol over HTTP (round trips, auth, CORS, bad bodies),
the `perennial codec-server` command, and the embedded Web UI showing decrypted payloads in a
real Chromium."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest
import pytest_asyncio
from temporalio.api.common.v1 import Payload
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter

from perennial.client import Perennial, Settings
from perennial.client.codec import (
    ENCODING,
    KEY_ID_METADATA,
    EncryptionCodec,
    EncryptionKeyError,
    KeyRing,
    new_key_line,
)
from perennial.client.codec_server import (
    MAX_BODY_BYTES,
    CodecServer,
    CodecServerUnavailable,
    InsecureCodecServer,
    codec_app,
)
from perennial.client.server import DevServer, free_port
from perennial.worker import build_worker
from tests.browser import chromium_page
from tests.conftest import ROOT
from tests.support import unique

TOKEN = "codec-token-for-tests"
UI_ORIGIN = "http://127.0.0.1:8233"
SECRET = "the vault code is ocelot-7431"


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def _wire(*texts: str) -> dict[str, object]:
    """Payloads of JSON strings, as the Web UI sends them (protobuf JSON: bytes as base64)."""
    return {
        "payloads": [
            {"metadata": {"encoding": _b64(b"json/plain")}, "data": _b64(json.dumps(t).encode())}
            for t in texts
        ]
    }


@pytest.fixture
def codec() -> EncryptionCodec:
    return EncryptionCodec(KeyRing.parse(new_key_line("k1")))


@pytest_asyncio.fixture(loop_scope="session")
async def http(codec: EncryptionCodec) -> AsyncIterator[httpx.AsyncClient]:
    app = codec_app(codec, token=TOKEN, origins=[UI_ORIGIN])
    transport = httpx.ASGITransport(app=app)
    headers = {"Authorization": f"Bearer {TOKEN}", "X-Namespace": "default"}
    async with httpx.AsyncClient(
        transport=transport, base_url="http://codec", headers=headers
    ) as c:
        yield c


# --------------------------------------------------------------------------- the protocol


async def test_encode_then_decode_round_trips(http: httpx.AsyncClient) -> None:
    sent = _wire(SECRET, "second")

    encoded = await http.post("/encode", json=sent)

    assert encoded.status_code == 200
    payloads = encoded.json()["payloads"]
    assert len(payloads) == 2
    for payload in payloads:
        assert base64.b64decode(payload["metadata"]["encoding"]) == ENCODING
        assert base64.b64decode(payload["metadata"][KEY_ID_METADATA]) == b"k1"
    assert SECRET not in encoded.text and _b64(json.dumps(SECRET).encode()) not in encoded.text

    decoded = await http.post("/decode", json=encoded.json())
    assert decoded.status_code == 200
    assert decoded.json() == sent


async def test_it_decodes_what_the_workers_codec_wrote_at_any_path_depth(
    http: httpx.AsyncClient, codec: EncryptionCodec
) -> None:
    payload = pydantic_data_converter.payload_converter.to_payloads([{"text": SECRET}])[0]
    written = (await codec.encode([payload]))[0]
    body = {
        "payloads": [
            {
                "metadata": {k: _b64(v) for k, v in written.metadata.items()},
                "data": _b64(written.data),
            }
        ]
    }
    for path in ("/decode", "/default/decode", "/codec/default/decode"):
        answer = await http.post(path, json=body)
        assert answer.status_code == 200, path
        (got,) = answer.json()["payloads"]
        assert json.loads(base64.b64decode(got["data"])) == {"text": SECRET}


async def test_plain_payloads_and_empty_lists_pass_through(http: httpx.AsyncClient) -> None:
    plain = _wire("written before encryption")
    assert (await http.post("/decode", json=plain)).json() == plain
    assert (await http.post("/decode", json={"payloads": []})).json() == {"payloads": []}


async def test_a_token_is_required_when_one_is_configured(http: httpx.AsyncClient) -> None:
    for headers in (
        {"Authorization": ""},
        {"Authorization": "Bearer wrong"},
        {"Authorization": TOKEN},
    ):
        answer = await http.post("/decode", json=_wire("x"), headers=headers)
        assert answer.status_code == 401
        assert answer.headers["www-authenticate"].startswith("Bearer")
        assert answer.json()["error"]["type"] == "Unauthorized"
        assert TOKEN not in answer.text


async def test_without_a_token_configured_anyone_who_reaches_it_is_answered(
    codec: EncryptionCodec,
) -> None:
    transport = httpx.ASGITransport(app=codec_app(codec))
    async with httpx.AsyncClient(transport=transport, base_url="http://codec") as open_client:
        assert (await open_client.post("/encode", json=_wire("x"))).status_code == 200


async def test_cors_preflight_admits_the_web_ui_with_its_headers(http: httpx.AsyncClient) -> None:
    preflight = {
        "Origin": UI_ORIGIN,
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type,x-namespace,authorization",
    }
    answer = await http.options("/decode", headers={**preflight, "Authorization": ""})

    assert answer.status_code == 200
    assert answer.headers["access-control-allow-origin"] == UI_ORIGIN
    assert "POST" in answer.headers["access-control-allow-methods"]
    allowed = answer.headers["access-control-allow-headers"].lower()
    assert {"content-type", "x-namespace", "authorization"} <= {
        h.strip() for h in allowed.split(",")
    }

    stranger = await http.options("/decode", headers={**preflight, "Origin": "http://evil.test"})
    assert "access-control-allow-origin" not in stranger.headers

    # The answer itself carries the origin too, so the browser lets the page read it.
    post = await http.post("/decode", json=_wire("x"), headers={"Origin": UI_ORIGIN})
    assert post.headers["access-control-allow-origin"] == UI_ORIGIN


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        (b"not json", "not Payloads JSON"),
        (b"[1, 2]", "not Payloads JSON"),
        (b'{"payloads": 5}', "not Payloads JSON"),
        (b'{"payloads": [{"data": "%%% not base64"}]}', "not Payloads JSON"),
        (b'{"metadata": {}, "data": ""}', "not Payloads JSON"),  # one payload, unwrapped
        (b"\xff\xfe", "not Payloads JSON"),
    ],
)
async def test_bad_bodies_are_400_with_a_json_error(
    http: httpx.AsyncClient, body: bytes, problem: str
) -> None:
    answer = await http.post("/decode", content=body, headers={"Content-Type": "application/json"})
    assert answer.status_code == 400
    error = answer.json()["error"]
    assert error["type"] == "InvalidRequest" and problem in error["message"]


async def test_a_payload_it_cannot_decrypt_is_400_naming_the_key_id(
    http: httpx.AsyncClient,
) -> None:
    foreign = EncryptionCodec(KeyRing.parse(new_key_line("elsewhere")))
    payload = (await foreign.encode([Payload(metadata={"encoding": b"json/plain"}, data=b"1")]))[0]
    body = {
        "payloads": [
            {
                "metadata": {k: _b64(v) for k, v in payload.metadata.items()},
                "data": _b64(payload.data),
            }
        ]
    }
    answer = await http.post("/decode", json=body)
    assert answer.status_code == 400
    assert answer.json()["error"]["type"] == "UnknownKeyId"
    assert "'elsewhere'" in answer.json()["error"]["message"]

    body["payloads"][0]["data"] = _b64(b"\x00" * 40)  # type: ignore[index]
    body["payloads"][0]["metadata"][KEY_ID_METADATA] = _b64(b"k1")  # type: ignore[index]
    tampered = await http.post("/decode", json=body)
    assert tampered.status_code == 400 and tampered.json()["error"]["type"] == "PayloadTampered"


async def test_oversized_bodies_wrong_methods_and_paths(http: httpx.AsyncClient) -> None:
    big = await http.post("/decode", content=b" " * (MAX_BODY_BYTES + 1))
    assert big.status_code == 413 and big.json()["error"]["type"] == "PayloadTooLarge"
    assert (await http.get("/decode")).status_code == 405
    assert (await http.post("/decrypt", json=_wire("x"))).status_code == 404


# --------------------------------------------------------------------------- serving it


def _encrypted(settings: Settings, tmp_path: Path, *lines: str) -> Settings:
    path = tmp_path / f"keys-{unique()}"
    path.write_text("\n".join(lines or (new_key_line("k1"),)) + "\n")
    return settings.model_copy(update={"encryption_key_file": path})


async def test_it_listens_on_a_real_port_and_stops(tmp_path: Path) -> None:
    settings = _encrypted(Settings(codec_port=0), tmp_path)
    async with CodecServer(settings) as server:
        assert server.port != 0 and server.url == f"http://127.0.0.1:{server.port}"
        async with httpx.AsyncClient(base_url=server.url) as client:
            encoded = await client.post("/encode", json=_wire(SECRET))
            decoded = await client.post("/decode", json=encoded.json())
        assert decoded.json() == _wire(SECRET)

        taken = settings.model_copy(update={"codec_port": server.port})
        with pytest.raises(CodecServerUnavailable, match="PERENNIAL_CODEC_PORT"):
            await CodecServer(taken).start()
    with pytest.raises(httpx.ConnectError):
        async with httpx.AsyncClient() as client:
            await client.post(f"{server.url}/encode", json=_wire("x"))


def test_it_refuses_to_listen_beyond_loopback_without_a_token(tmp_path: Path) -> None:
    for host in ("0.0.0.0", "::", "192.0.2.10", "codec.example.com"):
        with pytest.raises(InsecureCodecServer, match="PERENNIAL_CODEC_TOKEN"):
            CodecServer(_encrypted(Settings(codec_host=host), tmp_path))
    with_token = Settings(codec_host="0.0.0.0", codec_token=TOKEN)
    assert CodecServer(_encrypted(with_token, tmp_path)).url.startswith("http://127.0.0.1:")
    with pytest.raises(EncryptionKeyError, match="encryption is off"):
        CodecServer(Settings())


def test_default_origins_are_the_embedded_web_uis() -> None:
    assert Settings(ui_port=9000).codec_origins == (
        "http://127.0.0.1:9000",
        "http://localhost:9000",
    )
    assert Settings.from_env(
        {"PERENNIAL_CODEC_CORS_ORIGINS": "https://a.test, https://b.test"}
    ).codec_origins == (
        "https://a.test",
        "https://b.test",
    )


async def _cli(env: dict[str, str], *args: str) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "perennial.client.cli", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, cwd=ROOT,
        env={**os.environ, **env},
    )  # fmt: skip
    out, err = await asyncio.wait_for(process.communicate(), 60)
    return process.returncode or 0, out.decode(), err.decode()


async def test_the_command_prints_new_keys_and_names_bad_key_file_lines(tmp_path: Path) -> None:
    code, out, _ = await _cli({}, "codec-server", "--new-key", "2026-07")
    assert code == 0
    keys = tmp_path / "keys"
    keys.write_text(f"# made by --new-key\n{out}")
    assert KeyRing.from_file(keys).key_ids == ("2026-07",)

    secret_part = out.strip().partition(":")[2]
    keys.write_text(f"{out.strip()}\n{secret_part}\n")  # a key pasted without its id
    env = {"PERENNIAL_ENCRYPTION_KEY_FILE": str(keys)}
    code, _, err = await _cli(env, "--json", "codec-server", "--port", str(free_port()))
    assert code == 2
    error = json.loads(err)["error"]
    assert error["type"] == "EncryptionKeyError" and f"{keys}, line 2:" in error["message"]
    assert secret_part not in err


async def test_dev_runs_the_codec_server_when_encryption_is_on(
    settings: Settings, tmp_path: Path
) -> None:
    keys = _encrypted(settings, tmp_path).encryption_key_file
    port = free_port()
    env = {
        "TEMPORAL_ADDRESS": settings.address,
        "PERENNIAL_TASK_QUEUE": settings.task_queue,
        "PERENNIAL_ENCRYPTION_KEY_FILE": str(keys),
        "PERENNIAL_CODEC_PORT": str(port),
        "PERENNIAL_LOG_LEVEL": "WARNING",
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "perennial.client.cli", "dev", "--no-gateway",
        stdout=asyncio.subprocess.PIPE, cwd=ROOT, env={**os.environ, **env},
    )  # fmt: skip
    assert process.stdout is not None
    try:
        lines = []
        while not any(line.startswith("Worker running") for line in lines):
            line = await asyncio.wait_for(process.stdout.readline(), 60)
            assert line, f"dev exited: {lines}"
            lines.append(line.decode())
        assert f"Codec server:    http://127.0.0.1:{port}" in "".join(lines)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            assert (await client.post("/encode", json=_wire("x"))).status_code == 200
    finally:
        process.terminate()
        code = await asyncio.wait_for(process.wait(), 30)
    assert code == 0


# --------------------------------------------------------------------------- the Web UI


async def test_the_web_ui_shows_decrypted_payloads_through_the_codec_server(
    tmp_path: Path,
) -> None:
    settings = _encrypted(
        Settings(
            state_dir=tmp_path / "temporal",
            server_port=free_port(),
            ui_port=free_port(),
            codec_port=free_port(),
            task_queue=f"test-{unique()}",
            sticky_timeout_seconds=1.0,
        ),
        tmp_path,
    )
    async with DevServer(settings) as server, CodecServer(settings):
        settings = settings.model_copy(update={"temporal_address": server.address})
        perennial = await Perennial.connect(settings)
        async with build_worker(perennial.client, settings):
            agent = perennial.agent("notes", unique())
            assert (await agent.ask(SECRET)).version == 1
            run_id = (await agent.describe()).run_id

        raw = await Client.connect(settings.address, namespace=settings.namespace)
        history = await raw.get_workflow_handle(agent.id).fetch_history()
        assert all(SECRET.encode() not in e.SerializeToString() for e in history.events)

        url = f"{server.ui_url}/namespaces/{settings.namespace}/workflows/{quote(agent.id, safe='')}/{run_id}/history"
        async with chromium_page(viewport={"width": 1600, "height": 1200}) as page:
            await page.goto(url)
            await page.get_by_text("Workflow Execution Update Accepted").click(timeout=60_000)
            await page.get_by_text(SECRET).wait_for(timeout=30_000)
