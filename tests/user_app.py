"""An agent type written the way the README teaches, in a module of its own, without
`from __future__ import annotations` (the annotations are real classes here)."""

from pydantic import BaseModel

from perennial import AgentWorkflow, Message, agent_type


class CounterState(BaseModel):
    total: int = 0
    seen: list[str] = []


@agent_type("user_counter")
class Counter(AgentWorkflow[CounterState]):
    """Adds up the numbers it is sent."""

    async def on_message(self, message: Message) -> str:
        self.state.total += int(message.text)  # not a number: the turn fails, state kept
        self.state.seen.append(message.text)
        return f"total is {self.state.total}"
