"""The `scraper` agent: fetches and reads web pages for the other agents.

    page = Page.model_validate((await perennial.agent("scraper", "s1").call("fetch",
                               {"url": "https://example.org/"})).result)
    # or, from an LLM agent: ask_agent("scraper", "s1", "read https://example.org/ please")

Callers use the callable method `fetch(url) -> Page` (url, final_url, status, title, text,
links, JSON-LD, fetched_at, from_cache, ...) or send a message with a URL in it, which is
answered with the page as readable text. Each fetch is a turn:

1. A page fetched within `cache_ttl` comes from the agent's state (`from_cache`).
2. Politeness: at most `max_requests_per_domain` requests to one host per
   `politeness_interval`; a request beyond that waits on a durable timer (never a sleep in an
   activity) until the oldest one leaves the window. The agent handles one turn at a time, so
   other requests queue meanwhile.
3. The fetch itself is the activity tool `fetch_page` (httpx): the SSRF guard
   (`examples.travel.ssrf`) before the request and at every redirect hop (followed by hand,
   connecting to the address that was checked), robots.txt (cached per origin on the worker),
   a timeout per hop, a cap on the response size, readable text and JSON-LD extracted with
   selectolax (Lexbor's HTML5 parser).
4. 5xx, 429, timeouts and connection errors fail the attempt and Temporal retries it with
   backoff (`FETCH_RETRIES`); the rest fails at once with a typed error, which the turn raises
   (callers see `TurnFailed` with `error_type` naming it): `PageNotFound` (404, 410),
   `HttpStatusError` (other 4xx), `PageTooLarge`, `RobotsDisallowed`, `TooManyRedirects`,
   `UnsupportedContent`, the guard's `SchemeNotAllowed`, `InvalidUrl`, `HostNotFound` and
   `AddressBlocked`, and `FetchUnavailable` once the retries ran out.

The worker's application settings tune the fetching (`PERENNIAL_SETTING_<NAME>`):
`travel_scraper_allow` (the guard's allowlist, `host[:port],...`), `travel_scraper_timeout_seconds`
(10), `travel_scraper_max_bytes` (1 MiB), `travel_scraper_max_redirects` (5),
`travel_scraper_user_agent`, `travel_scraper_robots_ttl_seconds` (3600).
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections import OrderedDict
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, ClassVar
from urllib.parse import urljoin, urlsplit, urlunsplit

from pydantic import BaseModel, Field, JsonValue
from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ApplicationError

from perennial import (
    AgentWorkflow,
    Message,
    ToolContext,
    ToolFailed,
    activity_tool,
    agent_type,
    callable_method,
    run_tool,
)

with workflow.unsafe.imports_passed_through():  # loaded once, not per agent by the sandbox
    from urllib.robotparser import RobotFileParser

    import httpx
    from selectolax.lexbor import LexborHTMLParser, LexborNode

    from examples.travel import ssrf
    from examples.travel.ssrf import (
        AddressBlocked,
        HostNotFound,
        InvalidUrl,
        SchemeNotAllowed,
        SsrfGuard,
        Target,
        UrlRefused,
    )

#: Application settings (their names in `Settings.app_settings`).
SCRAPER_ALLOW = "travel_scraper_allow"
SCRAPER_TIMEOUT = "travel_scraper_timeout_seconds"
SCRAPER_MAX_BYTES = "travel_scraper_max_bytes"
SCRAPER_MAX_REDIRECTS = "travel_scraper_max_redirects"
SCRAPER_USER_AGENT = "travel_scraper_user_agent"
SCRAPER_ROBOTS_TTL = "travel_scraper_robots_ttl_seconds"

#: What a page keeps (it travels through history and the agent's cache).
MAX_TEXT_CHARS = 8_000
MAX_LINKS = 40
MAX_STRUCTURED_CHARS = 8_000
#: robots.txt files are read up to this size (RFC 9309 asks for at least 500 KiB).
ROBOTS_MAX_BYTES = 512 * 1024

FETCH_RETRIES = RetryPolicy(
    initial_interval=timedelta(milliseconds=500),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=10),
    maximum_attempts=3,
)


# --------------------------------------------------------------------------- errors


class ScrapeError(Exception):
    """The page could not be fetched (see the subclasses); nothing was cached."""


class PageNotFound(ScrapeError):
    """The server answered 404 or 410."""


class HttpStatusError(ScrapeError):
    """The server refused the request with another 4xx status."""


class PageTooLarge(ScrapeError):
    """The response is larger than the scraper's size cap."""


