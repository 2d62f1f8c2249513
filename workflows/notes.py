"""The `notes` agent: the runtime's living example. No LLM; each message becomes a note."""

from __future__ import annotations

from temporalio import workflow

from perennial.workflows.entity import AgentWorkflow
from perennial.workflows.messages import Message
from perennial.workflows.registry import agent_type

with workflow.unsafe.imports_passed_through():
    from pydantic import BaseModel


class NotesState(BaseModel):
    counter: int = 0
    notes: list[str] = []


@agent_type("notes")
class NotesAgent(AgentWorkflow[NotesState]):
    """Appends every message to its notes and says which note number it was.

    Alarms reach it through the default `on_alarm` as messages whose text is the schedule's
    payload, so each alarm becomes a note too: `notes` doubles as a reminder agent."""

    state_model = NotesState


    async def on_message(self, message: Message) -> str:
        self.state.notes.append(message.text)
        self.state.counter += 1
        return f"Noted (note #{self.state.counter})."
