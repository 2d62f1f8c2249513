"""Traces, metrics and trace ids in log lines (perennial.client.telemetry), on a real dev server
with the scripted Chat Completions server: one `ask` is one trace from the client's call to the
model call; the worker serves the SDK's metrics to Prometheus; nothing configured, nothing on."""

from __future__ import annotations

import asyncio
import gzip
import io
import json
import logging
import socket
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from pydantic import SecretStr
from temporalio.contrib.opentelemetry import TracingInterceptor

from perennial.client import Perennial, Settings
from perennial.client.connection import connect
from perennial.client.logging import add_trace_ids, log_formatter
from perennial.client.redaction import REDACTED
from perennial.client.telemetry import (
    TelemetryUnavailable,
    flush_process_tracing,
    metrics_runtime,
    otlp_headers,
    setup_tracing,
)
from perennial.testing import eventually
from perennial.testing.scripted_llm import ScriptedLLM, call, error, text, tool_calls, usage
from perennial.worker import build_worker
from tests.llm_agents import MODEL

ROOT = Path(__file__).resolve().parent.parent

KEY = "sk-telemetry-0123456789abcdef"
QUESTION = "Is it cold in Tromsø today?"
ANSWER = "Colder than a fjord in January."


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _hex(number: int, width: int) -> str:
    return format(number, f"0{width}x")


