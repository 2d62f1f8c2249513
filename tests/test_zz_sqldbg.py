import pytest
import tests.sql_agents  # noqa
from tests.support import unique, history, task_failure_causes
from temporalio.api.enums.v1 import EventType

@pytest.mark.usefixtures("worker")
async def test_dbg(perennial):
    agent = perennial.agent("test_sql_switching", unique())
    for n in range(4):
        await agent.call("fill", {"rows": 100, "size": 1000, "first": 100 * n})
    for n in range(12):
        await agent.ask(f"add word {n}")
    events = await history(agent, perennial.client)
    print(len(events), [EventType.Name(e.event_type).replace("EVENT_TYPE_","") for e in events][-40:])
    print(task_failure_causes(events))
    for e in events:
        if e.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED:
            print(e.workflow_task_failed_event_attributes.failure.message[:2000]); break
