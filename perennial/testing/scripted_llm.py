"""A real local HTTP server that speaks the OpenAI Chat Completions protocol and replays a script.

Tests point the worker at it (`Settings.openai_base_url = server.url`), so the real `openai`
client, its HTTP stack and the model activity's error handling all run. A test scripts the
replies in order:

    llm.script(
        tool_calls(call("get_weather", city="Paris"), call("get_weather", city="Rome")),
        text("Sunny in both.", usage=usage(120, 8)),
    )

Replies: `text`, `tool_calls` (several calls = parallel tool calls; `call(..., raw=...)` sends
arguments verbatim, even invalid JSON), `error(status, retry_after=...)`; any reply can be
slowed (`delay=`) or held until `release()` (`hold=True`). With the script used up, `respond`
(a function of the request) answers if set; otherwise the server answers 400 "script
exhausted", which fails the turn at once instead of retrying.

The server is also the backend of the tests' activity tools (`POST /tools/{name}`): it counts
every execution, so a test can prove that a tool that completed never runs again, and it can
make a tool slow, hold it, or fail it.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

# --------------------------------------------------------------------------- the script


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int
    completion_tokens: int

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def wire(self) -> dict[str, int]:
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.total_tokens,
        }


@dataclass(frozen=True)
class Call:
    name: str
    arguments: str
    id: str | None = None


@dataclass(frozen=True)
class Reply:
    """One scripted answer to one Chat Completions request."""

    content: str | None = None
    calls: tuple[Call, ...] = ()
    usage: Usage | None = None
    finish_reason: str | None = None
    status: int = 200
    error_message: str = ""
    headers: tuple[tuple[str, str], ...] = ()
    #: Seconds to wait before answering (a slow model).
    delay: float = 0.0
    #: Wait until `ScriptedLLM.release()` before answering (a call that never returns).
    hold: bool = False
    model: str | None = None
    #: Streamed answers (a request with `stream: true`): characters per chunk, the pause
    #: before each chunk (a model writing at a fixed pace), and a chunk to stop at until
    #: `release()` (a stream that stalls half-way, e.g. to kill the worker mid-stream).
    chunk_chars: int = 4
    chunk_delay: float = 0.0
    hold_at_chunk: int | None = None


def usage(prompt_tokens: int, completion_tokens: int) -> Usage:
    return Usage(prompt_tokens, completion_tokens)


def call(name: str, /, *, id: str | None = None, raw: str | None = None, **arguments: Any) -> Call:
    """A tool call; `raw` sends the arguments text as is (to test invalid arguments)."""
    return Call(name=name, arguments=raw if raw is not None else json.dumps(arguments), id=id)


def text(
    content: str,
    *,
    usage: Usage | None = None,
    delay: float = 0.0,
    hold: bool = False,
    chunk_chars: int = 4,
    chunk_delay: float = 0.0,
    hold_at_chunk: int | None = None,
) -> Reply:
    return Reply(content=content, usage=usage, delay=delay, hold=hold, chunk_chars=chunk_chars,
                 chunk_delay=chunk_delay, hold_at_chunk=hold_at_chunk)  # fmt: skip


def tool_calls(
    *calls: Call,
    content: str | None = None,
    usage: Usage | None = None,
    delay: float = 0.0,
    hold: bool = False,
    chunk_delay: float = 0.0,
) -> Reply:
    return Reply(content=content, calls=calls, usage=usage, delay=delay, hold=hold,
                 chunk_delay=chunk_delay)  # fmt: skip


def error(
    status: int,
    message: str = "scripted error",
    *,
    retry_after: float | None = None,
    headers: dict[str, str] | None = None,
    delay: float = 0.0,
) -> Reply:
    extra = dict(headers or {})
    if retry_after is not None:
        extra["retry-after"] = f"{retry_after:g}"
    return Reply(status=status, error_message=message, headers=tuple(extra.items()), delay=delay)


@dataclass
class Request:
    """One request the server received."""

    path: str
    body: dict[str, Any]
    headers: dict[str, str]
    at: float

    @property
    def messages(self) -> list[dict[str, Any]]:
        return self.body.get("messages", [])

    def tool_results(self) -> dict[str, str]:
        """Tool results in this request, by tool call id."""
        return {m["tool_call_id"]: m["content"] for m in self.messages if m["role"] == "tool"}


@dataclass
class ToolBehaviour:
    """How the tool backend answers a tool: a result, a failure, slowness."""

    #: The result, or a function of the call's arguments that returns it.
    result: Any = "ok"
    #: The tool raises (an ordinary exception: Temporal retries it).
    fail: str | None = None
    #: The tool raises `ToolError` (reported to the model, not retried).
    tool_error: str | None = None
    #: Seconds to take, or a function of the call's arguments that returns them.
    delay: float | Callable[[dict[str, Any]], float] = 0.0
    #: Hold the first N executions until `release_tools()`.
    hold_first: int = 0


@dataclass
class ToolHit:
    name: str
    arguments: dict[str, Any]
    at: float
    finished: bool = False


# --------------------------------------------------------------------------- the server


class ScriptedLLM:
    """Start with `with ScriptedLLM() as llm:` (or `start()` / `close()`)."""

    def __init__(self, *, host: str = "127.0.0.1") -> None:
        self._lock = threading.Lock()
        self._script: list[Reply] = []
        self.respond: Callable[[Request], Reply] | None = None
        self.requests: list[Request] = []
        self.tools: dict[str, ToolBehaviour] = {}
        self.tool_hits: list[ToolHit] = []
        self.max_tools_in_flight = 0
        self._tools_in_flight = 0
        self._released = threading.Event()
        self._tools_released = threading.Event()
        self._ids = itertools.count(1)
        self._server = ThreadingHTTPServer((host, 0), _handler(self))
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ lifecycle

    @property
    def root(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def url(self) -> str:
        """The base URL for `OPENAI_BASE_URL`."""
        return f"{self.root}/v1"

    def start(self) -> ScriptedLLM:
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        self.release()
        self.release_tools()
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> ScriptedLLM:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ scripting

    def script(self, *replies: Reply) -> None:
        """Append replies; each request consumes the next one."""
        with self._lock:
            self._script.extend(replies)

    @property
    def pending(self) -> int:
        """Scripted replies not used yet."""
        with self._lock:
            return len(self._script)

    def release(self) -> None:
        """Let every held reply go (now and from now on)."""
        self._released.set()

    def release_tools(self) -> None:
        self._tools_released.set()

    def tool(self, name: str, **behaviour: Any) -> None:
        """Set how the tool backend answers tool `name`."""
        self.tools[name] = ToolBehaviour(**behaviour)

    # ------------------------------------------------------------------ observing

    @property
    def completions(self) -> list[Request]:
        with self._lock:
            return [r for r in self.requests if r.path.endswith("/chat/completions")]

    def executions(self, name: str) -> int:
        """How many times tool `name` started executing."""
        with self._lock:
            return sum(1 for hit in self.tool_hits if hit.name == name)

    def finished(self, name: str) -> int:
        with self._lock:
            return sum(1 for hit in self.tool_hits if hit.name == name and hit.finished)

    def executions_by_tool(self) -> Counter[str]:
        with self._lock:
            return Counter(hit.name for hit in self.tool_hits)

    async def wait_for(self, check: Callable[[], bool], *, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while not check():
            if time.monotonic() > deadline:
                raise AssertionError(f"scripted LLM: condition not met within {timeout}s")
            await asyncio.sleep(0.02)

    # ------------------------------------------------------------------ answering

    def _next_reply(self, request: Request) -> Reply:
        with self._lock:
            self.requests.append(request)
            if self._script:
                return self._script.pop(0)
        if self.respond is not None:
            return self.respond(request)
        return error(400, "scripted model: script exhausted (no reply left for this request)")

    def _completion(self, reply: Reply, request: Request) -> dict[str, Any]:
        n = next(self._ids)
        message: dict[str, Any] = {"role": "assistant", "content": reply.content}
        if reply.calls:
            message["tool_calls"] = [
                {
                    "id": c.id or f"call_{n}_{i}",
                    "type": "function",
                    "function": {"name": c.name, "arguments": c.arguments},
                }
                for i, c in enumerate(reply.calls)
            ]
        used = reply.usage or _estimate(request, reply)
        return {
            "id": f"chatcmpl-scripted-{n}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": reply.model or request.body.get("model", "scripted"),
            "choices": [
                {
                    "index": 0,
                    "message": message,
                    "finish_reason": reply.finish_reason
                    or ("tool_calls" if reply.calls else "stop"),
                }
            ],
            "usage": used.wire(),
        }

    def _chunks(self, reply: Reply, request: Request) -> list[dict[str, Any]]:
        """The streamed form of a reply: content in pieces, then each tool call, the finish
        reason, and the usage (when the request asked for it)."""
        whole = self._completion(reply, request)
        message = whole["choices"][0]["message"]

        def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
            return {"id": whole["id"], "object": "chat.completion.chunk",
                    "created": whole["created"], "model": whole["model"],
                    "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}  # fmt: skip

        out = [chunk({"role": "assistant", "content": ""})]
        content = message["content"] or ""
        size = max(1, reply.chunk_chars)
        out += [chunk({"content": content[i : i + size]}) for i in range(0, len(content), size)]
        for index, tool_call in enumerate(message.get("tool_calls", [])):
            out.append(chunk({"tool_calls": [{"index": index, **tool_call}]}))
        out.append(chunk({}, whole["choices"][0]["finish_reason"]))
        if (request.body.get("stream_options") or {}).get("include_usage"):
            out.append({**chunk({}), "choices": [], "usage": whole["usage"]})
        return out

    def _tool(self, name: str, arguments: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        behaviour = self.tools.get(name, ToolBehaviour())
        with self._lock:
            hit = ToolHit(name=name, arguments=arguments, at=time.monotonic())
            self.tool_hits.append(hit)
            number = sum(1 for h in self.tool_hits if h.name == name)
            self._tools_in_flight += 1
            self.max_tools_in_flight = max(self.max_tools_in_flight, self._tools_in_flight)
        try:
            if number <= behaviour.hold_first:
                self._tools_released.wait(timeout=120)
            delay = behaviour.delay(arguments) if callable(behaviour.delay) else behaviour.delay
            if delay:
                time.sleep(delay)
        finally:
            with self._lock:
                self._tools_in_flight -= 1
                hit.finished = True
        if behaviour.fail is not None:
            return 200, {"fail": behaviour.fail}
        if behaviour.tool_error is not None:
            return 200, {"tool_error": behaviour.tool_error}
        result = behaviour.result(arguments) if callable(behaviour.result) else behaviour.result
        return 200, {"result": result}


def _estimate(request: Request, reply: Reply) -> Usage:
    """Deterministic token counts when a reply names none: ~4 characters a token."""
    prompt = sum(len(json.dumps(m)) for m in request.messages) // 4 + 1
    completion = (len(reply.content or "") + sum(len(c.arguments) for c in reply.calls)) // 4 + 1
    return Usage(prompt, completion)


def _write_stream(
    handler: BaseHTTPRequestHandler, llm: ScriptedLLM, reply: Reply, request: Request
) -> None:
    """Answer a `stream: true` request with server-sent events, at the reply's pace."""
    try:
        handler.send_response(200)
        handler.send_header("Content-Type", "text/event-stream")
        handler.send_header("Connection", "close")
        for name, value in reply.headers:
            handler.send_header(name, value)
        handler.end_headers()
        for number, chunk in enumerate(llm._chunks(reply, request)):
            if number == reply.hold_at_chunk:
                llm._released.wait(timeout=120)
            if reply.chunk_delay and number > 0:
                time.sleep(reply.chunk_delay)
            handler.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
            handler.wfile.flush()
        handler.wfile.write(b"data: [DONE]\n\n")
        handler.wfile.flush()
    except (BrokenPipeError, ConnectionResetError):
        pass  # the client went away (a killed worker, a stopped turn)
    handler.close_connection = True


