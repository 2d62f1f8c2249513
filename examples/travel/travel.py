"""The `travel` agent: plans one session's trip (the brief's TravelAgentDO).

An LLM agent with a typed state: the trip's slots (origin, destination, dates, travellers,
budget, preferences) and the itinerary, each item with the URL of its source. Its tools
(chosen in agents.toml):

- the providers (`examples.travel.providers`): flights, hotels, weather, attractions, web
  search, as activity tools; several calls in one model step run in parallel;
- `read_page`: a page through the session's `scraper` agent (asked by name; the turn waits for
  the page);
- `update_trip`, `add_to_itinerary`, `remove_from_itinerary`: workflow tools over the state;
- `book`: marks an itinerary item booked, and only runs once a person approves the call
  (Perennial's approval flow: the turn goes on, the decision wakes the agent later);
- the alarm tools: reminders for deadlines, which wake the agent when due.

Every prompt shows the model the trip so far, the slots still missing and the itinerary, so
the state, not the conversation, is what the plan is made of. Reminders that fire and booking
decisions are also written to `notices`, where the planner's page shows them.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta
from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field
from temporalio import workflow

from perennial import (
    AlarmWake,
    ApprovalWake,
    LLMAgent,
    LLMState,
    Message,
    ToolError,
    agent_type,
    workflow_tool,
)

with workflow.unsafe.imports_passed_through():  # read once per process, not per workflow run
    from examples.travel.factory import CONFIG, TravelConfig, configured
    from examples.travel.providers import (
        find_attractions,
        get_weather,
        search_flights,
        search_hotels,
        web_search,
    )
    from examples.travel.shared import SessionClosed, SessionEnded, session_ended
    from perennial.workflows.alarm_tools import ALARM_TOOLS

#: Notices kept in the state (the oldest go first).
MAX_NOTICES = 30
#: Pages read through the scraper that the state remembers.
MAX_PAGES = 50

ItemKind = Literal["flight", "hotel", "activity", "transport", "note"]
Url = Annotated[str, Field(min_length=8, max_length=2000, pattern=r"^https?://\S+$")]
Currency = Annotated[str, Field(pattern=r"^[A-Z]{3}$")]


class TripSlots(BaseModel):
    """What the traveller told the agent about the trip (None: not known yet)."""

    model_config = ConfigDict(extra="forbid")

    origin: str | None = None
    destination: str | None = None
    start_date: date | None = None
    end_date: date | None = None
    travellers: int | None = None
    budget: float | None = None
    currency: str = "EUR"
    preferences: list[str] = []

    def missing(self) -> list[str]:
        """The slots a plan needs that are still unknown."""
        needed = ("destination", "start_date", "end_date", "travellers", "budget")
        return [name for name in needed if getattr(self, name) is None]


class ItineraryItem(BaseModel):
    """One thing in the plan, with where it comes from."""

    model_config = ConfigDict(extra="forbid")

    id: str
    kind: ItemKind
    title: str
    day: date | None = None
    details: str = ""
    price: float | None = None
    currency: str | None = None
    #: The provider result or page this item comes from.
    source: str
    booked: bool = False
    booking_ref: str | None = None
    added_at: datetime


class Notice(BaseModel):
    """Something that happened without a question: a reminder fired, a booking was decided."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["reminder", "booking"]
    text: str
    at: datetime


class TravelState(LLMState):
    trip: TripSlots = TripSlots()
    itinerary: list[ItineraryItem] = []
    #: The number the next itinerary item gets (`it-1`, `it-2`, ...).
    next_item: int = 1
    notices: list[Notice] = []
    #: URLs read through the scraper, newest last.
    pages: list[str] = []
    #: The session ended: the state was emptied and messages are refused.
    ended: bool = False


# --------------------------------------------------------------------------- workflow tools


def _cut(text: str, limit: int = 4000) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


