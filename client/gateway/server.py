"""Serving the gateway with uvicorn, in this process (`perennial gateway`, `perennial dev`,
the demo and the tests all use `GatewayServer`)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from types import TracebackType

import structlog
import uvicorn

from perennial.client.agents import Perennial
from perennial.client.gateway.app import Gateway, create_app
from perennial.client.gateway.auth import Authenticator, check_binding
from perennial.client.settings import Settings

log = structlog.get_logger("perennial.gateway")


class _Server(uvicorn.Server):
    """uvicorn without its own signal handlers: the command that runs the gateway owns
    Ctrl-C and stops the gateway with everything else it runs."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class GatewayServer:
    """The gateway on `settings.gateway_host:gateway_port` (port 0: any free port).

        async with GatewayServer(settings) as gateway:
            print(gateway.url)

    Refuses to start (InsecureGateway) when bound beyond loopback without auth."""

    def __init__(
        self, settings: Settings, *, perennial: Perennial | None = None,
        host: str | None = None, port: int | None = None,
    ) -> None:  # fmt: skip
        self.settings = settings
        self.host = host or settings.gateway_host
        self.port = settings.gateway_port if port is None else port
        self.auth = Authenticator.from_settings(settings)
        self._perennial = perennial
        self._server: _Server | None = None
        self._task: asyncio.Task[None] | None = None
        self.gateway: Gateway | None = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    async def start(self) -> None:
        warning = check_binding(self.host, self.auth)
        if warning:
            log.warning(warning, host=self.host)
        perennial = self._perennial or await Perennial.connect(self.settings)
        app = create_app(self.settings, perennial, self.auth)
        self.gateway = app.state.gateway
        config = uvicorn.Config(
            app, host=self.host, port=self.port, log_config=None, access_log=False,
            ws="websockets-sansio", ws_max_size=self.settings.gateway_max_body_bytes,
            lifespan="on", timeout_graceful_shutdown=5,
            # Longer than a client's pause between requests (a 429's Retry-After), so a kept
            # connection is not closed just as the client reuses it.
            timeout_keep_alive=75,
        )  # fmt: skip
        self._server = _Server(config)
        self._task = asyncio.create_task(self._server.serve(), name="gateway")
        while not self._server.started:
            if self._task.done():  # could not bind, or the app failed to start
                await self._task
                raise RuntimeError(f"the gateway did not start on {self.url}")
            await asyncio.sleep(0.01)
        self.port = self._server.servers[0].sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is None or self._task is None:
            return
        if self.gateway is not None:
            self.gateway.closing.set()  # sockets and streams end, so shutdown is not held up
        self._server.should_exit = True
        await self._task
        self._server = self._task = None

    async def restart(self) -> None:
        """Stop and start again on the same port (clients reconnect and resume)."""
        await self.stop()
        await self.start()

    async def __aenter__(self) -> GatewayServer:
        await self.start()
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:  # fmt: skip
        await self.stop()


__all__ = ["GatewayServer"]
