"""The parts an agent is made of, and the narrow view of the agent each part gets.

`AgentWorkflow` is a small loop (inbox -> one turn at a time -> commit a version -> events)
that owns its parts: one per feature (alarms, children, messaging, observing, approvals) and
the runtime's own (the publisher of search attributes, the run budget). A part keeps its own
state, sees the agent only through an `AgentContext` (record an event, queue a wake, read the
clock), and answers the same few lifecycle calls, each optional:

    arm()                    a run starts: re-arm timers for what was carried over
    begin_turn()             a turn is about to run agent code
    end_turn(failed=...)     it ended; a failed turn's state is being restored
    idle_status()            what AgentStatus the agent shows while idle, if this part decides
    carry()                  what continue-as-new carries for this part (one typed model)
    signals()                the wire signals this part handles, by name

The loop calls a lifecycle method only on the parts that override it, so a turn pays nothing
for features it does not use.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any

from temporalio import workflow
from temporalio.common import RawValue

from perennial.workflows.messages import RejectedEvent

if TYPE_CHECKING:
    from perennial.workflows.eventlog import EventLog
    from perennial.workflows.inbox import Inbox
    from perennial.workflows.messages import Event, Wake
    from perennial.workflows.visibility import AgentStatus

#: A signal handler: takes the signal's argument as it arrived.
SignalHandler = Callable[[RawValue], None]


class AgentContext:
    """What a part may see and do of its agent."""

    def __init__(
        self,
        *,
        agent_id: str,
        agent_type: str,
        task_queue: str,
        events: EventLog,
        inbox: Inbox,
        version: Callable[[], int],
    ) -> None:
        self.agent_id = agent_id
        self.agent_type = agent_type
        self.task_queue = task_queue
        self.events = events
        self._inbox = inbox
        self._version = version

    @property
    def version(self) -> int:
        """The agent's last committed state version."""
        return self._version()

    @staticmethod
    def now() -> datetime:
        return workflow.now()

    def record(self, kind: type[Event], **fields: Any) -> int:  # type: ignore[valid-type]
        """Add an event to the agent's log, stamped now; returns its offset."""
        return self.events.record(kind, at=workflow.now(), **fields)

    def queue(self, wake: Wake) -> None:
        """Put a wake at the end of the agent's inbox."""
        self._inbox.queue(wake)

    def reject(self, what: str, error: str) -> None:
        """A signal that cannot be applied: recorded as a `rejected` event (signals cannot be
        refused to their sender)."""
        self.record(RejectedEvent, error=f"{what}: {error}")
        workflow.logger.warning("rejected %s: %s", what, error)

    @staticmethod
    def new_token() -> str:
        """A fresh capability token: 128 bits from the workflow's seeded generator (the same
        on replay, unguessable from outside)."""
        return f"{workflow.random().getrandbits(128):032x}"


class Part:
    """Base of the agent's parts; see the module docstring for the lifecycle."""

    def signals(self) -> Mapping[str, SignalHandler]:
        return {}

    def arm(self) -> None:
        """A run starts (after every part is built)."""

    def begin_turn(self) -> None:
        """A turn is about to run agent code."""

    def end_turn(self, *, failed: bool) -> None:
        """The turn ended; `failed`: its state is being restored."""

    def idle_status(self) -> AgentStatus | None:
        """The status an idle agent shows, if this part has a say (first part wins)."""
        return None

    def carry(self) -> Any:
        """What continue-as-new carries for this part."""
        return None


def overrides(part: Part, method: str) -> bool:
    """True when `part`'s class overrides `Part.<method>`."""
    return getattr(type(part), method) is not getattr(Part, method)


__all__ = ["AgentContext", "Part", "SignalHandler", "overrides"]
