"""Which message ids an agent has already applied, and what it replied.

A bounded window (oldest ids forgotten first), carried across continue-as-new, so a message
delivered twice (a client retry, a re-sent signal) is applied once and an `ask` repeated with
the same id gets the first reply.
"""

from __future__ import annotations

from collections import OrderedDict

from workflows.messages import SeenMessage


class SeenWindow:
    def __init__(self, *, capacity: int, seen: list[SeenMessage]) -> None:
        if capacity < 1:
            raise ValueError("the dedup window must hold at least one id")
        self._capacity = capacity
        self._seen: OrderedDict[str, SeenMessage] = OrderedDict()
        for entry in seen[-capacity:]:
            self._seen[entry.id] = entry

    def get(self, message_id: str) -> SeenMessage | None:
        return self._seen.get(message_id)

    def __contains__(self, message_id: str) -> bool:
        return message_id in self._seen

    def remember(self, entry: SeenMessage) -> None:
        self._seen[entry.id] = entry
        self._seen.move_to_end(entry.id)
        while len(self._seen) > self._capacity:
            self._seen.popitem(last=False)

    def entries(self) -> list[SeenMessage]:
        return list(self._seen.values())
