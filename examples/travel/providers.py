"""The travel agent's providers: clients for real provider APIs, and the activity tools on them.

    search_flights, search_hotels  Amadeus Self-Service (OAuth2 client credentials)
    get_weather                    Open-Meteo's geocoding, then its forecast
    find_attractions, web_search   a simple search API (see `examples.travel.provider_server`)

Each tool returns a typed result whose items carry a `source` URL, so the agent answers with
sources. Every call is an activity: a provider that is down, slow or rate-limiting (timeouts,
connection errors, 429, 5xx) fails the attempt and Temporal retries it with backoff (honouring
`Retry-After`); a request the provider refuses (a past date, an unknown city) is reported to
the model with `ToolError`, not retried.

Where the providers are comes from the worker's application settings (`PERENNIAL_SETTING_<NAME>`
in its environment, read through `ToolContext.settings`); the defaults are the real services:

    travel_amadeus_base_url     https://test.api.amadeus.com
    travel_open_meteo_base_url  https://api.open-meteo.com
    travel_geocoding_base_url   https://geocoding-api.open-meteo.com
    travel_search_base_url      (none: web_search and find_attractions need one)
    travel_provider_timeout_seconds  10

The tools run as the activities `travel.<tool>` (the model knows them by their names), so
they share a worker with other applications' tools of the same names.

Amadeus' credentials are tool secrets (`PERENNIAL_SECRET_AMADEUS_CLIENT_ID` and
`PERENNIAL_SECRET_AMADEUS_CLIENT_SECRET`): the worker passes them to the tools, never the
model, and they never enter history.
"""

from __future__ import annotations

import asyncio
import time
from datetime import date, timedelta
from typing import Annotated, Any

from pydantic import BaseModel, Field
from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ApplicationError

from perennial import ToolContext, ToolError, ToolSecret, activity_tool

with workflow.unsafe.imports_passed_through():  # loaded once, not per agent by the sandbox
    import httpx

#: Application settings (their names in `Settings.app_settings`).
AMADEUS_BASE_URL = "travel_amadeus_base_url"
OPEN_METEO_BASE_URL = "travel_open_meteo_base_url"
GEOCODING_BASE_URL = "travel_geocoding_base_url"
SEARCH_BASE_URL = "travel_search_base_url"
PROVIDER_TIMEOUT = "travel_provider_timeout_seconds"
DEFAULTS = {
    AMADEUS_BASE_URL: "https://test.api.amadeus.com",
    OPEN_METEO_BASE_URL: "https://api.open-meteo.com",
    GEOCODING_BASE_URL: "https://geocoding-api.open-meteo.com",
    PROVIDER_TIMEOUT: "10",
}
AMADEUS_CLIENT_ID = ToolSecret("amadeus_client_id")
AMADEUS_CLIENT_SECRET = ToolSecret("amadeus_client_secret")

#: Providers that fail this way are worth another attempt (the activity's retry policy).
_RETRYABLE_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})
_PROVIDER_RETRIES = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=20),
    maximum_attempts=4,
)
_TIMEOUT = timedelta(seconds=60)

WEATHER_CODES = {
    0: "clear sky", 1: "mainly clear", 2: "partly cloudy", 3: "overcast", 45: "fog",
    48: "depositing rime fog", 51: "light drizzle", 53: "drizzle", 55: "dense drizzle",
    61: "slight rain", 63: "moderate rain", 65: "heavy rain", 71: "slight snow",
    73: "moderate snow", 75: "heavy snow", 80: "rain showers", 81: "heavy rain showers",
    82: "violent rain showers", 95: "thunderstorm", 96: "thunderstorm with hail",
}  # fmt: skip


# --------------------------------------------------------------------------- results


class FlightSegment(BaseModel):
    carrier: str
    carrier_name: str = ""
    flight_number: str
    departure_airport: str
    departure_time: str
    arrival_airport: str
    arrival_time: str
    duration: str


