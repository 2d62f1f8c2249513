"""State versions: the last N committed states, for automatic and requested rollback."""

from __future__ import annotations

from collections import deque

from pydantic import JsonValue

from workflows.errors import VersionNotKept
from workflows.messages import Snapshot


class Versions:
    """A ring of committed state snapshots; the newest is the current committed state."""

    def __init__(self, *, keep: int, snapshots: list[Snapshot]) -> None:
        if keep < 1:
            raise ValueError("at least one version must be kept")
        self._ring: deque[Snapshot] = deque(snapshots[-keep:], maxlen=keep)

    @property
    def current(self) -> Snapshot:
        return self._ring[-1]

    @property
    def empty(self) -> bool:
        return not self._ring

    def commit(self, state: dict[str, JsonValue]) -> Snapshot:
        version = self._ring[-1].version + 1 if self._ring else 0
        snapshot = Snapshot(version=version, state=state)
        self._ring.append(snapshot)
        return snapshot

    def kept(self) -> list[int]:
        return [s.version for s in self._ring]

    def get(self, version: int) -> Snapshot:
        for snapshot in self._ring:
            if snapshot.version == version:
                return snapshot
        raise VersionNotKept(f"version {version} is not kept (kept versions: {self.kept()})")

    def snapshots(self) -> list[Snapshot]:
        return list(self._ring)
