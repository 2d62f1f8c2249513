"""The demo: agents talking, on a running worker. `perennial demo` runs it.

Every run talks to agents of its own (alice, bob and ada; alice-2, bob-2 and ada-2 on the
next run over the same database, ...), so a second run shows what the first one did, and
`perennial demo --fresh` deletes the embedded server's database to start over.
"""

from __future__ import annotations

import asyncio
import importlib
import socket
from dataclasses import dataclass
from pathlib import Path

from perennial.client.agents import AgentHandle, AgentSummary, Perennial
from perennial.client.assistant_demo import run_assistant_demo
from perennial.client.commands import format_event, venv_command
from perennial.client.settings import Settings
from perennial.workflows.errors import AgentNotFound, UsageError


def _say(text: str) -> None:
    print(text, flush=True)


@dataclass(frozen=True)
class DemoRun:
    """One run of the demo: its number on this server, and how its hints call the CLI."""

    number: int
    cli: str  # `.venv/bin/perennial`, with `--address` when the server is not the default

    def name(self, base: str) -> str:
        """This run's name for an agent: `alice` on the first run, `alice-2` on the second."""
        return base if self.number == 1 else f"{base}-{self.number}"


_AGENTS = (("notes", "alice"), ("notes", "bob"), ("assistant", "ada"))


async def _exists(agent: AgentHandle) -> bool:
    try:
        await agent.describe()
    except AgentNotFound:
        return False
    return True


async def _this_run(perennial: Perennial, settings: Settings) -> DemoRun:
    """The first run number whose agents are not on the server yet (any of them)."""
    cli = venv_command("perennial")
    if settings.address != Settings().address:
        cli += f" --address {settings.address}"
    number = 1
    while True:
        run = DemoRun(number=number, cli=cli)
        agents = [perennial.agent(kind, run.name(base)) for kind, base in _AGENTS]
        if not any(await asyncio.gather(*(_exists(a) for a in agents))):
            return run
        number += 1


def _where(settings: Settings) -> str:
    return str(settings.database) if settings.embedded else f"the server at {settings.address}"


def _fresh_hint(settings: Settings) -> str:
    if not settings.embedded:
        return "that server keeps every run's agents"
    return f"`{venv_command('perennial')} demo --fresh` deletes all and starts over"


def _intro(run: DemoRun, settings: Settings) -> None:
    if run.number == 1:
        _say(f"\nPerennial demo, run 1, on {_where(settings)}.")
        again = "Run it again: it adds agents of its own, alice-2 and so on"
        _say(f"({again}; {_fresh_hint(settings)}.)")
        return
    earlier = "1 earlier run" if run.number == 2 else f"{run.number - 1} earlier runs"
    _say(f"\nPerennial demo, run {run.number}, on {_where(settings)}.")
    _say(
        f"(The agents of {earlier} are still there, so this run talks to "
        f"{run.name('alice')}, {run.name('bob')} and {run.name('ada')}; "
        f"{_fresh_hint(settings)}.)"
    )


def _server_listening(settings: Settings) -> bool:
    with socket.socket() as s:
        return s.connect_ex((settings.server_ip, settings.server_port)) == 0


def delete_state(settings: Settings) -> list[Path]:
    """`--fresh`: delete the embedded server's database (with its WAL files) before the
    server starts; the deleted files. Refused for a server of its own (TEMPORAL_ADDRESS) and
    while a server answers on the embedded server's port (it may be using the file)."""
    if not settings.embedded:
        raise UsageError(
            "--fresh deletes the embedded server's database, but TEMPORAL_ADDRESS (or "
            f"--address) points at a server of its own, {settings.temporal_address}, whose "
            "agents are not the demo's to delete: nothing was deleted"
        )
    if _server_listening(settings):
        raise UsageError(
            f"--fresh: a server is running on {settings.address} (another `perennial dev` or "
            "demo?) and may be using the database: stop it first; nothing was deleted"
        )
    files = [Path(f"{settings.database}{end}") for end in ("", "-wal", "-shm", "-journal")]
    deleted = [f for f in files if f.exists()]
    for f in deleted:
        f.unlink()
    return deleted


