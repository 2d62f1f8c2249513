"""State schema migrations: an agent type's state changes shape, its agents' kept states follow.

An agent type declares the version of its state's shape and one step per version change, as
class attributes of its `AgentWorkflow`:

    @agent_type("notes")
    class NotesAgent(AgentWorkflow[NotesState]):
        state_schema_version = 2
        state_migrations = {
            0: lambda old: {**old, "tags": []},                  # 0 -> 1
            1: lambda old: {**old, "count": len(old["notes"])},  # 1 -> 2
        }

Every kept version (`Snapshot`) records the schema its JSON was written with. A state is
migrated when it is read: the current state when a run starts (carried across continue-as-new,
or from a fork or an import), an older kept version when `rollback` restores it. Steps run in
order from the snapshot's schema to the type's, each taking the JSON data (a dict) and
returning the next; the result must fit the state model. Steps run as workflow code (also on
replay): pure functions of their input, no I/O, no clock.

A step that is missing, raises, returns something other than a dict or a result the state
model refuses, and a state written by a newer schema than the code's, are `StateMigrationFailed`,
and the agent is left as it was: a rollback is refused; a run that cannot migrate its current
state fails at once with that error, before it changes anything, so its input (the carried
state) stays in its history, and `perennial recover` runs it again once a fixed deploy is out.

The steps are declared on the agent type, not on the state model: the type is what a deploy
versions (its limits, its tools), and state models stay plain pydantic models that several
types may share with migrations of their own.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ValidationError

from perennial.workflows.errors import StateMigrationFailed, summarize
from perennial.workflows.messages import Snapshot

#: One step: the state's JSON data at schema version k in, at version k + 1 out.
Migration = Callable[[dict[str, Any]], dict[str, Any]]

__all__ = ["Migration", "StateSchema", "check_declaration"]


@dataclass(frozen=True)
class StateSchema:
    """An agent type's state schema: its version, its migration steps and its state model."""

    agent_type: str
    version: int
    migrations: Mapping[int, Migration]
    model: type[BaseModel]

    def migrate(self, snapshot: Snapshot) -> Snapshot:
        """`snapshot` at this schema version: itself when it already is, else its JSON
        migrated step by step and checked against the state model (`StateMigrationFailed`)."""
        if snapshot.schema_version == self.version:
            return snapshot
        where = f"{self.agent_type} state version {snapshot.version}"
        if snapshot.schema_version > self.version:
            raise StateMigrationFailed(
                f"{where} was written with state schema {snapshot.schema_version}, newer than "
                f"this code's {self.version}: run it with the code that wrote it (or newer)"
            )
        data = self._data(snapshot.state_json, where)
        for step in range(snapshot.schema_version, self.version):
            data = self._step(step, data, where)
        try:
            state = self.model.model_validate(data)
        except ValidationError as err:
            raise StateMigrationFailed(
                f"{where} migrated to schema {self.version} does not fit "
                f"{self.model.__name__}: {summarize(err)}"
            ) from None
        return Snapshot.model_construct(
            version=snapshot.version,
            state_json=state.model_dump_json(),
            schema_version=self.version,
        )

    @staticmethod
    def _data(state_json: str, where: str) -> dict[str, Any]:
        try:
            data = json.loads(state_json)
        except ValueError as err:
            raise StateMigrationFailed(f"{where} is not JSON: {str(err)[:120]}") from None
        if not isinstance(data, dict):
            raise StateMigrationFailed(f"{where} is not a JSON object")
        return data

    def _step(self, step: int, data: dict[str, Any], where: str) -> dict[str, Any]:
        migration = self.migrations.get(step)
        if migration is None:
            declared = sorted(self.migrations) or "none"
            raise StateMigrationFailed(
                f"{where} needs a migration from state schema {step} to {step + 1}, and "
                f"{self.agent_type} declares none (state_migrations has steps from {declared})"
            )
        try:
            result = migration(data)
        except Exception as err:  # the step's own bug, reported with its type
            raise StateMigrationFailed(
                f"{where}: the migration from state schema {step} to {step + 1} raised "
                f"{type(err).__name__}: {str(err)[:200]}"
            ) from None
        if not isinstance(result, dict):
            raise StateMigrationFailed(
                f"{where}: the migration from state schema {step} to {step + 1} returned "
                f"{type(result).__name__}, not a dict"
            )
        return result


def check_declaration(cls: type, *, version: Any, migrations: Any) -> None:
    """Refuse a bad declaration when the agent type is defined (TypeError / ValueError)."""
    name = getattr(cls, "__qualname__", repr(cls))
    if not isinstance(version, int) or isinstance(version, bool) or version < 0:
        raise TypeError(f"{name}.state_schema_version must be an int >= 0, not {version!r}")
    if not isinstance(migrations, Mapping):
        raise TypeError(f"{name}.state_migrations must map a schema version to a function")
    for step, migration in migrations.items():
        if not isinstance(step, int) or isinstance(step, bool) or not 0 <= step < version:
            raise ValueError(
                f"{name}.state_migrations: step {step!r} is not a schema version below "
                f"state_schema_version ({version}); step k migrates from k to k + 1"
            )
        if not callable(migration):
            raise TypeError(f"{name}.state_migrations[{step}] is not callable")
