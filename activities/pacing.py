"""The activity that paces an agent's backlog: it does nothing, quickly.

An agent applies at most `max_wakes_per_task` queued wakes per workflow task, then lets the
task end and goes on in the next one. With messages arriving, the next task starts at once.
With none (a backlog carried over by continue-as-new, or queued while no worker ran),
something must start it: a short timer fires about a second late on the dev server, and this
activity's completion starts the next task within milliseconds (docs/decisions.md).
"""

from __future__ import annotations

from temporalio import activity

from perennial.workflows.entity import NEXT_TASK_ACTIVITY


@activity.defn(name=NEXT_TASK_ACTIVITY)
async def next_task() -> None:
    """Return at once: the completion is the point."""
