"""A local server that speaks the travel providers' APIs, for the tests and the offline demo.

    with ProviderServer() as server:
        settings = settings.model_copy(update=server.settings_update())

    python -m examples.travel.provider_server --port 8090

One HTTP server, one prefix per provider, each answering in the provider's own shapes (the
clients in `examples.travel.providers` cannot tell it from the real thing), with realistic,
deterministic data for a dozen cities (`examples.travel.provider_data`):

- `/amadeus`: Amadeus Self-Service. `POST /v1/security/oauth2/token` (client credentials;
  tokens last 30 minutes), `GET /v1/reference-data/locations` (cities and airports by
  keyword), `GET /v2/shopping/flight-offers`, `GET /v1/reference-data/locations/hotels/by-city`,
  `GET /v3/shopping/hotel-offers`. Every call but the token needs `Authorization: Bearer`;
  errors are Amadeus' `{"errors": [{"status", "code", "title", "detail", "source"}]}`.
- `/open-meteo`: Open-Meteo's forecast, `GET /v1/forecast` (daily variables, `start_date` /
  `end_date` or `forecast_days`, from 92 days back to 15 ahead); `/geocoding`: its geocoding
  API, `GET /v1/search?name=`. Errors are `{"error": true, "reason"}`.
- `/search`: a simple search API of this server's own design:
  `GET /v1/search?q=&count=` -> `{"query", "total", "results": [{"title", "url", "snippet",
  "site", "published"}]}` over the travel-guide pages, and `GET /v1/attractions?city=&count=`
  -> `{"city", "country", "attractions": [{"id", "name", "category", "description", "rating",
  "free", "latitude", "longitude", "url"}]}`; errors are `{"error": {"code", "message"}}`
  (400 without `q`, 404 for a city it does not know).
- The site, for the scraper: `/robots.txt` (disallows `/private/` and `/lab/blocked/`),
  travel guides at `/guides/{city}` and `/guides/{city}/{attraction}` (HTML with JSON-LD), and
  `/lab/...`, pages that misbehave on purpose: `slow?seconds=`, `flaky?key=&failures=` (503
  until the key was asked that many times), `status/{code}`, `big?kb=&chunked=`,
  `redirect?to=&status=`, `chain?hops=`, `page/{name}`, `binary`, and `down/...` (an API in an
  outage: 503 with `Retry-After`, for a base URL pointed there).

Every request is counted (`hits(path)`), so a test can prove a page was fetched once.
"""

from __future__ import annotations

import argparse
import hashlib
import html
import itertools
import json
import re
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from pydantic import SecretStr

from examples.travel import provider_data as world
from examples.travel.provider_data import City

#: The client credentials the server accepts unless told others (a demo's, not a secret).
DEMO_CLIENT_ID = "perennial-demo"
DEMO_CLIENT_SECRET = "perennial-demo-secret"
TOKEN_SECONDS = 1799
ROBOTS_TXT = "User-agent: *\nDisallow: /private/\nDisallow: /lab/blocked/\nAllow: /\n"
#: Forecasts reach this many days back and ahead (Open-Meteo's defaults).
FORECAST_PAST_DAYS = 92
FORECAST_AHEAD_DAYS = 15
_DAILY = ("weather_code", "temperature_2m_max", "temperature_2m_min",
          "precipitation_probability_max", "precipitation_sum", "wind_speed_10m_max")  # fmt: skip
_UNITS = {"weather_code": "wmo code", "temperature_2m_max": "°C", "temperature_2m_min": "°C",
          "precipitation_probability_max": "%", "precipitation_sum": "mm",
          "wind_speed_10m_max": "km/h"}  # fmt: skip


@dataclass(frozen=True)
class Hit:
    """One request the server received."""

    method: str
    path: str
    query: str
    at: float


class ApiError(Exception):
    """An error answer: status and JSON body."""

    def __init__(self, status: int, body: Any) -> None:
        super().__init__(status)
        self.status = status
        self.body = body


@dataclass
class Answer:
    status: int
    body: bytes
    content_type: str
    headers: tuple[tuple[str, str], ...] = ()
    chunked: bool = False


def _json(body: Any, status: int = 200) -> Answer:
    return Answer(status, json.dumps(body, ensure_ascii=False).encode(), "application/json")


def _html(text: str, status: int = 200) -> Answer:
    return Answer(status, text.encode(), "text/html; charset=utf-8")


