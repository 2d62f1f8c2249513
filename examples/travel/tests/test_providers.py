"""The providers' clients against the local provider server: each tool's typed result with its
sources, the providers' refusals as what the model reads (`ToolError`), outages as retryable
failures, the Amadeus token reused, and the five tools run in parallel by an LLM agent on a
real worker (settings and secrets reaching the activities, never history)."""

from __future__ import annotations

import re
import subprocess
import sys
from datetime import date, timedelta

import httpx
import pytest
from temporalio.exceptions import ApplicationError

from examples.travel import providers as p
from examples.travel.provider_server import DEMO_CLIENT_SECRET, ProviderServer
from examples.travel.tests.fixtures import providers, settings  # noqa: F401
from examples.travel.tests.provider_agents import TOOLS_AGENT
from perennial import ToolContext, ToolError
from perennial.client import Perennial, Settings
from perennial.testing import ScriptedLLM, call, text, tool_calls
from tests.conftest import ROOT
from tests.support import history, unique

SOON = date.today() + timedelta(days=6)


@pytest.fixture
def server(providers: ProviderServer) -> ProviderServer:  # noqa: F811
    """The local provider server (the planner's `providers` fixture)."""
    return providers


@pytest.fixture
def ctx(server: ProviderServer) -> ToolContext:
    """What the worker gives a tool: settings pointing at the local provider server."""
    pointed = Settings().model_copy(update=server.settings_update())
    return ToolContext(settings=pointed, agent_id="travel/t", call_id="c-1", attempt=1)


@pytest.fixture
def creds(server: ProviderServer) -> dict[str, str]:
    return {"client_id": server.client_id, "client_secret": server.client_secret}


def _with(ctx: ToolContext, **app_settings: str) -> ToolContext:
    changed = ctx.settings.model_copy(
        update={"app_settings": {**ctx.settings.app_settings, **app_settings}}
    )
    return ToolContext(settings=changed, agent_id=ctx.agent_id, call_id=ctx.call_id, attempt=1)


async def test_flights_between_city_names_with_a_return(
    ctx: ToolContext,
    creds: dict[str, str],
    server: ProviderServer,
) -> None:
    found = await p.search_flights.fn(origin="Lisbon", destination="paris", departure_date=SOON,
                                      return_date=SOON + timedelta(days=4), adults=2, max_results=3,
                                      ctx=ctx, **creds)  # fmt: skip
    assert (found.origin, found.destination, found.adults) == ("LIS", "PAR", 2)
    assert 1 <= len(found.offers) <= 3
    assert [o.price for o in found.offers] == sorted(o.price for o in found.offers)
    for offer in found.offers:
        assert offer.currency == "EUR" and offer.price > 0
        assert offer.outbound[0].departure_airport == "LIS"
        assert offer.outbound[-1].arrival_airport in ("CDG", "ORY")
        assert offer.inbound[0].departure_airport in ("CDG", "ORY")
        assert offer.outbound[0].departure_time.startswith(SOON.isoformat())
        assert offer.source.startswith(f"{server.url}/amadeus/v2/shopping/flight-offers?")
    # the same question gets the same answer; the token is fetched once and reused
    again = await p.search_flights.fn(origin="LIS", destination="PAR", departure_date=SOON,
                                      return_date=SOON + timedelta(days=4), adults=2, max_results=3,
                                      ctx=ctx, **creds)  # fmt: skip
    assert [o.model_dump(exclude={"source"}) for o in again.offers] == [
        o.model_dump(exclude={"source"}) for o in found.offers
    ]
    assert server.hits("/amadeus/v1/security/oauth2/token") == 1


async def test_an_expired_token_is_renewed_once(
    ctx: ToolContext, creds: dict[str, str], server: ProviderServer
) -> None:
    await p.find_attractions.fn(city="Rome", ctx=ctx)  # no token needed for the search API
    first = await p.search_hotels.fn(city="ROM", check_in=SOON, check_out=SOON + timedelta(days=1),
                                     ctx=ctx, **creds)  # fmt: skip
    server.expire_tokens()
    again = await p.search_hotels.fn(city="ROM", check_in=SOON, check_out=SOON + timedelta(days=1),
                                     ctx=ctx, **creds)  # fmt: skip
    assert again == first
    assert server.hits("/amadeus/v1/security/oauth2/token") == 2


