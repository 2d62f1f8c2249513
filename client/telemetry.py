"""Traces and metrics: OpenTelemetry spans from client to workflow to activity to model call, and
the Temporal SDK's metrics on a Prometheus endpoint.

Tracing is the SDK's own `TracingInterceptor` (temporalio.contrib.opentelemetry) on the client,
which the worker built on that client inherits. The `ask` that creates an agent is one trace:

    StartUpdateWithStartWorkflow:<type>       the Python client (or the gateway, or the CLI)
    ├── HandleUpdate:ask, RunWorkflow:<type>  the workflow (zero-length spans, replay-safe)
    └── StartActivity:llm_complete            the workflow
        └── RunActivity:llm_complete          the worker
            └── chat <model>                  the model call, with GenAI attributes

The SDK parents workflow-side spans on the context the workflow was started with, so later
turns of the same agent join that first trace; a later ask's own trace holds its client span,
which the agent's `HandleUpdate` span links to (docs/decisions.md).

`setup_tracing(settings)` is off (None: nothing installed, nothing imported) unless
`otel_endpoint` (OTEL_EXPORTER_OTLP_ENDPOINT) is set; then spans go over OTLP/HTTP, which
needs the extra `perennial[otel]`. Tests and programs that own their OpenTelemetry setup pass
an exporter or a provider instead. No OpenTelemetry global is set: the tracer travels with the
`Tracing` object and, inside activities, on the OpenTelemetry context.

Spans carry ids (workflow, run, activity, update), span names (agent type, update, activity),
model names and token counts; never payloads, message texts or API keys. An error's span status
quotes the error's message, which Perennial redacts of the configured secrets before raising.

`metrics_runtime(settings)` is the Temporal runtime with a Prometheus endpoint when
`metrics_port` (PERENNIAL_METRICS_PORT) is set; pass it to `connect(settings, runtime=...)`.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

import opentelemetry.context
import opentelemetry.trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode, Tracer
from temporalio import client as temporal_client
from temporalio.exceptions import ApplicationError
from temporalio.runtime import PrometheusConfig, Runtime, TelemetryConfig

from perennial.client.settings import Settings
from perennial.workflows.errors import RunError

if TYPE_CHECKING:
    from opentelemetry.sdk.trace.export import SpanExporter

    from perennial.workflows.llm.wire import ModelResponse

#: The instrumentation scope of every span Perennial makes (the SDK's spans included).
SCOPE = "perennial"
#: Where the tracer travels to the activities, on the OpenTelemetry context of each run.
_TRACER_KEY = opentelemetry.context.create_key("perennial.tracer")
#: GenAI semantic-convention names of the request options the model activity sends.
_REQUEST_OPTIONS = {
    "temperature": "gen_ai.request.temperature",
    "top_p": "gen_ai.request.top_p",
    "max_tokens": "gen_ai.request.max_tokens",
    "seed": "gen_ai.request.seed",
}


class TelemetryUnavailable(RunError):
    """Telemetry was configured but cannot start: the OTLP exporter is not installed, its
    headers are malformed, or the metrics endpoint cannot listen where it was told to."""


# --------------------------------------------------------------------------- tracing


@dataclass(eq=False)
class Tracing:
    """Spans for one process (or one test): the provider they go to, and the interceptors
    that make them. Pass it to `connect(settings, tracing=...)`; the worker built on that
    client traces its workflows and activities too."""

    provider: opentelemetry.trace.TracerProvider
    interceptors: tuple[temporal_client.Interceptor, ...]
    #: False for a provider the caller brought: `shutdown` then only flushes it.
    owned: bool = True
    _key: tuple[str, ...] | None = field(default=None, repr=False)

    def flush(self, timeout_millis: int = 10_000) -> bool:
        """Export every finished span now (a batch would otherwise wait for its timer)."""
        force_flush = getattr(self.provider, "force_flush", None)
        return bool(force_flush(timeout_millis)) if force_flush else True

    def shutdown(self) -> None:
        """Flush, and stop the exporter's thread (an owned provider only)."""
        self.flush()
        shutdown = getattr(self.provider, "shutdown", None)
        if self.owned and shutdown is not None:
            shutdown()
        with _shared_lock:
            if self._key is not None and _shared.get(self._key) is self:
                del _shared[self._key]


#: The settings-configured `Tracing` of this process, by configuration: every `connect` of a
#: process shares one provider and one exporter thread.
_shared: dict[tuple[str, ...], Tracing] = {}
_shared_lock = threading.Lock()