def _handler(llm: ScriptedLLM) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - quiet
            pass

        def _send(self, status: int, body: Any, headers: tuple[tuple[str, str], ...] = ()) -> None:
            data = json.dumps(body).encode()
            try:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for name, value in headers:
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client went away (a killed worker): nothing to answer

        def _body(self) -> dict[str, Any]:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b"{}"
            return json.loads(raw or b"{}")

        def do_GET(self) -> None:
            if self.path.rstrip("/").endswith("/models"):
                self._send(200, {"object": "list", "data": [{"id": "scripted", "object": "model"}]})
            else:
                self._send(404, {"error": {"message": f"no route {self.path}"}})

        def do_POST(self) -> None:
            body = self._body()
            if self.path.startswith("/tools/"):
                status, answer = llm._tool(self.path.removeprefix("/tools/"), body)
                self._send(status, answer)
                return
            if not self.path.rstrip("/").endswith("/chat/completions"):
                self._send(404, {"error": {"message": f"no route {self.path}"}})
                return
            request = Request(
                path=self.path,
                body=body,
                headers={k.lower(): v for k, v in self.headers.items()},
                at=time.monotonic(),
            )
            reply = llm._next_reply(request)
            if reply.hold:
                llm._released.wait(timeout=120)
            if reply.delay:
                time.sleep(reply.delay)
            if reply.status != 200:
                err = {
                    "message": reply.error_message,
                    "type": "scripted",
                    "code": str(reply.status),
                }
                self._send(reply.status, {"error": err}, reply.headers)
                return
            if body.get("stream"):
                _write_stream(self, llm, reply, request)
            else:
                self._send(200, llm._completion(reply, request), reply.headers)

    return Handler


__all__ = [
    "Call",
    "Reply",
    "Request",
    "ScriptedLLM",
    "ToolBehaviour",
    "Usage",
    "call",
    "error",
    "text",
    "tool_calls",
    "usage",
]