class FlightOffer(BaseModel):
    """One bookable flight offer (outbound, and inbound for a return trip)."""

    offer_id: str
    price: float
    currency: str
    carrier: str
    stops: int
    outbound: list[FlightSegment]
    inbound: list[FlightSegment] = []
    seats_left: int | None = None
    #: Where this offer came from (the provider's search).
    source: str


class FlightSearch(BaseModel):
    origin: str
    destination: str
    departure_date: date
    return_date: date | None = None
    adults: int
    offers: list[FlightOffer]


class HotelOffer(BaseModel):
    hotel_id: str
    name: str
    city_code: str
    latitude: float | None = None
    longitude: float | None = None
    check_in: date
    check_out: date
    room: str
    total_price: float
    currency: str
    price_per_night: float
    refundable: bool
    #: The provider's link to this offer.
    source: str


class HotelSearch(BaseModel):
    city: str
    city_code: str
    check_in: date
    check_out: date
    adults: int
    offers: list[HotelOffer]


class DayForecast(BaseModel):
    date: date
    summary: str
    weather_code: int
    temperature_max_c: float
    temperature_min_c: float
    precipitation_probability: int | None = None
    #: The forecast it came from.
    source: str


class WeatherForecast(BaseModel):
    city: str
    country: str
    latitude: float
    longitude: float
    timezone: str
    days: list[DayForecast]


class Attraction(BaseModel):
    name: str
    category: str
    description: str
    rating: float | None = None
    free: bool | None = None
    #: The attraction's page.
    source: str


class Attractions(BaseModel):
    city: str
    country: str
    attractions: list[Attraction]


class SearchHit(BaseModel):
    title: str
    snippet: str
    #: The page found.
    source: str


class SearchResults(BaseModel):
    query: str
    total: int
    results: list[SearchHit]


# --------------------------------------------------------------------------- HTTP


def setting(ctx: ToolContext, name: str) -> str | None:
    """An application setting from the worker's settings, or its default."""
    return ctx.settings.app_setting(name, DEFAULTS.get(name))


def _base(ctx: ToolContext, name: str) -> str:
    url = setting(ctx, name)
    if not url:
        raise ToolError(
            f"no provider configured for this tool: set PERENNIAL_SETTING_{name.upper()} on the worker"
        )
    return url.rstrip("/")


def _client(ctx: ToolContext) -> httpx.AsyncClient:
    seconds = float(setting(ctx, PROVIDER_TIMEOUT) or 10)
    return httpx.AsyncClient(
        timeout=httpx.Timeout(seconds), headers={"User-Agent": "perennial-travel/1.0"}
    )


async def _call(
    client: httpx.AsyncClient, method: str, url: str, provider: str, **kwargs: Any
) -> httpx.Response:
    """One request; an outage becomes a retryable failure, a refusal a `ToolError`."""
    try:
        response = await client.request(method, url, **kwargs)
    except httpx.TimeoutException:
        raise ApplicationError(
            f"{provider} did not answer in time", type="ProviderTimeout"
        ) from None
    except httpx.HTTPError as err:
        raise ApplicationError(f"{provider} is unreachable: {type(err).__name__}",
                               type="ProviderUnavailable") from None  # fmt: skip
    if response.status_code in _RETRYABLE_STATUS:
        raise ApplicationError(
            f"{provider} answered {response.status_code}",
            type="ProviderUnavailable",
            next_retry_delay=_retry_after(response),
        )
    return response


def _retry_after(response: httpx.Response) -> timedelta | None:
    value = response.headers.get("Retry-After", "")
    return timedelta(seconds=min(float(value), 60)) if value.isdigit() else None


def _json_of(response: httpx.Response, provider: str) -> Any:
    try:
        return response.json()
    except ValueError:
        raise ApplicationError(
            f"{provider} answered {response.status_code} with a body that is not JSON",
            type="ProviderBadResponse",
            non_retryable=True,
        ) from None


