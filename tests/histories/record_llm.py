"""Record the `assistant` replay history: `python -m tests.histories.record_llm`.

The model is the scripted server, so the history is the same every time: state and context
tools, bad arguments, an unknown tool, a failed turn (HTTP 400) and a turn after it.
`tests/test_replay.py` replays every checked-in history on the current code.
"""

from __future__ import annotations

import asyncio

from perennial.client import Perennial, TurnFailed
from perennial.testing.scripted_llm import ScriptedLLM, call, error, text, tool_calls, usage
from tests.histories.record import record


async def assistant_scenario(perennial: Perennial, llm: ScriptedLLM, name: str) -> str:
    """Exercise the LLM agent loop on an `assistant`; returns the workflow id. The worker
    must use `llm` as its model endpoint."""
    agent = perennial.agent("assistant", name)
    llm.script(
        tool_calls(
            call("put_state", key="user.name", value="Ada"),
            call("add_to_context", note="The user is Ada."),
            usage=usage(120, 20),
        ),
        text("Hello Ada.", usage=usage(150, 4)),
    )
    await agent.ask("Hi, I am Ada.", id="r1")
    llm.script(
        tool_calls(
            call("get_state", raw='{"key": '),
            call("forget_everything"),
            call("list_state_keys"),
        ),
        tool_calls(call("get_state", key="user.name"), call("clear_old_context", keep_last=1)),
        text("You are Ada."),
    )
    await agent.ask("Who am I?", id="r2")
    llm.script(error(400, "rejected"))
    try:
        await agent.ask("This turn fails.", id="r3")
    except TurnFailed:
        pass
    llm.script(tool_calls(call("delete_state_key", key="user.name")), text("Forgotten."))
    await agent.ask("Forget my name.", id="r4")
    return agent.id


async def main() -> None:
    with ScriptedLLM() as llm:
        await record(
            "assistant",
            lambda perennial: assistant_scenario(perennial, llm, "replayed"),
            openai_base_url=llm.url,
        )


if __name__ == "__main__":
    asyncio.run(main())
