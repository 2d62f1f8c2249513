"""The `conversation` agent: one per session, the traveller's side of the planner (the brief's
ConversationManagerDO), and `trip_notes`, the simplest of its specialists.

Each message of the session comes here. The model reads it and forwards it, rewritten to stand
on its own, to the right specialist with `route_to`: the session's `travel`, `scraper` or
`trip_notes` agent (the routes and what each is for come from agents.toml). `route_to` asks
the specialist by name and waits inside the turn for its answer (Perennial's
`ask_agent_and_wait`), so the reply to the traveller relays what the specialists said.

The transcript: the state keeps the last turns (`transcript_turns`), each with who answered
it, for the planner's page; the model's own context is a window whose older exchanges are
summarised into the state's `summary` (`ContextWindow(summarize=True)` in agents.toml), so a
conversation of any length keeps what was said without growing.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field
from temporalio import workflow

from perennial import (
    AgentWorkflow,
    LLMAgent,
    LLMState,
    Message,
    ToolError,
    agent_type,
    workflow_tool,
)

with workflow.unsafe.imports_passed_through():
    from examples.travel.factory import ConversationConfig, configured
    from examples.travel.shared import SessionClosed, SessionEnded, session_ended


#: The specialists that forget a session when told it ended (the scraper only caches pages
#: for a while: its cache's TTL ends them).
ENDED_BY_MESSAGE = frozenset({"travel", "trip_notes"})


class Turn(BaseModel):
    """One message of the traveller and the answer it got."""

    model_config = ConfigDict(extra="forbid")

    message_id: str
    at: datetime
    user: str
    reply: str | None
    #: The specialists that were asked in this turn (agent types), in order.
    routed_to: list[str] = []


class ConversationState(LLMState):
    transcript: list[Turn] = []
    #: Turns since the session began (the transcript keeps the last ones).
    turns: int = 0
    #: The specialists this conversation started (agent types), told when the session ends.
    specialists: list[str] = []
    ended: bool = False


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


@workflow_tool
async def route_to(
    agent: ConversationAgent,
    specialist: Annotated[str, Field(min_length=1, max_length=100)],
    request: Annotated[str, Field(min_length=1, max_length=8000)],
) -> str:
    """Forward the traveller's request to a specialist agent and return its answer.

    Args:
        specialist: One of the specialists listed in your instructions.
        request: The request, complete in itself (the specialist has not seen this
            conversation).
    """
    routes = agent.config.routes
    if specialist not in routes:
        raise ToolError(f"no specialist {specialist!r} (you can ask: {', '.join(routes)})")
    agent.routed(specialist)
    answer = await agent.ask_agent_and_wait(
        specialist,
        agent.agent_name,
        request,
        timeout_seconds=agent.config.route_timeout_seconds,
    )
    if answer.status == "answered":
        return answer.reply or "(the specialist gave no answer)"
    raise ToolError(f"{specialist} did not answer: {answer.error_type}: {answer.error}")


INSTRUCTIONS = """\
You are the front desk of a travel planner. You do not plan trips yourself: for each message \
of the traveller, pick the specialist best suited to it from the list below and forward the \
request with route_to, rewritten so that it stands on its own. Trip planning, searches, the \
itinerary, bookings and reminders go to travel. Then give the traveller the specialist's \
answer faithfully and briefly, with the source links it gave. If no specialist fits, answer \
briefly yourself."""


@agent_type("conversation")
@configured("conversation")
class ConversationAgent(LLMAgent[ConversationState]):
    """One session's conversation: keeps the transcript, routes each message to a specialist."""

    state_model = ConversationState
    instructions: ClassVar[str] = INSTRUCTIONS
    available_tools: ClassVar[tuple[Any, ...]] = (route_to,)
    config: ClassVar[ConversationConfig]

    def system_prompt(self) -> str:
        listed = "\n".join(f"- {name}: {what}" for name, what in self.config.routes.items())
        return f"{super().system_prompt()}\n\nSpecialists:\n{listed}"

    #: The specialists the running turn asked, in order.
    _routed: list[str] | None = None

    def routed(self, specialist: str) -> None:
        """Note that this turn asked `specialist` (and that this conversation started it)."""
        if self._routed is None:
            self._routed = []
        self._routed.append(specialist)
        if specialist not in self.state.specialists:
            self.state.specialists.append(specialist)

    async def on_message(self, message: Message) -> str | None:
        ended = session_ended(message, from_agents=(f"session/{self.agent_name}",))
        if ended is not None:
            return await self._end(ended)
        if self.state.ended:
            raise SessionClosed(f"session {self.agent_name} has ended; start a new one")
        self._routed = []
        reply = await super().on_message(message)
        assert message.id is not None
        state = self.state
        state.turns += 1
        state.transcript.append(Turn(message_id=message.id, at=workflow.now(),
                                     user=_cut(message.text, 4000),
                                     reply=_cut(reply, 8000) if reply is not None else None,
                                     routed_to=list(self._routed)))  # fmt: skip
        del state.transcript[: -self.config.transcript_turns]
        return reply

    async def _end(self, ended: SessionEnded) -> str:
        """Tell the specialists this conversation started, then forget the conversation."""
        for specialist in self.state.specialists:
            if specialist not in ENDED_BY_MESSAGE:
                continue
            await self.send_to_agent(specialist, self.agent_name, ended.message_text(),
                                     data=ended.model_dump(mode="json"))  # fmt: skip
        told = list(self.state.specialists)
        empty = ConversationState(ended=True)
        for name in ConversationState.model_fields:
            setattr(self.state, name, getattr(empty, name))
        return f"session {ended.session_id} ended ({ended.reason}); told: {', '.join(told) or 'nobody'}"


# --------------------------------------------------------------------------- trip_notes


class TripNotesState(BaseModel):
    notes: list[str] = []
    ended: bool = False


#: Notes one trip keeps (the oldest go first).
MAX_NOTES = 200


@agent_type("trip_notes")
class TripNotesAgent(AgentWorkflow[TripNotesState]):
    """The traveller's notes for one trip: "note: ..." adds one; anything else reads them."""

    async def on_message(self, message: Message) -> str:
        ended = session_ended(message, from_agents=(f"conversation/{self.agent_name}",))
        if ended is not None:
            self.state.notes.clear()
            self.state.ended = True
            return f"session {ended.session_id} ended: notes forgotten"
        if self.state.ended:
            raise SessionClosed(f"session {self.agent_name} has ended; start a new one")
        verb, sep, rest = message.text.partition(":")
        if sep and verb.strip().lower() in ("note", "add", "remember") and rest.strip():
            self.state.notes.append(_cut(rest.strip(), 2000))
            del self.state.notes[:-MAX_NOTES]
            return f"Noted (note #{len(self.state.notes)}): {rest.strip()}"
        listed = "\n".join(f"{n}. {note}" for n, note in enumerate(self.state.notes, 1))
        return f"Your notes:\n{listed}" if listed else "No notes yet."


__all__ = [
    "ConversationAgent",
    "ConversationState",
    "TripNotesAgent",
    "TripNotesState",
    "Turn",
    "route_to",
]
