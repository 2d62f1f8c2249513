"""The demo: agents talking, on a running worker. `perennial demo` runs it."""

from __future__ import annotations

import asyncio

from client.agents import Perennial
from client.assistant_demo import run_assistant_demo
from client.cli import format_event
from client.settings import Settings


def _say(text: str) -> None:
    print(text, flush=True)


async def run_demo(settings: Settings) -> None:
    perennial = await Perennial.connect(settings)
    alice = perennial.agent("notes", "alice")
    bob = perennial.agent("notes", "bob")

    _say("\n== Two note-taking agents, created on their first message ==")
    for text in ("buy oat milk", "call the plumber about the boiler"):
        reply = await alice.ask(text, sender="demo")
        _say(f"alice <- {text!r}\n      -> {reply.reply} (state v{reply.version})")

    _say("\n== Fire-and-forget messages, applied one at a time in arrival order ==")
    await asyncio.gather(*(bob.send(f"idea {i}", sender="demo") for i in range(1, 6)))
    reply = await bob.ask("and one more", sender="demo")
    _say(f"bob   -> {reply.reply}")

    _say("\n== The same message id twice is applied once ==")
    first = await alice.ask("renew passport", id="demo-passport")
    again = await alice.ask("renew passport", id="demo-passport")
    _say(f"first: {first.reply}   again: {again.reply}   (same reply, one note)")

    _say("\n== Versions and rollback ==")
    state = await alice.state()
    _say(f"alice is at v{state.version}: {state.state.model_dump()}")
    rolled = await alice.rollback(state.version - 1)
    _say(f"rolled back to v{rolled.restored_version}; that is now v{rolled.version}")

    _say("\n== alice's event log (what `perennial events notes/alice --follow` streams) ==")
    page = await alice.events()
    for event in page.events:
        _say("  " + format_event(event))

    await run_assistant_demo(perennial, settings)

    _say("\n== Every agent, from the visibility API (search attributes) ==")
    for agent in await perennial.list_agents(agent_type="notes"):
        _say(f"  {agent.workflow_id}: {agent.status}, v{agent.version}")

    _say(
        "\nTry it yourself:\n"
        "  perennial ask notes/alice 'what else?'\n"
        "  perennial events notes/alice --follow\n"
        "  temporal workflow list --query \"AgentType='notes'\" --address "
        f"{settings.address}"
    )
