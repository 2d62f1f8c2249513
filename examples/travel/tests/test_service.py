"""The planner's HTTP service through Perennial's gateway (the application's `gateway_routes`):
/chat, /message and /state end to end, their errors, their auth, and the page in a real
Chromium, where the itinerary updates live."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from temporalio.worker import Worker

from examples.travel.provider_server import ProviderServer
from examples.travel.tests.fixtures import planner, providers, settings  # noqa: F401
from examples.travel.tests.planner_model import PlannerModel, relay, route
from perennial.client import Perennial, Settings
from perennial.client.gateway.auth import hash_token
from perennial.client.gateway.server import GatewayServer
from perennial.client.server import free_port
from perennial.testing import ScriptedLLM, call, eventually, text, tool_calls
from tests.browser import chromium_page
from tests.conftest import ROOT
from tests.support import unique

READER = "planner-reader-0123456789abcdef"


@pytest.fixture
async def http(gateway: GatewayServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=gateway.url, timeout=60) as client:
        yield client


def _error(response: httpx.Response, status: int, kind: str) -> dict:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["type"] == kind, error
    return error


async def test_chat_opens_a_session_answers_and_the_state_shows_it(
    http: httpx.AsyncClient, planner: PlannerModel
) -> None:
    first = await http.post("/chat", json={"message": "Lisbon in May, please"})
    assert first.status_code == 200, first.text
    body = first.json()
    session_id = body["sessionId"]
    assert body["reply"] == "travel: Planning: Lisbon in May, please"
    assert body["session"]["status"] == "active" and body["session"]["messages"] == 1
    assert body["session"]["agents"]["travel"] == f"travel/{session_id}"

    again = {"message": "and 2 people", "sessionId": session_id, "id": "msg-2"}
    second = (await http.post("/chat", json=again)).json()
    repeated = (await http.post("/chat", json=again)).json()  # a retry: applied once
    assert second["reply"] == repeated["reply"] == "travel: Planning: and 2 people"
    assert second["session"]["messages"] == repeated["session"]["messages"] == 2

    queued = await http.post("/message", json={"message": "and museums", "sessionId": session_id})
    assert queued.status_code == 202 and queued.json()["sessionId"] == session_id

    async def three_turns() -> bool:
        view = (await http.get("/state", params={"sessionId": session_id})).json()
        return len(view["transcript"]) == 3

    await eventually(three_turns)
    view = (await http.get("/state", params={"sessionId": session_id})).json()
    assert [t["user"] for t in view["transcript"]] == [
        "Lisbon in May, please", "and 2 people", "and museums",
    ]  # fmt: skip
    assert all(t["routed_to"] == ["travel"] for t in view["transcript"])
    assert view["session"]["messages"] == 3
    assert view["trip"]["destination"] is None and view["itinerary"] == []
    assert view["approvals"] == [] and view["reminders"] == []
    assert view["versions"]["conversation"] == 3 and view["versions"]["travel"] == 3


async def test_wrong_requests_get_typed_errors(http: httpx.AsyncClient) -> None:
    _error(await http.post("/chat", json={"message": ""}), 400, "InvalidRequest")
    _error(
        await http.post("/chat", json={"message": "hi", "sessionId": "a/b"}), 400, "InvalidRequest"
    )
    _error(await http.post("/chat", json={"message": "hi", "session": "x"}), 400, "InvalidRequest")
    _error(await http.post("/chat", json={"message": "x" * 8001}), 400, "InvalidRequest")
    _error(await http.post("/message", json={"text": "hi"}), 400, "InvalidRequest")
    _error(await http.get("/state"), 400, "InvalidRequest")
    _error(await http.get("/state", params={"sessionId": unique("nobody")}), 404, "SessionNotFound")
    _error(await http.get("/travel/nope.js"), 404, "AgentNotFound")

    page = await http.get("/travel/")
    assert page.status_code == 200 and "<h1>Travel planner</h1>" in page.text
    assert (await http.get("/travel/travel.js")).status_code == 200
    assert (await http.get("/travel", follow_redirects=False)).headers["location"] == "/travel/"
    assert (await http.get("/health")).json()["status"] == "ok"  # the gateway's own


async def test_a_message_to_an_expired_session_is_refused(
    http: httpx.AsyncClient, perennial: Perennial, planner: PlannerModel
) -> None:
    session_id = unique("gone")
    session = perennial.agent("session", session_id)
    await session.call("open", {"idle_expiry_seconds": 1})

    async def expired() -> bool:
        return (await session.state_view()).state["status"] == "expired"

    await eventually(expired)
    refused = await http.post("/chat", json={"message": "still there?", "sessionId": session_id})
    assert "has ended" in _error(refused, 409, "SessionExpired")["message"]
    _error(await http.post("/message", json={"message": "hi", "sessionId": session_id}),
           409, "SessionExpired")  # fmt: skip
    view = (await http.get("/state", params={"sessionId": session_id})).json()
    assert view["session"]["status"] == "expired" and view["transcript"] == []


async def test_the_routes_check_the_callers_scopes(
    perennial: Perennial,
    settings: Settings,
    worker: Worker,
    tmp_path: Path,  # noqa: F811
) -> None:
    tokens = tmp_path / "tokens.toml"
    tokens.write_text(f'[[token]]\nname = "reader"\nsha256 = "{hash_token(READER)}"\n'
                      'scopes = ["read:*"]\n')  # fmt: skip
    secured = settings.model_copy(update={"gateway_port": 0, "gateway_tokens_file": tokens})
    async with GatewayServer(secured, perennial=perennial) as gateway:
        async with httpx.AsyncClient(base_url=gateway.url, timeout=30) as http:
            _error(await http.post("/chat", json={"message": "hi"}), 401, "Unauthorized")
            reader = {"Authorization": f"Bearer {READER}"}
            _error(
                await http.post("/chat", json={"message": "hi"}, headers=reader), 403, "Forbidden"
            )
            missing = await http.get("/state", params={"sessionId": "s-1"}, headers=reader)
            _error(missing, 404, "SessionNotFound")  # read is allowed: there is no such session


async def test_the_page_plans_a_trip_and_the_itinerary_updates_live(
    gateway: GatewayServer,
    planner: PlannerModel,
    providers: ProviderServer,  # noqa: F811
) -> None:
    from playwright.async_api import expect

    guide = f"{providers.url}/guides/lisbon"
    planner.script("conversation", route("travel", "4 days in Lisbon"), relay)
    planner.script(
        "travel",
        tool_calls(call("update_trip", destination="Lisbon", travellers=2)),
        tool_calls(
            call(
                "add_to_itinerary",
                kind="activity",
                title="Tram 28 tour",
                source=guide,
                price=30,
                currency="EUR",
            )
        ),  # fmt: skip
        tool_calls(call("book", item_id="it-1")),
        text("Planned the tram tour; its booking waits for your approval."),
        text("Booked the tram tour."),
    )
    async with chromium_page() as page:
        await page.goto(f"{gateway.url}/travel/")
        await page.fill("#message", "4 days in Lisbon for 2")
        await page.click("#send")
        transcript = page.locator("#transcript li.planner")
        await expect(transcript).to_contain_text("waits for your approval", timeout=30_000)
        await expect(page.locator("#live")).to_have_attribute("data-status", "live")
        await expect(page.locator('#trip dd[data-slot="destination"]')).to_have_text("Lisbon")
        item = page.locator('#itinerary li[data-item="it-1"]')
        await expect(item).to_contain_text("Tram 28 tour")
        await expect(item.locator("a")).to_have_attribute("href", guide)
        session = await page.locator("#session").get_attribute("data-session")
        assert session and re.fullmatch(r"[0-9a-f]{32}", session)

        await page.locator("#approvals button[data-approve]").click()  # a person approves
        await expect(item.locator(".booked")).to_contain_text("booked TRV-", timeout=30_000)
        await expect(page.locator("#notices li")).to_contain_text("book approved")
        await expect(page.locator("#approvals li.empty")).to_be_visible()


def test_the_demo_starts_the_provider_server_and_plans_through_the_service(tmp_path: Path) -> None:
    """`perennial demo --app examples.travel` (what `make demo` runs), with a model endpoint:
    its dev services start the provider server, and its travel section chats through /chat."""
    ours = ("PERENNIAL_", "TEMPORAL_", "OPENAI_")
    with ScriptedLLM() as llm:
        PlannerModel(llm)
        env = {k: v for k, v in os.environ.items() if not k.startswith(ours)}
        env |= {"OPENAI_BASE_URL": llm.url, "PERENNIAL_GATEWAY_PORT": "0"}
        done = subprocess.run(
            [sys.executable, "-m", "perennial.client.cli", "--state-dir", str(tmp_path),
             "--port", str(free_port()), "demo", "--exit", "--headless", "--app", "examples.travel"],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=240,
        )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    out = done.stdout
    assert re.search(r"Providers: +http://127\.0\.0\.1:\d+ +\(the local provider server", out)
    section = out[out.index("== 8. The travel planner") :]
    assert re.search(r"Providers: flights and hotels at http://127\.0\.0\.1:\d+/amadeus", section)
    assert "  -> travel: Planning: Hi! I'd like to plan 4 days in Lisbon" in section
    assert re.search(r"conversation/\w+: 2 turns, routed to travel\n", section)
    assert re.search(r"Go on planning in a browser: http://127\.0\.0\.1:\d+/travel/#s=\w+", section)