async def test_long_flights_connect_at_a_hub(ctx: ToolContext, creds: dict[str, str]) -> None:
    found = await p.search_flights.fn(origin="Berlin", destination="Tokyo", departure_date=SOON,
                                      max_results=10, ctx=ctx, **creds)  # fmt: skip
    assert found.offers and all(o.inbound == [] for o in found.offers)
    for offer in found.offers:
        legs = offer.outbound
        assert offer.stops == len(legs) - 1 <= 1
        assert legs[0].departure_airport == "BER" and legs[-1].arrival_airport in ("HND", "NRT")
        if offer.stops:
            assert legs[0].arrival_airport == legs[1].departure_airport  # the connection
            assert legs[1].departure_time > legs[0].arrival_time


async def test_flight_refusals_reach_the_model(ctx: ToolContext, creds: dict[str, str]) -> None:
    past = date.today() - timedelta(days=2)
    with pytest.raises(
        ToolError, match=r"Amadeus refused the request \(400\): INVALID DATE.*departureDate"
    ):
        await p.search_flights.fn(
            origin="LIS", destination="PAR", departure_date=past, ctx=ctx, **creds
        )
    with pytest.raises(ToolError, match="no city or airport matches 'Atlantis'"):
        await p.search_flights.fn(origin="Atlantis", destination="PAR", departure_date=SOON, ctx=ctx,
                                  **creds)  # fmt: skip
    with pytest.raises(ToolError, match="return date is before departure date"):
        await p.search_flights.fn(origin="LIS", destination="ROM", departure_date=SOON, ctx=ctx,
                                  return_date=SOON - timedelta(days=1), **creds)  # fmt: skip


async def test_wrong_credentials_fail_without_retrying(
    ctx: ToolContext, creds: dict[str, str]
) -> None:
    with pytest.raises(ApplicationError) as refused:
        await p.search_flights.fn(origin="LIS", destination="PAR", departure_date=SOON, ctx=ctx,
                                  client_id=creds["client_id"], client_secret="wrong")  # fmt: skip
    assert refused.value.type == "ProviderCredentialsRejected" and refused.value.non_retryable
    assert "wrong" not in str(refused.value)


async def test_an_outage_is_retried_by_temporal(
    ctx: ToolContext, creds: dict[str, str], server: ProviderServer
) -> None:
    down = _with(
        ctx,
        **{
            p.AMADEUS_BASE_URL: f"{server.url}/lab/down",
            p.SEARCH_BASE_URL: f"{server.url}/lab/down",
        },
    )
    with pytest.raises(ApplicationError) as outage:
        await p.search_hotels.fn(
            city="PAR", check_in=SOON, check_out=SOON + timedelta(days=1), ctx=down, **creds
        )
    assert outage.value.type == "ProviderUnavailable" and not outage.value.non_retryable
    assert outage.value.next_retry_delay == timedelta(seconds=1)  # its Retry-After
    with pytest.raises(ApplicationError) as search:
        await p.web_search.fn(query="Rome", ctx=down)
    assert search.value.type == "ProviderUnavailable"
    closed = _with(ctx, **{p.GEOCODING_BASE_URL: "http://127.0.0.1:9"})  # nothing listens there
    with pytest.raises(ApplicationError) as unreachable:
        await p.get_weather.fn(city="Rome", ctx=closed)
    assert unreachable.value.type == "ProviderUnavailable" and not unreachable.value.non_retryable


async def test_hotels_in_a_city_cheapest_first(
    ctx: ToolContext, creds: dict[str, str], server: ProviderServer
) -> None:
    found = await p.search_hotels.fn(city="Rome", check_in=SOON, check_out=SOON + timedelta(days=3),
                                     adults=2, ctx=ctx, **creds)  # fmt: skip
    assert found.city_code == "ROM" and found.offers
    assert [o.total_price for o in found.offers] == sorted(o.total_price for o in found.offers)
    for offer in found.offers:
        assert offer.price_per_night == pytest.approx(offer.total_price / 3, abs=0.01)
        assert offer.source.startswith(f"{server.url}/amadeus/v3/shopping/hotel-offers/")
        assert offer.name and offer.latitude is not None
    with pytest.raises(ToolError, match="check_out must be after check_in"):
        await p.search_hotels.fn(city="Rome", check_in=SOON, check_out=SOON, ctx=ctx, **creds)
    with pytest.raises(ToolError, match="NOTHING FOUND FOR REQUESTED CITY"):
        await p.search_hotels.fn(
            city="XXX", check_in=SOON, check_out=SOON + timedelta(days=1), ctx=ctx, **creds
        )