class RobotsDisallowed(ScrapeError):
    """The site's robots.txt does not allow the scraper to fetch this URL."""


class TooManyRedirects(ScrapeError):
    """The redirects went on past the scraper's limit."""


class UnsupportedContent(ScrapeError):
    """Not a page the scraper reads (HTML, text or JSON): an image, a PDF, a binary."""


class FetchUnavailable(ScrapeError):
    """The server kept failing (5xx, 429, timeouts, connection errors) through every retry."""


class NoUrlInMessage(ScrapeError):
    """A message to the scraper names no URL to fetch."""


#: The refusals and failures a fetch reports, by the type name they travel under.
FETCH_ERRORS: dict[str, type[Exception]] = {
    cls.__name__: cls
    for cls in (
        PageNotFound,
        HttpStatusError,
        PageTooLarge,
        RobotsDisallowed,
        TooManyRedirects,
        UnsupportedContent,
        FetchUnavailable,
        AddressBlocked,
        HostNotFound,
        InvalidUrl,
        SchemeNotAllowed,
    )  # fmt: skip
}
#: Failures worth another attempt, and the type each is reported as once retries ran out.
_RETRYABLE = ("FetchTimedOut", "UpstreamUnavailable")


# --------------------------------------------------------------------------- the page


class Link(BaseModel):
    url: str
    text: str = ""


class Page(BaseModel):
    """A fetched page, read: what the scraper returns and caches."""

    #: The URL asked for, and the one the page came from after redirects.
    url: str
    final_url: str
    status: int
    content_type: str = ""
    title: str = ""
    description: str = ""
    #: The readable text (headings, paragraphs, list items), at most `MAX_TEXT_CHARS`.
    text: str = ""
    truncated: bool = False
    links: list[Link] = []
    #: JSON-LD objects (schema.org data) found in the page.
    structured: list[dict[str, JsonValue]] = []
    redirects: int = 0
    fetched_at: datetime
    from_cache: bool = False
    #: How long the request waited for a politeness slot on its host.
    waited_seconds: float = 0.0


# --------------------------------------------------------------------------- fetching (activity)


@dataclass(frozen=True)
class FetchConfig:
    """The fetching knobs, from the worker's application settings."""

    allow: ssrf.Allowlist
    timeout: float
    max_bytes: int
    max_redirects: int
    user_agent: str
    robots_ttl: float

    @classmethod
    def from_settings(cls, settings: Any) -> FetchConfig:
        def get(name: str, default: str) -> str:
            return settings.app_setting(name, default) or default

        try:
            return cls(
                allow=ssrf.Allowlist.parse(get(SCRAPER_ALLOW, "")),
                timeout=float(get(SCRAPER_TIMEOUT, "10")),
                max_bytes=int(get(SCRAPER_MAX_BYTES, str(1024 * 1024))),
                max_redirects=int(get(SCRAPER_MAX_REDIRECTS, "5")),
                user_agent=get(SCRAPER_USER_AGENT, "perennial-travel-scraper/1.0"),
                robots_ttl=float(get(SCRAPER_ROBOTS_TTL, "3600")),
            )
        except ValueError as err:
            raise ApplicationError(f"the scraper's settings are wrong: {err}",
                                   type="ScraperMisconfigured", non_retryable=True) from None  # fmt: skip

    @property
    def robots_agent(self) -> str:
        """The product token robots.txt rules are matched against."""
        return self.user_agent.split("/", 1)[0]


@dataclass
class _Response:
    target: Target
    status: int
    headers: httpx.Headers
    body: bytes


class _RobotsCache:
    """Parsed robots.txt files by origin, for a while (per worker process)."""

    def __init__(self, size: int = 512) -> None:
        self._rules: OrderedDict[str, tuple[RobotFileParser, float]] = OrderedDict()
        self._size = size

    def get(self, origin: str) -> RobotFileParser | None:
        found = self._rules.get(origin)
        if found is None or found[1] < time.monotonic():
            return None
        self._rules.move_to_end(origin)
        return found[0]

    def put(self, origin: str, rules: RobotFileParser, ttl: float) -> None:
        self._rules[origin] = (rules, time.monotonic() + ttl)
        self._rules.move_to_end(origin)
        while len(self._rules) > self._size:
            self._rules.popitem(last=False)


_ROBOTS = _RobotsCache()


def _failure(error: type[Exception] | str, message: str, *, retry: bool = False,
             delay: timedelta | None = None) -> ApplicationError:  # fmt: skip
    name = error if isinstance(error, str) else error.__name__
    return ApplicationError(message, type=name, non_retryable=not retry, next_retry_delay=delay)


