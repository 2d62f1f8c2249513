"""The gateway's page and its JavaScript client (client/gateway/static/) in a real Chromium.

The page asks an agent and shows the reply, follows its state live (a change made from Python
shows up), calls a method from a form built from the method's schema, survives a gateway
restart (events after the outage arrive once each, in order; a request made during the outage
is sent when the gateway is back), and works behind a token. The JSON Patch applier is checked
against Python's `jsonpatch` library and against the gateway's own diff, on documents chosen
to be awkward for JavaScript.
"""

from __future__ import annotations

import asyncio
import functools
import json
import random
import re
import threading
from collections.abc import AsyncIterator, Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import jsonpatch
import jsonpointer
import pytest
import pytest_asyncio
from temporalio.worker import Worker

import tests.callable_agents  # noqa: F401 (registers test_cart, whose methods the page calls)
from perennial.client import Perennial, Settings
from perennial.client.gateway.patch import diff
from perennial.client.gateway.server import GatewayServer
from tests.browser import chromium_page, require_chromium
from tests.conftest import eventually
from tests.support import unique

require_chromium(module=True)  # the whole module needs the browser

from playwright.async_api import Page, WebSocket, WebSocketRoute, expect  # noqa: E402

STATIC = Path(__file__).resolve().parent.parent / "client" / "gateway" / "static"

# Turns go through a real Temporal server on a shared 2-core machine: more than the 5 s default.
expect.set_options(timeout=20_000)


# --------------------------------------------------------------------------- the page's parts


async def open_agent(page: Page, agent_type: str, name: str) -> None:
    """Open an agent the way a person does: pick the type, type the name, Open."""
    await page.select_option("#agent-type", agent_type)
    await page.fill("#agent-name", name)
    await page.click("#open")
    await expect(page.locator("#status")).to_have_attribute("data-status", "live")


async def shown_offsets(page: Page) -> list[int]:
    return [int(o) for o in await page.locator("#event-log li[data-offset]").evaluate_all(
        "items => items.map(li => li.dataset.offset)"
    )]  # fmt: skip


async def shown_state(page: Page) -> tuple[int, Any]:
    version = int(await page.locator("#state-version").inner_text())
    return version, json.loads(await page.locator("#state-json").inner_text())


# --------------------------------------------------------------------------- asking, following


async def test_page_asks_and_follows_state_changed_elsewhere(
    gateway: GatewayServer, perennial: Perennial
) -> None:
    name = unique("page")
    agent = perennial.agent("notes", name)
    async with chromium_page() as page:
        await page.goto(gateway.url)
        await open_agent(page, "notes", name)
        await expect(page.locator("#state-version")).to_have_text("0")  # not created yet

        await page.fill("#ask-text", "buy milk")
        await page.click("#ask")
        await expect(page.get_by_test_id("reply")).to_have_text("Noted (note #1).")
        await expect(page.locator("#state-version")).to_have_text("1")

        # A change from elsewhere arrives as a patch on the open socket.
        await agent.send("from python")
        await expect(page.locator("#state-json")).to_contain_text("from python")
        truth = await agent.state_view()
        assert await shown_state(page) == (truth.version, truth.state)
        assert truth.state == {"counter": 2, "notes": ["buy milk", "from python"]}

        # The same request id twice is one message: the second ask gets the first one's reply.
        replies = await page.evaluate("""async () => {
            const agent = window.perennialPage.agent;
            const first = await agent.ask("once", { id: "fixed-id-1" });
            const again = await agent.ask("once", { id: "fixed-id-1" });
            return [first, again];
        }""")
        assert replies[0] == replies[1] == {"id": "fixed-id-1", "reply": "Noted (note #3).",
                                            "version": 3}  # fmt: skip
        await expect(page.locator("#state-version")).to_have_text("3")
        assert (await agent.state_view()).state["notes"] == ["buy milk", "from python", "once"]

        # The running agent is listed, and the list opens it.
        await page.click("#refresh-agents")
        await expect(page.locator(f'#agents [data-agent="notes/{name}"]')).to_be_visible()


