"""Fork, export and import, on the agent's side: the bundle an agent exports, and the start
input a bundle becomes.

Query `export` (`ExportRequest` in, `AgentExport` out) reads the bundle from a running agent
without stopping it: its kept state versions (or the one asked for) as JSON text with the
schema version each was written with, its SQL database (every kept version's, or the one
asked for), its pending schedules when asked, its agent type and id. A fork or an import
starts a new agent from a bundle: its start input carries the kept versions (the last is the
state it starts at, at the source's version number), the database, the schedules, and its
`origin`, which becomes the new agent's first event (`forked` / `imported`). States
written with an older state schema are migrated when the new agent reads them
(`workflows.migrations`), so a bundle from older code starts on newer code.

Not in a bundle: the inbox (messages not applied yet), child tasks, pending asks, approvals
and observations. They are conversations with other agents and people that name the source,
and answers to them go to the source.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Literal

from temporalio import workflow

from perennial.workflows.eventlog import EventLog
from perennial.workflows.messages import (
    AgentExport,
    AgentOrigin,
    AgentStart,
    AlarmsCarried,
    ExportRequest,
    ForkedEvent,
    ImportedEvent,
    Schedule,
)
from perennial.workflows.packing import pack_carried
from perennial.workflows.versions import Versions

if TYPE_CHECKING:
    from perennial.workflows.sql import SqlDatabase

__all__ = ["EXPORT_QUERY", "build_export", "record_origin", "start_from_bundle"]

#: The wire query that reads an agent's bundle.
EXPORT_QUERY = "export"


def build_export(
    request: ExportRequest,
    *,
    agent_id: str,
    agent_type: str,
    versions: Versions,
    schedules: list[Schedule],
    sql: SqlDatabase,
    schema_version: int,
    now: datetime,
) -> AgentExport:
    """The agent's bundle: every kept version, or only `request.version` (VersionNotKept),
    its database with it."""
    if request.version is None:
        snapshots = versions.snapshots()
        database = sql.carried_whole()
    else:
        snapshots = [versions.get(request.version)]
        database = sql.carried_at(request.version)
    return AgentExport(
        agent_type=agent_type,
        source_id=agent_id,
        exported_at=now,
        version=snapshots[-1].version,
        state_schema_version=schema_version,
        snapshots=snapshots,
        schedules=schedules if request.with_schedules else [],
        sql=database,
    )


def start_from_bundle(bundle: AgentExport, *, kind: Literal["forked", "imported"]) -> AgentStart:
    """The start input of a new agent made from `bundle` (packed like a continue-as-new's)."""
    origin = AgentOrigin(
        kind=kind,
        source_id=bundle.source_id,
        version=bundle.version,
        exported_at=bundle.exported_at if kind == "imported" else None,
        schedules=len(bundle.schedules),
    )
    start = AgentStart(
        snapshots=bundle.snapshots,
        alarms=AlarmsCarried(schedules=bundle.schedules),
        sql=bundle.sql,
        origin=origin,
    )
    return pack_carried(start)


def record_origin(events: EventLog, origin: AgentOrigin) -> None:
    """The new agent's first event: where it came from."""
    if origin.kind == "forked":
        events.record(ForkedEvent, at=workflow.now(), source_id=origin.source_id,
                      version=origin.version, schedules=origin.schedules)  # fmt: skip
    else:
        events.record(ImportedEvent, at=workflow.now(), source_id=origin.source_id,
                      version=origin.version, exported_at=origin.exported_at,
                      schedules=origin.schedules)  # fmt: skip
