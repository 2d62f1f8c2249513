"""structlog, configured once per process (CLI, worker, demo).

Standard-library records (Temporal's `workflow.logger` and `activity.logger`, which are
replay-safe) are rendered through structlog too, and every line that comes from inside an
agent carries its id (`agent`), run id and, for activities, the activity name.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import structlog
from temporalio import workflow

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


def configure_logging(*, fmt: str = "auto", level: str = "INFO") -> None:
    """Console output on a terminal, JSON lines otherwise (or as `fmt` says)."""
    global _configured
    if _configured:
        return
    _configured = True
    as_json = fmt == "json" or (fmt == "auto" and not sys.stderr.isatty())
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if as_json
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[*shared, structlog.stdlib.ExtraAdder(), _temporal_context],
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                _drop_raw_context,
                renderer,
            ],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # The context goes into fields above; don't repeat it inside the message text.
    workflow.logger.workflow_info_on_message = False
    from temporalio import activity

    activity.logger.activity_info_on_message = False


def _drop_raw_context(_: Any, __: str, event: dict[str, Any]) -> dict[str, Any]:
    event.pop("temporal_workflow", None)
    event.pop("temporal_activity", None)
    return event