async def test_page_calls_a_method_from_its_schema(
    gateway: GatewayServer, perennial: Perennial
) -> None:
    name = unique("cart")
    async with chromium_page() as page:
        await page.goto(f"{gateway.url}/#test_cart/{name}")  # the address opens the agent
        await expect(page.locator("#status")).to_have_attribute("data-status", "live")
        await expect(page.locator("#method")).to_have_value("add_item")

        # A form from the parameters' schema: sku (string, required), qty (integer).
        await page.fill("#arg-sku", "apple")
        await page.fill("#arg-qty", "3")
        await page.click("#call-button")
        result = page.locator("#call-result")
        await expect(result).to_have_attribute("data-state", "ok")
        assert json.loads(await result.inner_text()) == {"items": 3, "skus": ["apple"]}
        await expect(page.locator("#state-json")).to_contain_text('"apple": 3')

        # Arguments as JSON, for a list of objects.
        await page.select_option("#method", "add_many")
        await page.check("#call-raw")
        await page.fill("#call-json", '{"items": [{"sku": "pear", "qty": 2}]}')
        await page.click("#call-button")
        await expect(result).to_contain_text('"items": 5')

        # A call whose turn fails shows the server's error type, and the state stays.
        await page.select_option("#method", "remove_item")
        await page.uncheck("#call-raw")
        await page.fill("#arg-sku", "nope")
        await page.click("#call-button")
        await expect(result).to_have_attribute("data-state", "error")
        await expect(result).to_contain_text("TurnFailed")
        truth = await perennial.agent("test_cart", name).state_view()
        assert truth.state["items"] == {"apple": 3, "pear": 2}
        assert await shown_state(page) == (truth.version, truth.state)


# --------------------------------------------------------------------------- reconnecting


def _event_offsets(frames: list[str]) -> list[int]:
    return [m["event"]["offset"] for m in map(json.loads, frames) if m["type"] == "event"]


async def test_page_reconnects_and_resumes_events_once_each(
    gateway: GatewayServer, perennial: Perennial
) -> None:
    name = unique("reconnect")
    agent = perennial.agent("notes", name)
    await agent.ask("before")
    async with chromium_page() as page:
        # Every socket the page opens, with the frames it received (the wire, not the page).
        sockets: list[tuple[WebSocket, list[str]]] = []

        def opened(ws: WebSocket) -> None:
            frames: list[str] = []
            ws.on("framereceived", lambda payload: frames.append(str(payload)))
            sockets.append((ws, frames))

        page.on("websocket", opened)
        await page.goto(f"{gateway.url}/#notes/{name}")
        status = page.locator("#status")
        await expect(status).to_have_attribute("data-status", "live")
        await expect(page.locator("#event-log li[data-kind=turn]")).to_have_count(1)

        await gateway.stop()
        await expect(status).to_have_attribute("data-status", "reconnecting")
        await agent.send("during 1")  # events the page cannot see yet
        await agent.send("during 2")
        await page.fill("#ask-text", "asked while down")  # held until the gateway is back
        await page.click("#ask")
        await expect(page.get_by_test_id("you")).to_have_text("asked while down")

        await gateway.start()
        await expect(status).to_have_attribute("data-status", "live")
        await expect(page.get_by_test_id("reply")).to_have_text("Noted (note #4).")
        await agent.send("after")
        await expect(page.locator("#state-json")).to_contain_text('"after"')

        # Every event of the agent, once each, in order, on the page and on the wire.
        async def page_has_every_event() -> bool:
            truth = [e.offset for e in (await agent.events(after=0, limit=1000)).events]
            return bool(truth) and await shown_offsets(page) == truth

        await eventually(page_has_every_event)
        shown = await shown_offsets(page)
        assert shown == list(range(1, len(shown) + 1)), shown
        assert sorted(_event_offsets([f for _, fs in sockets for f in fs])) == shown

        # Each socket after the first resumed after the last event the earlier ones brought.
        assert len(sockets) >= 2
        seen = 0
        for ws, frames in sockets:
            after = parse_qs(urlparse(ws.url).query)["after"]
            assert after == [str(seen)], (ws.url, seen)
            seen = max([seen, *_event_offsets(frames)])
        truth = await agent.state_view()
        assert await shown_state(page) == (truth.version, truth.state)
        notes = ["before", "during 1", "during 2", "asked while down", "after"]
        assert truth.state["notes"] == notes


