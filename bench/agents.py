"""Agent types that exist only for the benchmark. The benchmark registers them (with
`workflows.registry.register`) before it builds a worker; nothing is registered on import,
because the workflow sandbox re-imports this module for every run."""

from __future__ import annotations

from datetime import timedelta

from perennial.workflows.notes import NotesAgent
from perennial.workflows.registry import agent_type

COMPACTING_NOTES = "bench_notes_compacting"


@agent_type(COMPACTING_NOTES)
class CompactingNotesAgent(NotesAgent):
    """`notes`, but an idle agent compacts its history (continues as new) after 2 s instead
    of 30 s, so the benchmark does not have to wait for it."""

    compact_idle_after = timedelta(seconds=2)

