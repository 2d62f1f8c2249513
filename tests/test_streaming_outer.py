"""Streaming, stop and busy policies on the outer layers: `perennial ask --stream` and
`perennial stop`, the gateway's SSE ask (resumed with Last-Event-ID), its `stop` route and
409s, the socket's streamed ask and `stop` frame, and the page showing an answer as it is
written, with its Stop button.

"Before the reply" is shown without timing: the scripted model holds its stream half-way
(`hold_at_chunk`) until the test has seen text arrive, then lets it finish."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import AsyncIterator
from typing import Any, get_args

import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect

import tests.llm_agents  # noqa: F401  (registers the test agent types before a worker is built)
from perennial.client import (
    DeltaItem,
    Perennial,
    ReplyItem,
    RestartItem,
    Settings,
    StreamPosition,
    ToolCallItem,
    ToolResultItem,
    TurnStopped,
)
from perennial.client.cli import BUSY_POLICIES
from perennial.client.gateway import app as gateway_app
from perennial.client.gateway.server import GatewayServer
from perennial.testing.scripted_llm import ScriptedLLM, text
from perennial.workflows.messages import BusyPolicy
from tests.browser import chromium_page, require_chromium
from tests.conftest import ROOT
from tests.support import event_kinds, unique

pytestmark = [
    pytest.mark.asyncio(loop_scope="session"),
    pytest.mark.agents(app=("tests.llm_agents",), llm=True),
]

ANSWER = "The quick brown fox jumps over the lazy dog, twice, to be sure it streams."
SSE = {"Accept": "text/event-stream"}


@pytest.fixture
async def http(gateway: GatewayServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=gateway.url, timeout=60) as client:
        yield client


def _error(response: httpx.Response, status: int, kind: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["type"] == kind, error
    assert error["message"]
    return error


class Sse:
    """One SSE event: `event:`, `id:`, the JSON `data:`."""

    def __init__(self, kind: str, event_id: str | None, data: dict[str, Any]) -> None:
        self.kind, self.id, self.data = kind, event_id, data

    def __repr__(self) -> str:
        return f"Sse({self.kind!r}, {self.id!r}, {self.data!r})"


async def sse(response: httpx.Response, *, keepalives: bool = False) -> AsyncIterator[Sse]:
    """The events of an SSE response as they come (and its keepalive comments, as events of
    kind "keepalive", with `keepalives`)."""
    kind, event_id, data = "message", None, []
    async for line in response.aiter_lines():
        if line.startswith(":"):
            if keepalives and line == ": keepalive":
                yield Sse("keepalive", None, {})
        elif line:
            field, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if field == "event":
                kind = value
            elif field == "id":
                event_id = value
            elif field == "data":
                data.append(value)
        elif data:
            yield Sse(kind, event_id, json.loads("\n".join(data)))
            kind, event_id, data = "message", None, []


def _joined(items: list[dict[str, Any]]) -> str:
    return "".join(item["text"] for item in items if item["type"] == "delta")


# --------------------------------------------------------------------------- SSE


async def test_sse_sends_deltas_in_order_before_the_reply_with_keepalives(
    http: httpx.AsyncClient, scripted_llm: ScriptedLLM, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(gateway_app, "KEEPALIVE_SECONDS", 0.1)
    scripted_llm.script(text(ANSWER, hold_at_chunk=4))  # 12 characters, then held
    name = unique("sse")
    events: list[Sse] = []
    async with http.stream("POST", f"/agents/test_llm/{name}/ask", headers=SSE,
                           json={"text": "tell me", "id": "s1"}) as response:  # fmt: skip
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        async for event in sse(response, keepalives=True):
            if event.kind != "keepalive":
                events.append(event)
            elif events and events[0].kind == "delta" and len(events) == 1:
                # Text arrived while the model is held (no reply can exist yet), and the idle
                # stream is kept alive: now let the model finish.
                scripted_llm.release()
    kinds = [e.kind for e in events]
    assert kinds[-1] == "reply" and set(kinds[:-1]) == {"delta"} and len(kinds) >= 3, kinds
    assert [e.data["type"] for e in events] == kinds
    assert _joined([e.data for e in events]) == ANSWER == events[-1].data["reply"]
    assert events[-1].data["version"] == 1 and all(e.data["id"] == "s1" for e in events)
    positions = [StreamPosition.parse(e.id or "") for e in events]
    assert positions == [StreamPosition.model_validate(e.data["position"]) for e in events]
    chars = [p.chars for p, e in zip(positions, events, strict=True) if e.kind == "delta"]
    assert chars == sorted(chars) and chars[-1] == len(ANSWER)


async def test_sse_resumes_with_last_event_id_after_a_dropped_connection(
    http: httpx.AsyncClient, perennial: Perennial, scripted_llm: ScriptedLLM
) -> None:
    scripted_llm.script(text(ANSWER, hold_at_chunk=6))
    name = unique("resume")
    route = f"/agents/test_llm/{name}/ask"
    first: list[Sse] = []
    async with http.stream("POST", route, headers=SSE, json={"text": "go", "id": "r1"}) as response:
        async for event in sse(response):
            first.append(event)
            break  # the connection drops mid-stream, while the model still writes
    scripted_llm.release()
    resumed = {**SSE, "Last-Event-ID": first[-1].id or ""}
    async with http.stream(
        "POST", route, headers=resumed, json={"text": "go", "id": "r1"}
    ) as response:
        assert response.status_code == 200
        rest = [event async for event in sse(response)]
    assert first[0].kind == "delta" and rest[-1].kind == "reply", (first, rest)
    assert _joined([e.data for e in first]) + _joined([e.data for e in rest]) == ANSWER
    assert rest[-1].data["reply"] == ANSWER
    assert len(scripted_llm.completions) == 1, "the turn ran once"
    assert (await event_kinds(perennial.agent("test_llm", name))).count("turn") == 1


async def test_sse_ends_at_a_gateway_restart_and_resumes_after_it(
    http: httpx.AsyncClient, gateway: GatewayServer, scripted_llm: ScriptedLLM
) -> None:
    scripted_llm.script(text(ANSWER, hold_at_chunk=5))
    route = f"/agents/test_llm/{unique('restart')}/ask"
    first: list[Sse] = []
    async with http.stream("POST", route, headers=SSE, json={"text": "go", "id": "g1"}) as response:
        events = sse(response)
        first.append(await asyncio.wait_for(anext(events), 30))
        started = time.monotonic()
        await gateway.restart()  # the held stream ends at once, not at the shutdown timeout
        assert time.monotonic() - started < 4.5, "shutdown waited for the open stream"
        first += [event async for event in events]
    assert [e.kind for e in first] == ["delta"], first  # ended with neither reply nor error
    scripted_llm.release()
    resumed = {**SSE, "Last-Event-ID": first[-1].id or ""}
    async with http.stream(
        "POST", route, headers=resumed, json={"text": "go", "id": "g1"}
    ) as response:
        rest = [event async for event in sse(response)]
    assert _joined([e.data for e in first + rest]) == ANSWER == rest[-1].data["reply"]


async def test_sse_refuses_bad_requests_before_the_stream(http: httpx.AsyncClient) -> None:
    route = f"/agents/test_llm/{unique('bad')}/ask"
    _error(
        await http.post(route, headers=SSE, json={"text": "   ", "id": "b1"}), 400, "InvalidMessage"
    )
    bad = {**SSE, "Last-Event-ID": "not-a-position"}
    error = _error(await http.post(route, headers=bad, json={"text": "x", "id": "b1"}), 400,
                   "InvalidRequest")  # fmt: skip
    assert "stream position" in error["message"]
    resumed = {**SSE, "Last-Event-ID": "1.1.0.4"}
    error = _error(
        await http.post(route, headers=resumed, json={"text": "x"}), 400, "InvalidRequest"
    )
    assert "id" in error["message"]
    _error(await http.post(route, json={"text": "x", "on_busy": "shout"}), 400, "InvalidRequest")
    _error(await http.get(f"/agents/test_llm/{unique('bad')}/state"), 404, "AgentNotFound")


async def test_events_stream_outlives_its_keepalives(
    http: httpx.AsyncClient, perennial: Perennial, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The events SSE of an idle agent sends keepalives and goes on (it used to end, with a
    RuntimeError in the gateway's log, after its first keepalive)."""
    monkeypatch.setattr(gateway_app, "KEEPALIVE_SECONDS", 0.1)
    agent = perennial.agent("notes", unique("idle"))
    await agent.ask("first")
    async with http.stream("GET", f"/agents/notes/{agent.name}/events", headers=SSE,
                           params={"after": 2}) as response:  # fmt: skip
        events = sse(response, keepalives=True)
        for _ in range(3):  # idle for several keepalives
            assert (await asyncio.wait_for(anext(events), 20)).kind == "keepalive"
        await agent.send("after the keepalives", id="late-1")
        event = await asyncio.wait_for(anext(events), 20)
        while event.kind == "keepalive":
            event = await asyncio.wait_for(anext(events), 20)
        assert event.kind == "event" and event.data["message_id"] == "late-1"
        await events.aclose()


