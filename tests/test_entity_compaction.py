"""Idle compaction: an agent that goes quiet continues as new, so when it wakes after being
evicted it replays a short history; and a busy agent pays no timer events per message for it."""

from __future__ import annotations

import pytest
from temporalio.api.enums.v1 import EventType

import tests.budget_agents  # noqa: F401 - registers test_notes_compacting
from perennial.client import Perennial
from tests.conftest import eventually

pytestmark = pytest.mark.usefixtures("worker")


async def test_an_idle_agent_compacts_its_history_and_keeps_everything(
    perennial: Perennial,
) -> None:
    agent = perennial.agent("test_notes_compacting", "quiet")
    for i in range(12):
        await agent.ask(f"note {i}", id=f"q{i}")
    handle = perennial.client.get_workflow_handle(agent.id)
    first_run = (await handle.describe()).run_id

    history = [e async for e in handle.fetch_history_events()]
    kinds = [e.event_type for e in history]
    # Never a timer started and cancelled per message: only the compaction clock's, and one
    # per search-attribute upsert written behind (at most one per publish_interval).
    assert EventType.EVENT_TYPE_TIMER_CANCELED not in kinds
    assert kinds.count(EventType.EVENT_TYPE_TIMER_STARTED) <= 1 + kinds.count(
        EventType.EVENT_TYPE_UPSERT_WORKFLOW_SEARCH_ATTRIBUTES
    )

    async def compacted() -> bool:
        page = await agent.events(after=0, limit=1000)
        return any(
            e.kind == "continued_as_new" and e.reason == "idle compaction" for e in page.events
        )

    await eventually(compacted, timeout=30)
    assert (await handle.describe()).run_id != first_run
    new_run = [e async for e in perennial.client.get_workflow_handle(agent.id).fetch_history_events()]
    assert len(new_run) < 15, "the new run starts with a short history"

    state = await agent.state()
    assert state.version == 12 and state.state.counter == 12
    again = await agent.ask("note 0", id="q0")  # the dedup window came along
    assert again.version == 1
    assert (await agent.state()).versions_kept == list(range(3, 13))  # packed, and back
    restored = await agent.rollback(5)
    assert restored.version == 13 and (await agent.state()).state.counter == 5
    assert (await agent.ask("after compaction")).reply == "Noted (note #6)."
