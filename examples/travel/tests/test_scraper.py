"""The scraper agent on a real worker against the local provider server's pages: a page read
and cached, politeness (the request past the limit waits on a durable timer), and each way a
fetch fails: timeouts and 5xx retried, 404 and other 4xx not, an oversized page, redirects
(followed, too many, or to a private address), robots.txt, a scheme that is not http, content
that is not a page."""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest

from examples.travel.provider_server import ProviderServer
from examples.travel.scraper import SCRAPER_TIMEOUT, Page, ScraperState
from examples.travel.tests.fixtures import APP, providers  # noqa: F401
from examples.travel.tests.provider_agents import QUICK_SCRAPER
from perennial.client import AgentHandle, Perennial, Settings, TurnFailed
from perennial.testing import eventually
from tests.support import history, unique

pytestmark = pytest.mark.usefixtures("worker")


@pytest.fixture
def settings(settings: Settings, providers: ProviderServer) -> Settings:  # noqa: F811
    """The suite's settings with the planner loaded, its providers at the local server (the
    scraper allowed to fetch it) and a one-second fetch timeout."""
    base = settings.model_copy(update={"app": APP})
    update = providers.settings_update(base)
    update["app_settings"][SCRAPER_TIMEOUT] = "1"
    return base.model_copy(update=update)


@pytest.fixture
def server(providers: ProviderServer) -> ProviderServer:  # noqa: F811
    return providers


@pytest.fixture
def scraper(perennial: Perennial) -> AgentHandle:
    return perennial.agent("scraper", unique("scraper"))


async def _fetch(agent: AgentHandle, url: str) -> Page:
    return Page.model_validate((await agent.call("fetch", {"url": url})).result)


async def _refused(agent: AgentHandle, url: str) -> TurnFailed:
    with pytest.raises(TurnFailed) as failed:
        await agent.call("fetch", {"url": url})
    return failed.value


async def _state(agent: AgentHandle) -> ScraperState:
    state = (await agent.state()).state
    assert isinstance(state, ScraperState)
    return state


async def test_a_page_is_read_then_answered_from_the_cache(
    scraper: AgentHandle, server: ProviderServer
) -> None:
    url = f"{server.url}/guides/lisbon"
    page = await _fetch(scraper, url)
    assert (page.url, page.final_url, page.status, page.from_cache) == (url, url, 200, False)
    assert page.title == "Lisbon travel guide"
    assert "Lisbon climbs seven hills above the Tagus" in page.text
    assert "Belém Tower: A sixteenth-century fortified tower" in page.text
    assert "window.analytics" not in page.text and "Home · Guides" not in page.text  # scripts, nav
    assert f"{server.url}/guides/lisbon/belem-tower" in [link.url for link in page.links]
    [destination] = page.structured
    assert destination["@type"] == "TouristDestination" and destination["name"] == "Lisbon"
    # within its TTL the page comes from the agent's state: nothing is sent again
    again = await _fetch(scraper, url + "#things-to-do")
    assert again.from_cache and again.text == page.text
    assert server.hits("/guides/lisbon") == 1 and server.hits("/robots.txt") == 1
    state = await _state(scraper)
    assert (state.fetched, state.cache_hits, list(state.cache)) == (1, 1, [url])


async def test_a_cached_page_is_fetched_again_after_its_ttl(
    perennial: Perennial, server: ProviderServer
) -> None:
    agent = perennial.agent(QUICK_SCRAPER, unique())  # the cache keeps pages for a second
    url = f"{server.url}/lab/page/ttl"
    assert not (await _fetch(agent, url)).from_cache

    async def fetched_again() -> bool:
        return not (await _fetch(agent, url)).from_cache

    await eventually(fetched_again, timeout=15)
    assert server.hits("/lab/page/ttl") == 2


async def test_requests_past_the_politeness_limit_wait_for_a_slot(
    perennial: Perennial, scraper: AgentHandle, server: ProviderServer
) -> None:
    # three requests per host per two seconds (the scraper type's defaults): the fourth waits
    urls = [f"{server.url}/lab/page/p{n}" for n in range(4)]
    pages = await asyncio.gather(*(_fetch(scraper, url) for url in urls))
    assert all(p.status == 200 for p in pages)
    sent = sorted(hit.at for hit in server.requests if hit.path.startswith("/lab/page/p"))
    assert len(sent) == 4
    assert sent[3] - sent[0] >= 2.0 - 0.01, sent  # the fourth left the window of the first
    waited = sorted(p.waited_seconds for p in pages)
    assert waited[:3] == [0.0, 0.0, 0.0] and waited[3] > 1.0
    events = await history(scraper, perennial.client)
    assert any(e.HasField("timer_started_event_attributes") for e in events)  # a durable timer