# --------------------------------------------------------------------------- stop and busy


async def _held_turn(http: httpx.AsyncClient, scripted_llm: ScriptedLLM, route: str,
                     message_id: str) -> asyncio.Task[httpx.Response]:  # fmt: skip
    """An ask whose model call is held: its turn runs until stopped or released."""
    scripted_llm.script(text("never finished", hold=True))
    asked = asyncio.create_task(http.post(route, json={"text": "go", "id": message_id}))
    await scripted_llm.wait_for(lambda: len(scripted_llm.completions) == 1)
    return asked


async def test_http_stop_during_a_held_model_call(
    http: httpx.AsyncClient, scripted_llm: ScriptedLLM
) -> None:
    name = unique("stop")
    base = f"/agents/test_llm/{name}"
    asked = await _held_turn(http, scripted_llm, f"{base}/ask", "h1")
    _error(await http.post(f"{base}/stop", json={"turn": "h1", "extra": 1}), 400, "InvalidRequest")
    _error(await http.post(f"{base}/stop", json={"reason": "x" * 401}), 400, "InvalidRequest")
    other = await http.post(f"{base}/stop", json={"turn": "another-turn"})
    assert other.status_code == 200 and other.json()["stopped"] is False
    stopped = await http.post(f"{base}/stop", json={"reason": "enough", "turn": "h1"})
    assert stopped.status_code == 200, stopped.text
    result = stopped.json()
    assert result["stopped"] is True and result["turn"] == "h1"
    answer = await asyncio.wait_for(asked, 30)
    error = _error(answer, 409, "TurnStopped")
    assert error["by"] == "stop" and error["version"] == result["version"]
    assert error["kept"] is True and result["version"] == 1  # an LLM agent keeps the exchange
    assert "retry-after" not in answer.headers
    again = await http.post(f"{base}/stop")  # no body: stop whatever runs (nothing does)
    assert again.json() == {"stopped": False, "turn": None, "version": result["version"]}
    _error(await http.post("/agents/no-such-type/x/stop"), 404, "UnknownAgentType")
    _error(await http.post(f"/agents/test_llm/{unique('never')}/stop"), 404, "AgentNotFound")


