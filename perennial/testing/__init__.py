"""Testing an application's agents against a real Temporal dev server.

    from perennial.testing import AgentTestEnv, ScriptedLLM, eventually, text

`AgentTestEnv` (an async context manager) starts a dev server and a worker for the
application's agent types; `perennial.testing.pytest_plugin` gives the same as pytest fixtures;
`ScriptedLLM` is a real local Chat Completions server that replays a script, so LLM agents run
through the real `openai` client with no model endpoint.
"""

from perennial.testing.harness import AgentTestEnv, eventually
from perennial.testing.scripted_llm import ScriptedLLM, call, error, text, tool_calls, usage

__all__ = ["AgentTestEnv", "ScriptedLLM", "call", "error", "eventually", "text", "tool_calls", "usage"]