@contextmanager
def _json_log_lines(logger_name: str) -> Iterator[io.StringIO]:
    """Lines of `logger_name`, rendered by the formatter the worker installs (JSON)."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)  # formats in the emitting task: its span is current
    handler.setFormatter(log_formatter(as_json=True))
    logger = logging.getLogger(logger_name)
    logger.addHandler(handler)
    try:
        yield stream
    finally:
        logger.removeHandler(handler)


def _texts(span: ReadableSpan) -> str:
    """Everything a span could carry a text in: attributes, status, events, links, resource."""
    parts: list[Any] = [span.name, dict(span.attributes or {}), span.status.description]
    parts += [(e.name, dict(e.attributes or {})) for e in span.events]
    parts += [dict(link.attributes or {}) for link in span.links]
    parts.append(dict(span.resource.attributes))
    return repr(parts)


# --------------------------------------------------------------------------- one ask, one trace


@pytest.mark.asyncio(loop_scope="session")
@pytest.mark.agents(app=("tests.llm_agents",), llm=True)
async def test_one_ask_is_one_trace_from_the_client_to_the_model_call(
    settings: Settings, scripted_llm: ScriptedLLM, request: pytest.FixtureRequest
) -> None:
    settings = settings.model_copy(
        update={"openai_api_key": SecretStr(KEY), "otel_service_name": "perennial-test"}
    )
    exporter = InMemorySpanExporter()
    tracing = setup_tracing(settings, exporter=exporter)
    assert tracing is not None
    client = await connect(settings, tracing=tracing)
    perennial = Perennial(client, settings)
    # A rate-limited model call, a tool that fails (and logs it) on every attempt, an answer.
    scripted_llm.tool("get_weather", fail=f"weather API refused key {KEY}")
    scripted_llm.script(
        error(429, retry_after=0.1),
        tool_calls(call("get_weather", city="Tromsø")),
        text(ANSWER, usage=usage(42, 7)),
    )
    agent = perennial.agent("test_llm", request.node.name.replace("_", "-"))
    try:
        with _json_log_lines("temporalio.activity") as log:
            async with build_worker(client, settings):
                assert (await agent.ask(QUESTION)).reply == ANSWER
        assert tracing.flush()
    finally:
        tracing.shutdown()
    spans = exporter.get_finished_spans()
    by_id = {span.context.span_id: span for span in spans}

    def named(name: str) -> list[ReadableSpan]:
        return [span for span in spans if span.name == name]

    def parent(span: ReadableSpan) -> ReadableSpan:
        assert span.parent is not None, span.name
        return by_id[span.parent.span_id]

    # One trace, rooted in the client's call.
    [root] = [span for span in spans if span.parent is None]
    assert root.name == "StartUpdateWithStartWorkflow:test_llm"
    assert root.kind is SpanKind.CLIENT
    trace_id = root.context.trace_id
    assert {span.context.trace_id for span in spans} == {trace_id}
    assert root.resource.attributes["service.name"] == "perennial-test"

    # The workflow's handle-update span, and client → workflow → activity → model call.
    [handle] = named("HandleUpdate:ask")
    assert parent(handle) is root
    assert handle.attributes and handle.attributes["temporalWorkflowID"] == agent.id
    chats = named(f"chat {MODEL}")
    assert len(chats) == 3  # the rate-limited call, the tool call, the answer
    for chat in chats:
        assert chat.kind is SpanKind.CLIENT
        run = parent(chat)
        assert run.name == "RunActivity:llm_complete"
        assert parent(run).name == "StartActivity:llm_complete"
        assert parent(parent(run)) is root

    # GenAI semantic conventions, from the response the activity already has.
    limited, tool_step, answer = sorted(chats, key=lambda span: span.start_time or 0)
    assert answer.attributes is not None
    assert {k: v for k, v in answer.attributes.items() if k != "server.port"} == {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "openai",
        "gen_ai.system": "openai",
        "gen_ai.request.model": MODEL,
        "server.address": "127.0.0.1",
        "gen_ai.response.model": MODEL,
        "gen_ai.response.finish_reasons": ("stop",),
        "gen_ai.usage.input_tokens": 42,
        "gen_ai.usage.output_tokens": 7,
    }
    assert answer.status.status_code is StatusCode.UNSET
    assert tool_step.attributes and tool_step.attributes["gen_ai.response.finish_reasons"] == (
        "tool_calls",
    )
    assert limited.attributes and limited.attributes["error.type"] == "ModelRateLimited"
    assert limited.status.status_code is StatusCode.ERROR
    assert "gen_ai.usage.input_tokens" not in limited.attributes

    # The tool's failure, logged inside its activity, carries the ask's trace id.
    lines = [json.loads(line) for line in log.getvalue().splitlines()]
    failures = [line for line in lines if line["event"].startswith("tool get_weather failed")]
    assert len(failures) == 3, lines
    tool_runs = {_hex(span.context.span_id, 16) for span in named("RunActivity:get_weather")}
    for line in failures:
        assert line["trace_id"] == _hex(trace_id, 32)
        assert line["span_id"] in tool_runs
        assert line["agent"] == agent.id

    # No payloads, message texts or keys in any span (the tool's error text was redacted).
    for span in spans:
        texts = _texts(span)
        for secret in (KEY, QUESTION, ANSWER, "Tromsø"):
            assert secret not in texts, (span.name, secret)
    # Positive control: the SDK quotes the tool's (redacted) error in its span's status.
    statuses = [span.status.description or "" for span in named("RunActivity:get_weather")]
    assert len(statuses) == 3 and all(REDACTED in status for status in statuses), statuses


# --------------------------------------------------------------------------- log lines


def test_log_lines_carry_the_active_spans_ids_and_nothing_without_one() -> None:
    provider = TracerProvider()
    tracer = provider.get_tracer("test")
    assert add_trace_ids(None, "info", {"event": "outside"}) == {"event": "outside"}
    with tracer.start_as_current_span("work") as span:
        event = add_trace_ids(None, "info", {"event": "inside"})
    context = span.get_span_context()
    assert event == {
        "event": "inside",
        "trace_id": _hex(context.trace_id, 32),
        "span_id": _hex(context.span_id, 16),
    }
    provider.shutdown()


# --------------------------------------------------------------------------- nothing configured


@pytest.mark.asyncio(loop_scope="session")
async def test_nothing_configured_installs_nothing(perennial: Perennial) -> None:
    assert perennial.settings.otel_endpoint is None
    assert setup_tracing(perennial.settings) is None
    assert metrics_runtime(perennial.settings) is None
    assert list(perennial.client.config()["interceptors"]) == []
    # Not even an import: the OpenTelemetry SDK and the SDK's contrib module stay unloaded.
    probe = (
        "import sys, perennial.client.agents, perennial.activities.llm, perennial.client.logging\n"
        "from perennial.client.settings import Settings\n"
        "from perennial.client.telemetry import setup_tracing\n"
        "assert setup_tracing(Settings.from_env({})) is None\n"
        "print([m for m in sys.modules if m.startswith(('opentelemetry.sdk', "
        "'temporalio.contrib.opentelemetry', 'opentelemetry.exporter'))])\n"
    )
    done = await asyncio.to_thread(
        subprocess.run, [sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


# --------------------------------------------------------------------------- OTLP


class _Collector:
    """A local OTLP/HTTP receiver: records every export request."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, dict[str, str], bytes]] = []
        collector = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                body = self.rfile.read(int(self.headers["Content-Length"]))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                headers = {k.lower(): v for k, v in self.headers.items()}
                collector.requests.append((self.path, headers, body))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_spans_reach_an_otlp_collector_with_its_headers() -> None:
    collector = _Collector()
    try:
        settings = Settings(
            otel_endpoint=collector.url + "/",
            otel_headers=SecretStr("Authorization=Bearer%20t0ken,x-team=agents"),
            otel_service_name="perennial-otlp",
        )
        tracing = setup_tracing(settings)
        assert tracing is not None
        assert setup_tracing(settings) is tracing  # one exporter per process and configuration
        tracing.provider.get_tracer("test").start_span("exported").end()
        flush_process_tracing()  # what an entry point does before os._exit
        assert len(collector.requests) == 1
        tracing.shutdown()
        again = setup_tracing(settings)
        assert again is not None and again is not tracing  # a shut-down one is not handed out
        again.shutdown()
    finally:
        collector.close()
    [(path, headers, body)] = collector.requests
    assert path == "/v1/traces"
    assert headers["authorization"] == "Bearer t0ken"
    assert headers["x-team"] == "agents"
    export = ExportTraceServiceRequest.FromString(body)
    [resource_spans] = export.resource_spans
    service = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
    assert service["service.name"] == "perennial-otlp"
    assert [s.name for ss in resource_spans.scope_spans for s in ss.spans] == ["exported"]


