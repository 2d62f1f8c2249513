"""Agent types that exist only for the tests, registered in the agent registry on import.

Import this module before a worker is built (the test modules import it at the top), so the
worker runs these types too. The workflow sandbox re-imports this module for every workflow
run: keep it light (temporalio, pydantic and `workflows` only; no I/O at import time).
"""

from __future__ import annotations

import datetime

from perennial.workflows.entity import AgentWorkflow
from perennial.workflows.messages import Message
from perennial.workflows.notes import NotesAgent, NotesState
from perennial.workflows.registry import agent_type

#: Texts starting with this always make the flaky agent's turn raise (after it mutated state).
BOOM = "boom"
#: This text makes the turn raise on the first attempt of each message id only (a transient
#: failure: retrying the same message id succeeds).
FLAKY = "flaky"
#: This text makes the turn read the wall clock, which the workflow sandbox forbids.
WALL_CLOCK = "what time is it?"


class TransientError(RuntimeError):
    pass


@agent_type("test_flaky")
class FlakyAgent(AgentWorkflow[NotesState]):
    """Notes, but a turn can fail after it has already changed the state."""

    state_model = NotesState
    max_versions = 4

    async def on_message(self, message: Message) -> str:
        # Mutate first, then fail: the runtime must undo these changes.
        self.state.notes.append(message.text)
        self.state.counter += 1
        if message.text.startswith(BOOM):
            raise ValueError(f"cannot digest {message.text!r}")
        if message.text == WALL_CLOCK:  # non-deterministic: the sandbox raises
            return f"it is {datetime.datetime.now():%H:%M}"
        attempted: set[str] = self.__dict__.setdefault("_attempted", set())
        if message.text == FLAKY and message.id not in attempted:
            attempted.add(message.id or "")
            raise TransientError("first attempt fails")
        return f"Noted (note #{self.state.counter})."


@agent_type("test_notes_small")
class SmallNotesAgent(NotesAgent):
    """Notes with tiny per-run limits, so continue-as-new happens every few dozen messages."""

    max_history_events = 150
    max_signals_per_run = 300
    max_updates_per_run = 60
    # Switch at those limits even in mid-flood, so tests see messages meet a switch.
    force_switch_history_events = 150
    force_switch_signals = 300
    force_switch_updates = 60


#: Iterations of the slow agent's busy loop: about 10 ms of CPU per turn.
SLOW_TURN_WORK = 120_000


@agent_type("test_slow")
class SlowAgent(AgentWorkflow[NotesState]):
    """Notes whose every turn burns ~10 ms of CPU (deterministically): a backlog of a few
    hundred messages is seconds of work, more than one workflow activation may take."""

    state_model = NotesState
    max_wakes_per_task = 50


    async def on_message(self, message: Message) -> str:
        total = 0
        for i in range(SLOW_TURN_WORK):
            total += i * i
        self.state.notes.append(message.text)
        self.state.counter += 1
        return f"Noted (note #{self.state.counter})."
