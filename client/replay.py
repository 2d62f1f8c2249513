"""Replay agent histories against the current code: the deploy check behind `perennial replay`.

A long-lived agent replays its history after every deploy; a change that makes the code emit
different commands for an old history (non-determinism) breaks that agent. Replaying
exported histories, or the live ones straight from the server, before a deploy finds it first.

    report = await replay_files([Path("notes-alice.json")])
    report = await replay_from_server(client, query="AgentType = 'notes'", limit=200)
    for result in report.results: ...
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import AsyncIterator, Iterable, Sequence
from pathlib import Path
from typing import Any

from google.protobuf.json_format import ParseError
from pydantic import BaseModel
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.converter import DataConverter
from temporalio.runtime import LoggingConfig, Runtime, TelemetryConfig, TelemetryFilter
from temporalio.service import RPCError, RPCStatusCode
from temporalio.worker import Replayer

from perennial.worker import workflow_runner
from perennial.workflows.entity import AgentWorkflow
from perennial.workflows.errors import UsageError
from perennial.workflows.registry import agent_types

#: An agent type's workflow class.
AgentClass = type[AgentWorkflow[Any]]

#: Every agent, running or closed.
DEFAULT_QUERY = "AgentType IS NOT NULL"

#: A run that continued as new is never replayed again; its successor is (the latest run).
_SUPERSEDED = "ExecutionStatus != 'ContinuedAsNew'"


class ReplayResult(BaseModel):
    """How one history replayed on this code."""

    workflow_id: str
    run_id: str
    ok: bool
    #: The SDK's reason, reduced to its useful line (for non-determinism: the first command
    #: that differs from the history); None when the history replayed.
    error: str | None = None


class ReplayReport(BaseModel):
    """Every history replayed, in the order given (files) or listed (server)."""

    results: list[ReplayResult] = []
    #: The server listed more matching agents than `limit`; those were not replayed.
    truncated: bool = False

    @property
    def failed(self) -> list[ReplayResult]:
        """The results that did not replay."""
        return [r for r in self.results if not r.ok]


def load_history(path: Path) -> WorkflowHistory:
    """A saved history: `{"workflow_id", "history"}` as tests/histories and the benchmarks
    write it, or a bare history (`{"events": [...]}`, from `temporal workflow show --output
    json` or `WorkflowHistory.to_json()`), which is named after the file (its stem) as its
    workflow id. `UsageError` says why a file cannot be read as either."""
    try:
        doc = json.loads(path.read_text())
        if isinstance(doc, dict) and "events" in doc:
            history = WorkflowHistory.from_json(path.stem, doc)
        elif isinstance(doc, dict) and {"workflow_id", "history"} <= doc.keys():
            history = WorkflowHistory.from_json(str(doc["workflow_id"]), doc["history"])
        else:
            raise UsageError(f"{path}: not a history (no `events`, no `workflow_id`/`history`)")
    except (OSError, ValueError, TypeError, AttributeError, ParseError) as err:
        raise UsageError(f"cannot read history {path}: {err}") from err
    started = EventType.EVENT_TYPE_WORKFLOW_EXECUTION_STARTED
    if not history.events or history.events[0].event_type != started:
        raise UsageError(f"{path}: not a whole history (it starts with WorkflowExecutionStarted)")
    return history


async def replay_files(
    paths: Iterable[Path],
    *,
    workflows: Sequence[AgentClass] | None = None,
    converter: DataConverter = pydantic_data_converter,
) -> ReplayReport:
    """Replay exported histories (both formats `load_history` reads). Every file is read
    before any is replayed, so an unreadable one fails fast with `UsageError`.

    Args:
        paths: History files.
        workflows: The workflow classes to replay with (default: every registered agent type).
        converter: How payloads are read (`connection.data_converter(settings)` decrypts).
    """
    histories = [load_history(path) for path in paths]

    async def each() -> AsyncIterator[tuple[WorkflowHistory, str]]:
        for history in histories:
            yield history, history.run_id

    results = await _replay(each(), workflows, converter)
    return ReplayReport(results=results)


async def replay_from_server(
    client: Client,
    *,
    query: str = DEFAULT_QUERY,
    limit: int = 100,
    workflows: Sequence[AgentClass] | None = None,
) -> ReplayReport:
    """Replay the latest run of every agent the visibility `query` matches (running and
    closed), up to `limit` agents: the run a worker would replay. Runs that continued as new
    are left out; each history is fetched as the replay reaches it.

    Args:
        client: A client of the namespace to check (its data converter decodes payloads).
        query: A visibility query, like `AgentType = 'notes'`.
        limit: At most this many agents; `ReplayReport.truncated` says when more matched.
        workflows: The workflow classes to replay with (default: every registered agent type).
    """
    if limit < 1:
        raise UsageError(f"--limit must be at least 1, not {limit}")
    report = ReplayReport()

    async def latest_runs() -> AsyncIterator[tuple[WorkflowHistory, str]]:
        seen: set[str] = set()
        async for execution in client.list_workflows(f"({query}) AND {_SUPERSEDED}"):
            if execution.id in seen:  # a reset leaves its old run behind: newest comes first
                continue
            if len(seen) == limit:
                report.truncated = True
                return
            seen.add(execution.id)
            handle = client.get_workflow_handle(execution.id, run_id=execution.run_id)
            # The listed run id: after a reset, the history's first event names the old run.
            yield await handle.fetch_history(), execution.run_id

    try:
        report.results = await _replay(latest_runs(), workflows, client.data_converter)
    except RPCError as err:
        if err.status == RPCStatusCode.INVALID_ARGUMENT:
            raise UsageError(f"invalid --query {query!r}: {err.message}") from err
        raise
    return report


async def _replay(
    histories: AsyncIterator[tuple[WorkflowHistory, str]],
    workflows: Sequence[AgentClass] | None,
    data_converter: DataConverter,
) -> list[ReplayResult]:
    classes = list(agent_types().values()) if workflows is None else list(workflows)
    known = {cls.agent_type_name for cls in classes}
    replayer = Replayer(
        workflows=classes,
        workflow_runner=workflow_runner(),  # the worker's sandbox, as after a deploy
        data_converter=data_converter,
        runtime=_quiet_runtime(),
    )
    results: list[ReplayResult | None] = []
    waiting: dict[int, tuple[int, str]] = {}  # id(history) -> place, run id; verdicts come later

    async def replayable() -> AsyncIterator[WorkflowHistory]:
        async for history, run_id in histories:
            results.append(None)
            name = _workflow_type(history)
            if name not in known:  # the SDK would log a traceback: say what is missing
                results[-1] = _result(history.workflow_id, run_id, f"agent type {name!r} is "
                                      "not loaded here (name its module with --app)")  # fmt: skip
                continue
            waiting[id(history)] = len(results) - 1, run_id
            yield history

    # Not `replay_workflows`: it keys failures by run id, which merges two exports of one run
    # taken at different times; its iterator gives one verdict per history.
    async with replayer.workflow_replay_iterator(replayable()) as replayed:
        async for outcome in replayed:
            failure = outcome.replay_failure
            error = None if failure is None else describe_failure(failure)
            place, run_id = waiting.pop(id(outcome.history))
            results[place] = _result(outcome.history.workflow_id, run_id, error)
    return [r for r in results if r is not None]


def _result(workflow_id: str, run_id: str, error: str | None) -> ReplayResult:
    return ReplayResult(workflow_id=workflow_id, run_id=run_id, ok=error is None, error=error)


def _workflow_type(history: WorkflowHistory) -> str:
    return history.events[0].workflow_execution_started_event_attributes.workflow_type.name


@functools.cache
def _quiet_runtime() -> Runtime:
    """A runtime whose core logs errors only: it would log every non-determinism as a
    warning, which the report already says."""
    quiet = LoggingConfig(filter=TelemetryFilter(core_level="ERROR", other_level="ERROR"))
    return Runtime(telemetry=TelemetryConfig(logging=quiet))


#: The message inside the core's `Failure { failure: Some(Failure { message: "..." ...`.
_CORE_MESSAGE = re.compile(r'message: "((?:[^"\\]|\\.)*)"')


def describe_failure(err: BaseException) -> str:
    """The useful line of a replay failure, without the core's debug dump or a traceback.

    For non-determinism the SDK names the history event that the changed code's commands do
    not match, like `[TMPRL1100] Nondeterminism error: UpsertWorkflowSearchAttributesMachine
    does not handle HistoryEvent(id: 6, TimerStarted)`."""
    text = str(err)
    if found := _CORE_MESSAGE.search(text):
        text = re.sub(r"\\(.)", lambda m: {"n": "\n", "t": " "}.get(m[1], m[1]), found[1])
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[0] if lines else type(err).__name__


__all__ = [
    "DEFAULT_QUERY",
    "ReplayReport",
    "ReplayResult",
    "describe_failure",
    "load_history",
    "replay_files",
    "replay_from_server",
]
