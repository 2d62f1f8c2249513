"""Agent types with small budgets and short idle compaction, for test_entity_budgets.py and
test_entity_compaction.py (light module: the workflow sandbox re-imports it)."""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow

from workflows.entity import AgentWorkflow
from workflows.messages import AgentStart, Message
from workflows.notes import NotesState
from workflows.registry import AGENT_TYPES, register


@workflow.defn(name="test_notes_budget")
class BudgetNotesAgent(AgentWorkflow[NotesState]):
    """Notes whose state, versions and carried inbox have tiny byte budgets."""

    state_model = NotesState
    max_state_bytes = 4_000
    max_versions_bytes = 10_000
    max_carried_inbox_bytes = 2_000
    max_signals_per_run = 60

    @workflow.run
    async def run(self, start: AgentStart) -> None:
        await self.serve()

    async def on_message(self, message: Message) -> str:
        self.state.notes.append(message.text)
        self.state.counter += 1
        return f"Noted (note #{self.state.counter})."


@workflow.defn(name="test_notes_compacting")
class CompactingNotesAgent(AgentWorkflow[NotesState]):
    """Notes that compact their history after 1 s idle, once the run has 30 events."""

    state_model = NotesState
    compact_idle_after = timedelta(seconds=1)
    compact_min_history_events = 30

    @workflow.run
    async def run(self, start: AgentStart) -> None:
        await self.serve()

    async def on_message(self, message: Message) -> str:
        self.state.notes.append(message.text)
        self.state.counter += 1
        return f"Noted (note #{self.state.counter})."


for _cls in (BudgetNotesAgent, CompactingNotesAgent):
    if getattr(_cls, "__temporal_workflow_definition").name not in AGENT_TYPES:
        register(_cls)
