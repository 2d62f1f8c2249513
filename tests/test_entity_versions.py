"""State versions: a failed turn is undone, `rollback` restores a kept version as a new one."""

from __future__ import annotations

import pytest
from temporalio.worker import Worker

import tests.agents  # noqa: F401  (registers the test agent types before a worker is built)
from perennial.client import Perennial, TurnFailed, VersionNotKept
from tests.agents import BOOM, FLAKY, FlakyAgent
from tests.support import accepted_updates, history, unique


async def test_a_failed_turn_restores_the_state_and_says_so(
    perennial: Perennial, worker: Worker
) -> None:
    agent = perennial.agent("test_flaky", unique())
    await agent.ask("one")
    await agent.ask("two")
    before = await agent.state_view()
    assert before.version == 2

    with pytest.raises(TurnFailed) as failed:
        await agent.ask(f"{BOOM}!", id="bad")
    assert failed.value.error_type == "ValueError"
    assert failed.value.version == 2
    assert "bad" in str(failed.value)

    # The turn appended a note and bumped the counter before raising: both undone.
    after = await agent.state_view()
    assert after.version == 2
    assert after.state == before.state
    assert after.versions_kept == before.versions_kept
    page = await agent.events()
    failures = [e for e in page.events if e.kind == "turn_failed"]
    assert len(failures) == 1
    assert (failures[0].message_id, failures[0].error_type, failures[0].version) == (
        "bad",
        "ValueError",
        2,
    )
    assert "cannot digest" in failures[0].error

    # The agent keeps working, and the failed turn left no trace in the state.
    reply = await agent.ask("three")
    assert (reply.reply, reply.version) == ("Noted (note #3).", 3)
    assert (await agent.state()).state.notes == ["one", "two", "three"]


async def test_a_failed_signal_turn_is_logged_and_undone(
    perennial: Perennial, worker: Worker
) -> None:
    agent = perennial.agent("test_flaky", unique())
    await agent.send(f"{BOOM} by signal", id="sig-bad")
    reply = await agent.ask("fine")  # applied after the failed one (arrival order)
    assert (reply.reply, reply.version) == ("Noted (note #1).", 1)
    kinds = [(e.kind, getattr(e, "message_id", None)) for e in (await agent.events()).events]
    assert ("turn_failed", "sig-bad") in kinds
    assert (await agent.state()).state.notes == ["fine"]


async def test_a_failed_message_id_can_be_retried(perennial: Perennial, worker: Worker) -> None:
    """A failed turn is not remembered as applied: the same message id, sent again, runs again
    (here it fails on its first attempt only, like a transient error)."""
    agent = perennial.agent("test_flaky", unique())
    with pytest.raises(TurnFailed) as failed:
        await agent.ask(FLAKY, id="retry-me")
    assert failed.value.error_type == "TransientError"
    reply = await agent.ask(FLAKY, id="retry-me")
    assert (reply.id, reply.reply, reply.version) == ("retry-me", "Noted (note #1).", 1)
    # Now it is applied, and a third delivery is a duplicate.
    assert await agent.ask(FLAKY, id="retry-me") == reply
    state = await agent.state()
    assert state.state.notes == [FLAKY]
    turns = [e for e in (await agent.events()).events if e.kind in ("turn", "turn_failed")]
    assert [(e.kind, e.message_id) for e in turns] == [
        ("turn_failed", "retry-me"),
        ("turn", "retry-me"),
    ]


async def test_rollback_restores_a_kept_version_as_a_new_version(
    perennial: Perennial, worker: Worker
) -> None:
    agent = perennial.agent("notes", unique())
    for text in ("a", "b", "c"):
        await agent.ask(text)
    v1 = {"counter": 1, "notes": ["a"]}

    result = await agent.rollback(1)
    assert (result.restored_version, result.version) == (1, 4)
    view = await agent.state_view()
    assert view.version == 4
    assert view.state == v1
    assert view.versions_kept == [0, 1, 2, 3, 4]  # nothing erased from the record

    events = (await agent.events()).events
    rolled = [e for e in events if e.kind == "rolled_back"]
    assert [(e.to_version, e.version) for e in rolled] == [(1, 4)]

    # Work continues from the restored state.
    reply = await agent.ask("d")
    assert (reply.reply, reply.version) == ("Noted (note #2).", 5)
    assert (await agent.state()).state.notes == ["a", "d"]

    # Rolling back to the version made by a rollback, and to the current version, work too.
    assert (await agent.rollback(4)).version == 6
    assert (await agent.state_view()).state == v1
    assert (await agent.rollback(6)).version == 7


async def test_rollback_to_a_version_not_kept_changes_nothing(
    perennial: Perennial, worker: Worker
) -> None:
    agent = perennial.agent("notes", unique())
    await agent.ask("a")
    before = await agent.state_view()
    accepted_before = accepted_updates(await history(agent, perennial.client))

    for version in (2, 99):
        with pytest.raises(VersionNotKept):
            await agent.rollback(version)

    after = await agent.state_view()
    assert after == before
    # The validator refused both before anything entered the history.
    accepted_after = accepted_updates(await history(agent, perennial.client))
    assert accepted_after == accepted_before
    assert not [u for u in accepted_after if u.name == "rollback"]
    assert (await agent.ask("b")).version == 2


async def test_rollback_respects_the_ring_of_kept_versions(
    perennial: Perennial, worker: Worker
) -> None:
    keep = FlakyAgent.max_versions
    agent = perennial.agent("test_flaky", unique())
    for i in range(keep + 2):
        await agent.ask(f"n{i}")
    view = await agent.state_view()
    newest = keep + 2
    assert view.version == newest
    oldest_kept = newest - keep + 1
    assert view.versions_kept == list(range(oldest_kept, newest + 1))

    with pytest.raises(VersionNotKept):
        await agent.rollback(oldest_kept - 1)  # evicted from the ring
    assert (await agent.state_view()).version == newest

    result = await agent.rollback(oldest_kept)
    assert (result.restored_version, result.version) == (oldest_kept, newest + 1)
    view = await agent.state_view()
    assert view.state["counter"] == oldest_kept
    # The rollback is a version itself, and pushed the oldest out of the ring.
    assert view.versions_kept == list(range(oldest_kept + 1, newest + 2))
    with pytest.raises(VersionNotKept):
        await agent.rollback(oldest_kept)
    events = (await agent.events()).events
    assert [e.kind for e in events].count("rolled_back") == 1