def _refused(response: httpx.Response, provider: str) -> ToolError:
    """A 4xx answer as what the model reads: the provider's own explanation."""
    body = _json_of(response, provider) if response.content else {}
    detail = ""
    if isinstance(body, dict):
        if isinstance(body.get("errors"), list) and body["errors"]:  # Amadeus
            first = body["errors"][0]
            where = (first.get("source") or {}).get("parameter")
            detail = f"{first.get('title', '')}: {first.get('detail', '')}" + (
                f" ({where})" if where else ""
            )
        elif "reason" in body:  # Open-Meteo
            detail = str(body["reason"])
        elif isinstance(body.get("error"), dict):  # the search API
            detail = str(body["error"].get("message", ""))
    return ToolError(
        f"{provider} refused the request ({response.status_code}): {detail or 'no detail'}"
    )


# --------------------------------------------------------------------------- Amadeus


class _TokenCache:
    """Amadeus access tokens by (base URL, client id), reused until shortly before expiry."""

    def __init__(self) -> None:
        self._tokens: dict[tuple[str, str], tuple[str, float]] = {}
        self._lock = asyncio.Lock()

    async def get(self, client: httpx.AsyncClient, base: str, client_id: str, secret: str) -> str:
        async with self._lock:
            cached = self._tokens.get((base, client_id))
            if cached and cached[1] > time.monotonic():
                return cached[0]
            response = await _call(
                client, "POST", f"{base}/v1/security/oauth2/token", "Amadeus",
                data={"grant_type": "client_credentials", "client_id": client_id,
                      "client_secret": secret},
            )  # fmt: skip
            if response.status_code in (400, 401):
                raise ApplicationError(
                    "Amadeus refused the worker's client credentials (check "
                    "PERENNIAL_SECRET_AMADEUS_CLIENT_ID and _CLIENT_SECRET)",
                    type="ProviderCredentialsRejected",
                    non_retryable=True,
                )
            body = _json_of(response, "Amadeus")
            token, lifetime = body["access_token"], float(body.get("expires_in", 1799))
            self._tokens[(base, client_id)] = (token, time.monotonic() + lifetime - 60)
            return token

    def forget(self, base: str, client_id: str) -> None:
        self._tokens.pop((base, client_id), None)


_TOKENS = _TokenCache()


class Amadeus:
    """A small client of Amadeus Self-Service's REST API (the calls the tools need)."""

    def __init__(self, client: httpx.AsyncClient, base: str, client_id: str, secret: str):
        self._client, self.base = client, base
        self._client_id, self._secret = client_id, secret

    async def get(self, path: str, params: dict[str, Any]) -> tuple[Any, str]:
        """The JSON body of a GET, and the URL it came from (a stale token is renewed once)."""
        for attempt in (1, 2):
            token = await _TOKENS.get(self._client, self.base, self._client_id, self._secret)
            response = await _call(self._client, "GET", f"{self.base}{path}", "Amadeus",
                                   params=params, headers={"Authorization": f"Bearer {token}"})  # fmt: skip
            if response.status_code == 401 and attempt == 1:
                _TOKENS.forget(self.base, self._client_id)
                continue
            if response.status_code >= 400:
                raise _refused(response, "Amadeus")
            return _json_of(response, "Amadeus"), str(response.url)
        raise AssertionError("unreachable")

    async def city_code(self, name: str) -> str:
        """The IATA city (or airport) code of a place: given as a code, or looked up."""
        cleaned = name.strip()
        if len(cleaned) == 3 and cleaned.isalpha() and cleaned.isascii():
            return cleaned.upper()
        body, _ = await self.get("/v1/reference-data/locations",
                                 {"subType": "CITY,AIRPORT", "keyword": cleaned, "page[limit]": 5})  # fmt: skip
        for location in body.get("data", []):
            if location.get("iataCode"):
                return str(location["iataCode"])
        raise ToolError(f"no city or airport matches {name!r}: try its IATA code")


