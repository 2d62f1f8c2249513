"""Fixtures of the planner's tests: the local provider server, the scripted model answering
every agent of the planner, and settings whose worker runs the planner against both.

Import them into a test module (`from examples.travel.tests.fixtures import planner,
providers, settings`): `settings` there overrides the suite's own, so the suite's `perennial`,
`worker`, `gateway` and `worker_process` fixtures run the planner.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from examples.travel.provider_server import ProviderServer
from examples.travel.tests.planner_model import PlannerModel
from perennial.client import Settings
from perennial.testing import ScriptedLLM

#: The application module, as `--app` names it.
APP = ("examples.travel",)


@pytest.fixture
def providers() -> Iterator[ProviderServer]:
    """The local provider server, of this test's own (its hit counts are this test's)."""
    with ProviderServer() as server:
        yield server


@pytest.fixture
def settings(settings: Settings, providers: ProviderServer, scripted_llm: ScriptedLLM) -> Settings:
    """The suite's settings with the planner loaded, the model at the scripted server and the
    providers (and the scraper's allowlist) at the local provider server."""
    planned = settings.model_copy(update={"app": APP, "openai_base_url": scripted_llm.url})
    return planned.model_copy(update=providers.settings_update(planned))


@pytest.fixture
def planner(scripted_llm: ScriptedLLM) -> PlannerModel:
    """The scripted model, answering each of the planner's agents (see `planner_model`)."""
    return PlannerModel(scripted_llm)


__all__ = ["APP", "planner", "providers", "settings"]