@workflow_tool
def update_trip(
    agent: TravelAgent,
    destination: Annotated[str, Field(min_length=1, max_length=100)] | None = None,
    origin: Annotated[str, Field(min_length=1, max_length=100)] | None = None,
    start_date: date | None = None,
    end_date: date | None = None,
    travellers: Annotated[int, Field(ge=1, le=20)] | None = None,
    budget: Annotated[float, Field(ge=0, le=10_000_000)] | None = None,
    currency: Currency | None = None,
    preferences: list[Annotated[str, Field(min_length=1, max_length=200)]] | None = None,
) -> dict[str, Any]:
    """Record what the traveller told you about the trip. Pass only what you learned; what
    you leave out stays as it is. Returns the trip and the details still missing.

    Args:
        destination: Where they go: a city, like "Lisbon".
        origin: Where they leave from: a city or an IATA airport code.
        start_date: The first day of the trip (YYYY-MM-DD).
        end_date: The last day of the trip (YYYY-MM-DD).
        travellers: How many people travel.
        budget: The whole trip's budget, in `currency`.
        currency: ISO 4217 code of the budget, like "EUR".
        preferences: What they like or need ("museums", "no red-eye flights"); replaces
            the list.
    """
    given = {"destination": destination, "origin": origin, "start_date": start_date,
             "end_date": end_date, "travellers": travellers, "budget": budget,
             "currency": currency, "preferences": preferences}  # fmt: skip
    trip = agent.state.trip.model_copy(update={k: v for k, v in given.items() if v is not None})
    if trip.start_date and trip.end_date and trip.end_date < trip.start_date:
        raise ToolError(f"end_date {trip.end_date} is before start_date {trip.start_date}")
    if trip.start_date and trip.start_date < workflow.now().date():
        raise ToolError(f"start_date {trip.start_date} is in the past (today is "
                        f"{workflow.now().date()})")  # fmt: skip
    agent.state.trip = trip
    return {"trip": trip.model_dump(mode="json"), "missing": trip.missing()}


@workflow_tool
def add_to_itinerary(
    agent: TravelAgent,
    kind: ItemKind,
    title: Annotated[str, Field(min_length=1, max_length=300)],
    source: Url,
    day: date | None = None,
    details: Annotated[str, Field(max_length=2000)] = "",
    price: Annotated[float, Field(ge=0)] | None = None,
    currency: Currency | None = None,
) -> dict[str, Any]:
    """Add a flight, hotel, activity, transport or note to the itinerary. Every item needs
    the source URL of the search result or page it comes from.

    Args:
        kind: What it is.
        title: A short title, like "TP1234 Lisbon -> Paris 08:10".
        source: The `source` URL of the result this item comes from.
        day: The day it happens (YYYY-MM-DD), if it has one.
        details: Times, addresses, what is included.
        price: The price, if known.
        currency: ISO 4217 code of the price.
    """
    items = agent.state.itinerary
    if len(items) >= agent.config.max_itinerary_items:
        raise ToolError(f"the itinerary already has {len(items)} items, the most it keeps")
    item = ItineraryItem(
        id=f"it-{agent.state.next_item}",
        kind=kind,
        title=title,
        day=day,
        details=details,
        price=price,
        currency=currency or (agent.state.trip.currency if price is not None else None),
        source=source,
        added_at=workflow.now(),
    )
    items.append(item)
    agent.state.next_item += 1
    return {"added": item.model_dump(mode="json", exclude={"added_at"}), "items": len(items)}


@workflow_tool
def remove_from_itinerary(agent: TravelAgent, item_id: str) -> str:
    """Remove an item from the itinerary (not one that is booked).

    Args:
        item_id: The item's id, like "it-3".
    """
    item = agent.item(item_id)
    if item.booked:
        raise ToolError(f"{item_id} is booked ({item.booking_ref}); it stays")
    agent.state.itinerary.remove(item)
    return f"removed {item_id}: {item.title}"


def _book(agent: TravelAgent, item_id: str) -> dict[str, Any]:
    """Book an itinerary item (a flight or a hotel). A person must approve every booking
    first: the call waits for the decision and you are woken with it.

    Args:
        item_id: The id of the itinerary item to book, like "it-2".
    """
    item = agent.item(item_id)
    if item.booked:
        raise ToolError(f"{item_id} is already booked ({item.booking_ref})")
    if item.kind not in ("flight", "hotel", "transport", "activity"):
        raise ToolError(f"{item_id} is a {item.kind}: there is nothing to book")
    item.booked = True
    item.booking_ref = f"TRV-{workflow.uuid4().hex[:8].upper()}"
    return {"booked": item_id, "booking_ref": item.booking_ref, "title": item.title}


book = workflow_tool(
    _book,
    name="book",
    needs_approval=True,
    approval_timeout=timedelta(hours=CONFIG.travel.booking_approval_hours),
)


@workflow_tool
async def read_page(agent: TravelAgent, url: Url) -> str:
    """Read a web page (a travel guide, an opening-hours page) through the session's
    scraper; returns its title, readable text and links. Cite its URL.

    Args:
        url: The page's http(s) URL.
    """
    answer = await agent.ask_agent_and_wait(
        "scraper", agent.agent_name, url, timeout_seconds=agent.config.page_timeout_seconds
    )
    pages = agent.state.pages
    if url not in pages:
        pages.append(url)
        del pages[:-MAX_PAGES]
    if answer.status != "answered":
        raise ToolError(f"the scraper could not read {url}: {answer.error_type}: {answer.error}")
    return answer.reply or "(the page is empty)"


