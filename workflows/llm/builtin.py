"""The built-in workflow tools: the agent's key-value memory and its context.

They run inside the agent workflow (deterministic, no activity), and only read or change the
agent's state; a failed turn rolls their changes back with the rest of the state. The model
decides what to remember and when: these tools store what they are given and nothing more.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

from pydantic import Field, JsonValue
from pydantic_core import to_json

from perennial.workflows.llm.context import keep_last_exchanges
from perennial.workflows.llm.tools import ToolError, render_result, workflow_tool

if TYPE_CHECKING:
    from perennial.workflows.llm.agent import LLMAgent

Key = Annotated[str, Field(min_length=1, max_length=200)]


@workflow_tool
def get_state(agent: LLMAgent[Any], key: Key) -> str:
    """Read the value you stored under a key with put_state.

    Args:
        key: The key the value was stored under.
    """
    memory = agent.state.memory
    if key not in memory:
        known = ", ".join(sorted(memory)) or "none"
        raise ToolError(f"nothing is stored under {key!r} (stored keys: {known})")
    return render_result(memory[key])


@workflow_tool
def put_state(agent: LLMAgent[Any], key: Key, value: JsonValue) -> str:
    """Store a value under a key in your long-term memory, replacing what was there. Your
    memory outlives the conversation: use it for facts you must not forget.

    Args:
        key: A short, descriptive key, like "user.favourite_colour".
        value: Any JSON value: a string, number, boolean, list or object.
    """
    memory = agent.state.memory
    size = len(to_json(value))
    if size > agent.max_memory_value_chars:
        raise ToolError(
            f"value is {size} characters as JSON; at most {agent.max_memory_value_chars} fit"
        )
    if key not in memory and len(memory) >= agent.max_memory_keys:
        raise ToolError(f"memory is full ({agent.max_memory_keys} keys): delete a key first")
    replaced = key in memory
    memory[key] = value
    return f"{'replaced' if replaced else 'stored'} {key!r}"


@workflow_tool
def list_state_keys(agent: LLMAgent[Any]) -> list[str]:
    """List the keys in your long-term memory, sorted."""
    return sorted(agent.state.memory)


@workflow_tool
def delete_state_key(agent: LLMAgent[Any], key: Key) -> str:
    """Delete a key (and its value) from your long-term memory.

    Args:
        key: The key to delete.
    """
    if key not in agent.state.memory:
        raise ToolError(f"nothing is stored under {key!r}")
    del agent.state.memory[key]
    return f"deleted {key!r}"


@workflow_tool
def add_to_context(agent: LLMAgent[Any], note: Annotated[str, Field(min_length=1)]) -> str:
    """Pin a note into your context: it is shown to you at every later step and turn, also
    after old conversation is cleared. Use it to keep a summary before clearing old context.

    Args:
        note: The text to keep in view.
    """
    window = agent.context_window
    if len(note) > window.max_note_chars:
        raise ToolError(f"note has {len(note)} characters; at most {window.max_note_chars}")
    if window.max_notes == 0:
        raise ToolError("this agent cannot pin notes")
    notes = agent.state.notes
    notes.append(note)
    dropped = len(notes) - window.max_notes
    if dropped > 0:
        del notes[:dropped]
        return f"pinned (note {len(notes)}); the oldest {dropped} note(s) were unpinned"
    return f"pinned (note {len(notes)})"


@workflow_tool
def clear_old_context(
    agent: LLMAgent[Any],
    keep_last: Annotated[int, Field(ge=1, le=1000)] = 1,
    clear_notes: bool = False,
) -> str:
    """Forget older conversation to keep your context short. Your memory (put_state) is not
    touched; pin a summary with add_to_context first if you still need it.

    Args:
        keep_last: How many of the latest exchanges to keep, counting the current one.
        clear_notes: Also unpin every note added with add_to_context.
    """
    dropped = keep_last_exchanges(agent.state.context, keep_last)
    notes = len(agent.state.notes) if clear_notes else 0
    if clear_notes:
        agent.state.notes.clear()
    return f"cleared {dropped} message(s) and {notes} note(s)"


#: The key-value memory tools of the brief.
STATE_TOOLS = (get_state, put_state, list_state_keys, delete_state_key)
#: The context tools of the brief.
CONTEXT_TOOLS = (add_to_context, clear_old_context)

__all__ = [
    "CONTEXT_TOOLS",
    "STATE_TOOLS",
    "add_to_context",
    "clear_old_context",
    "delete_state_key",
    "get_state",
    "list_state_keys",
    "put_state",
]
