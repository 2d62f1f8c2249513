"""The server admits 10 updates in flight per workflow: the 11th is refused at once, and the
client says so with a typed error, AgentBusy."""

from __future__ import annotations

import asyncio

import pytest
from temporalio.service import RPCError, RPCStatusCode

import tests.coordination_agents  # noqa: F401 - registers the test agent types
from perennial.client import AgentBusy, Perennial
from perennial.client.agents import _translate
from tests.conftest import eventually
from tests.support import accepted_updates, history, unique

pytestmark = pytest.mark.asyncio(loop_scope="session")


@pytest.mark.usefixtures("worker")
async def test_full_update_slots_are_a_typed_error(perennial: Perennial) -> None:
    child = perennial.agent("test_child", unique())
    handle = perennial.client.get_workflow_handle(child.id)
    await child.send("wait for the release")  # parks the first turn
    waiting = [
        asyncio.create_task(handle.execute_update("ask", {"text": f"q{i}", "id": f"q{i}"}))
        for i in range(10)
    ]

    async def admitted() -> bool:
        return len(accepted_updates(await history(child, perennial.client))) >= 10

    await eventually(admitted)
    with pytest.raises(RPCError) as refused:
        await handle.execute_update("ask", {"text": "one too many", "id": "q10"})
    assert refused.value.status == RPCStatusCode.RESOURCE_EXHAUSTED
    assert isinstance(_translate(refused.value, workflow_id=child.id), AgentBusy)
    await handle.signal("release")
    assert len(await asyncio.gather(*waiting)) == 10
