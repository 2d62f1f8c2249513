"""An LLM agent type with the alarm tools, for the tests (registered on import; a worker
subprocess gets it through `Settings.app`). Its model is the scripted server."""

from __future__ import annotations

from datetime import timedelta

from temporalio.common import RetryPolicy

from perennial.workflows.alarm_tools import ALARM_TOOLS
from perennial.workflows.llm import LLMAgent, LLMState
from perennial.workflows.registry import agent_type

MODEL = "scripted-model"


@agent_type("test_alarm_llm")
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