async def test_reject_mid_turn_is_409_turn_in_progress(
    http: httpx.AsyncClient, scripted_llm: ScriptedLLM
) -> None:
    base = f"/agents/test_llm/{unique('busy')}"
    asked = await _held_turn(http, scripted_llm, f"{base}/ask", "first")
    refused = await http.post(f"{base}/ask", json={"text": "me too", "on_busy": "reject"})
    error = _error(refused, 409, "TurnInProgress")
    assert "retry-after" not in refused.headers and "retry_after" not in error
    async with http.stream("POST", f"{base}/ask", headers=SSE,
                           json={"text": "me too", "on_busy": "reject"}) as response:  # fmt: skip
        [event] = [event async for event in sse(response)]
    assert event.kind == "error" and event.id is None
    assert event.data["error"]["type"] == "TurnInProgress" and event.data["error"]["status"] == 409
    queued = await http.post(f"{base}/messages", json={"text": "later", "on_busy": "queue"})
    assert queued.status_code == 202
    _error(await http.post(f"{base}/messages", json={"text": "x", "on_busy": "now"}), 400,
           "InvalidRequest")  # fmt: skip
    scripted_llm.script(text("later, done"))
    scripted_llm.release()
    assert (await asyncio.wait_for(asked, 30)).json()["reply"] == "never finished"