class Fetcher:
    """One fetch: the guard at every hop, robots.txt, the size cap, the timeout."""

    def __init__(self, config: FetchConfig, client: httpx.AsyncClient, guard: SsrfGuard):
        self.config, self._client, self._guard = config, client, guard

    async def page(self, url: str) -> Page:
        current, redirects = url, 0
        while True:
            target = await self._guard.check(current)
            if not await self._robots_allow(target):
                raise _failure(
                    RobotsDisallowed, f"robots.txt of {_origin(target)} disallows {current}"
                )
            response = await self._send(target, self.config.max_bytes)
            location = response.headers.get("location")
            if 300 <= response.status < 400 and location:
                redirects += 1
                if redirects > self.config.max_redirects:
                    raise _failure(
                        TooManyRedirects,
                        f"more than {self.config.max_redirects} redirects from {url}",
                    )
                current = urljoin(current, location)
                continue
            _check_status(response, current)
            return read_page(
                url, current, response.status, response.headers, response.body, redirects
            )

    async def _send(self, target: Target, cap: int) -> _Response:
        """One request to the checked address of `target` (the Host header and TLS name are
        the URL's), its body read up to `cap` bytes."""
        request = self._client.build_request(
            "GET", target.pinned_url,
            headers={"Host": target.host_header, "User-Agent": self.config.user_agent,
                     "Accept": "text/html,application/xhtml+xml,text/plain;q=0.9,*/*;q=0.5"},
            extensions={"sni_hostname": target.host} if target.scheme == "https" else {},
        )  # fmt: skip
        try:
            async with asyncio.timeout(self.config.timeout):
                response = await self._client.send(request, stream=True)
                try:
                    body = await _read_capped(response, cap, target.url)
                finally:
                    await response.aclose()
        except TimeoutError:
            raise _failure("FetchTimedOut", f"{target.url} did not answer within {self.config.timeout:g} s",
                           retry=True) from None  # fmt: skip
        except httpx.TimeoutException:
            raise _failure("FetchTimedOut", f"{target.url} timed out", retry=True) from None
        except httpx.HTTPError as err:
            raise _failure("UpstreamUnavailable", f"{target.url}: {type(err).__name__}: {err}",
                           retry=True) from None  # fmt: skip
        return _Response(target, response.status_code, response.headers, body)

    async def _robots_allow(self, target: Target) -> bool:
        origin = _origin(target)
        rules = _ROBOTS.get(origin)
        if rules is None:
            rules = await self._robots(target)
            _ROBOTS.put(origin, rules, self.config.robots_ttl)
        return rules.can_fetch(self.config.robots_agent, target.url)

    async def _robots(self, page: Target) -> RobotFileParser:
        """The origin's robots.txt (RFC 9309): 4xx means no rules; 5xx, a timeout or a
        refused redirect fail the attempt (retried), since the rules are unknown."""
        rules = RobotFileParser()
        current = f"{_origin(page)}/robots.txt"
        for _ in range(5):
            target = await self._guard.check(current)
            response = await self._send(target, ROBOTS_MAX_BYTES)
            location = response.headers.get("location")
            if 300 <= response.status < 400 and location:
                current = urljoin(current, location)
                continue
            if response.status >= 500 or response.status == 429:
                raise _failure(
                    "UpstreamUnavailable", f"{current} answered {response.status}", retry=True
                )
            if response.status >= 400:
                rules.allow_all = True
            else:
                rules.parse(response.body.decode("utf-8", "replace").splitlines())
            return rules
        rules.allow_all = True  # RFC 9309: past five redirects, treat as unavailable
        return rules


async def _read_capped(response: httpx.Response, cap: int, url: str) -> bytes:
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > cap:
        raise _failure(PageTooLarge, f"{url} is {int(declared)} bytes (the cap is {cap})")
    body = bytearray()
    async for chunk in response.aiter_bytes():
        body += chunk
        if len(body) > cap:
            raise _failure(PageTooLarge, f"{url} is larger than the cap of {cap} bytes")
    return bytes(body)


def _check_status(response: _Response, url: str) -> None:
    status = response.status
    if status in (404, 410):
        raise _failure(PageNotFound, f"{url} answered {status}: not found")
    if status == 429 or status >= 500:
        delay = response.headers.get("retry-after", "")
        wait = timedelta(seconds=min(int(delay), 60)) if delay.isdigit() else None
        raise _failure("UpstreamUnavailable", f"{url} answered {status}", retry=True, delay=wait)
    if status >= 400:
        raise _failure(HttpStatusError, f"{url} answered {status}")