async def test_timeouts_and_5xx_are_retried_then_reported_or_fetched(
    scraper: AgentHandle, server: ProviderServer
) -> None:
    failed = await _refused(scraper, f"{server.url}/lab/slow?seconds=3")
    assert failed.error_type == "FetchUnavailable"
    assert "gave up after 3 attempts" in str(failed) and "did not answer within 1 s" in str(failed)
    assert server.hits("/lab/slow") == 3
    page = await _fetch(scraper, f"{server.url}/lab/flaky?key=k1&failures=2")
    assert page.title == "Lab page flaky k1"
    assert server.hits("/lab/flaky") == 3  # two 503s, then the page
    assert list((await _state(scraper)).cache) == [f"{server.url}/lab/flaky?key=k1&failures=2"]


async def test_failures_that_retrying_cannot_mend_are_reported_at_once(
    scraper: AgentHandle, server: ProviderServer
) -> None:
    for path, error in [("/lab/status/404", "PageNotFound"), ("/lab/status/410", "PageNotFound"),
                        ("/lab/status/403", "HttpStatusError"),
                        ("/lab/big?kb=2048", "PageTooLarge"),  # its Content-Length says so
                        ("/lab/big?kb=2048&chunked=1", "PageTooLarge"),  # cut while reading
                        ("/lab/binary", "UnsupportedContent")]:  # fmt: skip
        refused = await _refused(scraper, f"{server.url}{path}")
        assert refused.error_type == error, path
    hits = Counter(hit.path for hit in server.requests)
    assert hits == {"/robots.txt": 1, "/lab/status/404": 1, "/lab/status/410": 1,
                    "/lab/status/403": 1, "/lab/big": 2, "/lab/binary": 1}  # fmt: skip
    assert "answered 404" in str(await _refused(scraper, f"{server.url}/lab/status/404"))
    # robots.txt: a disallowed page is never asked for
    for path in ("/lab/blocked/page", "/private/admin"):
        refused = await _refused(scraper, f"{server.url}{path}")
        assert refused.error_type == "RobotsDisallowed" and server.hits(path) == 0
    assert server.hits("/robots.txt") == 1  # read once for the origin
    big = await _fetch(scraper, f"{server.url}/lab/big?kb=200")  # under the cap: read, text cut
    assert big.truncated and len(big.text) == 8_000
    assert (await _state(scraper)).fetched == 1


async def test_redirects_are_followed_and_checked_at_every_hop(
    scraper: AgentHandle, server: ProviderServer
) -> None:
    page = await _fetch(scraper, f"{server.url}/lab/redirect?to=/lab/page/there")
    assert page.final_url == f"{server.url}/lab/page/there" and page.redirects == 1
    assert (await _fetch(scraper, f"{server.url}/lab/chain?hops=5")).redirects == 5
    too_many = await _refused(scraper, f"{server.url}/lab/chain?hops=6")
    assert too_many.error_type == "TooManyRedirects"
    for private in ("http://169.254.169.254/latest/meta-data/", "http://10.0.0.1/admin",
                    "http://[::1]:8080/", f"http://127.0.0.1:{server.port + 1}/"):  # fmt: skip
        blocked = await _refused(scraper, f"{server.url}/lab/redirect?to={private}")
        assert blocked.error_type == "AddressBlocked", private
    assert server.hits("/lab/redirect") == 5


async def test_what_is_not_an_allowed_http_url_is_refused_before_any_request(
    perennial: Perennial, scraper: AgentHandle, server: ProviderServer
) -> None:
    for url, error in [("ftp://example.org/file.txt", "SchemeNotAllowed"),
                       ("file:///etc/passwd", "SchemeNotAllowed"),
                       ("http://user:secret@example.org/", "InvalidUrl")]:  # fmt: skip
        assert (await _refused(scraper, url)).error_type == error, url
    events = await history(scraper, perennial.client)  # refused in the workflow: no activity
    assert not [e for e in events if e.HasField("activity_task_scheduled_event_attributes")]
    for url in ("http://localhost:22/", f"http://127.0.0.1:{server.port + 1}/", "http://10.0.0.1/"):
        assert (await _refused(scraper, url)).error_type == "AddressBlocked", url  # by the guard
    assert server.requests == []


async def test_a_message_with_a_url_is_answered_with_the_page_as_text(
    scraper: AgentHandle, server: ProviderServer
) -> None:
    reply = (await scraper.ask(f"Please read {server.url}/guides/rome/colosseum.")).reply or ""
    assert reply.startswith(f"Source: {server.url}/guides/rome/colosseum (HTTP 200")
    assert "Title: Colosseum, Rome" in reply and "Data: TouristAttraction" in reply
    assert "The Flavian amphitheatre of AD 80" in reply
    with pytest.raises(TurnFailed) as no_url:
        await scraper.ask("read the page about Rome")
    assert no_url.value.error_type == "NoUrlInMessage"
    with pytest.raises(TurnFailed) as refused:
        await scraper.ask("fetch gopher://example.org/ now")
    assert refused.value.error_type == "SchemeNotAllowed"
