"""Which message ids an agent has already applied, and what it replied.

A bounded window (oldest ids forgotten first), carried across continue-as-new, so a message
delivered twice (a client retry, a re-sent signal) is applied once and an `ask` repeated with
the same id gets the first reply.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import NamedTuple

from perennial.workflows.messages import SeenMessage


class _Seen(NamedTuple):
    reply: str | None
    version: int
    size: int  # what it counts toward `max_bytes`


class SeenWindow:
    """The last `capacity` applied message ids with their replies, also bounded by
    `max_bytes` of id + reply text (the window travels in the continue-as-new input).

    Kept as plain records, one per applied message: building a SeenMessage model per turn
    was a visible share of a flooded agent's work. Models are built when read."""

    def __init__(self, *, capacity: int, max_bytes: int, seen: list[SeenMessage]) -> None:
        if capacity < 1:
            raise ValueError("the dedup window must hold at least one id")
        self._capacity = capacity
        self._max_bytes = max_bytes
        self._bytes = 0
        self._seen: OrderedDict[str, _Seen] = OrderedDict()
        for entry in seen[-capacity:]:
            self.remember(entry.id, entry.reply, entry.version)

    def get(self, message_id: str) -> SeenMessage | None:
        seen = self._seen.get(message_id)
        if seen is None:
            return None
        return SeenMessage(id=message_id, reply=seen.reply, version=seen.version)

    def __contains__(self, message_id: str) -> bool:
        return message_id in self._seen

    def remember(self, message_id: str, reply: str | None, version: int) -> None:
        """Remember (or refresh: it becomes the newest) what `message_id` was answered."""
        previous = self._seen.pop(message_id, None)
        if previous is not None:
            self._bytes -= previous.size
        size = len(message_id) + len(reply or "") + 16
        self._seen[message_id] = _Seen(reply, version, size)
        self._bytes += size
        while len(self._seen) > 1 and (
            len(self._seen) > self._capacity or self._bytes > self._max_bytes
        ):
            self._bytes -= self._seen.popitem(last=False)[1].size

    def entries(self) -> list[SeenMessage]:
        return [
            SeenMessage(id=message_id, reply=seen.reply, version=seen.version)
            for message_id, seen in self._seen.items()
        ]