def _origin(target: Target) -> str:
    return f"{target.scheme}://{target.host_header}"


@activity_tool(
    activity_name="travel.fetch_page",
    start_to_close_timeout=timedelta(seconds=90),
    retry_policy=FETCH_RETRIES,
)
async def fetch_page(url: str, ctx: ToolContext) -> Page:
    """Fetch a web page and read it: title, readable text, links and JSON-LD data.

    Args:
        url: The page's http or https URL.
    """
    config = FetchConfig.from_settings(ctx.settings)
    guard = SsrfGuard(allow=config.allow)
    # A client per fetch: connections are to checked addresses, never pooled across hosts,
    # and never through a proxy from the environment (which would bypass the guard).
    async with httpx.AsyncClient(follow_redirects=False, trust_env=False,
                                 timeout=httpx.Timeout(config.timeout)) as client:  # fmt: skip
        try:
            return await Fetcher(config, client, guard).page(url)
        except UrlRefused as err:
            raise _failure(type(err), str(err)) from None


# --------------------------------------------------------------------------- reading a page

_DROPPED = ("script", "style", "noscript", "template", "svg", "nav", "header", "footer", "aside",
            "form", "iframe", "button")  # fmt: skip
_BLOCKS = "h1, h2, h3, h4, h5, h6, p, li, dt, dd, blockquote, pre, td, th, figcaption"
_SPACES = re.compile(r"\s+")
_TEXT_TYPES = ("text/html", "application/xhtml+xml", "text/plain", "application/json",
               "application/ld+json")  # fmt: skip


def read_page(url: str, final_url: str, status: int, headers: httpx.Headers, body: bytes,
              redirects: int) -> Page:  # fmt: skip
    """The page in a response: its text, links and JSON-LD (HTML), or its text (text, JSON)."""
    content_type = headers.get("content-type", "").split(";")[0].strip().lower() or "text/html"
    if content_type not in _TEXT_TYPES:
        raise _failure(
            UnsupportedContent, f"{final_url} is {content_type}, not a page the scraper reads"
        )
    text = body.decode(_charset(headers) or "utf-8", "replace")
    page = Page(url=url, final_url=final_url, status=status, content_type=content_type,
                redirects=redirects, fetched_at=datetime.now(UTC))  # fmt: skip
    if content_type in ("text/html", "application/xhtml+xml"):
        return _read_html(page, text)
    return _with_text(page, text)


def _charset(headers: httpx.Headers) -> str | None:
    match = re.search(r"charset=([\w-]+)", headers.get("content-type", ""), re.I)
    if match is None:
        return None
    try:
        "".encode(match.group(1))
    except LookupError:
        return None
    return match.group(1)


def _read_html(page: Page, markup: str) -> Page:
    tree = LexborHTMLParser(markup)
    structured = _json_ld(tree)
    title = _first_text(tree, "title") or _meta(tree, "og:title") or _first_text(tree, "h1")
    description = _meta(tree, "description") or _meta(tree, "og:description")
    links = _links(tree, page.final_url)
    tree.strip_tags(list(_DROPPED))
    root = tree.css_first("main") or tree.css_first("article") or tree.body or tree.root
    page = page.model_copy(update={"title": title[:300], "description": description[:500],
                                   "links": links, "structured": structured})  # fmt: skip
    return _with_text(page, _readable(root) if root is not None else "")


def _with_text(page: Page, text: str) -> Page:
    cut = len(text) > MAX_TEXT_CHARS
    return page.model_copy(update={"text": text[:MAX_TEXT_CHARS], "truncated": cut})


def _first_text(tree: LexborHTMLParser, selector: str) -> str:
    node = tree.css_first(selector)
    return _SPACES.sub(" ", node.text()).strip() if node is not None else ""


def _meta(tree: LexborHTMLParser, name: str) -> str:
    node = tree.css_first(f'meta[name="{name}"], meta[property="{name}"]')
    return (node.attributes.get("content") or "").strip() if node is not None else ""


def _readable(root: LexborNode) -> str:
    """One line per innermost block (heading, paragraph, list item...), spaces collapsed."""
    lines = []
    for node in root.css(_BLOCKS):
        if len(node.css(_BLOCKS)) > 1:  # the node itself, and inner blocks that give the text
            continue
        line = _SPACES.sub(" ", node.text()).strip()
        if line:
            lines.append(line)
    if not lines:
        return _SPACES.sub(" ", root.text(separator=" ")).strip()
    return "\n".join(lines)