# --------------------------------------------------------------------------- the agent

INSTRUCTIONS = """\
You are a travel planner. You plan one trip with the traveller, step by step.
- As soon as the traveller tells you something about the trip (where, from where, when, how \
many people, the budget, what they like), record it with update_trip. Ask for what is missing.
- Search with the tools. When you need several searches (flights, hotels, the weather, \
attractions), call them all in one step: they run in parallel.
- Use read_page for a page the traveller or a search result points to.
- Put what the traveller chooses into the itinerary with add_to_itinerary, always with the \
source URL of the result it comes from. Never invent flights, hotels, prices or URLs.
- To book an item, call book with its id. A person must approve each booking; tell the \
traveller it waits for approval. You are woken with the decision.
- For deadlines (check-in, payment, visa), set reminders with schedule_alarm.
- Answer briefly, and cite the source URL of every flight, hotel, forecast, attraction or \
page you mention, like [source](https://...)."""


@agent_type("travel")
@configured("travel")
class TravelAgent(LLMAgent[TravelState]):
    """Plans one session's trip: slots, searches, itinerary, bookings, reminders."""

    state_model = TravelState
    instructions: ClassVar[str] = INSTRUCTIONS
    #: The tools agents.toml may choose from.
    available_tools: ClassVar[tuple[Any, ...]] = (
        search_flights, search_hotels, get_weather, find_attractions, web_search, read_page,
        update_trip, add_to_itinerary, remove_from_itinerary, book, *ALARM_TOOLS,
    )  # fmt: skip
    config: ClassVar[TravelConfig]

    def system_prompt(self) -> str:
        state = self.state
        trip = state.trip.model_dump_json(exclude_defaults=False)
        missing = ", ".join(state.trip.missing()) or "nothing"
        items = (
            "\n".join(
                f"- {i.id} [{i.kind}] {i.day or ''} {i.title}"
                f"{f' ({i.price:g} {i.currency})' if i.price is not None else ''}"
                f"{f' BOOKED {i.booking_ref}' if i.booked else ''} <{i.source}>"
                for i in state.itinerary
            )
            or "(empty)"
        )
        return (
            f"{super().system_prompt()}\n\nToday is {workflow.now().date().isoformat()}.\n"
            f"The trip so far: {trip}\nStill missing: {missing}\nItinerary:\n{items}"
        )

    def item(self, item_id: str) -> ItineraryItem:
        """The itinerary item `item_id` (`ToolError` if there is none)."""
        for item in self.state.itinerary:
            if item.id == item_id:
                return item
        known = ", ".join(i.id for i in self.state.itinerary) or "none"
        raise ToolError(f"no itinerary item {item_id!r} (items: {known})")

    async def on_message(self, message: Message) -> str | None:
        ended = session_ended(
            message, from_agents=(f"conversation/{self.agent_name}", f"session/{self.agent_name}")
        )
        if ended is not None:
            return await self._end(ended)
        if self.state.ended:
            raise SessionClosed(f"session {self.agent_name} has ended; start a new one")
        return await super().on_message(message)

    async def on_alarm(self, alarm: AlarmWake) -> str | None:
        reply = await super().on_alarm(alarm)
        self._notice("reminder", f"{alarm.payload}" + (f": {reply}" if reply else ""))
        return reply

    async def on_approval(self, wake: ApprovalWake) -> str | None:
        if self.state.ended:  # decided after the session ended: nothing to book any more
            return f"approval {wake.approval.approval_id}: the session has ended; nothing done"
        reply = await super().on_approval(wake)
        verdict = "approved" if wake.decision.approved else "rejected"
        self._notice("booking", f"{wake.approval.tool} {verdict}" + (f": {reply}" if reply else ""))
        return reply

    def _notice(self, kind: Literal["reminder", "booking"], text: str) -> None:
        notices = self.state.notices
        notices.append(Notice(kind=kind, text=_cut(text, 1000), at=workflow.now()))
        del notices[:-MAX_NOTICES]

    async def _end(self, ended: SessionEnded) -> str:
        """Forget the trip: reminders cancelled, the state emptied. (The session's scraper
        keeps nothing but pages it caches for a while: it is left to its cache's TTL.)"""
        for schedule in self.list_schedules():
            self.cancel_schedule(schedule.id)
        empty = TravelState(ended=True)
        for name in TravelState.model_fields:
            setattr(self.state, name, getattr(empty, name))
        return f"session {ended.session_id} ended ({ended.reason}): trip forgotten"


__all__ = [
    "ItineraryItem",
    "Notice",
    "TravelAgent",
    "TravelState",
    "TripSlots",
    "add_to_itinerary",
    "book",
    "read_page",
    "remove_from_itinerary",
    "update_trip",
]
