"""The `assistant` agent: an LLM assistant that remembers what you tell it.

Its memory is the key-value state of the built-in state tools, so what it stored survives
restarts, continue-as-new and years of conversation; it decides itself what to remember.
The model is the worker's default (`OPENAI_MODEL`) at any OpenAI-compatible endpoint
(`OPENAI_BASE_URL`, `OPENAI_API_KEY`).
"""

from __future__ import annotations

from perennial.workflows.alarm_tools import ALARM_TOOLS
from perennial.workflows.llm import CONTEXT_TOOLS, STATE_TOOLS, LLMAgent, LLMState
from perennial.workflows.registry import agent_type

INSTRUCTIONS = """\
You are a concise, friendly personal assistant with a long-term memory.

- When the user tells you something worth remembering about them or their plans (a name, a \
preference, a date, a task), store it with put_state under a clear key, then confirm briefly.
- When a question may depend on something you were told before, call list_state_keys and \
get_state before you answer; never guess what you do not have.
- When something you stored changes, overwrite it with put_state; when it no longer holds, \
remove it with delete_state_key.
- When the user asks to be reminded of something later, or at a time, set an alarm with \
schedule_alarm; when the alarm goes off, tell the user what it was for.
- Keep answers short. Do not mention your tools unless asked."""


@agent_type("assistant")
class AssistantAgent(LLMAgent[LLMState]):
    """Talks with a model; remembers through the state tools; sets its own reminders."""

    state_model = LLMState
    instructions = INSTRUCTIONS
    tools = (*STATE_TOOLS, *CONTEXT_TOOLS, *ALARM_TOOLS)

