"""The demo's LLM part: the `assistant` agent remembering what it is told."""

from __future__ import annotations

from perennial.client.agents import Perennial
from perennial.client.llm_events import format_llm_event
from perennial.client.local_model import INSTALL
from perennial.client.settings import Settings
from perennial.workflows.errors import AgentNotFound, PerennialError


def _say(text: str) -> None:
    print(text, flush=True)


async def run_assistant_demo(perennial: Perennial, settings: Settings) -> None:
    _say("\n== An LLM assistant that remembers (agent type `assistant`) ==")
    if not settings.llm_configured:
        _say(
            "(skipped: no model endpoint. Set OPENAI_API_KEY to use OpenAI, or OPENAI_BASE_URL "
            "for any OpenAI-compatible server, with OPENAI_MODEL naming its model; or install "
            f"the tiny local model: {INSTALL})"
        )
        return
    ada = perennial.agent("assistant", "ada")
    try:  # show only this demo's events if the agent lived before
        after = (await ada.events(limit=1000)).next_after
    except AgentNotFound:
        after = 0
    for text in (
        "Hi! I'm Ada. Please remember that my favourite colour is green.",
        "What is my favourite colour?",
    ):
        try:
            reply = await ada.ask(text, sender="demo", timeout=300)
        except PerennialError as err:
            _say(f"ada   <- {text!r}\n      !! {type(err).__name__}: {err}")
            return
        _say(f"ada   <- {text!r}\n      -> {reply.reply} (state v{reply.version})")
    state = await ada.state()
    memory = state.state.model_dump()["memory"]
    usage = state.state.model_dump()["usage"]
    _say(f"its memory (state tools): {memory}")
    _say(f"tokens so far: {usage['total_tokens']} in {usage['model_calls']} model calls")
    _say("how it thought (`perennial events assistant/ada`):")
    page = await ada.events(after=after, limit=200)
    for event in page.events:
        line = format_llm_event(event)
        if line is not None:
            _say("  " + line)