# --------------------------------------------------------------------------- the socket


def _ws(gateway: GatewayServer, agent: str) -> str:
    return f"{gateway.url.replace('http', 'ws', 1)}/agents/{agent}/ws"


async def _frames(connection: ClientConnection, request_id: str) -> list[dict[str, Any]]:
    """The frames answering request `request_id`, up to its last (a reply, a stopped or an
    error); state, patch and event frames are skipped."""
    found: list[dict[str, Any]] = []
    while not found or found[-1]["type"] not in ("reply", "stopped", "error", "accepted"):
        frame = json.loads(await asyncio.wait_for(connection.recv(), 30))
        if frame.get("id") == request_id:
            found.append(frame)
    return found


async def test_socket_streams_deltas_then_the_reply_frame(
    gateway: GatewayServer, scripted_llm: ScriptedLLM
) -> None:
    scripted_llm.script(text(ANSWER, chunk_delay=0.02), text("Plain."))
    async with connect(_ws(gateway, f"test_llm/{unique('ws')}")) as connection:
        await connection.send(json.dumps({"type": "ask", "id": "w1", "text": "hi", "stream": True}))
        frames = await _frames(connection, "w1")
        kinds = [f["type"] for f in frames]
        assert kinds[-1] == "reply" and set(kinds[:-1]) == {"delta"} and len(kinds) >= 3, kinds
        assert _joined(frames) == ANSWER
        reply = frames[-1]
        assert {"type": "reply", "id": "w1", "reply": ANSWER, "version": 1}.items() <= reply.items()
        assert StreamPosition.model_validate(reply["position"]).offset > 0

        # An unstreamed ask still gets the reply frame alone, as old clients expect.
        await connection.send(json.dumps({"type": "ask", "id": "w2", "text": "again"}))
        assert await _frames(connection, "w2") == [
            {"type": "reply", "id": "w2", "reply": "Plain.", "version": 2}
        ]
        await connection.send(json.dumps(
            {"type": "ask", "id": "w3", "text": "x", "stream": True, "resume": "1.2"}
        ))  # fmt: skip
        [error] = await _frames(connection, "w3")
        assert error["error"]["type"] == "InvalidRequest" and error["error"]["status"] == 400
        await connection.send(
            json.dumps({"type": "ask", "id": "w5", "text": "x", "resume": "1.1.1.1"})
        )
        [error] = await _frames(connection, "w5")
        assert error["error"]["type"] == "InvalidRequest" and "stream" in error["error"]["message"]
        await connection.send(json.dumps({"type": "send", "id": "w4", "text": "x", "on_busy": "?"}))
        [error] = await _frames(connection, "w4")
        assert error["error"]["type"] == "InvalidRequest"


async def test_socket_resumes_a_streamed_ask_after_a_reconnect(
    gateway: GatewayServer, perennial: Perennial, scripted_llm: ScriptedLLM
) -> None:
    scripted_llm.script(text(ANSWER, hold_at_chunk=6))
    name = unique("wsresume")
    ask = {"type": "ask", "id": "q1", "text": "go", "stream": True}
    async with connect(_ws(gateway, f"test_llm/{name}")) as connection:
        await connection.send(json.dumps(ask))
        first = json.loads(await asyncio.wait_for(connection.recv(), 30))
        while first.get("id") != "q1":
            first = json.loads(await asyncio.wait_for(connection.recv(), 30))
    assert first["type"] == "delta"  # the socket closed mid-stream; the turn goes on
    scripted_llm.release()
    position = StreamPosition.model_validate(first["position"])
    async with connect(_ws(gateway, f"test_llm/{name}")) as connection:
        await connection.send(json.dumps({**ask, "resume": position.token()}))
        rest = await _frames(connection, "q1")
    assert first["text"] + _joined(rest) == ANSWER
    assert rest[-1]["type"] == "reply" and rest[-1]["reply"] == ANSWER
    assert len(scripted_llm.completions) == 1, "the turn ran once"
    assert (await event_kinds(perennial.agent("test_llm", name))).count("turn") == 1


