"""Replay agent histories against the current code: the deploy check behind `perennial replay`.

A long-lived agent replays its history after every deploy; a change that makes the code emit
different commands for an old history (non-determinism) breaks that agent. Replaying
exported histories, or the live ones straight from the server, before a deploy finds it first.

    report = await replay_files([Path("notes-alice.json")])
    report = await replay_from_server(client, query="AgentType = 'notes'", limit=200)
    for result in report.results: ...
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterable, Sequence
from pathlib import Path
from typing import Any

from google.protobuf.json_format import ParseError
from pydantic import BaseModel
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.converter import DataConverter
from temporalio.service import RPCError, RPCStatusCode
from temporalio.worker import Replayer

from perennial.worker import workflow_runner
from perennial.workflows.errors import UsageError
from perennial.workflows.registry import agent_types

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
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, ParseError) as err:
        raise UsageError(f"cannot read history {path}: {err}") from err
    started = EventType.EVENT_TYPE_WORKFLOW_EXECUTION_STARTED
    if not history.events or history.events[0].event_type != started:
        raise UsageError(f"{path}: a history starts with WorkflowExecutionStarted")
    return history


async def replay_files(
    paths: Iterable[Path], *, workflows: Sequence[type] | None = None
) -> ReplayReport:
    """Replay exported histories (both formats `load_history` reads). Every file is read
    before any is replayed, so an unreadable one fails fast with `UsageError`.

    Args:
        paths: History files.
        workflows: The workflow classes to replay with (default: every registered agent type).
    """
    histories = [load_history(path) for path in paths]

    async def each() -> AsyncIterator[WorkflowHistory]:
        for history in histories:
            yield history

    results = await _replay(each(), workflows, pydantic_data_converter)
    return ReplayReport(results=results)


async def replay_from_server(
    client: Client,
    *,
    query: str = DEFAULT_QUERY,
    limit: int = 100,
    workflows: Sequence[type] | None = None,
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

    async def latest_runs() -> AsyncIterator[WorkflowHistory]:
        seen: set[str] = set()
        async for execution in client.list_workflows(f"({query}) AND {_SUPERSEDED}"):
            if execution.id in seen:  # a reset leaves its old run behind: newest comes first
                continue
            if len(seen) == limit:
                report.truncated = True
                return
            seen.add(execution.id)
            handle = client.get_workflow_handle(execution.id, run_id=execution.run_id)
            yield await handle.fetch_history()

    try:
        report.results = await _replay(latest_runs(), workflows, client.data_converter)
    except RPCError as err:
        if err.status == RPCStatusCode.INVALID_ARGUMENT:
            raise UsageError(f"invalid --query {query!r}: {err.message}") from err
        raise
    return report


async def _replay(
    histories: AsyncIterator[WorkflowHistory],
    workflows: Sequence[type] | None,
    data_converter: DataConverter,
) -> list[ReplayResult]:
    replayer = Replayer(
        workflows=list(agent_types().values()) if workflows is None else list(workflows),
        workflow_runner=workflow_runner(),  # the worker's sandbox, as a deploy would run it
        data_converter=data_converter,
    )
    results: list[ReplayResult] = []
    # Not `replay_workflows`: it keys failures by run id, which would merge two exports of
    # one run taken at different times. Its iterator gives one verdict per history, in order.
    async with replayer.workflow_replay_iterator(histories) as replayed:
        async for result in replayed:
            failure = result.replay_failure
            results.append(
                ReplayResult(
                    workflow_id=result.history.workflow_id,
                    run_id=result.history.run_id,
                    ok=failure is None,
                    error=None if failure is None else describe_failure(failure),
                )
            )
    return results


def describe_failure(err: BaseException) -> str:
    """The useful line of a replay failure, no traceback."""
    return f"{type(err).__name__}: {err}"


def _unused(_: Any) -> None:
    pass


__all__ = [
    "DEFAULT_QUERY",
    "ReplayReport",
    "ReplayResult",
    "describe_failure",
    "load_history",
    "replay_files",
    "replay_from_server",
]