def setup_tracing(
    settings: Settings,
    *,
    exporter: SpanExporter | None = None,
    provider: opentelemetry.trace.TracerProvider | None = None,
) -> Tracing | None:
    """The tracing these arguments ask for, or None when nothing asks for any.

    Args:
        settings: Without `exporter` or `provider`: tracing over OTLP/HTTP to
            `otel_endpoint` (shared by every call in this process), or None when it is unset.
        exporter: Spans go here (batched), from a new provider named `otel_service_name`.
        provider: Spans go to this provider, which the caller set up and keeps.

    Raises:
        TelemetryUnavailable: `otel_endpoint` is set but is not an http(s) URL, or the OTLP
            exporter is not installed, or `otel_headers` is malformed.
    """
    if provider is not None:
        return _tracing(provider, owned=False)
    if exporter is not None:
        return _tracing(_provider(settings, exporter), owned=True)
    if settings.otel_endpoint is None:
        return None
    headers = settings.otel_headers.get_secret_value() if settings.otel_headers else ""
    key = (settings.otel_endpoint, headers, settings.otel_service_name)
    with _shared_lock:
        shared = _shared.get(key)
        if shared is None:
            shared = _tracing(_provider(settings, _otlp_exporter(settings)), owned=True)
            shared._key = key
            _shared[key] = shared
        return shared


def flush_process_tracing(timeout_millis: int = 5_000) -> None:
    """Export the spans of every settings-made `Tracing` in this process now: call it before
    `os._exit` (Perennial's entry points exit that way), which skips the exporters' own flush."""
    with _shared_lock:
        shared = list(_shared.values())
    for each in shared:
        each.flush(timeout_millis)


def _tracing(provider: opentelemetry.trace.TracerProvider, *, owned: bool) -> Tracing:
    # Imported here: the SDK's contrib module pulls in opentelemetry-sdk (tens of ms).
    from temporalio.contrib.opentelemetry import TracingInterceptor

    tracer = provider.get_tracer(SCOPE)
    # The SDK's interceptor first (outermost): its activity span is current when ours runs.
    interceptors = (TracingInterceptor(tracer), _tracer_for_activities(tracer))
    return Tracing(provider=provider, interceptors=interceptors, owned=owned)


def _provider(settings: Settings, exporter: SpanExporter) -> opentelemetry.trace.TracerProvider:
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    # Resource.create also applies OTEL_RESOURCE_ATTRIBUTES (deployment.environment, ...).
    resource = Resource.create({"service.name": settings.otel_service_name})
    provider = TracerProvider(resource=resource)
    provider.add_span_processor(BatchSpanProcessor(exporter))  # exports off the event loop
    return provider


def _otlp_exporter(settings: Settings) -> SpanExporter:
    assert settings.otel_endpoint is not None
    if urlsplit(settings.otel_endpoint).scheme not in ("http", "https"):
        raise TelemetryUnavailable(
            "OTEL_EXPORTER_OTLP_ENDPOINT must be the collector's OTLP/HTTP base URL, like "
            f"http://localhost:4318, not {settings.otel_endpoint!r}"
        )
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    except ImportError:
        raise TelemetryUnavailable(
            "OTEL_EXPORTER_OTLP_ENDPOINT is set but the OTLP exporter is not installed: "
            "pip install 'perennial[otel]' (or unset it to run without tracing)"
        ) from None
    # The standard variable is the collector's base URL; the traces path is per signal.
    endpoint = settings.otel_endpoint.rstrip("/") + "/v1/traces"
    return OTLPSpanExporter(endpoint=endpoint, headers=otlp_headers(settings))


def otlp_headers(settings: Settings) -> dict[str, str]:
    """`otel_headers` (`key=value,...`, values URL-encoded, as OpenTelemetry specifies).

    Raises:
        TelemetryUnavailable: an item is not `key=value` (the text is not quoted: a secret).
    """
    raw = settings.otel_headers.get_secret_value() if settings.otel_headers else ""
    headers: dict[str, str] = {}
    for number, item in enumerate((i for i in raw.split(",") if i.strip()), start=1):
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise TelemetryUnavailable(
                f"OTEL_EXPORTER_OTLP_HEADERS: item {number} is not key=value"
            )
        headers[unquote(name.strip()).lower()] = unquote(value.strip())
    return headers


def _tracer_for_activities(tracer: Tracer) -> temporal_client.Interceptor:
    """An interceptor that puts `tracer` on the context every activity runs in, so the model
    activity opens its model-call span under the SDK's activity span (no global provider)."""
    # Imported here: client/logging imports this module, and CLI commands that only log
    # (init, server) would pay ~100 ms for temporalio.worker.
    from temporalio import worker

    class TracerOnContext(worker.ActivityInboundInterceptor):
        async def execute_activity(self, input: worker.ExecuteActivityInput) -> Any:
            context = opentelemetry.context.set_value(_TRACER_KEY, tracer)
            token = opentelemetry.context.attach(context)
            try:
                return await super().execute_activity(input)
            finally:
                opentelemetry.context.detach(token)

    class TracerForActivities(temporal_client.Interceptor, worker.Interceptor):
        def intercept_activity(
            self, next: worker.ActivityInboundInterceptor
        ) -> worker.ActivityInboundInterceptor:
            return TracerOnContext(next)

    return TracerForActivities()


