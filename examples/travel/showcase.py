"""The travel planner offline: what `perennial dev` and `perennial demo` run for it.

`dev_services` (Perennial's dev-services hook): `perennial dev --app examples.travel` and the
demo start the local provider server beside the worker and point the worker and the gateway at
it, unless the settings already name a flights-and-hotels provider (then nothing is started).

`demo` (Perennial's demo hook): the planner's part of `perennial demo --app examples.travel`
(`make demo`): a short planning conversation through the HTTP service, then what each of the
session's agents holds. With no model endpoint configured the model is the tiny local one
`make demo` installs, which answers poorly and rarely calls tools; the section says so. A real
endpoint (OPENAI_BASE_URL / OPENAI_API_KEY) plans for real against the same service.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from typing import Any

from perennial.client import AgentHandle, AgentNotFound, Perennial, PerennialError, Settings

#: What the demo's traveller says, one /chat each.
MESSAGES = (
    "Hi! I'd like to plan 4 days in Lisbon, flying from Paris, for 2 people, budget 1500 EUR. "
    "We love museums and food.",
    "What will the weather be like, and which hotels would you pick?",
)
#: How long one /chat may take (a small local model on two cores is slow).
CHAT_TIMEOUT = 240.0


@contextlib.asynccontextmanager
async def dev_services(settings: Settings) -> AsyncIterator[Settings]:
    """The local provider server, and the settings that point the planner at it."""
    from examples.travel.provider_server import ProviderServer
    from examples.travel.providers import AMADEUS_BASE_URL

    if settings.app_setting(AMADEUS_BASE_URL):  # real providers are configured: use them
        yield settings
        return
    with ProviderServer() as server:
        print(f"Providers:       {server.url}  (the local provider server: the providers' API "
              "shapes, made-up data)", flush=True)  # fmt: skip
        yield settings.model_copy(update=server.settings_update(settings))


def _say(text: str) -> None:
    print(text, flush=True)


def _short(text: str | None, limit: int = 300) -> str:
    text = " ".join((text or "").split())
    return text if len(text) <= limit else f"{text[: limit - 1]}… [{len(text)} characters]"


def _post(url: str, body: dict[str, Any], timeout: float) -> dict[str, Any]:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as answer:
            return json.load(answer)
    except urllib.error.HTTPError as err:
        error = json.loads(err.read() or b"{}").get("error", {})
        raise RuntimeError(f"{err.code} {error.get('type')}: {error.get('message')}") from None


def _model_label(settings: Settings) -> str:
    from perennial.client.local_model import MODEL_NAME

    if settings.openai_model == MODEL_NAME:
        return (f"{MODEL_NAME}, a tiny local model: expect poor answers, and few or no tool "
                "calls (set OPENAI_BASE_URL or OPENAI_API_KEY for a real one)")  # fmt: skip
    return f"{settings.openai_model} at {settings.openai_base_url or 'OpenAI'}"


async def _state(agent: AgentHandle) -> dict[str, Any] | None:
    try:
        return (await agent.state_view()).state  # type: ignore[return-value]
    except AgentNotFound:
        return None


async def _show_agents(perennial: Perennial, session_id: str) -> None:
    _say("The session's agents, from their states:")
    session = await _state(perennial.agent("session", session_id)) or {}
    _say(f"  session/{session_id}: {session.get('status')}, {session.get('messages')} "
         f"messages, expires at {session.get('expires_at')}")  # fmt: skip
    talk = await _state(perennial.agent("conversation", session_id)) or {}
    routed = sorted(
        {agent for t in talk.get("transcript", []) for agent in t.get("routed_to") or []}
    )
    where = ", ".join(routed) if routed else "no specialist (it answered itself)"
    _say(f"  conversation/{session_id}: {talk.get('turns', 0)} turns, routed to {where}")
    plan = await _state(perennial.agent("travel", session_id))
    if plan is None:
        _say(f"  travel/{session_id}: not started (the model did not route to it)")
        return
    slots = plan.get("trip") or {}
    trip = {k: v for k, v in slots.items() if v not in (None, []) and k != "currency"}
    _say(f"  travel/{session_id}: trip {trip or '(no slots filled)'}; "
         f"{len(plan.get('itinerary', []))} itinerary items")  # fmt: skip
    for item in plan.get("itinerary", [])[:5]:
        _say(f"    {item['id']} {item['kind']}: {item['title']} <{item['source']}>")


async def demo(perennial: Perennial, settings: Settings, *, gateway: str | None) -> None:
    """The demo's travel planner section (see the module docstring)."""
    _say("\n== 8. The travel planner (examples/travel): session, conversation, travel and "
         "scraper agents behind an HTTP service ==")  # fmt: skip
    if gateway is None:
        _say("(skipped: it is served by the gateway, and the demo runs without one)")
        return
    from examples.travel.providers import AMADEUS_BASE_URL

    _say(f"Providers: flights and hotels at {settings.app_setting(AMADEUS_BASE_URL)}")
    if not settings.llm_configured:
        _say("(no model endpoint configured, and no local model installed: the planner needs "
             "one; `make demo` installs a tiny local model)")  # fmt: skip
        return
    _say(f"Model: {_model_label(settings)}")
    session_id: str | None = None
    for text in MESSAGES:
        _say(f"POST {gateway}/chat  {text!r}")
        try:
            answer = await asyncio.to_thread(
                _post, f"{gateway}/chat",
                {"message": text, "sessionId": session_id, "timeout": CHAT_TIMEOUT},
                CHAT_TIMEOUT + 10,
            )  # fmt: skip
        except (OSError, RuntimeError, PerennialError) as err:
            _say(f"  !! {_short(str(err))}")
            break
        session_id = answer["sessionId"]
        _say(f"  -> {_short(answer['reply'])}  (session {session_id})")
    if session_id is None:
        return
    await _show_agents(perennial, session_id)
    _say(f"Go on planning in a browser: {gateway}/travel/#s={session_id}\n"
         f"  curl -s '{gateway}/state?sessionId={session_id}'")  # fmt: skip


__all__ = ["demo", "dev_services"]
