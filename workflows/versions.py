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
    """A ring of committed state snapshots; the newest is the current committed state.

    The byte budget counts each snapshot's JSON text as UTF-8 bytes. (It was the size of that
    text as a JSON string, escapes included: computing that was half the cost of a turn's
    snapshot under a flood, and what travels in a continue-as-new input is packed anyway.)"""

    def __init__(self, *, keep: int, max_bytes: int, snapshots: list[Snapshot]) -> None:
        if keep < 1:
            raise ValueError("at least one version must be kept")
        self._keep = keep
        self._max_bytes = max_bytes
        self._ring: deque[tuple[Snapshot, int]] = deque()
        self._bytes = 0
        for snapshot in snapshots[-keep:]:
            self._push(snapshot, len(snapshot.state_json.encode()))

    @property
    def current(self) -> Snapshot:
        return self._ring[-1][0]

    @property
    def empty(self) -> bool:
        return not self._ring

    def commit(self, state_json: str, *, size: int | None = None) -> Snapshot:
        """Make `state_json` (a state model's JSON text) the next version; `size`: its
        UTF-8 bytes, if the caller knows them already."""
        version = self._ring[-1][0].version + 1 if self._ring else 0
        # No re-validation: the text comes from a state model or from a kept snapshot.
        snapshot = Snapshot.model_construct(version=version, state_json=state_json)
        self._push(snapshot, len(state_json.encode()) if size is None else size)
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
