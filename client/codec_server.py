"""The codec server: Temporal's remote codec protocol over HTTP, so that the Web UI and
`temporal ... --codec-endpoint` show encrypted payloads decrypted.

    POST /decode   {"payloads": [{"metadata": {"encoding": "<base64>"}, "data": "<base64>"}]}
    POST /encode   the same shape; answers the payloads decoded (or encoded), in order

Bodies are `Payloads` in protobuf's JSON form (bytes as base64); a path that ends in
`/decode` or `/encode` at any depth works too (`/default/decode`, as the CLI's
`--codec-endpoint http://host:8081/{namespace}` calls it). Errors answer 400 (a bad body, a
payload that cannot be decrypted), 401 (no or wrong bearer token when one is configured) or
413, with `{"error": {"type", "message"}}`. Browsers are let in from the configured origins
(CORS preflight answered for the headers the Web UI sends: Content-Type, X-Namespace,
Authorization). The `X-Namespace` header is not checked: the key file, not the namespace,
decides what can be read.

Run it with `perennial codec-server`; `perennial dev` and `perennial demo` run it when
encryption is on. On anything but loopback it refuses to start without a token.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import ipaddress
import socket
from collections.abc import Awaitable, Callable, Iterator, Sequence
from types import TracebackType

import structlog
import uvicorn
from google.protobuf import json_format
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from temporalio.api.common.v1 import Payload, Payloads

from perennial.client.codec import (
    EncryptionCodec,
    EncryptionKeyError,
    PayloadDecryptionError,
    load_codec,
)
from perennial.client.settings import Settings
from perennial.workflows.errors import RunError, UsageError

__all__ = [
    "MAX_BODY_BYTES",
    "CodecServer",
    "CodecServerUnavailable",
    "InsecureCodecServer",
    "codec_app",
]

log = structlog.get_logger("perennial.codec_server")

#: Largest request body accepted (413 beyond): room for three payloads at a default server's
#: 2 MB limit, base64-encoded.
MAX_BODY_BYTES = 8 * 1024 * 1024
#: Headers the Web UI sends with its codec requests (a CORS preflight asks for them).
CORS_HEADERS = ("Content-Type", "X-Namespace", "Authorization")
_LOOPBACK_NAMES = frozenset({"localhost", "localhost."})

Convert = Callable[[Sequence[Payload]], Awaitable[list[Payload]]]


class InsecureCodecServer(UsageError):
    """Refusal to listen beyond loopback without a token (anyone reaching it could decrypt)."""


class CodecServerUnavailable(RunError):
    """The codec server could not listen on its host and port."""


def codec_app(
    codec: EncryptionCodec, *, token: str | None = None, origins: Sequence[str] = ()
) -> Starlette:
    """The codec protocol as an ASGI app: `token` (if any) required as a bearer token,
    browsers admitted from `origins`."""

    async def encode(request: Request) -> Response:
        return await _convert(request, codec.encode, token)

    async def decode(request: Request) -> Response:
        return await _convert(request, codec.decode, token)

    routes = [
        Route(path, handler, methods=["POST"])
        for name, handler in (("encode", encode), ("decode", decode))
        for path in (f"/{name}", f"/{{prefix:path}}/{name}")
    ]
    cors = Middleware(
        CORSMiddleware,
        allow_origins=list(origins),
        allow_methods=["POST"],
        allow_headers=list(CORS_HEADERS),
        # The Web UI may be set to send credentials; they are never read here.
        allow_credentials=True,
        max_age=600,
    )
    return Starlette(routes=routes, middleware=[cors])


async def _convert(request: Request, convert: Convert, token: str | None) -> Response:
    if token is not None and not _authorized(request.headers.get("authorization"), token):
        return _error(
            401,
            "Unauthorized",
            "send the codec token as `Authorization: Bearer <token>`",
            headers={"WWW-Authenticate": 'Bearer realm="perennial-codec"'},
        )
    body = await _read_body(request)
    if body is None:
        return _error(413, "PayloadTooLarge", f"the body is over {MAX_BODY_BYTES} bytes")
    try:
        payloads = json_format.Parse(body, Payloads())
    except (json_format.ParseError, ValueError) as err:
        return _error(400, "InvalidRequest", f"the body is not Payloads JSON: {err}")
    try:
        converted = await convert(payloads.payloads)
    except PayloadDecryptionError as err:
        return _error(400, type(err).__name__, str(err))
    return JSONResponse({"payloads": [json_format.MessageToDict(p) for p in converted]})


def _authorized(header: str | None, token: str) -> bool:
    scheme, _, given = (header or "").partition(" ")
    if scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(given.strip().encode(), token.encode())


async def _read_body(request: Request) -> bytes | None:
    """The body, or None past MAX_BODY_BYTES (read no further than that)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        return None
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY_BYTES:
            return None
    return bytes(body)


