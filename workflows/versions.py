"""State versions: the last N committed states, for automatic and requested rollback.

Bounded by count (`keep`) and by bytes (`max_bytes`: what all kept snapshots add to the
continue-as-new input, which Temporal caps at 2 MB). The current version is always kept,
whatever its size; older ones are dropped first. Snapshots are JSON text (see `Snapshot`).
"""

from __future__ import annotations

from collections import deque

from pydantic_core import to_json

from workflows.errors import VersionNotKept
from workflows.messages import Snapshot


def json_size(value: object) -> int:
    """Bytes of `value` as JSON (what it costs in a Temporal payload)."""
    return len(to_json(value))


class Versions:
    """A ring of committed state snapshots; the newest is the current committed state."""

    def __init__(self, *, keep: int, max_bytes: int, snapshots: list[Snapshot]) -> None:
        if keep < 1:
            raise ValueError("at least one version must be kept")
        self._keep = keep
        self._max_bytes = max_bytes
        self._ring: deque[tuple[Snapshot, int]] = deque()
        self._bytes = 0
        for snapshot in snapshots[-keep:]:
            self._push(snapshot, json_size(snapshot.state_json))

    @property
    def current(self) -> Snapshot:
        return self._ring[-1][0]

    @property
    def empty(self) -> bool:
        return not self._ring

    def commit(self, state_json: str) -> Snapshot:
        """Make `state_json` (a state model's JSON text) the next version."""
        version = self._ring[-1][0].version + 1 if self._ring else 0
        # No re-validation: the text comes from a state model or from a kept snapshot.
        snapshot = Snapshot.model_construct(version=version, state_json=state_json)
        # Its size as it travels: a JSON string inside the continue-as-new input, escaped.
        self._push(snapshot, json_size(state_json))
        return snapshot

    def _push(self, snapshot: Snapshot, size: int) -> None:
        self._ring.append((snapshot, size))
        self._bytes += size
        while len(self._ring) > 1 and (
            len(self._ring) > self._keep or self._bytes > self._max_bytes
        ):
            self._bytes -= self._ring.popleft()[1]

    def kept(self) -> list[int]:
        return [s.version for s, _ in self._ring]

    def get(self, version: int) -> Snapshot:
        for snapshot, _ in self._ring:
            if snapshot.version == version:
                return snapshot
        raise VersionNotKept(f"version {version} is not kept (kept versions: {self.kept()})")

    def snapshots(self) -> list[Snapshot]:
        return [s for s, _ in self._ring]
