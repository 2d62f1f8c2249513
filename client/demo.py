"""The demo: agents talking, on a running worker. `perennial demo` runs it."""

from __future__ import annotations

import asyncio

from perennial.client.agents import AgentSummary, Perennial
from perennial.client.assistant_demo import run_assistant_demo
from perennial.client.commands import format_event
from perennial.client.settings import Settings


def _say(text: str) -> None:
    print(text, flush=True)


async def _listed_when_caught_up(
    perennial: Perennial, versions: dict[str, int], *, timeout: float
) -> list[AgentSummary]:
    """The `notes` agents as listed once the visibility API shows each agent in `versions`
    at that version, or as listed when `timeout` seconds have passed."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        listed = await perennial.list_agents(agent_type="notes")
        shown = {agent.workflow_id: agent.version for agent in listed}
        caught_up = all(shown.get(agent_id) == version for agent_id, version in versions.items())
        if caught_up or asyncio.get_running_loop().time() > deadline:
            return listed
        await asyncio.sleep(0.5)


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
    _say("(written behind: a busy agent's version reaches it within ~10 s; waiting for it)")
    versions = {a.id: (await a.state_view()).version for a in (alice, bob)}
    for agent in await _listed_when_caught_up(perennial, versions, timeout=20.0):
        _say(f"  {agent.workflow_id}: {agent.status}, v{agent.version}")

    _say(
        "\nTry it yourself:\n"
        "  perennial ask notes/alice 'what else?'\n"
        "  perennial events notes/alice --follow\n"
        "  temporal workflow list --query \"AgentType='notes'\" --address "
        f"{settings.address}"
    )