def _segments(itinerary: dict[str, Any], carriers: dict[str, str]) -> list[FlightSegment]:
    return [
        FlightSegment(
            carrier=s["carrierCode"],
            carrier_name=carriers.get(s["carrierCode"], "").title(),
            flight_number=f"{s['carrierCode']}{s['number']}",
            departure_airport=s["departure"]["iataCode"],
            departure_time=s["departure"]["at"],
            arrival_airport=s["arrival"]["iataCode"],
            arrival_time=s["arrival"]["at"],
            duration=s.get("duration", ""),
        )
        for s in itinerary.get("segments", [])
    ]


@activity_tool(
    activity_name="travel.search_flights",
    start_to_close_timeout=_TIMEOUT,
    retry_policy=_PROVIDER_RETRIES,
)
async def search_flights(
    origin: str,
    destination: str,
    departure_date: date,
    ctx: ToolContext,
    client_id: Annotated[str, AMADEUS_CLIENT_ID],
    client_secret: Annotated[str, AMADEUS_CLIENT_SECRET],
    return_date: date | None = None,
    adults: Annotated[int, Field(ge=1, le=9)] = 1,
    max_results: Annotated[int, Field(ge=1, le=20)] = 5,
) -> FlightSearch:
    """Search flight offers between two cities, cheapest first.

    Args:
        origin: Where the trip starts: a city name ("Lisbon") or an IATA code ("LIS").
        destination: Where to fly to: a city name or an IATA code.
        departure_date: The outbound date, YYYY-MM-DD.
        return_date: The return date for a round trip, YYYY-MM-DD; leave out for one way.
        adults: Number of adult travellers.
        max_results: At most this many offers.
    """
    async with _client(ctx) as client:
        amadeus = Amadeus(client, _base(ctx, AMADEUS_BASE_URL), client_id, client_secret)
        codes = [await amadeus.city_code(origin), await amadeus.city_code(destination)]
        params: dict[str, Any] = {
            "originLocationCode": codes[0], "destinationLocationCode": codes[1],
            "departureDate": departure_date.isoformat(), "adults": adults, "max": max_results,
            "currencyCode": "EUR",
        }  # fmt: skip
        if return_date is not None:
            params["returnDate"] = return_date.isoformat()
        body, source = await amadeus.get("/v2/shopping/flight-offers", params)
    carriers = (body.get("dictionaries") or {}).get("carriers", {})
    offers = []
    for offer in body.get("data", [])[:max_results]:
        itineraries = offer.get("itineraries", [])
        outbound = _segments(itineraries[0], carriers) if itineraries else []
        inbound = _segments(itineraries[1], carriers) if len(itineraries) > 1 else []
        offers.append(FlightOffer(
            offer_id=str(offer["id"]), price=float(offer["price"]["grandTotal"]),
            currency=offer["price"]["currency"],
            carrier=(offer.get("validatingAirlineCodes") or [outbound[0].carrier if outbound else ""])[0],
            stops=max(len(outbound) - 1, 0), outbound=outbound, inbound=inbound,
            seats_left=offer.get("numberOfBookableSeats"), source=source,
        ))  # fmt: skip
    return FlightSearch(origin=codes[0], destination=codes[1], departure_date=departure_date,
                        return_date=return_date, adults=adults, offers=offers)  # fmt: skip


