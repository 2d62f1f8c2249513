"""Agent types for the alarm tests, registered in the agent registry on import.

Import this module before a worker is built; a worker process gets it through
`Settings.app`. The workflow sandbox re-imports it for every run: keep it light
(temporalio, pydantic and `workflows` only; no I/O at import time).
"""

from __future__ import annotations

from datetime import datetime

from temporalio import workflow

from perennial.workflows.entity import AgentWorkflow
from perennial.workflows.messages import AlarmWake, Message
from perennial.workflows.registry import agent_type

with workflow.unsafe.imports_passed_through():
    from pydantic import BaseModel

#: An alarm whose payload starts with this makes the recorder's alarm turn raise (after it has
#: changed the state, which the runtime must undo).
BOOM = "boom"
#: A message `sleep:<seconds>` keeps the recorder busy in its turn for that long.
SLEEP = "sleep:"


class AlarmRecord(BaseModel):
    schedule_id: str
    payload: str
    due_at: datetime
    fired_at: datetime
    missed: int
    run: int


class RecorderState(BaseModel):
    alarms: list[AlarmRecord] = []
    #: What the agent applied, in order: `message:<text>` and `alarm:<schedule id>`.
    applied: list[str] = []


@agent_type("test_alarm_recorder")
class AlarmRecorder(AgentWorkflow[RecorderState]):
    """Records every alarm it is woken with; continues as new after every 4 signals."""

    state_model = RecorderState
    max_signals_per_run = 4
    max_schedules = 3
    compact_idle_after = None

    async def on_message(self, message: Message) -> str:
        if message.text.startswith(SLEEP):
            await workflow.sleep(float(message.text.removeprefix(SLEEP)), summary="busy turn")
        self.state.applied.append(f"message:{message.text}")
        return f"applied {message.text}"

    async def on_alarm(self, alarm: AlarmWake) -> str:
        self.state.alarms.append(
            AlarmRecord(
                schedule_id=alarm.schedule_id,
                payload=alarm.payload,
                due_at=alarm.due_at,
                fired_at=alarm.fired_at,
                missed=alarm.missed,
                run=self.generation + 1,
            )
        )
        self.state.applied.append(f"alarm:{alarm.schedule_id}")
        if alarm.payload.startswith(BOOM):
            raise ValueError(f"alarm {alarm.schedule_id} went boom")
        return f"alarm {alarm.schedule_id} recorded"
