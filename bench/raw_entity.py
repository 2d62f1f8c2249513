"""The baseline: a plain, hand-written Temporal entity workflow, as anyone would write it.

No framework: a `message` signal appends to a list, an `ask` update appends and replies, a
`state` query returns the list, and `run` is a bare while-loop. No dedup, no versions, no event
log, no search attributes, no continue-as-new. The benchmark runs it on the same server, with
the same worker options, as Perennial's agents, so every Perennial figure is a ratio to it.

The workflow sandbox re-imports this module for every run: keep it free of I/O and heavy imports.
"""

from __future__ import annotations

from collections import deque

from temporalio import workflow

RAW_TYPE = "raw_entity"


@workflow.defn(name=RAW_TYPE)
class RawEntity:
    def __init__(self) -> None:
        self._inbox: deque[str] = deque()
        self._messages: list[str] = []

    @workflow.run
    async def run(self) -> None:
        while True:
            await workflow.wait_condition(lambda: bool(self._inbox))
            while self._inbox:
                self._messages.append(self._inbox.popleft())

    @workflow.signal(name="message")
    def message(self, text: str) -> None:
        self._inbox.append(text)

    @workflow.update(name="ask")
    async def ask(self, text: str) -> str:
        self._messages.append(text)
        return f"Noted (note #{len(self._messages)})."

    @workflow.query(name="state")
    def state(self) -> dict[str, object]:
        return {"count": len(self._messages), "messages": self._messages}