# --------------------------------------------------------------------------- a token


@pytest_asyncio.fixture(loop_scope="session")
async def guarded_gateway(
    settings: Settings, perennial: Perennial, worker: Worker, tmp_path: Path
) -> AsyncIterator[tuple[GatewayServer, str]]:
    """A gateway that needs a token (a tokens file with one plain-text token), and the token."""
    token = "browser-test-" + unique("t")
    tokens = tmp_path / "tokens.toml"
    tokens.write_text(f'[[token]]\nname = "browser"\ntoken = "{token}"\nscopes = ["*:*"]\n')
    guarded = settings.model_copy(update={"gateway_port": 0, "gateway_tokens_file": tokens})
    async with GatewayServer(guarded, perennial=perennial) as server:
        yield server, token


async def test_page_uses_a_token_kept_for_the_tab(
    guarded_gateway: tuple[GatewayServer, str], perennial: Perennial
) -> None:
    gateway, token = guarded_gateway
    name = unique("token")
    async with chromium_page() as page:
        await page.goto(gateway.url)
        await expect(page.locator("#error")).to_contain_text("Unauthorized")
        await expect(page.locator("#auth-needed")).to_be_visible()

        await page.fill("#token", token)
        await page.press("#token", "Enter")  # kept for the tab, and the lists load again
        await expect(page.locator("#agent-type option[value=notes]")).to_have_count(1)
        await open_agent(page, "notes", name)
        await page.fill("#ask-text", "with a token")
        await page.click("#ask")
        await expect(page.get_by_test_id("reply")).to_have_text("Noted (note #1).")

        # A reload keeps the token (sessionStorage) and the agent (the address).
        await page.reload()
        await expect(page.locator("#status")).to_have_attribute("data-status", "live")
        await expect(page.locator("#state-version")).to_have_text("1")

        # A wrong token: the socket is refused (4401) and the page stops retrying.
        await page.click("#auth summary")  # folded away while all is well
        await page.fill("#token", "not-the-token")
        await page.press("#token", "Enter")
        await expect(page.locator("#status")).to_have_attribute("data-status", "closed")
        await expect(page.locator("#error")).to_contain_text("Unauthorized")
    assert (await perennial.agent("notes", name).state_view()).version == 1


# --------------------------------------------------------------------------- JSON Patch


