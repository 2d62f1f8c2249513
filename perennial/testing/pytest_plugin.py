"""pytest fixtures for an application's agents. Enable them in your `conftest.py`:

    pytest_plugins = ["perennial.testing.pytest_plugin"]

and name the application's modules in pytest's configuration (`perennial_app = myapp.agents`
under `[tool.pytest.ini_options]`) or in `PERENNIAL_APP`. Then:

    async def test_counts(perennial, perennial_worker):
        reply = await perennial.agent("counter", "alice").ask("1")

One dev server per session (`perennial_server`); every test gets a task queue and a worker of
its own. Needs pytest-asyncio (`pip install perennial[testing]`) with a session event loop:
`asyncio_mode = "auto"`, `asyncio_default_fixture_loop_scope = "session"`,
`asyncio_default_test_loop_scope = "session"`.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator

import pytest
import pytest_asyncio
from temporalio.worker import Worker

from perennial.client.agents import Perennial
from perennial.client.app import load_app
from perennial.client.server import DevServer
from perennial.client.settings import Settings
from perennial.testing.harness import server_settings, with_task_queue
from perennial.testing.scripted_llm import ScriptedLLM


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addini("perennial_app", "the application's modules (agent types, tools)", "linelist")


@pytest.fixture(scope="session")
def perennial_app(pytestconfig: pytest.Config) -> tuple[str, ...]:
    """The application's modules: the `perennial_app` ini option, else PERENNIAL_APP."""
    listed = [m for line in pytestconfig.getini("perennial_app") for m in line.split(",")]
    modules = listed or os.environ.get("PERENNIAL_APP", "").split(",")
    return tuple(m.strip() for m in modules if m.strip())


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def perennial_server(
    tmp_path_factory: pytest.TempPathFactory, perennial_app: tuple[str, ...]
) -> AsyncIterator[Settings]:
    """A real dev server for the session (on TEMPORAL_ADDRESS instead, if that is set):
    its settings, without a task queue of their own yet."""
    base = server_settings(tmp_path_factory.mktemp("temporal")).model_copy(
        update={"app": perennial_app}
    )
    address = os.environ.get("TEMPORAL_ADDRESS")
    if address:
        yield base.model_copy(update={"temporal_address": address})
        return
    server = DevServer(base, headless=True)
    await server.start()
    try:
        yield base.model_copy(update={"temporal_address": server.address})
    finally:
        await server.stop()


@pytest.fixture
def perennial_settings(perennial_server: Settings) -> Settings:
    """The session server's settings with a task queue of this test's own."""
    assert perennial_server.temporal_address is not None
    return with_task_queue(perennial_server, perennial_server.temporal_address)


@pytest_asyncio.fixture(loop_scope="session")
async def perennial(perennial_settings: Settings) -> Perennial:
    """The Python client, on this test's task queue."""
    return await Perennial.connect(perennial_settings)


@pytest_asyncio.fixture(loop_scope="session")
async def perennial_worker(perennial: Perennial, perennial_settings: Settings) -> AsyncIterator[Worker]:
    """An in-process worker for every registered agent type, on this test's task queue."""
    load_app(perennial_settings)
    from perennial.worker import build_worker

    async with build_worker(perennial.client, perennial_settings) as worker:
        yield worker


@pytest.fixture
def scripted_llm() -> Iterator[ScriptedLLM]:
    """A local Chat Completions server replaying this test's script: point a worker at it
    with `settings.model_copy(update={"openai_base_url": scripted_llm.url})`."""
    with ScriptedLLM() as llm:
        yield llm
