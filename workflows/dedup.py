"""Which message ids an agent has already applied, and what it replied.

A bounded window (oldest ids forgotten first), carried across continue-as-new, so a message
delivered twice (a client retry, a re-sent signal) is applied once and an `ask` repeated with
the same id gets the first reply.
"""

from __future__ import annotations

from collections import OrderedDict

from workflows.messages import SeenMessage


class SeenWindow:
    """The last `capacity` applied message ids with their replies, also bounded by
    `max_bytes` of id + reply text (the window travels in the continue-as-new input)."""

    def __init__(self, *, capacity: int, max_bytes: int, seen: list[SeenMessage]) -> None:
        if capacity < 1:
            raise ValueError("the dedup window must hold at least one id")
        self._capacity = capacity
        self._max_bytes = max_bytes
        self._bytes = 0
        self._seen: OrderedDict[str, SeenMessage] = OrderedDict()
        for entry in seen[-capacity:]:
            self.remember(entry)

    def get(self, message_id: str) -> SeenMessage | None:
        return self._seen.get(message_id)

    def __contains__(self, message_id: str) -> bool:
        return message_id in self._seen

    def remember(self, entry: SeenMessage) -> None:
        previous = self._seen.pop(entry.id, None)
        if previous is not None:
            self._bytes -= _size(previous)
        self._seen[entry.id] = entry
        self._bytes += _size(entry)
        while len(self._seen) > 1 and (
            len(self._seen) > self._capacity or self._bytes > self._max_bytes
        ):
            self._bytes -= _size(self._seen.popitem(last=False)[1])

    def entries(self) -> list[SeenMessage]:
        return list(self._seen.values())


def _size(entry: SeenMessage) -> int:
    return len(entry.id) + len(entry.reply or "") + 16
