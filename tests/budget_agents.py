"""Agent types with small budgets and short idle compaction, for test_entity_budgets.py and
test_entity_compaction.py (light module: the workflow sandbox re-imports it)."""

from __future__ import annotations

from datetime import timedelta

from perennial.workflows.notes import NotesAgent
from perennial.workflows.registry import agent_type


@agent_type("test_notes_budget")
class BudgetNotesAgent(NotesAgent):
    """Notes whose state, versions and carried inbox have tiny byte budgets."""

    max_state_bytes = 4_000
    max_versions_bytes = 10_000
    max_carried_inbox_bytes = 2_000
    max_signals_per_run = 60
    force_switch_signals = 60  # switch even mid-flood, so a backlog is carried


@agent_type("test_notes_compacting")
class CompactingNotesAgent(NotesAgent):
    """Notes that compact their history after 1 s idle, once the run has 30 events."""

    compact_idle_after = timedelta(seconds=1)
    compact_min_history_events = 30