def current_trace_ids() -> tuple[str, str] | None:
    """The active span's trace id and span id (hex, as tracing backends show them), if any."""
    context = opentelemetry.trace.get_current_span().get_span_context()
    if not context.is_valid:
        return None
    return format(context.trace_id, "032x"), format(context.span_id, "016x")


# --------------------------------------------------------------------------- the model call


class ModelCallSpan:
    """What the model activity records on its model-call span; does nothing untraced."""

    def __init__(self, span: Span | None) -> None:
        self._span = span

    def answered(self, response: ModelResponse, *, usage_reported: bool) -> None:
        """The response's model, finish reason and (when the server reported them) tokens."""
        if self._span is None:
            return
        attributes: dict[str, Any] = {"gen_ai.response.model": response.model}
        if response.finish_reason:
            attributes["gen_ai.response.finish_reasons"] = (response.finish_reason,)
        if usage_reported:
            attributes["gen_ai.usage.input_tokens"] = response.usage.prompt_tokens
            attributes["gen_ai.usage.output_tokens"] = response.usage.completion_tokens
        self._span.set_attributes(attributes)


@contextmanager
def model_call_span(
    *, model: str, server: str, options: Mapping[str, Any]
) -> Iterator[ModelCallSpan]:
    """A `chat <model>` span (GenAI semantic conventions) around one Chat Completions call,
    when the activity runs traced; a failure sets `error.type` to its stable error type.

    Args:
        model: The requested model.
        server: The endpoint's base URL (only its host and port are recorded).
        options: The request's options; numeric sampling options are recorded, texts never.
    """
    tracer = opentelemetry.context.get_value(_TRACER_KEY)
    if not isinstance(tracer, Tracer):
        yield ModelCallSpan(None)
        return
    attributes: dict[str, Any] = {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "openai",
        "gen_ai.system": "openai",  # the older name, still what many backends read
        "gen_ai.request.model": model,
        **_server_attributes(server),
    }
    for option, name in _REQUEST_OPTIONS.items():
        if isinstance(options.get(option), int | float):
            attributes[name] = options[option]
    # Exceptions are not recorded as events: their text and traceback are not needed here.
    with tracer.start_as_current_span(
        f"chat {model}", kind=SpanKind.CLIENT, attributes=attributes,
        record_exception=False, set_status_on_exception=False,
    ) as span:  # fmt: skip
        try:
            yield ModelCallSpan(span)
        except ApplicationError as err:
            _failed(span, err.type or type(err).__name__)
            raise
        except BaseException as err:
            _failed(span, type(err).__name__)
            raise


def _failed(span: Span, error_type: str) -> None:
    span.set_attribute("error.type", error_type)
    span.set_status(Status(StatusCode.ERROR, error_type))


def _server_attributes(server: str) -> dict[str, Any]:
    url = urlsplit(server)
    if not url.hostname:
        return {}
    port = url.port or (443 if url.scheme == "https" else 80)
    return {"server.address": url.hostname, "server.port": port}


# --------------------------------------------------------------------------- metrics


def metrics_runtime(settings: Settings) -> Runtime | None:
    """A Temporal runtime that serves the SDK's metrics at
    `http://{metrics_host}:{metrics_port}/metrics`, or None when `metrics_port` is unset.
    Create it before connecting and pass it to `connect(settings, runtime=...)`.

    Raises:
        TelemetryUnavailable: the address is taken or invalid.
    """
    if settings.metrics_port is None:
        return None
    host = f"[{settings.metrics_host}]" if ":" in settings.metrics_host else settings.metrics_host
    address = f"{host}:{settings.metrics_port}"
    try:
        return Runtime(telemetry=TelemetryConfig(metrics=PrometheusConfig(bind_address=address)))
    except ValueError as err:  # the SDK's core reports bind failures as ValueError
        raise TelemetryUnavailable(
            f"cannot serve metrics on {address} (PERENNIAL_METRICS_HOST / "
            f"PERENNIAL_METRICS_PORT): {err}"
        ) from None


__all__ = [
    "ModelCallSpan",
    "TelemetryUnavailable",
    "Tracing",
    "current_trace_ids",
    "flush_process_tracing",
    "metrics_runtime",
    "model_call_span",
    "otlp_headers",
    "setup_tracing",
]