async def test_weather_for_a_week_or_a_day(ctx: ToolContext, server: ProviderServer) -> None:
    week = await p.get_weather.fn(city="reykjavik", ctx=ctx)
    assert (week.city, week.country, week.timezone) == (
        "Reykjavík",
        "Iceland",
        "Atlantic/Reykjavik",
    )
    assert len(week.days) == 7 and week.days[0].date == date.today()
    for day in week.days:
        assert day.temperature_min_c < day.temperature_max_c
        assert day.summary == p.WEATHER_CODES[day.weather_code]
        assert day.source.startswith(f"{server.url}/open-meteo/v1/forecast?latitude=64.13548")
    [one] = (await p.get_weather.fn(city="Lisbon", date=SOON, ctx=ctx)).days
    assert one.date == SOON
    with pytest.raises(ToolError, match="out of allowed range"):
        await p.get_weather.fn(city="Lisbon", date=date.today() + timedelta(days=40), ctx=ctx)
    with pytest.raises(ToolError, match="no place named 'Atlantis'"):
        await p.get_weather.fn(city="Atlantis", ctx=ctx)


async def test_attractions_and_search_results_link_their_pages(ctx: ToolContext) -> None:
    sights = await p.find_attractions.fn(city="Lisbon", max_results=3, ctx=ctx)
    assert sights.city == "Lisbon" and len(sights.attractions) == 3
    results = await p.web_search.fn(query="best time to visit Lisbon", max_results=4, ctx=ctx)
    assert results.total >= 4 and results.results[0].title == "Lisbon travel guide"
    async with httpx.AsyncClient() as client:  # every source is a page that exists
        for source in [a.source for a in sights.attractions] + [r.source for r in results.results]:
            assert (await client.get(source)).status_code == 200, source
    with pytest.raises(ToolError, match="no attractions known for 'Atlantis'"):
        await p.find_attractions.fn(city="Atlantis", ctx=ctx)
    unset = _with(ctx, **{p.SEARCH_BASE_URL: ""})
    with pytest.raises(ToolError, match="PERENNIAL_SETTING_TRAVEL_SEARCH_BASE_URL"):
        await p.web_search.fn(query="Rome", ctx=unset)


@pytest.mark.usefixtures("worker")
async def test_an_agent_calls_the_five_tools_at_once(
    perennial: Perennial,
    scripted_llm: ScriptedLLM,
    server: ProviderServer,
) -> None:
    scripted_llm.script(
        tool_calls(
            call(
                "search_flights",
                id="f",
                origin="Paris",
                destination="Lisbon",
                departure_date=str(SOON),
                return_date=str(SOON + timedelta(days=3)),
            ),
            call(
                "search_hotels",
                id="h",
                city="Lisbon",
                check_in=str(SOON),
                check_out=str(SOON + timedelta(days=3)),
            ),
            call("get_weather", id="w", city="Lisbon", date=str(SOON)),
            call("find_attractions", id="a", city="Lisbon"),
            call("web_search", id="s", query="Lisbon food markets"),
        ),  # fmt: skip
        text("Here is your plan, with sources."),
    )
    agent = perennial.agent(TOOLS_AGENT, unique())
    assert (await agent.ask("Plan 3 days in Lisbon")).reply == "Here is your plan, with sources."
    results = scripted_llm.completions[1].tool_results()
    assert set(results) == {"f", "h", "w", "a", "s"}
    assert p.FlightSearch.model_validate_json(results["f"]).offers
    assert p.HotelSearch.model_validate_json(results["h"]).offers
    assert p.WeatherForecast.model_validate_json(results["w"]).days[0].date == SOON
    assert p.Attractions.model_validate_json(results["a"]).attractions
    assert p.SearchResults.model_validate_json(results["s"]).results
    # the credentials reached the tools (Amadeus answered) but never the agent's history
    events = await history(agent, perennial.client)
    assert server.hits("/amadeus/v1/security/oauth2/token") == 1
    assert DEMO_CLIENT_SECRET not in str(events)


def test_the_provider_server_runs_as_a_command() -> None:
    command = [sys.executable, "-m", "examples.travel.provider_server", "--port", "0"]
    server = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None
        first = server.stdout.readline()
        url = re.search(r"travel providers at (http://\S+);", first)
        assert url, first
        exports = [server.stdout.readline().strip() for _ in range(7)]
        assert f"export PERENNIAL_SETTING_TRAVEL_SEARCH_BASE_URL={url[1]}/search" in exports
        robots = httpx.get(f"{url[1]}/robots.txt")
        assert robots.status_code == 200 and "Disallow: /private/" in robots.text
    finally:
        server.terminate()
        server.wait(timeout=10)
