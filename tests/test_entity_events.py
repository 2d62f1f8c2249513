"""The event log from outside: `events` pages, the `wait_events` long-poll, `watch`."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from temporalio.worker import Worker

import tests.agents  # noqa: F401  (registers the test agent types before a worker is built)
from perennial.client import AgentHandle, Event, EventsMissed, Perennial
from tests.conftest import eventually
from tests.support import accepted_updates, history, unique


async def test_events_pages_by_offset_with_a_limit(perennial: Perennial, worker: Worker) -> None:
    agent = perennial.agent("notes", unique())
    for i in range(5):
        await agent.ask(f"note {i}", id=f"m{i}", sender="tester")

    everything = await agent.events()
    assert [e.offset for e in everything.events] == list(range(1, 11))
    assert (everything.next_after, everything.oldest_offset, everything.missed) == (10, 1, 0)
    assert [(e.kind, e.message_id) for e in everything.events] == [
        pair for i in range(5) for pair in (("received", f"m{i}"), ("turn", f"m{i}"))
    ]
    received = everything.events[0]
    assert (received.sender, received.text, received.awaited) == ("tester", "note 0", True)
    assert [e.version for e in everything.events if e.kind == "turn"] == [1, 2, 3, 4, 5]

    first = await agent.events(after=0, limit=3)
    assert [e.offset for e in first.events] == [1, 2, 3]
    assert first.next_after == 3

    pages, after = [], 0
    while True:
        page = await agent.events(after=after, limit=3)
        if not page.events:
            assert page.next_after == after
            break
        pages.append(page)
        after = page.next_after
    assert [len(p.events) for p in pages] == [3, 3, 3, 1]
    assert [e for p in pages for e in p.events] == everything.events

    tail = await agent.events(after=7)
    assert [e.offset for e in tail.events] == [8, 9, 10]
    assert (await agent.events(after=10)).events == []


async def _wait_is_with_the_agent(perennial: Perennial, agent: AgentHandle, count: int) -> None:
    """Until the agent has accepted `count` wait_events updates (the long-poll is parked)."""

    async def parked() -> bool:
        accepted = accepted_updates(await history(agent, perennial.client))
        return sum(u.name == "wait_events" for u in accepted) >= count

    await eventually(parked)


async def test_wait_events_returns_as_soon_as_a_message_arrives(
    perennial: Perennial, worker: Worker
) -> None:
    agent = perennial.agent("notes", unique())
    await agent.ask("first")
    last = (await agent.events()).next_after
    assert last == 2

    # Events after the offset exist already: the long-poll answers at once.
    immediate = await asyncio.wait_for(agent.wait_events(after=0, timeout=60), 10)
    assert [e.offset for e in immediate.events] == [1, 2]

    waiting = asyncio.create_task(agent.wait_events(after=last, timeout=60))
    await _wait_is_with_the_agent(perennial, agent, 2)
    assert not waiting.done()
    await agent.send("wake up", id="w1")
    page = await asyncio.wait_for(waiting, 15)  # far sooner than its 60 s timeout
    assert page.events, "the long-poll returned without the new events"
    assert page.events[0].offset == last + 1
    assert (page.events[0].kind, page.events[0].message_id) == ("received", "w1")


async def test_wait_events_returns_empty_at_its_timeout(
    perennial: Perennial, worker: Worker
) -> None:
    agent = perennial.agent("notes", unique())
    await agent.ask("only")
    loop = asyncio.get_running_loop()
    started = loop.time()
    page = await agent.wait_events(after=2, timeout=1.0)
    assert loop.time() - started >= 0.9
    assert page.events == []
    assert page.next_after == 2
    assert (await agent.ask("still fine")).version == 2


async def _collect(agent: AgentHandle, into: list[Event], *, after: int, until: str) -> None:
    async for event in agent.watch(after=after, poll_seconds=5):
        into.append(event)
        if event.kind == "turn" and event.message_id == until:
            return


async def test_watch_follows_the_agent_in_order_across_continue_as_new(
    perennial: Perennial, worker: Worker
) -> None:
    """The small-threshold agent continues-as-new every ~150 history events; a watcher sees
    every event once, in offset order, through every switch."""
    agent = perennial.agent("test_notes_small", unique())
    await agent.ask("start", id="start")
    seen: list[Event] = []
    watcher = asyncio.create_task(_collect(agent, seen, after=0, until="end"))

    for round_ in range(6):
        await asyncio.gather(
            *(agent.send(f"r{round_}-{i}", id=f"r{round_}-{i}") for i in range(20))
        )
        await agent.ask(f"barrier {round_}", id=f"b{round_}")
    await agent.ask("end", id="end")
    await asyncio.wait_for(watcher, 60)

    assert [e.offset for e in seen] == list(range(1, len(seen) + 1))
    switches = [i for i, e in enumerate(seen) if e.kind == "continued_as_new"]
    assert switches, "the agent did not continue-as-new"
    assert switches[0] < len(seen) - 1  # and the watcher went on after the switch
    turns = [e.message_id for e in seen if e.kind == "turn"]
    notes = (await agent.state()).state.notes
    assert len(turns) == len(set(turns)) == len(notes) == 1 + 6 * 21 + 1
    texts = {"start": "start", "end": "end"} | {f"b{r}": f"barrier {r}" for r in range(6)}
    assert [texts.get(t, t) for t in turns] == notes

    # Resuming from a remembered offset yields exactly what came after it.
    resumed: list[Event] = []
    await asyncio.wait_for(_collect(agent, resumed, after=seen[-6].offset, until="end"), 30)
    assert resumed == seen[-5:]


async def test_watch_says_when_events_left_the_log_before_it_read_them(
    perennial: Perennial, worker: Worker
) -> None:
    """A watcher that starts (or falls) behind the bounded log gets `EventsMissed`, not a
    silent gap, and resumes from the oldest event kept."""
    agent = perennial.agent("notes", unique())
    await asyncio.gather(*(agent.send(f"n{i}", id=f"n{i}") for i in range(300)))
    await agent.ask("last", id="last")  # 301 messages: 602 events; the log keeps 500
    with pytest.raises(EventsMissed) as err:
        async for _ in agent.watch(after=0, poll_seconds=5):
            pass
    assert err.value.missed == 102 and err.value.resume_after == 102
    resumed = [e async for e in _until_turn(agent, after=err.value.resume_after, of="last")]
    assert [e.offset for e in resumed] == list(range(103, 603))


async def _until_turn(agent: AgentHandle, *, after: int, of: str) -> AsyncIterator[Event]:
    async for event in agent.watch(after=after, poll_seconds=5):
        yield event
        if event.kind == "turn" and event.message_id == of:
            return
