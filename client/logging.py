"""structlog, configured once per process (CLI, worker, demo).

Standard-library records (Temporal's `workflow.logger` and `activity.logger`, which are
replay-safe) are rendered through structlog too, and every line that comes from inside an
agent carries its id (`agent`), run id and, for activities, the activity name; a line logged
under an OpenTelemetry span (tracing on) carries its `trace_id` and `span_id`.

Every line is redacted of the secrets the process was configured with (its API keys): an error
a library logs, or an exception's traceback, may quote one.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Iterable
from typing import Any

import structlog
from pydantic import SecretStr
from temporalio import workflow

from perennial.client.redaction import Redactor
from perennial.client.telemetry import current_trace_ids

_configured = False


def _temporal_context(_: Any, __: str, event: dict[str, Any]) -> dict[str, Any]:
    record = event.get("_record")
    if record is None:
        return event
    wf = getattr(record, "temporal_workflow", None)
    if isinstance(wf, dict):
        event.setdefault("agent", wf.get("workflow_id"))
        event.setdefault("run_id", wf.get("run_id"))
    act = getattr(record, "temporal_activity", None)
    if isinstance(act, dict):
        event.setdefault("agent", act.get("workflow_id"))
        event.setdefault("activity", act.get("activity_type"))
        event.setdefault("attempt", act.get("attempt"))
    return event


def configure_logging(
    *, fmt: str = "auto", level: str = "INFO", secrets: Iterable[SecretStr | str | None] = ()
) -> None:
    """Console output on a terminal, JSON lines otherwise (or as `fmt` says).

    Args:
        fmt: `auto`, `console` or `json`.
        level: The root logger's level.
        secrets: Texts no log line may show (the settings' API keys); `None`s are skipped.
    """
    global _configured
    if _configured:
        return
    _configured = True
    as_json = fmt == "json" or (fmt == "auto" and not sys.stderr.isatty())
    structlog.configure(
        processors=[*_shared(), structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        log_formatter(as_json=as_json, colors=sys.stderr.isatty(), secrets=secrets)
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # The context goes into fields above; don't repeat it inside the message text.
    workflow.logger.workflow_info_on_message = False
    from temporalio import activity

    activity.logger.activity_info_on_message = False


def log_formatter(
    *, as_json: bool, colors: bool = False, secrets: Iterable[SecretStr | str | None] = ()
) -> structlog.stdlib.ProcessorFormatter:
    """The formatter `configure_logging` installs: structlog and stdlib records, one renderer.

    Args:
        as_json: JSON lines, or console lines.
        colors: Colored console lines.
        secrets: Redacted from every line, tracebacks included.
    """
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if as_json
        else structlog.dev.ConsoleRenderer(colors=colors)
    )
    processors: list[Any] = [
        structlog.stdlib.ProcessorFormatter.remove_processors_meta,
        _drop_raw_context,
    ]
    redact = _redactor(secrets)
    if redact is None:
        processors.append(renderer)
    else:
        processors += [_RedactSecrets(redact), _redacted_output(renderer, redact)]
    return structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[*_shared(), structlog.stdlib.ExtraAdder(), _temporal_context],
        processors=processors,
    )


def _shared() -> list[Any]:
    return [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        add_trace_ids,
    ]


def add_trace_ids(_: Any, __: str, event: dict[str, Any]) -> dict[str, Any]:
    """Processor: `trace_id` and `span_id` of the active OpenTelemetry span (an activity's
    lines during a traced `ask` carry that ask's trace id), so a line leads to its trace."""
    ids = current_trace_ids()
    if ids is not None:
        event.setdefault("trace_id", ids[0])
        event.setdefault("span_id", ids[1])
    return event


def _redactor(secrets: Iterable[SecretStr | str | None]) -> Callable[[str], str] | None:
    values = [s for s in secrets if s]
    return Redactor(values) if values else None


class _RedactSecrets:
    """Processor: the event's traceback as text, and every string in the event, redacted."""

    def __init__(self, redact: Callable[[str], str]) -> None:
        self._redact = redact

    def __call__(self, logger: Any, name: str, event: dict[str, Any]) -> dict[str, Any]:
        # A renderer would format `exc_info` itself, past the reach of this processor.
        event = structlog.processors.format_exc_info(logger, name, event)
        return {key: self._scrub(value) for key, value in event.items()}

    def _scrub(self, value: Any) -> Any:
        if isinstance(value, str):
            return self._redact(value)
        if isinstance(value, dict):
            return {k: self._scrub(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self._scrub(v) for v in value]
        return value


def _redacted_output(renderer: Any, redact: Callable[[str], str]) -> Any:
    """The renderer, with its line redacted too: it `repr`s objects that were not strings."""

    def render(logger: Any, name: str, event: dict[str, Any]) -> str:
        return redact(renderer(logger, name, event))

    return render


def _drop_raw_context(_: Any, __: str, event: dict[str, Any]) -> dict[str, Any]:
    event.pop("temporal_workflow", None)
    event.pop("temporal_activity", None)
    return event