async def _listed_when_caught_up(
    perennial: Perennial, versions: dict[str, int], *, timeout: float
) -> list[AgentSummary]:
    """The `notes` agents as listed once the visibility API shows each agent in `versions`
    at that version, or as listed when `timeout` seconds have passed."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        listed = await perennial.list_agents(agent_type="notes", limit=1000)
        shown = {agent.workflow_id: agent.version for agent in listed}
        caught_up = all(shown.get(agent_id) == version for agent_id, version in versions.items())
        if caught_up or asyncio.get_running_loop().time() > deadline:
            return listed
        await asyncio.sleep(0.5)


async def _notes_agents(alice: AgentHandle, bob: AgentHandle) -> None:
    """Sections 1-4: messages, fire-and-forget, idempotency, versions and rollback."""
    width = max(len(alice.name), len(bob.name))
    _say("\n== 1. Two note-taking agents, created by their first message ==")
    for text in ("buy oat milk", "call the plumber about the boiler"):
        reply = await alice.ask(text, sender="demo")
        _say(f"{alice.name:{width}} <- {text!r}")
        _say(f"{'':{width}} -> {reply.reply} (state v{reply.version})")

    _say("\n== 2. Five messages sent at once, applied one at a time in arrival order ==")
    await asyncio.gather(*(bob.send(f"idea {i}", sender="demo") for i in range(1, 6)))
    reply = await bob.ask("and one more", sender="demo")
    _say(f"{bob.name:{width}} -> {reply.reply}")

    _say("\n== 3. The same message id twice is applied once ==")
    first = await alice.ask("renew passport", id="demo-passport")
    again = await alice.ask("renew passport", id="demo-passport")
    _say(f"first: {first.reply}   again: {again.reply}   (same reply, one note)")

    _say("\n== 4. Versions and rollback ==")
    state = await alice.state()
    _say(f"{alice.name} is at v{state.version}: {state.state.model_dump()}")
    rolled = await alice.rollback(state.version - 1)
    _say(f"rolled back to v{rolled.restored_version}; that is now v{rolled.version}")


async def _visibility(
    run: DemoRun, caught_up: asyncio.Task[list[AgentSummary]], ours: dict[str, int]
) -> None:
    _say("\n== 7. This run's agents, from the visibility API (search attributes) ==")
    _say("(written behind: an agent's version shows there within ~10 s; the demo waits for it)")
    listed = await caught_up
    for agent in listed:
        if agent.workflow_id in ours:
            _say(f"  {agent.workflow_id}: {agent.status}, v{agent.version}")
    if earlier := len(listed) - sum(1 for agent in listed if agent.workflow_id in ours):
        _say(f"  (and {earlier} `notes` agents of earlier runs: `{run.cli} list --type notes`)")


def _hints(run: DemoRun, alice: AgentHandle, settings: Settings, gateway: str | None) -> None:
    temporal = venv_command("temporal")
    _say(
        "\nTry it yourself (from this directory):\n"
        f"  {run.cli} ask {alice.id} 'what else?'\n"
        f"  {run.cli} events {alice.id} --follow\n"
        f"  {temporal} workflow list --query \"AgentType='notes'\" --address {settings.address}"
    )
    if gateway:
        _say(f"  open {gateway}/#{alice.id} in a browser: chat with {alice.name}, its state live\n"
             f"  curl -s {gateway}/agents/{alice.id}/state")  # fmt: skip


async def run_demo(settings: Settings, *, gateway: str | None = None) -> None:
    """The demo's sections; `gateway`: the URL of the gateway that runs beside it, if any."""
    perennial = await Perennial.connect(settings)
    run = await _this_run(perennial, settings)
    _intro(run, settings)
    alice = perennial.agent("notes", run.name("alice"))
    bob = perennial.agent("notes", run.name("bob"))
    await _notes_agents(alice, bob)

    # Visibility is written behind: wait for it while the next sections run.
    ours = {a.id: (await a.state_view()).version for a in (alice, bob)}
    caught_up = asyncio.create_task(_listed_when_caught_up(perennial, ours, timeout=20.0))
    try:
        _say(f"\n== 5. {alice.name}'s event log (`{run.cli} events {alice.id}`) ==")
        for event in (await alice.events()).events:
            _say("  " + format_event(event))
        await run_assistant_demo(perennial, settings, name=run.name("ada"), cli=run.cli)
        await _visibility(run, caught_up, ours)
    finally:
        caught_up.cancel()
    await _app_demos(perennial, settings, gateway)
    _hints(run, alice, settings, gateway)


async def _app_demos(perennial: Perennial, settings: Settings, gateway: str | None) -> None:
    """The application's own part of the demo: each `--app` module that defines
    `async def demo(perennial, settings, *, gateway)` runs after the built-in sections."""
    for name in settings.app:
        hook = getattr(importlib.import_module(name), "demo", None)
        if hook is not None:
            await hook(perennial, settings, gateway=gateway)