def test_a_provider_the_caller_brings_gets_the_spans_and_stays_open() -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing = setup_tracing(Settings(), provider=provider)
    assert tracing is not None and not tracing.owned
    tracing.shutdown()
    interceptor = tracing.interceptors[0]
    assert isinstance(interceptor, TracingInterceptor)
    interceptor.tracer.start_span("after shutdown").end()  # the caller's provider still exports
    assert [span.name for span in exporter.get_finished_spans()] == ["after shutdown"]
    provider.shutdown()


def test_an_endpoint_without_a_scheme_is_a_typed_error() -> None:
    with pytest.raises(TelemetryUnavailable, match="like http://localhost:4318"):
        setup_tracing(Settings(otel_endpoint="localhost:4318"))


def test_malformed_otlp_headers_are_a_typed_error_that_does_not_quote_them() -> None:
    settings = Settings(otel_endpoint="http://127.0.0.1:4318", otel_headers=SecretStr("s3cret"))
    with pytest.raises(TelemetryUnavailable, match="item 1 is not key=value") as caught:
        otlp_headers(settings)
    assert "s3cret" not in str(caught.value)
    assert SecretStr("s3cret") in settings.secrets  # and log lines redact it


# --------------------------------------------------------------------------- metrics


def _scrape(url: str) -> str:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.read().decode()
    except OSError:
        return ""  # not listening yet


@pytest.mark.asyncio(loop_scope="session")
@pytest.mark.agents(app=("tests.llm_agents",), llm=True)
async def test_the_worker_serves_sdk_metrics_to_prometheus(
    perennial: Perennial,
    settings: Settings,
    scripted_llm: ScriptedLLM,
    worker_process: Callable[[], Any],
    monkeypatch: pytest.MonkeyPatch,
    request: pytest.FixtureRequest,
) -> None:
    port = _free_port()
    monkeypatch.setenv("PERENNIAL_METRICS_PORT", str(port))  # the child's environment
    worker_process()
    scripted_llm.script(text("Counted."))
    agent = perennial.agent("test_llm", request.node.name.replace("_", "-"))
    assert (await agent.ask("count this")).reply == "Counted."
    url = f"http://127.0.0.1:{port}/metrics"
    metric = "temporal_workflow_task_execution_latency"
    queue = f'task_queue="{settings.task_queue}"'

    async def served() -> bool:
        page = await asyncio.to_thread(_scrape, url)
        return any(line.startswith(metric) and queue in line for line in page.splitlines())

    await eventually(served)


def test_a_metrics_port_in_use_is_a_typed_error() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        settings = Settings(metrics_port=taken.getsockname()[1])
        with pytest.raises(TelemetryUnavailable, match="cannot serve metrics on 127.0.0.1:"):
            metrics_runtime(settings)