def _links(tree: LexborHTMLParser, base: str) -> list[Link]:
    found: dict[str, Link] = {}
    for node in tree.css("a[href]"):
        href = (node.attributes.get("href") or "").strip()
        absolute = urljoin(base, href)
        parts = urlsplit(absolute)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            continue
        clean = urlunsplit(parts._replace(fragment=""))
        if clean not in found:
            found[clean] = Link(url=clean, text=_SPACES.sub(" ", node.text()).strip()[:120])
        if len(found) >= MAX_LINKS:
            break
    return list(found.values())


def _json_ld(tree: LexborHTMLParser) -> list[dict[str, JsonValue]]:
    """The JSON-LD objects of the page (a `@graph` is flattened), up to a size budget."""
    objects: list[dict[str, JsonValue]] = []
    budget = MAX_STRUCTURED_CHARS
    for node in tree.css('script[type="application/ld+json"]'):
        try:
            data = json.loads(node.text())
        except ValueError:
            continue  # a broken block is skipped, not fatal
        items = data if isinstance(data, list) else [data]
        for item in items:
            graph = item.get("@graph") if isinstance(item, dict) else None
            for each in graph if isinstance(graph, list) else [item]:
                size = len(json.dumps(each))
                if isinstance(each, dict) and size <= budget:
                    objects.append(each)
                    budget -= size
    return objects


# --------------------------------------------------------------------------- the agent


class CachedPage(BaseModel):
    page: Page
    cached_at: datetime


class ScraperState(BaseModel):
    #: Pages fetched within the cache's TTL, by URL (without its fragment).
    cache: dict[str, CachedPage] = {}
    #: When requests went to each host, within the politeness window.
    recent: dict[str, list[datetime]] = {}
    #: Pages fetched from the web, and answered from the cache.
    fetched: int = 0
    cache_hits: int = 0


_URL_IN_TEXT = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s<>\"'`]+")


@agent_type("scraper")
class ScraperAgent(AgentWorkflow[ScraperState]):
    """Fetches pages for other agents: politely, cached, behind an SSRF guard."""

    tools = (fetch_page,)
    #: At most this many requests to one host per interval; more wait on a durable timer.
    max_requests_per_domain: ClassVar[int] = 3
    politeness_interval: ClassVar[timedelta] = timedelta(seconds=2)
    #: Pages are answered from the cache for this long.
    cache_ttl: ClassVar[timedelta] = timedelta(minutes=30)
    max_cache_entries: ClassVar[int] = 16
    max_cache_bytes: ClassVar[int] = 96_000
    #: A message's answer: the page as text, at most this long.
    reply_chars: ClassVar[int] = 3_000
    #: A cached page is not worth rolling back to: keep few versions of a large state.
    max_versions: ClassVar[int] = 3

    @callable_method
    async def fetch(self, url: Annotated[str, Field(min_length=1, max_length=2048)]) -> Page:
        """Fetch a page (or answer it from the cache) and read it.

        Args:
            url: The page's http or https URL.
        """
        key = _cache_key(url)
        cached = self._cached(key)
        if cached is not None:
            return cached
        host = _host_key(url)  # refuses a URL that is not http(s) before anything is sent
        waited = await self._polite_slot(host)
        try:
            page = await run_tool(fetch_page, {"url": url}, result_type=Page)
        except ToolFailed as failed:
            raise _typed(failed) from None
        # Counted from when the fetch was over (after it was sent), so that the requests the
        # window lets through are spaced on the wire, whatever the activity's start latency.
        self._took_slot(host)
        page = page.model_copy(update={"waited_seconds": round(waited, 3)})
        self._remember(key, page)
        self.state.fetched += 1
        return page

    async def on_message(self, message: Message) -> str:
        """A message with a URL in it: the page, as text."""
        found = _URL_IN_TEXT.search(message.text)
        if found is None:
            raise NoUrlInMessage("send a message with the URL of the page to fetch")
        page = await self.fetch(found.group(0).rstrip(".,;:!?)]}'\""))
        return describe(page, limit=self.reply_chars)

    # ------------------------------------------------------------------ cache and politeness

    def _cached(self, key: str) -> Page | None:
        entry = self.state.cache.get(key)
        if entry is None:
            return None
        if workflow.now() - entry.cached_at >= self.cache_ttl:
            del self.state.cache[key]
            return None
        self.state.cache_hits += 1
        return entry.page.model_copy(update={"from_cache": True, "waited_seconds": 0.0})

    def _remember(self, key: str, page: Page) -> None:
        now = workflow.now()
        cache = {k: v for k, v in self.state.cache.items() if now - v.cached_at < self.cache_ttl}
        cache[key] = CachedPage(page=page, cached_at=now)
        # Oldest out first, until the cache fits its entry and byte budgets.
        ordered = sorted(cache.items(), key=lambda item: item[1].cached_at)
        sizes = {k: len(v.model_dump_json()) for k, v in ordered}
        while ordered and (
            len(ordered) > self.max_cache_entries
            or sum(sizes[k] for k, _ in ordered) > self.max_cache_bytes
        ):
            ordered.pop(0)
        self.state.cache = dict(ordered)

    async def _polite_slot(self, host: str) -> float:
        """Wait (a durable timer) until a request to `host` fits the politeness window;
        returns the seconds waited."""
        started = workflow.now()
        window = self._window(host, started)
        if len(window) < self.max_requests_per_domain:
            return 0.0
        free_at = window[-self.max_requests_per_domain] + self.politeness_interval
        self.show(f"waiting until {free_at:%H:%M:%S} for a request slot on {host}")
        await workflow.sleep(free_at - started, summary=f"politeness: next request to {host}")
        return (workflow.now() - started).total_seconds()

    def _took_slot(self, host: str) -> None:
        now = workflow.now()
        self.state.recent = {h: t for h, t in self.state.recent.items() if self._window(h, now)}
        self.state.recent[host] = [*self._window(host, now), now]

    def _window(self, host: str, now: datetime) -> list[datetime]:
        return [t for t in self.state.recent.get(host, []) if now - t < self.politeness_interval]


