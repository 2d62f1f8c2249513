"""Durations from the workflow's own clock (`workflow.now()`: deterministic on replay)."""

from __future__ import annotations

from datetime import datetime

from temporalio import workflow


def seconds_until(at: datetime) -> float:
    """Seconds from now until `at`, for a timer: at least 1 ms (Temporal refuses a zero or
    negative timer, and a time already past should fire at once)."""
    return max((at - workflow.now()).total_seconds(), 0.001)