def _error(
    status: int, kind: str, message: str, *, headers: dict[str, str] | None = None
) -> JSONResponse:
    return JSONResponse(
        {"error": {"type": kind, "message": message}}, status_code=status, headers=headers
    )


def _is_loopback(host: str) -> bool:
    if host.lower() in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.removeprefix("[").removesuffix("]")).is_loopback
    except ValueError:
        return False  # a host name may resolve anywhere


class _Uvicorn(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        # The process that runs this server owns SIGINT / SIGTERM and stops it with `stop()`.
        yield


class CodecServer:
    """The codec server on `settings.codec_host` / `codec_port` (0: any free port), in this
    event loop. Use as `async with CodecServer(settings) as server:`.

    Raises (on construction or start):
        EncryptionKeyError: no key file set, or a bad one.
        InsecureCodecServer: a host beyond loopback and no `codec_token`.
        CodecServerUnavailable: the port cannot be bound.
    """

    def __init__(self, settings: Settings, *, codec: EncryptionCodec | None = None) -> None:
        codec = codec or load_codec(settings)
        if codec is None:
            raise EncryptionKeyError(
                "encryption is off: set PERENNIAL_ENCRYPTION_KEY_FILE to the key file the "
                "workers use"
            )
        token = settings.codec_token.get_secret_value() if settings.codec_token else None
        if token is None and not _is_loopback(settings.codec_host):
            raise InsecureCodecServer(
                f"refusing to listen on {settings.codec_host!r} without a token: anyone who "
                "reaches it could decrypt every payload; set PERENNIAL_CODEC_TOKEN, or listen "
                "on 127.0.0.1"
            )
        self.settings = settings
        self.codec = codec
        self.app = codec_app(codec, token=token, origins=settings.codec_origins)
        self.port = settings.codec_port
        self._server: _Uvicorn | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        """The base URL for the Web UI's codec endpoint (`--ui-codec-endpoint`)."""
        return self.settings.model_copy(update={"codec_port": self.port}).codec_url

    def _bind(self) -> socket.socket:
        host, port = self.settings.codec_host, self.settings.codec_port
        try:
            family, kind, proto, _, address = socket.getaddrinfo(
                host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
            )[0]
            sock = socket.socket(family, kind, proto)
        except OSError as err:
            raise CodecServerUnavailable(f"cannot listen on {host}:{port}: {err}") from None
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(address)
        except OSError as err:
            sock.close()
            raise CodecServerUnavailable(
                f"cannot listen on {host}:{port} ({err.strerror}): another codec server? "
                "Set PERENNIAL_CODEC_PORT (or --port) to move"
            ) from None
        return sock

    async def start(self) -> None:
        sock = self._bind()
        self.port = int(sock.getsockname()[1])
        config = uvicorn.Config(
            self.app, lifespan="off", log_config=None, log_level="warning", access_log=False
        )
        self._server = _Uvicorn(config)
        self._task = asyncio.create_task(self._server.serve(sockets=[sock]))
        while not self._server.started:
            if self._task.done():
                sock.close()
                self._task.result()  # raises what stopped it
                raise CodecServerUnavailable("the codec server stopped while starting")
            await asyncio.sleep(0.01)
        log.info(
            "codec server ready",
            url=self.url,
            keys=list(self.codec.keys.key_ids),
            token=self.settings.codec_token is not None,
            origins=list(self.settings.codec_origins),
        )

    async def stop(self) -> None:
        server, task, self._server, self._task = self._server, self._task, None, None
        if server is None or task is None:
            return
        server.should_exit = True
        await task

    async def __aenter__(self) -> CodecServer:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()
