"""An LLM agent type with the alarm tools, for the tests (registered on import; a worker
subprocess gets it through `Settings.worker_modules`). Its model is the scripted server."""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy

from workflows.alarm_tools import ALARM_TOOLS
from workflows.llm import LLMAgent, LLMState
from workflows.messages import AgentStart
from workflows.registry import AGENT_TYPES, register

MODEL = "scripted-model"


@workflow.defn(name="test_alarm_llm")
class AlarmLLMAgent(LLMAgent[LLMState]):
    """Sets, lists and cancels its own alarms with the model's tools."""

    instructions = "You are a test agent with alarms."
    model = MODEL
    tools = ALARM_TOOLS
    max_steps = 5
    model_start_to_close_timeout = timedelta(seconds=30)
    model_retry_policy = RetryPolicy(
        initial_interval=timedelta(milliseconds=200), maximum_attempts=2
    )

    @workflow.run
    async def run(self, start: AgentStart) -> None:
        await self.serve()


if "test_alarm_llm" not in AGENT_TYPES:
    register(AlarmLLMAgent)