async def test_socket_stop_ends_a_streamed_ask_with_turn_stopped(
    gateway: GatewayServer, scripted_llm: ScriptedLLM
) -> None:
    scripted_llm.script(text(ANSWER, hold_at_chunk=4))
    async with connect(_ws(gateway, f"test_llm/{unique('wstop')}")) as connection:
        await connection.send(json.dumps({"type": "ask", "id": "a1", "text": "go", "stream": True}))
        first = json.loads(await asyncio.wait_for(connection.recv(), 30))
        while first.get("id") != "a1":
            first = json.loads(await asyncio.wait_for(connection.recv(), 30))
        assert first["type"] == "delta"  # the model is held half-way
        await connection.send(json.dumps({"type": "stop", "id": "s1", "reason": "user"}))
        frames = [first]
        while len([f for f in frames if f["type"] in ("stopped", "error")]) < 2:
            frame = json.loads(await asyncio.wait_for(connection.recv(), 30))
            if frame.get("id") in ("a1", "s1"):
                frames.append(frame)
    [stopped] = [f for f in frames if f["type"] == "stopped"]
    assert stopped["id"] == "s1" and stopped["stopped"] is True and stopped["turn"] == "a1"
    [error] = [f for f in frames if f["type"] == "error"]
    assert error["id"] == "a1" and error["error"]["type"] == "TurnStopped"
    assert error["error"]["status"] == 409 and error["error"]["by"] == "stop"
    assert {f["type"] for f in frames if f["id"] == "a1"} == {"delta", "error"}


# --------------------------------------------------------------------------- the CLI


async def _cli(settings: Settings, *args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "perennial.client.cli",
        "--address", settings.address, "--task-queue", settings.task_queue, *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, cwd=ROOT,
    )  # fmt: skip


async def _run_cli(settings: Settings, *args: str) -> tuple[int, str, str]:
    process = await _cli(settings, *args)
    out, err = await asyncio.wait_for(process.communicate(), 60)
    return process.returncode or 0, out.decode(), err.decode()


async def test_cli_ask_stream_prints_text_as_it_is_written(
    settings: Settings, worker: Any, scripted_llm: ScriptedLLM
) -> None:
    scripted_llm.script(text(ANSWER, hold_at_chunk=4), text("Short one.", chunk_delay=0.01))
    agent = f"test_llm/{unique('cli')}"
    process = await _cli(settings, "ask", agent, "tell me", "--stream", "--id", "c1")
    assert process.stdout is not None
    early = await asyncio.wait_for(process.stdout.read(200), 60)
    assert early and ANSWER.startswith(early.decode())
    assert process.returncode is None, "the text came while the model was still writing"
    scripted_llm.release()
    rest, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 0, err.decode()
    assert (early + rest).decode() == f"{ANSWER}\n  (v1, message c1)\n"

    code, out, err = await _run_cli(settings, "--json", "ask", agent, "more", "--stream")
    assert code == 0, err
    items = [json.loads(line) for line in out.splitlines()]
    assert [i["type"] for i in items][-1] == "reply" and _joined(items) == "Short one."
    assert items[-1]["reply"] == "Short one." and items[-1]["version"] == 2


async def test_cli_stop_and_on_busy(
    settings: Settings, worker: Any, perennial: Perennial, scripted_llm: ScriptedLLM
) -> None:
    assert BUSY_POLICIES == get_args(BusyPolicy)
    name = unique("clistop")
    agent = perennial.agent("test_llm", name)
    scripted_llm.script(text("never finished", hold=True))
    asked = asyncio.create_task(agent.ask("go", id="held"))
    await scripted_llm.wait_for(lambda: len(scripted_llm.completions) == 1)

    code, _, err = await _run_cli(
        settings, "ask", f"test_llm/{name}", "me too", "--on-busy", "reject"
    )
    assert code == 1 and "TurnInProgress" in err
    code, out, err = await _run_cli(settings, "stop", f"test_llm/{name}", "--reason", "enough")
    assert code == 0, err
    assert out.startswith(f"stopped turn held of test_llm/{name}")
    with pytest.raises(TurnStopped) as stopped:
        await asyncio.wait_for(asked, 30)
    assert stopped.value.by == "stop"
    code, out, _ = await _run_cli(settings, "--json", "stop", f"test_llm/{name}", "--turn", "held")
    assert code == 0 and json.loads(out) == {"stopped": False, "turn": None,
                                             "version": stopped.value.version}  # fmt: skip
    code, _, err = await _run_cli(settings, "--json", "stop", f"test_llm/{unique('none')}")
    assert code == 2 and json.loads(err)["error"]["type"] == "AgentNotFound"
    code, _, err = await _run_cli(settings, "send", f"test_llm/{name}", "x", "--on-busy", "shout")
    assert code == 2 and "--on-busy" in err


