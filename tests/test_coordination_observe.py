"""Observing another agent: debounced `peer_changed` wakes, subscriptions that survive
continue-as-new on both sides, unsubscribe, and a typed error for an agent that is not there.

Real dev server, in-process worker.
"""

from __future__ import annotations

import pytest

import tests.coordination_agents  # noqa: F401 - registers the test agent types
from perennial.client import Perennial, TurnFailed
from tests.conftest import eventually
from tests.support import dashed_name, has_events, has_note, notes

pytestmark = [
    pytest.mark.asyncio(loop_scope="session"),
    pytest.mark.agents(app=("tests.coordination_agents",)),
]


@pytest.mark.usefixtures("worker")
async def test_changes_are_debounced_into_few_wakes(
    perennial: Perennial, request: pytest.FixtureRequest
) -> None:
    name = dashed_name(request)
    target = perennial.agent("notes", name)
    await target.ask("first")  # v1: the target exists
    observer = perennial.agent("test_parent", name)
    assert (await observer.ask(f"observe notes {name} 1.0")).reply == f"observing notes/{name}"
    for i in range(5):
        await target.send(f"burst {i}")
    await eventually(lambda: has_note(observer, f"changed notes/{name} v6"))
    changed = [n for n in await notes(observer) if n.startswith("changed")]
    assert 1 <= len(changed) <= 2, changed  # five changes, one or two wakes
    subs = await perennial.client.get_workflow_handle(target.id).query("subscriptions")
    assert [s["subscriber_id"] for s in subs["observed_by"]] == [observer.id]


@pytest.mark.usefixtures("worker")
async def test_subscription_survives_continue_as_new_on_both_sides_and_unsubscribe(
    perennial: Perennial, request: pytest.FixtureRequest
) -> None:
    name = dashed_name(request)
    target = perennial.agent("test_parent_short", f"{name}-t")
    observer = perennial.agent("test_parent_short", f"{name}-o")
    await target.ask("a")  # the target exists (update 1)
    await observer.ask(f"observe test_parent_short {name}-t 0.2")  # observer update 1
    await target.ask("b")  # v2; update 2: the target continues as new
    await eventually(lambda: has_events(target, "continued_as_new"))
    await eventually(lambda: has_note(observer, f"changed {target.id} v2"))
    await observer.ask("x")  # observer update 2: the observer continues as new
    await eventually(lambda: has_events(observer, "continued_as_new"))
    await target.ask("c")  # v3, reported from the target's new run to the observer's
    await eventually(lambda: has_note(observer, f"changed {target.id} v3"))

    assert (await observer.ask(f"unobserve test_parent_short {name}-t")).reply == (
        f"stopped {target.id}"
    )
    handle = perennial.client.get_workflow_handle(target.id)

    async def no_subscribers() -> bool:
        return (await handle.query("subscriptions"))["observed_by"] == []

    await eventually(no_subscribers)


@pytest.mark.usefixtures("worker")
async def test_observing_a_missing_agent_is_a_typed_error(
    perennial: Perennial, request: pytest.FixtureRequest
) -> None:
    observer = perennial.agent("test_parent", dashed_name(request))
    with pytest.raises(TurnFailed) as caught:
        await observer.ask("observe notes nobody-here 1")
    assert caught.value.error_type == "AgentNotFound"
    with pytest.raises(TurnFailed) as caught:
        await observer.ask("unobserve notes nobody-here")
    assert caught.value.error_type == "NotObserving"