def _cache_key(url: str) -> str:
    parts = urlsplit(url.strip())
    return urlunsplit(parts._replace(fragment=""))


def _host_key(url: str) -> str:
    scheme, host, port = ssrf.parse_url(url.strip())
    return f"{host}:{port}"


def _typed(failed: ToolFailed) -> Exception:
    """The fetch's failure as the scraper's typed error (the turn raises it)."""
    cls = FETCH_ERRORS.get(failed.error_type)
    message = str(failed).removeprefix(f"{fetch_page.name} failed: ")
    if cls is not None:
        return cls(message)
    if failed.error_type in _RETRYABLE:
        return FetchUnavailable(f"gave up after {failed.attempts or 'several'} attempts: {message}")
    return ScrapeError(f"{failed.error_type}: {message}")


def describe(page: Page, *, limit: int = 3_000) -> str:
    """A page as text for a model: where it came from, its title, text, data and links."""
    lines = [f"Source: {page.final_url} (HTTP {page.status}"
             f"{', from cache' if page.from_cache else ''}, fetched {page.fetched_at:%Y-%m-%d %H:%M} UTC)"]  # fmt: skip
    if page.title:
        lines.append(f"Title: {page.title}")
    if page.description:
        lines.append(f"Description: {page.description}")
    for item in page.structured[:3]:
        kind, name = item.get("@type"), item.get("name")
        if kind or name:
            lines.append(f"Data: {kind or 'item'} {json.dumps(name) if name else ''}".rstrip())
    head = "\n".join(lines)
    links = "\n".join(f"- {link.text or link.url}: {link.url}" for link in page.links[:8])
    room = max(limit - len(head) - len(links) - 20, 200)
    text = page.text if len(page.text) <= room else page.text[:room] + " …"
    return "\n".join(p for p in (head, text, f"Links:\n{links}" if links else "") if p)[:limit]


__all__ = [
    "FETCH_ERRORS",
    "FETCH_RETRIES",
    "SCRAPER_ALLOW",
    "SCRAPER_MAX_BYTES",
    "SCRAPER_MAX_REDIRECTS",
    "SCRAPER_ROBOTS_TTL",
    "SCRAPER_TIMEOUT",
    "SCRAPER_USER_AGENT",
    "CachedPage",
    "FetchConfig",
    "FetchUnavailable",
    "Fetcher",
    "HttpStatusError",
    "Link",
    "NoUrlInMessage",
    "Page",
    "PageNotFound",
    "PageTooLarge",
    "RobotsDisallowed",
    "ScrapeError",
    "ScraperAgent",
    "ScraperState",
    "TooManyRedirects",
    "UnsupportedContent",
    "describe",
    "fetch_page",
    "read_page",
]
