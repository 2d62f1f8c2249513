"""Byte budgets: whatever an agent holds, its continue-as-new payload stays far below
Temporal's 2 MB limit (past it the agent could never continue, and would be stuck)."""

from __future__ import annotations

import asyncio

import pytest

import tests.budget_agents  # noqa: F401 - registers test_notes_budget
from perennial.client import Perennial, TurnFailed, VersionNotKept
from perennial.workflows.dedup import SeenWindow
from perennial.workflows.messages import Snapshot
from perennial.workflows.versions import Versions
from tests.conftest import eventually

pytestmark = pytest.mark.usefixtures("worker")


async def test_a_turn_that_outgrows_max_state_bytes_fails_and_changes_nothing(
    perennial: Perennial,
) -> None:
    agent = perennial.agent("test_notes_budget", "grows")
    await agent.ask("small note")
    with pytest.raises(TurnFailed) as failed:
        await agent.ask("x" * 5_000)
    assert failed.value.error_type == "StateTooLarge"
    state = await agent.state()
    assert state.version == 1
    assert state.state.model_dump() == {"counter": 1, "notes": ["small note"]}
    assert (await agent.ask("still fine")).version == 2


async def test_old_versions_give_way_to_the_byte_budget(perennial: Perennial) -> None:
    agent = perennial.agent("test_notes_budget", "versions")
    for i in range(6):
        await agent.ask(f"{i}" + "y" * 550)
    view = await agent.state_view()
    assert view.version == 6
    # The last states are ~3.4, 2.8, 2.3 and 1.7 KB: 10,000 bytes hold only the newest three.
    assert view.versions_kept == [4, 5, 6]
    with pytest.raises(VersionNotKept):
        await agent.rollback(1)
    assert (await agent.rollback(4)).version == 7


async def test_a_large_backlog_is_applied_not_carried_past_the_inbox_budget(
    perennial: Perennial,
) -> None:
    agent = perennial.agent("test_notes_budget", "backlog")
    await agent.ask("first")
    # 70 signals: more than the 60 a run accepts, so the agent continues as new with a
    # backlog; each is ~130 bytes carried, so at most ~15 fit the 2,000-byte budget.
    await asyncio.gather(*(agent.send(f"m{i:02d}", id=f"b{i}") for i in range(70)))

    async def all_applied() -> bool:
        return (await agent.state()).state.counter == 71

    await eventually(all_applied, timeout=60)
    notes = (await agent.state()).state.notes
    assert sorted(notes[1:]) == [f"m{i:02d}" for i in range(70)]
    switches = [
        e for e in (await agent.events(after=0, limit=1000)).events if e.kind == "continued_as_new"
    ]
    assert switches, "the agent should have continued as new"
    assert all(e.carried_wakes * 100 <= 2_000 for e in switches)


def test_versions_keep_the_current_one_whatever_its_size() -> None:
    versions = Versions(keep=5, max_bytes=100, snapshots=[])
    versions.commit('{"a": "' + "x" * 10 + '"}')
    versions.commit('{"a": "' + "y" * 500 + '"}')
    assert versions.kept() == [1]
    assert versions.current.state == {"a": "y" * 500}
    restored = Versions(
        keep=5, max_bytes=100, snapshots=[Snapshot(version=7, state={"a": "z" * 300})]
    )
    assert restored.kept() == [7]


def test_seen_window_forgets_oldest_replies_past_its_byte_budget() -> None:
    window = SeenWindow(capacity=100, max_bytes=300, seen=[])
    for i in range(10):
        window.remember(f"id{i}", "r" * 50, i)
    assert "id9" in window and "id0" not in window
    assert len(window.entries()) == 4  # each entry costs 3 + 50 + 16 bytes
