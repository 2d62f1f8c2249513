"""The planner's agents with the scripted model, on a real dev server and the local provider
server: a whole planning conversation (slots filled, tools called in parallel, itinerary built
with sources, a booking approved, a reminder fired), conversation -> travel -> scraper, a
session that expires and cleans up, and the agent factory's file."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import date, timedelta
from pathlib import Path

import pytest
from temporalio.api.enums.v1 import EventType

from examples.travel.factory import (
    CONFIG,
    DEFAULT_FILE,
    FILE_ENV,
    InvalidAgentsConfig,
    load_config,
    select_tools,
)
from examples.travel.provider_server import ProviderServer
from examples.travel.shared import SessionEnded, session_ended
from examples.travel.tests.fixtures import planner, providers, settings  # noqa: F401
from examples.travel.tests.planner_model import (
    PlannerModel,
    agent_of,
    relay,
    route,
    sources,
    tool_result,
)
from examples.travel.travel import TravelAgent
from perennial import Message
from perennial.client import AgentHandle, AgentNotFound, InvalidRequest, Perennial, TurnFailed
from perennial.testing import call, eventually, text, tool_calls
from tests.conftest import WorkerProcess
from tests.support import history, unique

SCHEDULED = EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED


async def _travel_state(agent: AgentHandle) -> dict:
    try:
        return (await agent.state_view()).state
    except AgentNotFound:
        return {}


@pytest.mark.usefixtures("worker")
async def test_a_whole_planning_conversation(
    perennial: Perennial, planner: PlannerModel, providers: ProviderServer
) -> None:
    session = unique("trip")
    conversation = perennial.agent("conversation", session)
    travel = perennial.agent("travel", session)
    start = date.today() + timedelta(days=5)
    end = start + timedelta(days=3)

    # 1. The slots, a wrong date refused, four searches in one step, the itinerary.
    planner.script("conversation", route("travel", "Plan 4 days in Lisbon from Paris"), relay)
    planner.script(
        "travel",
        tool_calls(
            call(
                "update_trip",
                destination="Lisbon",
                origin="Paris",
                start_date=str(start),
                end_date=str(end),
                travellers=2,
                budget=1500,
                currency="EUR",
                preferences=["museums", "food"],
            )
        ),  # fmt: skip
        tool_calls(call("update_trip", end_date=str(start - timedelta(days=1)))),
        tool_calls(
            call(
                "search_flights",
                origin="PAR",
                destination="LIS",
                departure_date=str(start),
                return_date=str(end),
                adults=2,
            ),
            call("search_hotels", city="Lisbon", check_in=str(start), check_out=str(end), adults=2),
            call("get_weather", city="Lisbon", date=str(start)),
            call("find_attractions", city="Lisbon"),
        ),  # fmt: skip
        lambda r: tool_calls(
            call(
                "add_to_itinerary",
                kind="flight",
                title="Paris -> Lisbon",
                day=str(start),
                source=sources(r, "search_flights")[0],
                price=180.5,
                currency="EUR",
            ),
            call(
                "add_to_itinerary",
                kind="hotel",
                title="3 nights in Lisbon",
                day=str(start),
                source=sources(r, "search_hotels")[0],
            ),
            call(
                "add_to_itinerary",
                kind="activity",
                title="A museum",
                day=str(end),
                source=sources(r, "find_attractions")[0],
            ),
        ),  # fmt: skip
        lambda r: text(f"Your plan: a flight [source]({sources(r, 'search_flights')[0]})"),
    )
    reply = await conversation.ask("Plan 4 days in Lisbon from Paris, 2 people, 1500 EUR",
                                   timeout=90)  # fmt: skip
    assert reply.reply is not None and reply.reply.startswith("Your plan: a flight [source](http")

    plan = await _travel_state(travel)
    assert plan["trip"] == {
        "origin": "Paris", "destination": "Lisbon", "start_date": str(start),
        "end_date": str(end), "travellers": 2, "budget": 1500.0, "currency": "EUR",
        "preferences": ["museums", "food"],
    }  # fmt: skip
    refused = [e for e in (await travel.events(limit=1000)).events
               if e.kind == "tool_call" and e.name == "update_trip" and not e.ok]  # fmt: skip
    assert len(refused) == 1 and "is before start_date" in refused[0].result
    items = plan["itinerary"]
    assert [(i["id"], i["kind"]) for i in items] == [
        ("it-1", "flight"), ("it-2", "hotel"), ("it-3", "activity"),
    ]  # fmt: skip
    for item in items:
        assert item["source"].startswith("http") and not item["booked"]

    # The four searches were scheduled together, by one workflow task: in parallel.
    events = await history(travel, perennial.client)
    searches = [e for e in events if e.event_type == SCHEDULED
                and e.activity_task_scheduled_event_attributes.activity_type.name
                in ("travel.search_flights", "travel.search_hotels", "travel.get_weather",
                    "travel.find_attractions")]  # fmt: skip
    assert len(searches) == 4
    tasks = {e.activity_task_scheduled_event_attributes.workflow_task_completed_event_id
             for e in searches}  # fmt: skip
    assert len(tasks) == 1

    talk = (await conversation.state_view()).state
    assert [(t["user"][:10], t["routed_to"]) for t in talk["transcript"]] == [
        ("Plan 4 day", ["travel"])
    ]

    # 2. A booking waits for a person, then runs when approved.
    planner.script("conversation", route("travel", "Book the flight it-1"), relay)
    planner.script("travel", tool_calls(call("book", item_id="it-1")),
                   text("The booking of it-1 waits for your approval."),
                   text("Booked: it-1."))  # fmt: skip
    reply = await conversation.ask("Book the flight", timeout=90)
    assert reply.reply == "The booking of it-1 waits for your approval."
    [approval] = await travel.approvals()
    assert approval.tool == "book" and json.loads(approval.arguments) == {"item_id": "it-1"}
    assert not (await _travel_state(travel))["itinerary"][0]["booked"]
    await travel.decide(approval.approval_id, approve=True, decided_by="traveller")

    async def booked() -> bool:
        return bool((await _travel_state(travel))["itinerary"][0]["booked"])

    await eventually(booked)
    plan = await _travel_state(travel)
    assert plan["itinerary"][0]["booking_ref"].startswith("TRV-")
    assert [n["kind"] for n in plan["notices"]] == ["booking"]
    assert "book approved: Booked: it-1." in plan["notices"][0]["text"]

    # 3. A reminder: the agent sets an alarm, and it wakes the agent when due.
    planner.script("conversation", route("travel", "Remind me to check in"), relay)
    planner.script(
        "travel",
        tool_calls(
            call(
                "schedule_alarm",
                alarm_id="check-in",
                after_seconds=1,
                action="Remind the traveller to check in for it-1",
            )
        ),  # fmt: skip
        text("I will remind you."),
        text("Time to check in for your flight it-1."),
    )
    assert (
        await conversation.ask("Remind me to check in", timeout=90)
    ).reply == "I will remind you."

    async def reminded() -> bool:
        notices = (await _travel_state(travel))["notices"]
        return any(n["kind"] == "reminder" for n in notices)

    await eventually(reminded)
    reminder = [n for n in (await _travel_state(travel))["notices"] if n["kind"] == "reminder"]
    assert reminder[0]["text"] == (
        "Remind the traveller to check in for it-1: Time to check in for your flight it-1."
    )
    assert await travel.schedules() == []
    talk = (await conversation.state_view()).state
    assert talk["turns"] == 3 and talk["specialists"] == ["travel"]
    assert planner.pending("travel") == planner.pending("conversation") == 0


@pytest.mark.usefixtures("worker")
async def test_conversation_asks_travel_which_asks_the_scraper(
    perennial: Perennial, planner: PlannerModel, providers: ProviderServer
) -> None:
    session = unique("pages")
    conversation = perennial.agent("conversation", session)
    guide = f"{providers.url}/guides/lisbon"
    missing = f"{providers.url}/lab/status/404"
    planner.script("conversation", route("travel", f"What does {guide} say?"), relay)
    planner.script(
        "travel",
        tool_calls(call("read_page", url=guide), call("read_page", url=missing)),
        lambda r: text(f"Page: {tool_result(r, 'read_page')[:60]}"),
    )
    reply = await conversation.ask(f"What does {guide} say?", timeout=90)
    assert reply.reply is not None and reply.reply.startswith("Page: ")

    asked = [r for r in planner.llm.completions if agent_of(r) == "travel"][-1]
    read, failed = asked.tool_results().values()
    assert "Lisbon" in read
    assert failed.startswith("error:") and "404" in failed
    assert providers.hits("/guides/lisbon") == 1
    scraper = perennial.agent("scraper", session)
    assert (await scraper.state_view()).state["fetched"] == 1
    kinds = [e.kind for e in (await scraper.events(limit=1000)).events]
    assert kinds.count("turn") == 1 and kinds.count("turn_failed") == 1  # one page, one 404
    plan = await _travel_state(perennial.agent("travel", session))
    assert plan["pages"] == [guide]  # the failed read was rolled back with its tool call


@pytest.mark.usefixtures("worker")
async def test_an_idle_session_expires_and_its_agents_forget_it(
    perennial: Perennial, planner: PlannerModel
) -> None:
    session_id = unique("idle")
    session = perennial.agent("session", session_id)
    conversation = perennial.agent("conversation", session_id)
    travel = perennial.agent("travel", session_id)
    notes = perennial.agent("trip_notes", session_id)
    opened = (await session.call("open", {"idle_expiry_seconds": 3})).result
    assert opened["status"] == "active"
    assert opened["agents"]["travel"] == f"travel/{session_id}"

    planner.script(
        "conversation",
        tool_calls(
            call("route_to", specialist="travel", request="Remind me in a day"),
            call("route_to", specialist="trip_notes", request="note: bring adapters"),
        ),  # fmt: skip
        text("Done."),
    )
    planner.script(
        "travel",
        tool_calls(
            call("update_trip", destination="Porto"),
            call("schedule_alarm", alarm_id="later", action="remind", after_seconds=86400),
        ),  # fmt: skip
        text("Reminder set."),
    )
    assert (
        await conversation.ask("Porto; remind me tomorrow; note adapters", timeout=60)
    ).reply == "Done."
    assert [s.id for s in await travel.schedules()] == ["later"]
    assert (await notes.state_view()).state["notes"] == ["bring adapters"]

    async def expired() -> bool:
        return (await session.state_view()).state["status"] == "expired"

    await eventually(expired)

    async def forgotten() -> bool:
        states = [(await a.state_view()).state for a in (conversation, travel, notes)]
        return all(s["ended"] for s in states)

    await eventually(forgotten)
    plan = (await travel.state_view()).state
    assert plan["trip"]["destination"] is None and plan["itinerary"] == [] and plan["context"] == []
    assert await travel.schedules() == []
    talk = (await conversation.state_view()).state
    assert talk["transcript"] == [] and talk["specialists"] == []
    assert (await notes.state_view()).state["notes"] == []

    with pytest.raises(TurnFailed) as refused:
        await session.call("open", {})
    assert refused.value.error_type == "SessionExpired"
    with pytest.raises(TurnFailed) as closed:
        await conversation.ask("hello again")
    assert closed.value.error_type == "SessionClosed"


@pytest.mark.usefixtures("worker")
async def test_close_ends_a_session_at_once_and_a_session_takes_no_messages(
    perennial: Perennial, planner: PlannerModel
) -> None:
    session_id = unique("close")
    session = perennial.agent("session", session_id)
    await session.call("open", {})
    with pytest.raises(TurnFailed) as refused:
        await session.ask("hello")
    assert refused.value.error_type == "InvalidRequest"
    closed = (await session.call("close", {})).result
    assert closed["status"] == "closed" and await session.schedules() == []
    with pytest.raises(InvalidRequest):
        await session.call("open", {"idle_expiry_seconds": 0.5})  # out of range
    with pytest.raises(TurnFailed) as reopened:
        await session.call("open", {})
    assert reopened.value.error_type == "SessionExpired"


async def test_the_conversation_summarises_its_older_turns(
    perennial: Perennial,
    planner: PlannerModel,
    worker_process: Callable[[], WorkerProcess],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A worker whose agents file gives the conversation a window of 4 items: one exchange
    # (message, route, answer, relay) fills it, so the next message summarises the first.
    agents = tmp_path / "agents.toml"
    agents.write_text(DEFAULT_FILE.read_text().replace(
        "[conversation.context_window]\nmax_items = 60", "[conversation.context_window]\nmax_items = 4"
    ))  # fmt: skip
    monkeypatch.setenv(FILE_ENV, str(agents))
    worker_process()
    conversation = perennial.agent("conversation", unique("long"))
    planner.script("summary", text("Lisbon in May."), text("Lisbon in May, for 2."))
    for message in ("Lisbon in May", "2 people", "1500 EUR"):
        await conversation.ask(message, timeout=60)
    talk = (await conversation.state_view()).state
    assert talk["summary"] == "Lisbon in May, for 2."  # the second summary, of the first
    assert [t["user"] for t in talk["transcript"]] == ["Lisbon in May", "2 people", "1500 EUR"]
    assert [i["content"] for i in talk["context"] if i["role"] == "user"] == ["1500 EUR"]
    first, second = [r for r in planner.llm.completions if agent_of(r) == "summary"]
    assert "(none yet)" in first.messages[-1]["content"]
    assert "user: Lisbon in May" in first.messages[-1]["content"]
    assert "Summary so far:\nLisbon in May." in second.messages[-1]["content"]
    assert "user: 2 people" in second.messages[-1]["content"]
    summaries = [e for e in (await conversation.events(limit=1000)).events if e.kind == "summary"]
    assert [(e.ok, e.exchanges) for e in summaries] == [(True, 1), (True, 1)]


# --------------------------------------------------------------------------- no server needed


def test_an_ending_comes_only_from_the_agent_that_started_this_one() -> None:
    data = SessionEnded(session_id="s1").model_dump(mode="json")
    ours = Message(text="end", sender="agent:session/s1", data=data)
    assert session_ended(ours, from_agents=("session/s1",)) == SessionEnded(session_id="s1")
    for sender in ("agent:session/s2", "traveller", None):
        forged = Message(text="end", sender=sender, data=data)
        assert session_ended(forged, from_agents=("session/s1",)) is None
    odd = Message(text="end", sender="agent:session/s1", data={"kind": "session_ended"})
    assert session_ended(odd, from_agents=("session/s1",)) is None


def test_the_agents_file_configures_the_classes() -> None:
    assert TravelAgent.max_steps == CONFIG.travel.max_steps
    assert TravelAgent.context_window.summarize
    assert [t.name for t in TravelAgent.tools] == list(CONFIG.travel.tools or ())
    assert TravelAgent.model_heartbeat_timeout == timedelta(
        seconds=CONFIG.travel.model_heartbeat_seconds
    )


@pytest.mark.parametrize(
    ("text", "error"),
    [
        (
            "[travel]\nmax_step = 3\n[conversation]\nroutes = {travel = 'x'}\n",
            "travel.max_step: Extra",
        ),
        ("[travel]\nmax_steps = 0\n[conversation]\nroutes = {travel = 'x'}\n", "travel.max_steps"),
        ("[travel]\n[conversation]\nroutes = {}\n", "conversation.routes"),
        (
            "[travel]\n[conversation]\nroutes = {travel = 'x'}\n[session]\nidle_expiry_seconds = 0\n",
            "session.idle_expiry_seconds",
        ),  # fmt: skip
        ("[travel\n", "cannot read"),
        ("[conversation]\nroutes = {travel = 'x'}\n", "travel: Field required"),
    ],
)
def test_a_wrong_agents_file_is_refused_with_where(tmp_path: Path, text: str, error: str) -> None:
    path = tmp_path / "agents.toml"
    path.write_text(text)
    with pytest.raises(InvalidAgentsConfig, match=error.replace("[", r"\[")):
        load_config(path)
    with pytest.raises(InvalidAgentsConfig, match="cannot read"):
        load_config(tmp_path / "missing.toml")


def test_tools_named_in_the_file_must_exist() -> None:
    available = TravelAgent.available_tools
    assert [t.name for t in select_tools(available, ["book", "update_trip"], "travel")] == [
        "book", "update_trip",
    ]  # fmt: skip
    assert select_tools(available, None, "travel") == available
    with pytest.raises(InvalidAgentsConfig, match="no tool named 'teleport'"):
        select_tools(available, ["book", "teleport"], "travel")