@activity_tool(
    activity_name="travel.search_hotels",
    start_to_close_timeout=_TIMEOUT,
    retry_policy=_PROVIDER_RETRIES,
)
async def search_hotels(
    city: str,
    check_in: date,
    check_out: date,
    ctx: ToolContext,
    client_id: Annotated[str, AMADEUS_CLIENT_ID],
    client_secret: Annotated[str, AMADEUS_CLIENT_SECRET],
    adults: Annotated[int, Field(ge=1, le=9)] = 1,
    max_results: Annotated[int, Field(ge=1, le=20)] = 5,
) -> HotelSearch:
    """Search hotel offers in a city for given dates, cheapest first.

    Args:
        city: The city: a name ("Paris") or its IATA city code ("PAR").
        check_in: Check-in date, YYYY-MM-DD.
        check_out: Check-out date, YYYY-MM-DD (after check-in).
        adults: Guests per room.
        max_results: At most this many offers.
    """
    if check_out <= check_in:
        raise ToolError("check_out must be after check_in")
    async with _client(ctx) as client:
        amadeus = Amadeus(client, _base(ctx, AMADEUS_BASE_URL), client_id, client_secret)
        code = await amadeus.city_code(city)
        listed, _ = await amadeus.get("/v1/reference-data/locations/hotels/by-city",
                                      {"cityCode": code, "radius": 10, "radiusUnit": "KM"})  # fmt: skip
        ids = [h["hotelId"] for h in listed.get("data", [])][:20]
        if not ids:
            return HotelSearch(city=city, city_code=code, check_in=check_in, check_out=check_out,
                               adults=adults, offers=[])  # fmt: skip
        body, _ = await amadeus.get("/v3/shopping/hotel-offers", {
            "hotelIds": ",".join(ids), "adults": adults, "checkInDate": check_in.isoformat(),
            "checkOutDate": check_out.isoformat(), "currency": "EUR",
        })  # fmt: skip
    nights = (check_out - check_in).days
    offers = []
    for item in body.get("data", []):
        hotel = item.get("hotel", {})
        for offer in item.get("offers", [])[:1]:
            total = float(offer["price"]["total"])
            refundable = any(
                "deadline" in c for c in (offer.get("policies") or {}).get("cancellations", [])
            )
            offers.append(HotelOffer(
                hotel_id=hotel.get("hotelId", ""), name=str(hotel.get("name", "")).title(),
                city_code=hotel.get("cityCode", code), latitude=hotel.get("latitude"),
                longitude=hotel.get("longitude"), check_in=check_in, check_out=check_out,
                room=((offer.get("room") or {}).get("description") or {}).get("text", ""),
                total_price=total, currency=offer["price"].get("currency", "EUR"),
                price_per_night=round(total / nights, 2), refundable=refundable,
                source=offer.get("self") or item.get("self", ""),
            ))  # fmt: skip
    offers.sort(key=lambda o: o.total_price)
    return HotelSearch(city=city, city_code=code, check_in=check_in, check_out=check_out,
                       adults=adults, offers=offers[:max_results])  # fmt: skip


# --------------------------------------------------------------------------- Open-Meteo


@activity_tool(
    activity_name="travel.get_weather",
    start_to_close_timeout=_TIMEOUT,
    retry_policy=_PROVIDER_RETRIES,
)
async def get_weather(city: str, ctx: ToolContext, date: date | None = None) -> WeatherForecast:
    """The weather forecast for a city: one day, or the next seven days. Forecasts reach
    about two weeks ahead.

    Args:
        city: The city name, like "Lisbon".
        date: The day, YYYY-MM-DD; leave out for the next seven days.
    """
    async with _client(ctx) as client:
        response = await _call(client, "GET", f"{_base(ctx, GEOCODING_BASE_URL)}/v1/search", "Open-Meteo geocoding",
                               params={"name": city, "count": 1, "language": "en", "format": "json"})  # fmt: skip
        if response.status_code >= 400:
            raise _refused(response, "Open-Meteo geocoding")
        places = _json_of(response, "Open-Meteo geocoding").get("results") or []
        if not places:
            raise ToolError(f"no place named {city!r} was found")
        place = places[0]
        params: dict[str, Any] = {
            "latitude": place["latitude"], "longitude": place["longitude"], "timezone": "auto",
            "daily": "weather_code,temperature_2m_max,temperature_2m_min,precipitation_probability_max",
        }  # fmt: skip
        if date is not None:
            params["start_date"] = params["end_date"] = date.isoformat()
        else:
            params["forecast_days"] = 7
        response = await _call(client, "GET", f"{_base(ctx, OPEN_METEO_BASE_URL)}/v1/forecast", "Open-Meteo",
                               params=params)  # fmt: skip
        if response.status_code >= 400:
            raise _refused(response, "Open-Meteo")
        forecast, source = _json_of(response, "Open-Meteo"), str(response.url)
    daily = forecast.get("daily") or {}
    probabilities = daily.get("precipitation_probability_max") or [None] * len(
        daily.get("time", [])
    )
    days = [
        DayForecast(date=day, summary=WEATHER_CODES.get(code, f"weather code {code}"), weather_code=code,
                    temperature_max_c=high, temperature_min_c=low, precipitation_probability=chance,
                    source=source)
        for day, code, high, low, chance in zip(
            daily.get("time", []), daily.get("weather_code", []), daily.get("temperature_2m_max", []),
            daily.get("temperature_2m_min", []), probabilities, strict=False,
        )
    ]  # fmt: skip
    return WeatherForecast(city=place["name"], country=place.get("country", ""),
                           latitude=place["latitude"], longitude=place["longitude"],
                           timezone=forecast.get("timezone", place.get("timezone", "")), days=days)  # fmt: skip


