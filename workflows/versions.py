"""State versions: the last N committed states, for automatic and requested rollback.

Bounded by count (`keep`) and by bytes (`max_bytes`: what all kept snapshots add to the
continue-as-new input, which Temporal caps at 2 MB). The current version is always kept,
whatever its size; older ones are dropped first. Snapshots are JSON text (see `Snapshot`).
"""

from __future__ import annotations

from collections import deque
from typing import NamedTuple

from pydantic_core import to_json

from perennial.workflows.errors import VersionNotKept
from perennial.workflows.messages import Snapshot


def json_size(value: object) -> int:
    """Bytes of `value` as JSON (what it costs in a Temporal payload)."""
    return len(to_json(value))


class _Kept(NamedTuple):
    version: int
    state_json: str
    size: int  # UTF-8 bytes of state_json
    schema_version: int = 0  # the state schema the JSON was written with

    def snapshot(self) -> Snapshot:
        # No re-validation: the text comes from a state model or from a kept snapshot.
        return Snapshot.model_construct(
            version=self.version, state_json=self.state_json, schema_version=self.schema_version
        )


class Versions:
    """A ring of committed state snapshots; the newest is the current committed state.

    The byte budget counts each snapshot's JSON text as UTF-8 bytes. (It was the size of that
    text as a JSON string, escapes included: computing that was half the cost of a turn's
    snapshot under a flood, and what travels in a continue-as-new input is packed anyway.)"""

    def __init__(
        self, *, keep: int, max_bytes: int, snapshots: list[Snapshot], schema_version: int = 0
    ) -> None:
        if keep < 1:
            raise ValueError("at least one version must be kept")
        self._keep = keep
        self._max_bytes = max_bytes
        #: Stamped on every commit: the schema of the code that commits.
        self._schema_version = schema_version
        # Plain records, not Snapshot models: a commit per turn, and building a model (even
        # unvalidated) cost a few percent of a flooded agent's worker time. Snapshots are
        # built only when read (rollback, the state query, continue-as-new).
        self._ring: deque[_Kept] = deque()
        self._bytes = 0
        for snapshot in snapshots[-keep:]:
            size = len(snapshot.state_json.encode())
            self._push(_Kept(snapshot.version, snapshot.state_json, size, snapshot.schema_version))

    @property
    def current(self) -> Snapshot:
        return self._ring[-1].snapshot()

    @property
    def version(self) -> int:
        """The current (last committed) version."""
        return self._ring[-1].version

    @property
    def current_json(self) -> str:
        """The current state as JSON text."""
        return self._ring[-1].state_json

    @property
    def empty(self) -> bool:
        return not self._ring

    def commit(self, state_json: str, *, size: int | None = None) -> int:
        """Make `state_json` (a state model's JSON text) the next version, and return its
        number; `size`: its UTF-8 bytes, if the caller knows them already."""
        version = self._ring[-1].version + 1 if self._ring else 0
        size = len(state_json.encode()) if size is None else size
        self._push(_Kept(version, state_json, size, self._schema_version))
        return version

    def _push(self, kept: _Kept) -> None:
        self._ring.append(kept)
        self._bytes += kept.size
        while len(self._ring) > 1 and (
            len(self._ring) > self._keep or self._bytes > self._max_bytes
        ):
            self._bytes -= self._ring.popleft().size

    def kept(self) -> list[int]:
        return [kept.version for kept in self._ring]

    @property
    def oldest(self) -> int:
        """The oldest version kept."""
        return self._ring[0].version

    def forget_before(self, version: int) -> None:
        """Drop the versions older than `version` (never the current one): the SQL database
        cannot restore them any more (`workflows.sql`)."""
        while len(self._ring) > 1 and self._ring[0].version < version:
            self._bytes -= self._ring.popleft().size

    def get(self, version: int) -> Snapshot:
        for kept in self._ring:
            if kept.version == version:
                return kept.snapshot()
        raise VersionNotKept(f"version {version} is not kept (kept versions: {self.kept()})")

    def snapshots(self) -> list[Snapshot]:
        return [kept.snapshot() for kept in self._ring]