async def test_cli_stream_printer_puts_steps_on_lines_and_the_rest_on_stderr(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from perennial.client.commands import _TurnPrinter

    at = StreamPosition(offset=3, step=1, attempt=1, chars=4)
    items = [
        DeltaItem(id="m", position=at, step=1, text="Let me"),
        RestartItem(id="m", position=at, step=1, attempt=2),
        DeltaItem(id="m", position=at, step=1, text="Let me look."),
        ToolCallItem(id="m", position=at, step=1, call_id="c1", name="get_weather",
                     arguments='{"city":  "Paris"}'),
        ToolResultItem(id="m", position=at, step=1, call_id="c1", name="get_weather", ok=False,
                       result="x" * 300),
        DeltaItem(id="m", position=at, step=2, text="Sunny"),
        DeltaItem(id="m", position=at, step=2, text=" in Paris."),
        ReplyItem(id="m", position=at, reply="Sunny in Paris.", version=4),
    ]  # fmt: skip
    printer = _TurnPrinter(json_lines=False)
    for item in items:
        printer.show(item)
    out, err = capsys.readouterr()
    assert out == "Let me\nLet me look.\nSunny in Paris.\n  (v4, message m)\n"
    lines = err.splitlines()
    assert lines[0] == "[step 1 restarts (attempt 2): its text above is void]"
    assert lines[1] == '[tool get_weather({"city": "Paris"})]'
    assert lines[2].startswith("[tool get_weather failed: xxx") and len(lines[2]) < 160
    printer = _TurnPrinter(json_lines=False)  # an agent that calls no model: the reply alone
    printer.show(ReplyItem(id="n", position=at, reply="Noted.", version=1))
    assert capsys.readouterr().out == "Noted.\n  (v1, message n)\n"


# --------------------------------------------------------------------------- the page


async def test_page_shows_the_answer_as_it_streams_and_stops_it(
    gateway: GatewayServer, scripted_llm: ScriptedLLM
) -> None:
    require_chromium()
    from playwright.async_api import expect

    expect.set_options(timeout=20_000)  # turns go through a real server on a shared machine
    scripted_llm.script(text("Stop right there", hold_at_chunk=2), text(ANSWER, hold_at_chunk=4))
    async with chromium_page() as page:
        await page.goto(f"{gateway.url}/#test_llm/{unique('page')}")
        await expect(page.locator("#status")).to_have_attribute("data-status", "live")

        # Stop: the text so far stays, marked stopped, and the ask says why it ended.
        await page.fill("#ask-text", "first")
        await page.click("#ask")
        await expect(page.get_by_test_id("streaming")).to_have_text("Stop")  # then held
        await page.click("#stop")
        await expect(page.get_by_test_id("chat-error")).to_contain_text("TurnStopped")
        await expect(page.get_by_test_id("stopped")).to_have_text("Stop")

        # The next answer shows as it is written, before its reply exists; through a gateway
        # restart mid-answer the page resends the ask from its last item: no text twice.
        await page.evaluate("""() => {
            const agent = window.perennialPage.agent, streamed = agent._streamed.bind(agent);
            window.deltas = [];
            agent._streamed = (item) => { window.deltas.push(item.text ?? ""); streamed(item); };
        }""")
        await page.fill("#ask-text", "second")
        await page.click("#ask")
        await expect(page.get_by_test_id("streaming")).to_have_text(ANSWER[:12])
        assert await page.get_by_test_id("reply").count() == 0
        await gateway.restart()
        await expect(page.locator("#status")).to_have_attribute("data-status", "live")
        scripted_llm.release()
        await expect(page.get_by_test_id("reply")).to_have_text(ANSWER)
        assert await page.get_by_test_id("streaming").count() == 0
        assert "".join(await page.evaluate("window.deltas")) == ANSWER
        assert len(scripted_llm.completions) == 2, "each ask ran its model once"
