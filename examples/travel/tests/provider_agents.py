"""Agent types for the tests of the providers and the scraper (registered on import; the
worker in the test process has them): an LLM agent with the five provider tools and nothing
else, and the scraper with a cache that forgets quickly."""

from __future__ import annotations

from datetime import timedelta

from examples.travel.providers import PROVIDER_TOOLS
from examples.travel.scraper import ScraperAgent
from perennial import LLMAgent, LLMState, agent_type

TOOLS_AGENT = "test_travel_tools"


@agent_type(TOOLS_AGENT)
class ProviderToolsAgent(LLMAgent[LLMState]):
    instructions = "You plan trips with the provider tools and answer with sources."
    model = "scripted-model"
    tools = PROVIDER_TOOLS


QUICK_SCRAPER = "test_scraper_quick"


@agent_type(QUICK_SCRAPER)
class QuickScraper(ScraperAgent):
    """The scraper with a cache that forgets within a test's time."""

    cache_ttl = timedelta(seconds=1)
