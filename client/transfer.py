"""Fork, export and import, on the caller's side.

    bundle = await alice.export()                       # query `export`: nothing stops
    Path("alice.json").write_text(export_text(bundle))
    bob = await alice.fork("bob", version=3)            # a new agent from alice's v3
    carol = await perennial.import_agent(Path("alice.json"), name="carol")

A bundle (`AgentExport`) holds an agent's kept state versions (or the one asked for), each
with the state schema it was written with, its SQL database, and optionally its schedules
(`workflows.export`). Starting from one
(`start_from_export`) starts `{type}/{name}` as a new workflow whose first event names its
origin; it refuses a name that is already an agent (`AgentExists`: running, or stopped and
waiting for `recover`), and changes nothing then. A name whose last run completed (a task
child that is done) or never started (`InvalidStart`) is free.

A file is checked before anything is started: `InvalidExport` says what is wrong with it.
When this process knows the bundle's agent type (its module is imported, or `--app`), the
state the new agent starts from is migrated and validated here too, so a bundle the agent
could not start from is refused typed (`InvalidExport`, `StateMigrationFailed`) instead of
failing the new agent's first run.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ValidationError
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.common import WorkflowIDConflictPolicy, WorkflowIDReusePolicy
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from perennial.client.lifecycle import check_restartable
from perennial.workflows.entity import AgentWorkflow
from perennial.workflows.errors import AgentExists, AgentStopped, UsageError, summarize
from perennial.workflows.export import start_from_bundle
from perennial.workflows.messages import EXPORT_FORMAT, EXPORT_FORMAT_VERSION, AgentExport
from perennial.workflows.migrations import StateSchema
from perennial.workflows.sql import check_carried
from perennial.workflows.visibility import agent_id

__all__ = [
    "InvalidExport",
    "TransferResult",
    "check_bundle",
    "export_text",
    "read_export",
    "start_from_export",
]

#: What `read_export` takes: a bundle, its JSON data, its JSON text, or a file's path.
ExportSource = AgentExport | Mapping[str, Any] | str | bytes | os.PathLike[str]


class InvalidExport(UsageError):
    """An export that cannot be imported: not JSON, not a Perennial agent export, a layout
    newer than this code reads, fields that do not validate, or (when this process knows the
    agent type) a state its model refuses. Nothing was started."""


class TransferResult(BaseModel):
    """What a fork or an import started."""

    id: str
    agent_type: str
    name: str
    kind: Literal["forked", "imported"]
    source_id: str
    #: The source's version the new agent starts at.
    version: int
    #: Kept versions and schedules it starts with.
    versions: int
    schedules: int


def read_export(source: ExportSource) -> AgentExport:
    """A bundle from a model, JSON data, JSON text or a path (`pathlib.Path`); InvalidExport
    with the reason when it is not one this code can import."""
    if isinstance(source, AgentExport):
        return source
    if isinstance(source, os.PathLike):
        try:
            source = Path(source).read_bytes()
        except OSError as err:
            raise InvalidExport(f"cannot read {os.fspath(source)!r}: {err.strerror}") from None
    data: Any = source
    if isinstance(source, str | bytes):
        try:
            data = json.loads(source)
        except ValueError as err:
            raise InvalidExport(f"not an agent export: not JSON ({str(err)[:120]})") from None
    if not isinstance(data, Mapping) or data.get("format") != EXPORT_FORMAT:
        raise InvalidExport(
            f'not an agent export: a Perennial export is a JSON object with "format": '
            f'"{EXPORT_FORMAT}" (written by `perennial export`)'
        )
    layout = data.get("format_version")
    if isinstance(layout, int) and layout > EXPORT_FORMAT_VERSION:
        raise InvalidExport(
            f"the export has format_version {layout}, newer than this Perennial reads "
            f"({EXPORT_FORMAT_VERSION}): import it with a newer Perennial"
        )
    try:
        bundle = AgentExport.model_validate(data)
        check_carried(bundle.sql, version=bundle.version)  # the database restores
    except ValidationError as err:
        raise InvalidExport(f"invalid agent export: {summarize(err)}") from None
    except ValueError as err:
        raise InvalidExport(f"invalid agent export: {err}") from None
    return bundle


def check_bundle(bundle: AgentExport, agent_class: type[AgentWorkflow[Any]]) -> None:
    """With the agent type's class at hand (not the base class): the state a new agent would
    start from, migrated to the class's schema and validated (StateMigrationFailed,
    InvalidExport)."""
    if agent_class is AgentWorkflow:
        return  # a type this process does not know: the agent checks it when it starts
    schema = StateSchema(bundle.agent_type, agent_class.state_schema_version,
                         agent_class.state_migrations, agent_class.state_model)  # fmt: skip
    current = schema.migrate(bundle.snapshots[-1])
    try:
        agent_class.state_model.model_validate_json(current.state_json)
    except ValidationError as err:
        raise InvalidExport(
            f"the state at version {bundle.version} does not fit "
            f"{agent_class.state_model.__name__}: {summarize(err)}"
        ) from None


async def start_from_export(
    client: Client,
    bundle: AgentExport,
    *,
    name: str,
    task_queue: str,
    kind: Literal["forked", "imported"],
) -> TransferResult:
    """Start `{bundle.agent_type}/{name}` from `bundle`. AgentExists when that agent exists
    (nothing is started then)."""
    workflow_id = agent_id(bundle.agent_type, name)
    start = start_from_bundle(bundle, kind=kind).wire()

    async def call(reuse: WorkflowIDReusePolicy) -> None:
        await client.start_workflow(
            bundle.agent_type,
            start,
            id=workflow_id,
            task_queue=task_queue,
            id_conflict_policy=WorkflowIDConflictPolicy.FAIL,
            id_reuse_policy=reuse,
            static_summary=f"{bundle.agent_type} agent {name!r}, {kind} from {bundle.source_id}",
        )

    try:
        await call(WorkflowIDReusePolicy.REJECT_DUPLICATE)
    except WorkflowAlreadyStartedError:
        await _check_free(client, workflow_id)
        try:  # the last run completed, or never started: the name is free
            await call(WorkflowIDReusePolicy.ALLOW_DUPLICATE)
        except WorkflowAlreadyStartedError:
            raise AgentExists(f"agent {workflow_id!r} was started meanwhile") from None
    return TransferResult(
        id=workflow_id,
        agent_type=bundle.agent_type,
        name=name,
        kind=kind,
        source_id=bundle.source_id,
        version=bundle.version,
        versions=len(bundle.snapshots),
        schedules=len(bundle.schedules),
    )


async def _check_free(client: Client, workflow_id: str) -> None:
    """AgentExists unless the agent's last run ended so that a new one may take its name."""
    try:
        description = await client.get_workflow_handle(workflow_id).describe()
    except RPCError as err:
        if err.status == RPCStatusCode.NOT_FOUND:
            return  # gone meanwhile (retention)
        raise
    if description.status == WorkflowExecutionStatus.RUNNING:
        raise AgentExists(
            f"agent {workflow_id!r} already exists; nothing was started (pick another name)"
        )
    try:
        await check_restartable(client, workflow_id)
    except AgentStopped:
        raise AgentExists(
            f"agent {workflow_id!r} exists and is stopped (`perennial recover {workflow_id}` "
            "brings it back); nothing was started: pick another name"
        ) from None


def export_text(bundle: AgentExport) -> str:
    """The bundle as an export file's JSON text: each kept state as JSON data (readable and
    diffable) rather than a string; `read_export` reads both forms."""
    data = bundle.model_dump(mode="json")
    data["snapshots"] = [
        {"version": s.version, "schema_version": s.schema_version, "state": s.state}
        for s in bundle.snapshots
    ]
    return json.dumps(data, indent=2, ensure_ascii=False)
