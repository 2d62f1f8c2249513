"""The `session` agent: one per session (the brief's SessionManagerDO).

It creates the session (`open`, called by the service before each message: the first call
starts it), maps it to its agents (all named like the session: see `examples.travel.shared`),
and expires it when idle: every `open` (re)sets a one-shot alarm `idle_expiry_seconds` ahead
(agents.toml, or the caller's own value), so the alarm only fires after that long without a
message. When it fires, or when `close` is called, the session ends and cleans up what it
started: its conversation is sent a `SessionEnded` message, and each agent passes it on to
the agents it started (conversation -> travel, trip_notes), each emptying its state and
cancelling its reminders; the session's scraper only caches pages, for a while (its TTL). An
ended session refuses `open` with `SessionExpired`: sessions are never reopened, a client
starts a new one.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field
from temporalio import workflow

from perennial import (
    AgentWorkflow,
    AlarmWake,
    InvalidRequest,
    Message,
    ScheduleRequest,
    agent_type,
    callable_method,
)

with workflow.unsafe.imports_passed_through():
    from examples.travel.factory import CONFIG, SessionConfig, configured
    from examples.travel.shared import SessionEnded, SessionExpired

#: The id of the schedule that expires an idle session.
EXPIRY_SCHEDULE = "expire-idle-session"


class SessionState(BaseModel):
    """A session: its status, its clock and its agents."""

    model_config = ConfigDict(extra="forbid")

    status: Literal["new", "active", "expired", "closed"] = "new"
    created_at: datetime | None = None
    last_active: datetime | None = None
    #: When the session expires if no message comes before.
    expires_at: datetime | None = None
    ended_at: datetime | None = None
    #: Messages the session was opened for.
    messages: int = 0
    idle_expiry_seconds: float | None = None
    #: The session's agents by role (agent ids).
    agents: dict[str, str] = {}


@agent_type("session")
@configured("session")
class SessionAgent(AgentWorkflow[SessionState]):
    """Creates a session, maps it to its agents, expires it when idle and cleans up."""

    config: ClassVar[SessionConfig]

    @callable_method
    def open(
        self, idle_expiry_seconds: Annotated[float, Field(ge=1, le=90 * 86_400)] | None = None
    ) -> SessionState:
        """Start the session, or keep it alive: each call pushes its expiry back.

        Args:
            idle_expiry_seconds: Expire the session after this long without a message
                (default: the agents file's `idle_expiry_seconds`).
        """
        state = self.state
        if state.status in ("expired", "closed"):
            raise SessionExpired(
                f"session {self.agent_name} {state.status} at {state.ended_at}; start a new one"
            )
        now = workflow.now()
        if state.status == "new":
            state.status = "active"
            state.created_at = now
            roles = ("conversation", *CONFIG.conversation.routes)
            state.agents = {role: f"{role}/{self.agent_name}" for role in roles}
        if idle_expiry_seconds is not None:
            state.idle_expiry_seconds = idle_expiry_seconds
        expiry = state.idle_expiry_seconds or self.config.idle_expiry_seconds
        state.last_active = now
        state.messages += 1
        state.expires_at = now + timedelta(seconds=expiry)
        self.add_schedule(
            ScheduleRequest(id=EXPIRY_SCHEDULE, payload="the session was idle too long",
                            after_seconds=expiry),
            created_by="session",
        )  # fmt: skip
        return state

    @callable_method
    async def close(self) -> SessionState:
        """End the session now: its agents are told to forget it."""
        if self.state.status in ("expired", "closed"):
            return self.state
        if any(s.id == EXPIRY_SCHEDULE for s in self.list_schedules()):
            self.cancel_schedule(EXPIRY_SCHEDULE)
        await self._end("closed")
        return self.state

    async def on_alarm(self, alarm: AlarmWake) -> str | None:
        if alarm.schedule_id != EXPIRY_SCHEDULE or self.state.status != "active":
            return None
        await self._end("expired")
        return f"session {self.agent_name} expired after {self.state.idle_expiry_seconds or self.config.idle_expiry_seconds:g} s idle"

    async def on_message(self, message: Message) -> str:
        raise InvalidRequest("a session takes calls, not messages: open or close")

    async def _end(self, reason: Literal["expired", "closed"]) -> None:
        state = self.state
        if state.messages:  # the service starts the conversation after the first open
            ended = SessionEnded(session_id=self.agent_name, reason=reason)
            await self.send_to_agent("conversation", self.agent_name, ended.message_text(),
                                     data=ended.model_dump(mode="json"))  # fmt: skip
        state.status = reason
        state.ended_at = workflow.now()
        state.expires_at = None


__all__ = ["EXPIRY_SCHEDULE", "SessionAgent", "SessionState"]