class _QuietFiles(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (the base's name)
        pass  # one line per request on stderr is noise in the test output


@pytest.fixture(scope="module")
def static_url() -> Iterator[str]:
    """client/gateway/static/ over HTTP, so the module loads without Temporal or a gateway."""
    handler = functools.partial(_QuietFiles, directory=str(STATIC))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    server.server_close()


#: Pairs (a, b) awkward for a JSON Patch applier in JavaScript.
TRICKY: list[tuple[Any, Any]] = [
    # keys that need ~0/~1 escapes, the empty key, and keys that look like pointer syntax
    ({"a/b": 1, "m~n": 2, "~1": 3, "": 4, " ": 5}, {"a/b": 2, "m~n": [2], "~01": 3, "": {"": 4}}),
    ({"-": 1, "0": "zero"}, {"-": [1], "0": "zero", "list": ["-"]}),
    # keys that are special on JavaScript objects
    ({"__proto__": {"x": 1}, "constructor": 1},
     {"__proto__": {"x": 2, "polluted": True}, "constructor": {"prototype": 1}, "hasOwnProperty": 0}),
    ({"toString": "s"}, {"valueOf": "v", "__proto__": None}),
    # arrays: insert at the front, remove in the middle, append; reorder (jsonpatch moves)
    ({"list": [1, 2, 3, 4, 5]}, {"list": [0, 1, 3, 5, 6, 7]}),
    ({"list": [[1, [2]], {"k": [3]}]}, {"list": [{"k": [3, 4]}, [1, [2, 3]]]}),
    ({"same": [1, 1, 1, 2]}, {"same": [2, 1, 1, 1]}),
    ({"a": [], "b": [[], [[]]]}, {"a": [[]], "b": [[[]]]}),
    # the whole document changes type
    ([1, 2, 3], {"0": 1}),
    ({"x": 1}, "just a string"),
    # falsy values of different types are different values
    ({"x": None, "y": 0, "z": False, "w": ""}, {"x": 0, "y": False, "z": None, "w": []}),
    ({"n": {}, "l": []}, {"n": [], "l": {}}),
    # integer-like keys, which JavaScript objects order first
    ({"10": "a", "2": "b", "x": "c"}, {"2": "b", "10": "A", "1": "new"}),
    # text JavaScript must keep exactly
    ({"s": "héllo 👋 \u2028"}, {"s": "👋", "t": "\u0000nul", "u": "\\/\"'"}),
    # deep, and numbers at the edge of what a double holds exactly
    ({"d": {"a": {"b": {"c": {"d": [1, {"e": "f"}]}}}}}, {"d": {"a": {"b": {"c": {"d": [{"e": "g"}, 1]}}}}}),
    ({"f": 2.5, "big": 9007199254740991, "e": 1e-7}, {"f": -0.001, "big": -9007199254740991, "e": 1e300}),
]  # fmt: skip


def _random_json(rng: random.Random, depth: int = 0) -> Any:
    kinds = ["int", "str", "bool", "null", "float"] + (["list", "dict"] * 2 if depth < 4 else [])
    kind = rng.choice(kinds)
    if kind == "list":
        return [_random_json(rng, depth + 1) for _ in range(rng.randint(0, 5))]
    if kind == "dict":
        keys = ["a", "b", "c/d", "e~f", "", "0", "__proto__", "-"]
        return {rng.choice(keys): _random_json(rng, depth + 1) for _ in range(rng.randint(0, 5))}
    return {"int": rng.randint(-5, 5), "str": rng.choice(["", "x", "y~/"]), "bool": rng.random() < 0.5,
            "null": None, "float": rng.randint(-9, 9) + 0.5}[kind]  # fmt: skip


def _mutate(rng: random.Random, value: Any) -> Any:
    """`value` with a few random edits inside it (a plausible next version of a state)."""
    if isinstance(value, list) and value and rng.random() < 0.8:
        value = list(value)
        i = rng.randrange(len(value))
        action = rng.choice(["edit", "insert", "delete", "append"])
        if action == "edit":
            value[i] = _mutate(rng, value[i])
        elif action == "insert":
            value.insert(i, _random_json(rng, 3))
        elif action == "delete":
            del value[i]
        else:
            value.append(_random_json(rng, 3))
        return value
    if isinstance(value, dict) and value and rng.random() < 0.8:
        value = dict(value)
        key = rng.choice(list(value))
        if rng.random() < 0.2:
            del value[key]
        else:
            value[key] = _mutate(rng, value[key])
        if rng.random() < 0.3:
            value[rng.choice(["new", "x/y", "~"])] = _random_json(rng, 3)
        return value
    return _random_json(rng, 2)


def _canonical(value: Any) -> str:
    # sort_keys: JavaScript orders integer-like keys first; true and 1 stay different.
    return json.dumps(value, sort_keys=True)


async def _apply_in_browser(page: Page, cases: list[dict[str, Any]]) -> list[Any]:
    """applyPatch(a, ops) in the page for each case: {"result"} or {"error": name}, and
    whether `a` was left as it was. As JSON text both ways, so no key is lost in transit."""
    out = await page.evaluate(
        """async (text) => {
            const { applyPatch } = await import("/perennial.js");
            return JSON.stringify(JSON.parse(text).map(({ a, ops }) => {
                const before = JSON.stringify(a);
                try {
                    const result = applyPatch(a, ops);
                    return { result, untouched: JSON.stringify(a) === before };
                } catch (err) {
                    return { error: err.name, message: err.message, untouched: JSON.stringify(a) === before };
                }
            }));
        }""",
        json.dumps(cases),
    )
    return json.loads(out)  # type: ignore[no-any-return]


async def test_patch_applier_matches_jsonpatch_and_the_gateways_diff(static_url: str) -> None:
    rng = random.Random(6902)
    pairs = list(TRICKY)
    for _ in range(300):
        a = _random_json(rng)
        pairs.append((a, _mutate(rng, _mutate(rng, a))))
    cases = []
    for a, b in pairs:
        for ops in (jsonpatch.make_patch(a, b).patch, diff(a, b)):
            assert _canonical(jsonpatch.apply_patch(a, ops)) == _canonical(b)  # the ops are right
            cases.append({"a": a, "ops": ops, "b": b})
    assert any(op["op"] == "move" for case in cases for op in case["ops"])  # moves are covered
    async with chromium_page() as page:
        await page.goto(f"{static_url}/")  # any page of that origin: the module is imported
        results = await _apply_in_browser(page, cases)
    for case, got in zip(cases, results, strict=True):
        assert "error" not in got, (case, got)
        assert _canonical(got["result"]) == _canonical(case["b"]), case
        assert got["untouched"], case


#: Patches an applier must refuse, on {"a": 1, "list": [1, 2, 3], "s": "text", "o": {}}.
BAD_PATCHES: list[list[dict[str, Any]]] = [
    [{"op": "remove", "path": "/missing"}],
    [{"op": "replace", "path": "/missing", "value": 1}],
    [{"op": "replace", "path": "/list/3", "value": 0}],
    [{"op": "add", "path": "/list/4", "value": 0}],
    [{"op": "add", "path": "/list/01", "value": 0}],
    [{"op": "add", "path": "/list/-1", "value": 0}],
    [{"op": "remove", "path": "/list/-"}],
    [{"op": "add", "path": "/o/x/y", "value": 1}],
    [{"op": "add", "path": "/s/x", "value": 1}],
    [{"op": "add", "path": "a", "value": 1}],
    [{"op": "add", "path": "/~2", "value": 1}],
    [{"op": "test", "path": "/a", "value": 2}],
    [{"op": "move", "from": "/o", "path": "/o/inside"}],
    [{"op": "copy", "from": "/nothing", "path": "/b"}],
    [{"op": "frobnicate", "path": "/a"}],
    # atomic: the first op applied, the second fails: nothing changes
    [{"op": "add", "path": "/new", "value": 1}, {"op": "remove", "path": "/list/9"}],
]


async def test_patch_applier_refuses_bad_patches_and_changes_nothing(static_url: str) -> None:
    doc = {"a": 1, "list": [1, 2, 3], "s": "text", "o": {}}
    for ops in BAD_PATCHES:  # the reference refuses each too
        with pytest.raises((jsonpatch.JsonPatchException, jsonpointer.JsonPointerException)):
            jsonpatch.apply_patch(doc, ops)
    async with chromium_page() as page:
        await page.goto(f"{static_url}/")
        results = await _apply_in_browser(page, [{"a": doc, "ops": ops} for ops in BAD_PATCHES])
    for ops, got in zip(BAD_PATCHES, results, strict=True):
        assert got.get("error") == "PatchError" and got["untouched"], (ops, got)


# --------------------------------------------------------------------------- the client alone


async def test_client_resends_unanswered_requests_and_types_errors(static_url: str) -> None:
    """connectAgent against a scripted socket server (Playwright's WebSocket routing): the
    cases a real gateway rarely shows on cue. A request unanswered when the socket drops is
    sent again, same id, on the next socket; errors reject with the server's type; a patch
    that skips a version starts over from a full state; a refused socket (4401) ends it."""
    sockets: list[WebSocketRoute] = []
    inbox: asyncio.Queue[tuple[int, dict[str, Any]]] = asyncio.Queue()

    def serve(ws: WebSocketRoute) -> None:
        index = len(sockets)
        sockets.append(ws)
        ws.on_message(lambda text: inbox.put_nowait((index, json.loads(str(text)))))
        ws.send(json.dumps({"type": "state", "version": 1, "state": {"notes": []}}))

    async def received() -> tuple[int, dict[str, Any]]:
        return await asyncio.wait_for(inbox.get(), 20)

    def answer(index: int, message: dict[str, Any]) -> None:
        sockets[index].send(json.dumps(message))

    async with chromium_page() as page:
        await page.route_web_socket(re.compile(r"/agents/notes/scripted/ws"), serve)
        await page.goto(f"{static_url}/")
        await page.evaluate(
            """async (base) => {
                const { connectAgent } = await import("/perennial.js");
                window.statuses = [];
                window.agent = connectAgent({
                    type: "notes", name: "scripted", base, backoff: { initialMs: 20, maxMs: 100 },
                    onStatus: (status) => statuses.push(status),
                });
                // A promise's outcome as data: {ok: value} or {error: name, ...}.
                window.outcome = (p) => p.then((ok) => ({ ok }),
                    (e) => ({ error: e.name, message: e.message, id: e.id ?? null }));
                window.pending = outcome(agent.ask("hello"));
            }""",
            static_url,
        )
        index, ask = await received()
        assert index == 0 and ask["type"] == "ask" and ask["text"] == "hello"
        assert 0 < ask["timeout"] <= 60  # what is left of the caller's 60 s

        # An event, then the socket drops with the ask unanswered: resent, same id, after=1.
        answer(0, {"type": "event", "event": {"offset": 1, "at": "2026-01-01T00:00:00Z",
                                              "kind": "received", "text": "hello"}})  # fmt: skip
        await sockets[0].close(code=1011, reason="server error")
        index, again = await received()
        assert index == 1 and again["id"] == ask["id"] and again["text"] == "hello"
        assert parse_qs(urlparse(sockets[1].url).query)["after"] == ["1"]
        answer(1, {"type": "reply", "id": ask["id"], "reply": "hi", "version": 2})
        assert await page.evaluate("pending") == {"ok": {"id": ask["id"], "reply": "hi",
                                                         "version": 2}}  # fmt: skip

        # "Come back later": sent again, same id, after retry_after; then accepted.
        await page.evaluate("() => { window.pending = outcome(agent.send('later')); }")
        _, send = await received()
        answer(1, {"type": "error", "id": send["id"], "error": {
            "type": "TooManyUnapplied", "message": "busy", "status": 429, "retry_after": 0.05}})  # fmt: skip
        _, resent = await received()
        assert resent == send
        answer(1, {"type": "accepted", "id": send["id"]})
        assert await page.evaluate("pending") == {"ok": {"id": send["id"]}}

        # An error answer rejects with the server's error type.
        await page.evaluate("() => { window.pending = outcome(agent.call('add', { n: 1 })); }")
        _, call = await received()
        assert call["method"] == "add" and call["args"] == {"n": 1}
        answer(1, {"type": "error", "id": call["id"],
                   "error": {"type": "TurnFailed", "message": "boom", "status": 500}})  # fmt: skip
        assert await page.evaluate("pending") == {"error": "TurnFailed", "message": "boom",
                                                  "id": call["id"]}  # fmt: skip

        # A patch from a version this client never had: it starts over on a new socket.
        answer(1, {"type": "patch", "from_version": 5, "version": 6, "ops": []})
        await eventually(lambda: len(sockets) == 3)
        await eventually(lambda: page.evaluate("agent.status === 'live'"))
        answer(2, {"type": "patch", "from_version": 1, "version": 2,
                   "ops": [{"op": "add", "path": "/notes/-", "value": "a"}]})  # fmt: skip
        await eventually(lambda: page.evaluate("agent.version === 2"))
        assert await page.evaluate("agent.state") == {"notes": ["a"]}

        # Refused (4401): no more retries, and what waits is rejected with the reason's type.
        await page.evaluate("() => { window.pending = outcome(agent.ask('refused')); }")
        await received()
        await sockets[2].close(code=4401, reason="Unauthorized: the token is not valid")
        assert (await page.evaluate("pending"))["error"] == "Unauthorized"
        assert await page.evaluate("statuses") == [
            "connecting", "live", "reconnecting", "live", "reconnecting", "live", "closed"
        ]  # fmt: skip