class ProviderServer:
    """The providers' APIs and the guide site on one local port (see the module docstring)."""

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        client_id: str = DEMO_CLIENT_ID,
        client_secret: str = DEMO_CLIENT_SECRET,
    ) -> None:
        self.client_id = client_id
        self.client_secret = client_secret
        self._lock = threading.Lock()
        self._hits: list[Hit] = []
        self._flaky: Counter[str] = Counter()
        self._tokens: dict[str, float] = {}
        self._token_ids = itertools.count(1)
        self._server = _Server((host, port), _handler(self))
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> ProviderServer:
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.05,), name="provider-server", daemon=True
        )
        self._thread.start()
        return self

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> ProviderServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ addresses

    @property
    def host(self) -> str:
        return str(self._server.server_address[0])

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        """The site's root (guides, robots.txt, lab pages); each API has its own prefix."""
        return f"http://{self.host}:{self.port}"

    def app_settings(self) -> dict[str, str]:
        """The application settings that point the travel app at this server (and let its
        scraper fetch this loopback address)."""
        from examples.travel.providers import (  # the clients' setting names
            AMADEUS_BASE_URL,
            GEOCODING_BASE_URL,
            OPEN_METEO_BASE_URL,
            SEARCH_BASE_URL,
        )
        from examples.travel.scraper import SCRAPER_ALLOW

        return {
            AMADEUS_BASE_URL: f"{self.url}/amadeus",
            OPEN_METEO_BASE_URL: f"{self.url}/open-meteo",
            GEOCODING_BASE_URL: f"{self.url}/geocoding",
            SEARCH_BASE_URL: f"{self.url}/search",
            SCRAPER_ALLOW: f"{self.host}:{self.port}",
        }

    def tool_secrets(self) -> dict[str, SecretStr]:
        """The Amadeus credentials this server accepts, as the worker's tool secrets."""
        from examples.travel.providers import AMADEUS_CLIENT_ID, AMADEUS_CLIENT_SECRET

        return {
            AMADEUS_CLIENT_ID.key: SecretStr(self.client_id),
            AMADEUS_CLIENT_SECRET.key: SecretStr(self.client_secret),
        }

    def settings_update(self, settings: Any = None) -> dict[str, Any]:
        """`Settings.model_copy(update=...)` for a worker that uses this server; pass the
        settings to keep their own app settings and secrets beside these."""
        apps = dict(getattr(settings, "app_settings", {}) or {})
        secrets = dict(getattr(settings, "tool_secrets", {}) or {})
        return {
            "app_settings": {**apps, **self.app_settings()},
            "tool_secrets": {**secrets, **self.tool_secrets()},
        }

    def env(self) -> dict[str, str]:
        """The same as environment variables, for a worker process."""
        found = {f"PERENNIAL_SETTING_{k.upper()}": v for k, v in self.app_settings().items()}
        found.update(
            {
                f"PERENNIAL_SECRET_{k.upper()}": v.get_secret_value()
                for k, v in self.tool_secrets().items()
            }  # fmt: skip
        )
        return found

    # ------------------------------------------------------------------ what it saw

    @property
    def requests(self) -> list[Hit]:
        with self._lock:
            return list(self._hits)

    def hits(self, path: str) -> int:
        """How many requests asked for `path` (the path only, any query string)."""
        with self._lock:
            return sum(1 for hit in self._hits if hit.path == path)

    def record(self, method: str, path: str, query: str) -> None:
        with self._lock:
            self._hits.append(Hit(method, path, query, time.time()))

    # ------------------------------------------------------------------ state the routes use

    def issue_token(self) -> str:
        with self._lock:
            n = next(self._token_ids)
            token = hashlib.sha256(f"{self.client_id}:{n}".encode()).hexdigest()[:28]
            self._tokens[token] = time.time() + TOKEN_SECONDS
        return token

    def expire_tokens(self) -> None:
        """Forget every access token issued (as if they had expired): clients must get anew."""
        with self._lock:
            self._tokens.clear()

    def token_valid(self, token: str) -> bool:
        with self._lock:
            return self._tokens.get(token, 0) > time.time()

    def flaky_count(self, key: str) -> int:
        """How many times this flaky key was asked for, this one included."""
        with self._lock:
            self._flaky[key] += 1
            return self._flaky[key]


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    # Many concurrent sessions connect at once (the load test): the default backlog of 5
    # drops connections under a burst.
    request_queue_size = 256

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that hangs up mid-answer (the scraper's size cap) is not the server's error.
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


def _handler(server: ProviderServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "PerennialProviders/1.0"

        def log_message(self, format: str, *args: Any) -> None:  # quiet: tests read hits
            return

        def do_GET(self) -> None:  # noqa: N802
            self._serve("GET")

        def do_POST(self) -> None:  # noqa: N802
            self._serve("POST")

        def _serve(self, method: str) -> None:
            parts = urlsplit(self.path)
            server.record(method, parts.path, parts.query)
            body = b""
            length = int(self.headers.get("Content-Length") or 0)
            if length:
                body = self.rfile.read(min(length, 65536))
            request = _Request(method, parts.path, parse_qs(parts.query), dict(self.headers), body,
                               f"http://{self.headers.get('Host') or server.url[7:]}")  # fmt: skip
            try:
                answer = _route(server, request)
            except ApiError as err:
                answer = _json(err.body, err.status)
            except (BrokenPipeError, ConnectionResetError):
                return
            self._send(answer)

        def _send(self, answer: Answer) -> None:
            try:
                self.send_response(answer.status)
                self.send_header("Content-Type", answer.content_type)
                for name, value in answer.headers:
                    self.send_header(name, value)
                if answer.chunked:
                    self.send_header("Transfer-Encoding", "chunked")
                    self.end_headers()
                    for start in range(0, len(answer.body), 16384):
                        chunk = answer.body[start : start + 16384]
                        self.wfile.write(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
                    self.wfile.write(b"0\r\n\r\n")
                else:
                    self.send_header("Content-Length", str(len(answer.body)))
                    self.end_headers()
                    self.wfile.write(answer.body)
            except (BrokenPipeError, ConnectionResetError):  # the client gave up (a size cap)
                self.close_connection = True

    return Handler


@dataclass(frozen=True)
class _Request:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes
    origin: str

    def arg(self, name: str, default: str | None = None) -> str | None:
        values = self.query.get(name)
        return values[0] if values else default


Route = Callable[[ProviderServer, _Request, re.Match[str]], Answer]
_ROUTES: list[tuple[str, re.Pattern[str], Route]] = []


def route(method: str, pattern: str) -> Callable[[Route], Route]:
    def register(fn: Route) -> Route:
        _ROUTES.append((method, re.compile(pattern), fn))
        return fn

    return register


def _route(server: ProviderServer, request: _Request) -> Answer:
    for method, pattern, fn in _ROUTES:
        match = pattern.fullmatch(request.path)
        if match and method == request.method:
            return fn(server, request, match)
    if request.path.startswith(("/amadeus/", "/open-meteo/", "/geocoding/", "/search/")):
        raise ApiError(404, {"errors": [{"status": 404, "code": 38196, "title": "Resource not found",
                                         "detail": f"no route for {request.method} {request.path}"}]})  # fmt: skip
    return _html(_page("Not found", "<p>There is no page here.</p>"), 404)


# --------------------------------------------------------------------------- Amadeus


def _amadeus_error(
    status: int, code: int, title: str, detail: str, parameter: str | None = None
) -> ApiError:
    error: dict[str, Any] = {"status": status, "code": code, "title": title, "detail": detail}
    if parameter:
        error["source"] = {"parameter": parameter}
    return ApiError(status, {"errors": [error]})


def _authorized(server: ProviderServer, request: _Request) -> None:
    header = request.headers.get("Authorization", "")
    token = header.removeprefix("Bearer ").strip() if header.startswith("Bearer ") else ""
    if not token or not server.token_valid(token):
        raise _amadeus_error(401, 38191, "Invalid access token",
                             "The access token provided in the Authorization header is invalid")  # fmt: skip


@route("POST", r"/amadeus/v1/security/oauth2/token")
def _token(server: ProviderServer, request: _Request, _: re.Match[str]) -> Answer:
    form = {k: v[0] for k, v in parse_qs(request.body.decode("utf-8", "replace")).items()}
    if form.get("grant_type") != "client_credentials":
        raise ApiError(400, {"error": "unsupported_grant_type", "code": 38187,
                             "error_description": "Only client_credentials value is allowed for the body parameter grant_type",
                             "title": "Invalid parameters"})  # fmt: skip
    if (form.get("client_id"), form.get("client_secret")) != (
        server.client_id,
        server.client_secret,
    ):
        raise ApiError(401, {"error": "invalid_client", "code": 38187,
                             "error_description": "Client credentials are invalid",
                             "title": "Invalid parameters"})  # fmt: skip
    token = server.issue_token()
    return _json({"type": "amadeusOAuth2Token", "username": "demo@perennial.local",
                  "application_name": "perennial-travel", "client_id": server.client_id,
                  "token_type": "Bearer", "access_token": token, "expires_in": TOKEN_SECONDS,
                  "state": "approved", "scope": ""})  # fmt: skip


@route("GET", r"/amadeus/v1/reference-data/locations")
def _locations(server: ProviderServer, request: _Request, _: re.Match[str]) -> Answer:
    _authorized(server, request)
    keyword = world.fold(request.arg("keyword") or "")
    kinds = set((request.arg("subType") or "").upper().split(","))
    if not keyword or not kinds & {"CITY", "AIRPORT"}:
        parameter = "keyword" if not keyword else "subType"
        raise _amadeus_error(
            400, 32171, "MANDATORY DATA MISSING", f"Missing or invalid {parameter}", parameter
        )
    data = []
    for city in world.CITIES:
        names = (
            world.fold(city.name),
            city.city_code.lower(),
            *(a.code.lower() for a in city.airports),
        )
        if not any(name.startswith(keyword) for name in names):
            continue
        address = {"cityName": city.name.upper(), "cityCode": city.city_code,
                   "countryName": city.country.upper(), "countryCode": city.country_code}  # fmt: skip
        if "CITY" in kinds:
            data.append({"type": "location", "subType": "CITY", "name": city.name.upper(),
                         "detailedName": f"{city.name.upper()}/{city.country_code}",
                         "id": f"C{city.city_code}", "iataCode": city.city_code, "address": address,
                         "geoCode": {"latitude": city.latitude, "longitude": city.longitude},
                         "timeZoneOffset": _offset_text(city)})  # fmt: skip
        if "AIRPORT" in kinds:
            for each in city.airports:
                data.append({"type": "location", "subType": "AIRPORT", "name": each.name.upper(),
                             "detailedName": f"{city.name.upper()}/{city.country_code}: {each.name.upper()}",
                             "id": f"A{each.code}", "iataCode": each.code, "address": address,
                             "geoCode": {"latitude": each.latitude, "longitude": each.longitude},
                             "timeZoneOffset": _offset_text(city)})  # fmt: skip
    return _json({"meta": {"count": len(data), "links": {"self": f"{request.origin}{request.path}"}},
                  "data": data})  # fmt: skip


def _offset_text(city: City) -> str:
    seconds = world.utc_offset_seconds(city, world.today())
    sign = "+" if seconds >= 0 else "-"
    hours, minutes = divmod(abs(seconds) // 60, 60)
    return f"{sign}{hours:02d}:{minutes:02d}"


def _date_arg(request: _Request, name: str, *, required: bool = True) -> date | None:
    text = request.arg(name)
    if text is None:
        if required:
            raise _amadeus_error(400, 32171, "MANDATORY DATA MISSING", f"{name} is required", name)
        return None
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise _amadeus_error(
            400, 477, "INVALID FORMAT", f"{name} must be a date as YYYY-MM-DD", name
        ) from None


def _int_arg(request: _Request, name: str, default: int, low: int, high: int) -> int:
    text = request.arg(name)
    if text is None:
        return default
    if not text.isdigit() or not low <= int(text) <= high:
        raise _amadeus_error(
            400, 477, "INVALID FORMAT", f"{name} must be a number from {low} to {high}", name
        )
    return int(text)


@route("GET", r"/amadeus/v2/shopping/flight-offers")
def _flight_offers(server: ProviderServer, request: _Request, _: re.Match[str]) -> Answer:
    _authorized(server, request)
    codes = []
    for name in ("originLocationCode", "destinationLocationCode"):
        code = (request.arg(name) or "").upper()
        if not re.fullmatch(r"[A-Z]{3}", code):
            raise _amadeus_error(
                400, 477, "INVALID FORMAT", f"{name} must be a 3-letter IATA code", name
            )
        codes.append(code)
    day = _date_arg(request, "departureDate")
    back = _date_arg(request, "returnDate", required=False)
    adults = _int_arg(request, "adults", 1, 1, 9)
    limit = _int_arg(request, "max", 250, 1, 250)
    currency = (request.arg("currencyCode") or "EUR").upper()
    assert day is not None
    today = world.today()
    if day < today:
        raise _amadeus_error(400, 425, "INVALID DATE", "Date/Time is in the past", "departureDate")
    if day > today + timedelta(days=361):
        raise _amadeus_error(
            400, 425, "INVALID DATE", "Date is too far in the future", "departureDate"
        )
    if back is not None and back < day:
        raise _amadeus_error(
            400, 4926, "INVALID DATA RECEIVED", "return date is before departure date", "returnDate"
        )
    origin, destination = world.city_of_code(codes[0]), world.city_of_code(codes[1])
    self_link = f"{request.origin}{request.path}"
    if origin is None or destination is None or origin is destination:
        return _json({"meta": {"count": 0, "links": {"self": self_link}}, "data": []})
    offers = world.flight_offers(origin, destination, day, back, adults)[:limit]
    data = [_flight_offer_json(o, adults, currency) for o in offers]
    used = {s.carrier for o in offers for it in (o.outbound, o.inbound) if it for s in it.segments}
    airports = {
        s.origin for o in offers for it in (o.outbound, o.inbound) if it for s in it.segments
    }
    return _json({
        "meta": {"count": len(data), "links": {"self": self_link}},
        "data": data,
        "dictionaries": {
            "locations": {a: _location_dictionary(a) for a in sorted(airports | {s.destination for o in offers for s in o.outbound.segments})},
            "aircraft": world.AIRCRAFT,
            "currencies": {currency: "EURO" if currency == "EUR" else currency},
            "carriers": {c: world.CARRIERS[c][0] for c in sorted(used)},
        },
    })  # fmt: skip


def _location_dictionary(code: str) -> dict[str, str]:
    city = world.city_of_code(code)
    if city is not None:
        return {"cityCode": city.city_code, "countryCode": city.country_code}
    return {"cityCode": code, "countryCode": "DE" if code == "FRA" else "MA"}


def _flight_offer_json(offer: world.FlightOfferData, adults: int, currency: str) -> dict[str, Any]:
    itineraries = [_itinerary_json(offer.outbound)]
    if offer.inbound is not None:
        itineraries.append(_itinerary_json(offer.inbound))
    per_adult = round(offer.total / adults, 2)
    return {
        "type": "flight-offer", "id": offer.id, "source": "GDS",
        "instantTicketingRequired": False, "nonHomogeneous": False,
        "oneWay": offer.inbound is None, "lastTicketingDate": offer.last_ticketing.isoformat(),
        "numberOfBookableSeats": offer.seats, "itineraries": itineraries,
        "price": {"currency": currency, "total": f"{offer.total:.2f}", "base": f"{offer.base:.2f}",
                  "fees": [{"amount": "0.00", "type": "SUPPLIER"}, {"amount": "0.00", "type": "TICKETING"}],
                  "grandTotal": f"{offer.total:.2f}"},
        "pricingOptions": {"fareType": ["PUBLISHED"], "includedCheckedBagsOnly": False},
        "validatingAirlineCodes": [offer.carrier],
        "travelerPricings": [
            {"travelerId": str(n), "fareOption": "STANDARD", "travelerType": "ADULT",
             "price": {"currency": currency, "total": f"{per_adult:.2f}", "base": f"{per_adult * 0.78:.2f}"}}
            for n in range(1, adults + 1)
        ],
    }  # fmt: skip


def _itinerary_json(itinerary: world.Itinerary) -> dict[str, Any]:
    segments = []
    for n, s in enumerate(itinerary.segments, 1):
        segments.append({
            "departure": {"iataCode": s.origin, "at": s.departs.isoformat()},
            "arrival": {"iataCode": s.destination, "at": s.arrives.isoformat()},
            "carrierCode": s.carrier, "number": s.number, "aircraft": {"code": s.aircraft},
            "operating": {"carrierCode": s.carrier}, "duration": world.iso_minutes(s.minutes),
            "id": str(n), "numberOfStops": 0, "blacklistedInEU": False,
        })  # fmt: skip
    return {"duration": world.iso_minutes(itinerary.minutes), "segments": segments}


@route("GET", r"/amadeus/v1/reference-data/locations/hotels/by-city")
def _hotels_by_city(server: ProviderServer, request: _Request, _: re.Match[str]) -> Answer:
    _authorized(server, request)
    code = (request.arg("cityCode") or "").upper()
    if not re.fullmatch(r"[A-Z]{3}", code):
        raise _amadeus_error(
            400, 477, "INVALID FORMAT", "cityCode must be a 3-letter IATA code", "cityCode"
        )
    city = world.city_of_code(code)
    if city is None:
        raise _amadeus_error(
            400, 895, "NOTHING FOUND FOR REQUESTED CITY", "Nothing found for the requested city"
        )
    data = []
    for hotel in city.hotels:
        lat, lon = city.latitude + hotel.offset[0], city.longitude + hotel.offset[1]
        km = world.distance_km(city.latitude, city.longitude, lat, lon)
        data.append({"chainCode": hotel.chain_code, "iataCode": city.city_code,
                     "dupeId": 700000000 + world.draw("dupe", hotel.hotel_id) % 99999999,
                     "name": hotel.name.upper(), "hotelId": hotel.hotel_id,
                     "geoCode": {"latitude": round(lat, 5), "longitude": round(lon, 5)},
                     "address": {"countryCode": city.country_code},
                     "distance": {"value": round(km, 2), "unit": "KM"},
                     "rating": str(hotel.stars), "lastUpdate": "2025-01-15T10:21:43"})  # fmt: skip
    return _json(
        {
            "data": data,
            "meta": {
                "count": len(data),
                "links": {"self": f"{request.origin}{request.path}?cityCode={code}"},
            },
        }
    )


def _hotel(hotel_id: str) -> tuple[world.Hotel, City] | None:
    for city in world.CITIES:
        for hotel in city.hotels:
            if hotel.hotel_id == hotel_id:
                return hotel, city
    return None


@route("GET", r"/amadeus/v3/shopping/hotel-offers")
def _hotel_offers(server: ProviderServer, request: _Request, _: re.Match[str]) -> Answer:
    _authorized(server, request)
    ids = [i for i in (request.arg("hotelIds") or "").upper().split(",") if i]
    if not ids:
        raise _amadeus_error(
            400, 32171, "MANDATORY DATA MISSING", "hotelIds is required", "hotelIds"
        )
    today = world.today()
    check_in = _date_arg(request, "checkInDate", required=False) or today
    check_out = _date_arg(request, "checkOutDate", required=False) or check_in + timedelta(days=1)
    adults = _int_arg(request, "adults", 1, 1, 9)
    currency = (request.arg("currency") or "EUR").upper()
    if check_in < today:
        raise _amadeus_error(400, 381, "INVALID DATE", "checkInDate is in the past", "checkInDate")
    if check_out <= check_in:
        raise _amadeus_error(
            400, 381, "INVALID DATE", "checkOutDate must be after checkInDate", "checkOutDate"
        )
    found = [h for h in (_hotel(i) for i in ids) if h is not None]
    if not found:
        raise _amadeus_error(
            400, 1257, "INVALID PROPERTY CODE", "No hotel found for the hotelIds given", "hotelIds"
        )
    data = []
    for hotel, city in found:
        offer = world.hotel_offer(hotel, city, check_in, check_out, adults)
        if not offer.available:
            continue
        lat, lon = city.latitude + hotel.offset[0], city.longitude + hotel.offset[1]
        offer_link = f"{request.origin}/amadeus/v3/shopping/hotel-offers/{offer.id}"
        cancellations = (
            [{"deadline": f"{offer.refundable_until.isoformat()}T23:59:00", "amount": "0.00"}]
            if offer.refundable_until else [{"type": "FULL_STAY", "description": {"text": "NON-REFUNDABLE RATE"}}]
        )  # fmt: skip
        data.append({
            "type": "hotel-offers",
            "hotel": {"type": "hotel", "hotelId": hotel.hotel_id, "chainCode": hotel.chain_code,
                      "name": hotel.name.upper(), "cityCode": city.city_code,
                      "latitude": round(lat, 5), "longitude": round(lon, 5)},
            "available": True,
            "offers": [{
                "id": offer.id, "checkInDate": check_in.isoformat(), "checkOutDate": check_out.isoformat(),
                "rateCode": "RAC",
                "room": {"type": offer.room_type,
                         "typeEstimated": {"category": offer.room_category, "beds": 1 if offer.bed_type != "TWIN" else 2,
                                           "bedType": offer.bed_type},
                         "description": {"text": f"{offer.room_category.replace('_', ' ').title()}, "
                                                 f"{offer.bed_type.lower()} bed, free wifi", "lang": "EN"}},
                "guests": {"adults": adults},
                "price": {"currency": currency, "base": f"{offer.total * 0.9:.2f}", "total": f"{offer.total:.2f}",
                          "variations": {"average": {"base": f"{offer.total * 0.9 / offer.nights:.2f}"}}},
                "policies": {"cancellations": cancellations, "paymentType": "deposit"},
                "self": offer_link,
            }],
            "self": f"{request.origin}{request.path}?hotelIds={hotel.hotel_id}",
        })  # fmt: skip
    return _json({"data": data})


# --------------------------------------------------------------------------- Open-Meteo


def _meteo_error(reason: str) -> ApiError:
    return ApiError(400, {"error": True, "reason": reason})


@route("GET", r"/geocoding/v1/search")
def _geocode(server: ProviderServer, request: _Request, _: re.Match[str]) -> Answer:
    name = world.fold(request.arg("name") or "")
    count_text = request.arg("count") or "10"
    if not count_text.isdigit() or not 1 <= int(count_text) <= 100:
        raise _meteo_error("Parameter 'count' must be between 1 and 100")
    started = time.perf_counter()
    matches = [c for c in world.CITIES if len(name) >= 2 and world.fold(c.name).startswith(name)]
    body: dict[str, Any] = {}
    if matches:
        body["results"] = [
            {"id": c.geoname_id, "name": c.name, "latitude": c.latitude, "longitude": c.longitude,
             "elevation": c.elevation, "feature_code": "PPLC" if c.slug not in ("porto", "new-york", "barcelona", "marrakesh") else "PPLA",
             "country_code": c.country_code, "timezone": c.timezone, "population": c.population,
             "country": c.country, "admin1": c.admin1}
            for c in matches[: int(count_text)]
        ]  # fmt: skip
    body["generationtime_ms"] = round((time.perf_counter() - started) * 1000, 4)
    return _json(body)


@route("GET", r"/open-meteo/v1/forecast")
def _forecast(server: ProviderServer, request: _Request, _: re.Match[str]) -> Answer:
    try:
        lat, lon = float(request.arg("latitude") or "nan"), float(request.arg("longitude") or "nan")
    except ValueError:
        raise _meteo_error("Parameter 'latitude' and 'longitude' must be numbers") from None
    if not (-90 <= lat <= 90 and -180 <= lon <= 180):
        raise _meteo_error(
            "Latitude must be in range of -90 to 90°. Longitude must be in range of -180 to 180°."
        )
    daily = [v for v in (request.arg("daily") or "").split(",") if v]
    for variable in daily:
        if variable not in _DAILY:
            raise _meteo_error(
                f"Cannot initialize WeatherVariable from invalid String value {variable} for key daily"
            )
    start, end = _forecast_range(request)
    city = world.nearest_city(lat, lon)
    body: dict[str, Any] = {
        "latitude": round(lat, 2), "longitude": round(lon, 2), "generationtime_ms": 0.0521,
        "utc_offset_seconds": world.utc_offset_seconds(city, start), "timezone": city.timezone,
        "timezone_abbreviation": world.tz_abbreviation(city, start), "elevation": city.elevation,
    }  # fmt: skip
    if daily:
        days = [
            world.weather(city, start + timedelta(days=n)) for n in range((end - start).days + 1)
        ]
        values = {"weather_code": [d.code for d in days], "temperature_2m_max": [d.high for d in days],
                  "temperature_2m_min": [d.low for d in days],
                  "precipitation_probability_max": [d.rain_chance for d in days],
                  "precipitation_sum": [d.rain_mm for d in days],
                  "wind_speed_10m_max": [d.wind_kmh for d in days]}  # fmt: skip
        body["daily_units"] = {"time": "iso8601", **{v: _UNITS[v] for v in daily}}
        body["daily"] = {"time": [d.day.isoformat() for d in days], **{v: values[v] for v in daily}}
    return _json(body)


def _forecast_range(request: _Request) -> tuple[date, date]:
    today = world.today()
    low, high = (
        today - timedelta(days=FORECAST_PAST_DAYS),
        today + timedelta(days=FORECAST_AHEAD_DAYS),
    )
    given = {name: request.arg(name) for name in ("start_date", "end_date")}
    if any(given.values()):
        if not all(given.values()):
            raise _meteo_error("Parameter 'start_date' and 'end_date' must be set together")
        parsed = {}
        for name, text in given.items():
            try:
                parsed[name] = date.fromisoformat(text or "")
            except ValueError:
                raise _meteo_error(f"Invalid date format for parameter '{name}'") from None
            if not low <= parsed[name] <= high:
                raise _meteo_error(
                    f"Parameter '{name}' is out of allowed range from {low} to {high}"
                )
        if parsed["end_date"] < parsed["start_date"]:
            raise _meteo_error("End-date must be larger or equals than start-date")
        return parsed["start_date"], parsed["end_date"]
    days_text = request.arg("forecast_days") or "7"
    if not days_text.isdigit() or not 0 <= int(days_text) <= 16:
        raise _meteo_error("Forecast days is invalid. Allowed range 0 to 16.")
    return today, today + timedelta(days=max(int(days_text), 1) - 1)


# --------------------------------------------------------------------------- the search API


def _search_error(status: int, code: str, message: str) -> ApiError:
    return ApiError(status, {"error": {"code": code, "message": message}})


def _count(request: _Request) -> int:
    text = request.arg("count") or "5"
    if not text.isdigit() or not 1 <= int(text) <= 20:
        raise _search_error(400, "bad_request", "count must be a number from 1 to 20")
    return int(text)


@dataclass(frozen=True)
class _Document:
    title: str
    path: str
    text: str
    snippet: str


def _documents() -> list[_Document]:
    found = []
    for city in world.CITIES:
        names = ", ".join(a.name for a in city.attractions)
        found.append(_Document(f"{city.name} travel guide", f"/guides/{city.slug}",
                               f"{city.name} {city.country} {city.intro} {names} travel guide things to do",
                               city.intro))  # fmt: skip
        for a in city.attractions:
            found.append(_Document(f"{a.name}, {city.name}", f"/guides/{city.slug}/{a.slug}",
                                   f"{a.name} {city.name} {city.country} {a.category} {a.description} attraction",
                                   a.description))  # fmt: skip
    return found


_DOCUMENTS = _documents()
_WORD = re.compile(r"[a-z0-9]+")


def _words(text: str) -> list[str]:
    return [w for w in _WORD.findall(world.fold(text)) if len(w) > 1 or w.isdigit()]


@route("GET", r"/search/v1/search")
def _search(server: ProviderServer, request: _Request, _: re.Match[str]) -> Answer:
    query = (request.arg("q") or "").strip()
    if not query:
        raise _search_error(400, "bad_request", "q is required")
    count = _count(request)
    words = set(_words(query)) - {"in", "the", "of", "to", "and", "what", "best", "for"}
    scored = []
    for n, doc in enumerate(_DOCUMENTS):
        title, text = set(_words(doc.title)), _words(doc.text)
        score = sum(3 * (w in title) + text.count(w) for w in words)
        if score:
            scored.append((-score, n, doc))
    scored.sort()
    results = [{"title": d.title, "url": f"{request.origin}{d.path}", "snippet": d.snippet,
                "site": "guides", "published": "2025-01-15"} for _, _, d in scored[:count]]  # fmt: skip
    return _json({"query": query, "total": len(scored), "results": results})


@route("GET", r"/search/v1/attractions")
def _attractions(server: ProviderServer, request: _Request, _: re.Match[str]) -> Answer:
    name = request.arg("city") or ""
    if not name.strip():
        raise _search_error(400, "bad_request", "city is required")
    count = _count(request)
    city = world.city_named(name)
    if city is None:
        raise _search_error(404, "city_not_found", f"no attractions known for {name!r}")
    ranked = sorted(city.attractions, key=lambda a: (-a.rating, a.name))[:count]
    return _json({"city": city.name, "country": city.country, "attractions": [
        {"id": f"{city.slug}/{a.slug}", "name": a.name, "category": a.category, "description": a.description,
         "rating": a.rating, "free": a.free,
         "latitude": round(city.latitude + world.draw("lat", a.slug) % 400 / 10000 - 0.02, 5),
         "longitude": round(city.longitude + world.draw("lon", a.slug) % 400 / 10000 - 0.02, 5),
         "url": f"{request.origin}/guides/{city.slug}/{a.slug}"}
        for a in ranked
    ]})  # fmt: skip


# --------------------------------------------------------------------------- the guide site


def _page(title: str, body: str, *, json_ld: Any = None, head: str = "") -> str:
    ld = ""
    if json_ld is not None:
        ld = (
            f'<script type="application/ld+json">{json.dumps(json_ld, ensure_ascii=False)}</script>'
        )
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title>"
        '<meta name="description" content="Travel guides for the Perennial travel planner">'
        f"{ld}{head}<style>body{{font-family:sans-serif;max-width:50em;margin:auto}}</style></head>"
        '<body><nav><a href="/">Home</a> · <a href="/guides/">Guides</a> · '
        '<a href="/private/admin">Admin</a></nav>'
        f"<main>{body}</main>"
        "<script>window.analytics = {track: function () {}};</script>"
        "<footer><p>Guides of the local provider server: made-up prose about real places.</p>"
        "</footer></body></html>"
    )


@route("GET", r"/robots\.txt")
def _robots(server: ProviderServer, request: _Request, _: re.Match[str]) -> Answer:
    return Answer(200, ROBOTS_TXT.encode(), "text/plain; charset=utf-8")


@route("GET", r"/(?:guides/)?")
def _index(server: ProviderServer, request: _Request, _: re.Match[str]) -> Answer:
    items = "".join(
        f'<li><a href="/guides/{c.slug}">{html.escape(c.name)}</a>, {html.escape(c.country)}</li>'
        for c in world.CITIES
    )
    return _html(_page("Travel guides", f"<h1>Travel guides</h1><ul>{items}</ul>"))


@route("GET", r"/guides/(?P<city>[a-z-]+)")
def _city_guide(server: ProviderServer, request: _Request, match: re.Match[str]) -> Answer:
    city = world.city_named(match["city"])
    if city is None:
        return _html(_page("Not found", "<p>No guide for that city.</p>"), 404)
    month_names = ("January", "February", "March", "April", "May", "June", "July", "August",
                   "September", "October", "November", "December")  # fmt: skip
    best = [month_names[m] for m in range(12) if 18 <= city.highs[m] <= 28 and city.rain[m] <= 45]
    when = ", ".join(best) if best else "any month, with the right clothes"
    sights = "".join(
        f'<li><a href="/guides/{city.slug}/{a.slug}">{html.escape(a.name)}</a>: {html.escape(a.description)}</li>'
        for a in city.attractions
    )
    ld = {"@context": "https://schema.org", "@type": "TouristDestination", "name": city.name,
          "description": city.intro,
          "geo": {"@type": "GeoCoordinates", "latitude": city.latitude, "longitude": city.longitude},
          "containedInPlace": {"@type": "Country", "name": city.country},
          "includesAttraction": [{"@type": "TouristAttraction", "name": a.name,
                                  "url": f"{request.origin}/guides/{city.slug}/{a.slug}"} for a in city.attractions]}  # fmt: skip
    body = (f"<article><h1>{html.escape(city.name)} travel guide</h1><p>{html.escape(city.intro)}</p>"
            f"<h2>When to go</h2><p>Best months: {html.escape(when)}.</p>"
            f"<h2>Things to do</h2><ul>{sights}</ul></article>")  # fmt: skip
    return _html(_page(f"{city.name} travel guide", body, json_ld=ld))


@route("GET", r"/guides/(?P<city>[a-z-]+)/(?P<slug>[a-z0-9-]+)")
def _attraction_page(server: ProviderServer, request: _Request, match: re.Match[str]) -> Answer:
    city = world.city_named(match["city"])
    found = [a for a in (city.attractions if city else ()) if a.slug == match["slug"]]
    if city is None or not found:
        return _html(_page("Not found", "<p>No such attraction.</p>"), 404)
    a = found[0]
    ld = {"@context": "https://schema.org", "@type": "TouristAttraction", "name": a.name,
          "description": a.description, "isAccessibleForFree": a.free,
          "address": {"@type": "PostalAddress", "addressLocality": city.name, "addressCountry": city.country_code},
          "aggregateRating": {"@type": "AggregateRating", "ratingValue": a.rating, "bestRating": 5,
                              "ratingCount": 1000 + world.draw("votes", a.slug) % 40000},
          "url": f"{request.origin}/guides/{city.slug}/{a.slug}"}  # fmt: skip
    price = "Free to visit." if a.free else "Tickets needed; book ahead in high season."
    body = (f"<article><h1>{html.escape(a.name)}</h1><p>{html.escape(a.description)}</p>"
            f"<p>{price} Rated {a.rating} out of 5 by visitors.</p>"
            f'<p>Back to the <a href="/guides/{city.slug}">{html.escape(city.name)} guide</a>.</p></article>')  # fmt: skip
    return _html(_page(f"{a.name}, {city.name}", body, json_ld=ld))


@route("GET", r"/private/.*")
def _private(server: ProviderServer, request: _Request, _: re.Match[str]) -> Answer:
    return _html(_page("Private", "<p>robots.txt asks crawlers to stay out of here.</p>"))


# --------------------------------------------------------------------------- pages that misbehave


def _lab_page(name: str, extra: str = "") -> str:
    ld = {"@context": "https://schema.org", "@type": "WebPage", "name": f"Lab page {name}"}
    body = (f"<h1>Lab page {html.escape(name)}</h1><p>A page of the local provider server's "
            f'lab, for the scraper\'s tests.</p>{extra}<p><a href="/lab/page/next">Next</a></p>')  # fmt: skip
    return _page(f"Lab page {name}", body, json_ld=ld)


@route("GET", r"/lab/page/(?P<name>[A-Za-z0-9_-]+)")
def _lab(server: ProviderServer, request: _Request, match: re.Match[str]) -> Answer:
    return _html(_lab_page(match["name"]))


@route("GET", r"/lab/blocked/.*")
def _lab_blocked(server: ProviderServer, request: _Request, _: re.Match[str]) -> Answer:
    return _html(_lab_page("blocked", "<p>robots.txt disallows this page.</p>"))


@route("GET", r"/lab/slow")
def _slow(server: ProviderServer, request: _Request, _: re.Match[str]) -> Answer:
    time.sleep(min(float(request.arg("seconds") or "5"), 30.0))
    return _html(_lab_page("slow"))


@route("GET", r"/lab/flaky")
def _flaky(server: ProviderServer, request: _Request, _: re.Match[str]) -> Answer:
    key = request.arg("key") or "default"
    failures = int(request.arg("failures") or "2")
    if server.flaky_count(key) <= failures:
        return _html(_page("Service unavailable", "<p>Try again later.</p>"), 503)
    return _html(_lab_page(f"flaky {key}"))


@route("GET", r"/lab/status/(?P<code>[1-5][0-9][0-9])")
def _status(server: ProviderServer, request: _Request, match: re.Match[str]) -> Answer:
    code = int(match["code"])
    return _html(_page(f"Status {code}", f"<p>This page answers {code}.</p>"), code)


@route("GET", r"/lab/big")
def _big(server: ProviderServer, request: _Request, _: re.Match[str]) -> Answer:
    size = min(int(request.arg("kb") or "1024"), 20 * 1024) * 1024
    filler = "<p>" + "All work and no play makes a very long page. " * 20 + "</p>"
    body = _lab_page("big", filler * (size // len(filler) + 1)).encode()[:size]
    return Answer(200, body, "text/html; charset=utf-8", chunked=request.arg("chunked") == "1")


@route("GET", r"/lab/redirect")
def _redirect(server: ProviderServer, request: _Request, _: re.Match[str]) -> Answer:
    status = int(request.arg("status") or "302")
    target = request.arg("to") or "/lab/page/redirected"
    return Answer(status, b"", "text/html", headers=(("Location", target),))


@route("GET", r"/lab/chain")
def _chain(server: ProviderServer, request: _Request, _: re.Match[str]) -> Answer:
    hops = int(request.arg("hops") or "3")
    if hops <= 0:
        return _html(_lab_page("end of chain"))
    return Answer(302, b"", "text/html", headers=(("Location", f"/lab/chain?hops={hops - 1}"),))


@route("GET", r"/lab/down/.*")
@route("POST", r"/lab/down/.*")
def _down(server: ProviderServer, request: _Request, _: re.Match[str]) -> Answer:
    """An API in an outage (a base URL of `/lab/down` makes every call answer 503)."""
    body = {
        "errors": [
            {
                "status": 503,
                "code": 38189,
                "title": "Internal error",
                "detail": "service unavailable",
            }
        ]
    }
    return Answer(
        503, json.dumps(body).encode(), "application/json", headers=(("Retry-After", "1"),)
    )


@route("GET", r"/lab/binary")
def _binary(server: ProviderServer, request: _Request, _: re.Match[str]) -> Answer:
    return Answer(200, bytes(range(256)) * 16, "application/octet-stream")


# --------------------------------------------------------------------------- the command


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m examples.travel.provider_server",
        description="The travel providers' APIs (Amadeus, Open-Meteo, search) and guide pages, "
        "served locally with deterministic data.",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8090)
    args = parser.parse_args(argv)
    server = ProviderServer(host=args.host, port=args.port).start()
    print(f"travel providers at {server.url}; point a worker at them with:", flush=True)
    for name, value in sorted(server.env().items()):
        print(f"  export {name}={value}", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        server.close()


if __name__ == "__main__":
    main()