# --------------------------------------------------------------------------- search


@activity_tool(
    activity_name="travel.find_attractions",
    start_to_close_timeout=_TIMEOUT,
    retry_policy=_PROVIDER_RETRIES,
)
async def find_attractions(
    city: str, ctx: ToolContext, max_results: Annotated[int, Field(ge=1, le=20)] = 5
) -> Attractions:
    """The best-rated sights of a city, each with its guide page.

    Args:
        city: The city name, like "Rome".
        max_results: At most this many attractions.
    """
    async with _client(ctx) as client:
        response = await _call(client, "GET", f"{_base(ctx, SEARCH_BASE_URL)}/v1/attractions", "the search API",
                               params={"city": city, "count": max_results})  # fmt: skip
    if response.status_code >= 400:
        raise _refused(response, "the search API")
    body = _json_of(response, "the search API")
    return Attractions(city=body["city"], country=body.get("country", ""), attractions=[
        Attraction(name=a["name"], category=a.get("category", ""), description=a.get("description", ""),
                   rating=a.get("rating"), free=a.get("free"), source=a["url"])
        for a in body.get("attractions", [])[:max_results]
    ])  # fmt: skip


@activity_tool(
    activity_name="travel.web_search",
    start_to_close_timeout=_TIMEOUT,
    retry_policy=_PROVIDER_RETRIES,
)
async def web_search(
    query: str, ctx: ToolContext, max_results: Annotated[int, Field(ge=1, le=20)] = 5
) -> SearchResults:
    """Search the web (travel guides) and get the pages that match, with a snippet of each.

    Args:
        query: What to look for, like "best time to visit Lisbon".
        max_results: At most this many results.
    """
    async with _client(ctx) as client:
        response = await _call(client, "GET", f"{_base(ctx, SEARCH_BASE_URL)}/v1/search", "the search API",
                               params={"q": query, "count": max_results})  # fmt: skip
    if response.status_code >= 400:
        raise _refused(response, "the search API")
    body = _json_of(response, "the search API")
    return SearchResults(query=body.get("query", query), total=int(body.get("total", 0)), results=[
        SearchHit(title=r["title"], snippet=r.get("snippet", ""), source=r["url"])
        for r in body.get("results", [])[:max_results]
    ])  # fmt: skip


#: Every provider tool, for an agent type's `tools`.
PROVIDER_TOOLS = (search_flights, search_hotels, get_weather, find_attractions, web_search)

__all__ = [
    "AMADEUS_BASE_URL",
    "AMADEUS_CLIENT_ID",
    "AMADEUS_CLIENT_SECRET",
    "GEOCODING_BASE_URL",
    "OPEN_METEO_BASE_URL",
    "PROVIDER_TIMEOUT",
    "PROVIDER_TOOLS",
    "SEARCH_BASE_URL",
    "Amadeus",
    "Attraction",
    "Attractions",
    "DayForecast",
    "FlightOffer",
    "FlightSearch",
    "FlightSegment",
    "HotelOffer",
    "HotelSearch",
    "SearchHit",
    "SearchResults",
    "WeatherForecast",
    "find_attractions",
    "get_weather",
    "search_flights",
    "search_hotels",
    "web_search",
]
