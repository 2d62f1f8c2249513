"""The alarm benchmark's baseline: a plain entity workflow that is told a due time, then sleeps
until it with one `workflow.sleep` timer, as anyone would write it by hand. No framework. Like
an agent it lives on after the timer fires (closing the workflow would add work on the server
that an agent does not do).

The workflow sandbox re-imports this module for every run: keep it free of I/O and heavy imports.
"""

from __future__ import annotations

from datetime import datetime

from temporalio import workflow

RAW_TIMER_TYPE = "bench_raw_timer"


@workflow.defn(name=RAW_TIMER_TYPE)
class RawTimer:
    def __init__(self) -> None:
        self._due: datetime | None = None
        self._fired: list[datetime] = []

    @workflow.run
    async def run(self) -> None:
        while True:
            await workflow.wait_condition(lambda: self._due is not None)
            due, self._due = self._due, None
            assert due is not None
            await workflow.sleep(
                max((due - workflow.now()).total_seconds(), 0.001), summary="raw alarm"
            )
            self._fired.append(workflow.now())

    @workflow.update(name="set_alarm")
    def set_alarm(self, due: datetime) -> None:
        self._due = due

    @workflow.update(name="ready")
    def ready(self) -> None:
        """A no-op the benchmark calls first, so every workflow is running and cached."""
