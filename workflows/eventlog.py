"""The agent's event log: bounded, offset-addressed, carried across continue-as-new.

Offsets start at 1 and only ever increase, so an observer that remembers the last offset it
saw can resume from any run of the agent. Only the newest `capacity` events are kept; a reader
that falls further behind is told how many it missed.

The agent records events as their fields and each is built (validated into its model) when it
is first read: under a flood most events scroll out of the log unread (figures in
bench/README.md).
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING, Any, NamedTuple

from perennial.workflows.messages import EventsPage

if TYPE_CHECKING:
    from perennial.workflows.messages import Event


class _Unbuilt(NamedTuple):
    """An event recorded but not yet read: its model and fields."""

    kind: type[Event]  # type: ignore[valid-type]
    offset: int
    fields: dict[str, Any]

    def build(self) -> Event:  # type: ignore[valid-type]
        return self.kind(offset=self.offset, **self.fields)


class EventLog:
    def __init__(self, *, capacity: int, events: list[Event], next_offset: int) -> None:
        if capacity < 1:
            raise ValueError("event log capacity must be at least 1")
        self._events: deque[Event | _Unbuilt] = deque(events[-capacity:], maxlen=capacity)
        self._next_offset = next_offset

    @property
    def next_offset(self) -> int:
        """The offset the next appended event will get."""
        return self._next_offset

    @property
    def last_offset(self) -> int:
        return self._next_offset - 1

    @property
    def oldest_offset(self) -> int:
        return self._events[0].offset if self._events else self._next_offset

    def append(self, event: Event) -> Event:
        """Store an event built with `offset=log.next_offset`."""
        if event.offset != self._next_offset:
            raise ValueError(f"event offset {event.offset} != next offset {self._next_offset}")
        self._events.append(event)
        self._next_offset += 1
        return event

    def record(self, kind: type[Event], **fields: Any) -> int:  # type: ignore[valid-type]
        """Store an event of `kind` at the next offset, built when first read; returns
        its offset. The fields are kept as given: pass values nobody mutates afterwards
        (strings, numbers, times, fresh lists or models), or the event shows the change."""
        offset = self._next_offset
        self._events.append(_Unbuilt(kind, offset, fields))
        self._next_offset += 1
        return offset

    def _built(self, index: int) -> Event:  # type: ignore[valid-type]
        item = self._events[index]
        if isinstance(item, _Unbuilt):
            item = self._events[index] = item.build()
        return item

    def has_after(self, after: int) -> bool:
        return self.last_offset > after

    def page(self, *, after: int, limit: int | None) -> EventsPage:
        oldest = self.oldest_offset
        missed = max(0, oldest - after - 1)
        start = max(0, after + 1 - oldest)
        stop = len(self._events) if limit is None else min(len(self._events), start + limit)
        events = [self._built(i) for i in range(start, stop)]
        next_after = events[-1].offset if events else max(after, oldest - 1)
        return EventsPage(events=events, next_after=next_after, oldest_offset=oldest, missed=missed)

    def tail(self) -> list[Event]:
        return [self._built(i) for i in range(len(self._events))]
