"""`perennial replay`: the deploy check replays exported and live histories on this code and
names every history that would break (non-determinism) after the deploy."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from temporalio import workflow
from temporalio.worker import Worker

from perennial import AgentWorkflow, Message, agent_type
from perennial.workflows.registry import AGENT_TYPES

with workflow.unsafe.imports_passed_through():  # the sandbox re-imports this module per run
    import pytest
    from pydantic import BaseModel
    from temporalio.client import Client

    import tests.budget_agents  # noqa: F401 - registers test_notes_compacting
    from perennial.client import Perennial, Settings
    from perennial.client.replay import replay_files, replay_from_server
    from perennial.testing import eventually
    from perennial.worker import workflow_runner
    from tests.conftest import ROOT

DRIFT = "test_replay_drift"


def _unregistered(name: str) -> Callable[[type], type]:
    """`@agent_type(name)` that leaves the registry as it was: the registry holds one class
    per type name, and this test needs two versions of one type side by side (and no other
    test's worker should pick up a test-only type)."""

    def define(cls: type) -> type:
        before = AGENT_TYPES.pop(name, None)
        try:
            return agent_type(name)(cls)  # type: ignore[arg-type]
        finally:
            AGENT_TYPES.pop(name, None)
            if before is not None:
                AGENT_TYPES[name] = before

    return define


class DriftState(BaseModel):
    notes: list[str] = []


@_unregistered(DRIFT)
class PausingDrift(AgentWorkflow[DriftState]):
    """The deployed version: pauses before each note (a timer command per message)."""

    async def on_message(self, message: Message) -> str:
        await workflow.sleep(0.01)
        self.state.notes.append(message.text)
        return "noted"


@_unregistered(DRIFT)
class HastyDrift(AgentWorkflow[DriftState]):
    """The next version: the same type without the pause, so old histories no longer fit."""

    async def on_message(self, message: Message) -> str:
        self.state.notes.append(message.text)
        return "noted"


async def _listed(client: Client, query: str, runs: int) -> bool:
    return len([e async for e in client.list_workflows(query)]) == runs


def _histories() -> list[Path]:
    return sorted((ROOT / "tests" / "histories").glob("*.json"))


def _cli(
    settings: Settings, *args: str, pythonpath: Path | None = None
) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(pythonpath)) if pythonpath else None
    return subprocess.run(
        [sys.executable, "-m", "perennial.client.cli", "--address", settings.address, *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_checked_in_histories_replay_through_the_cli(settings: Settings) -> None:
    histories = _histories()
    done = _cli(settings, "replay", *map(str, histories))
    assert done.returncode == 0, done.stderr
    for path in histories:
        assert json.loads(path.read_text())["workflow_id"] in done.stdout
    assert f"{len(histories)} replayed, 0 failed" in done.stdout


def test_json_output_lists_every_history_in_both_formats(
    settings: Settings, tmp_path: Path
) -> None:
    histories = _histories()
    bare = tmp_path / "notes-exported.json"  # as `temporal workflow show --output json` writes
    bare.write_text(json.dumps(json.loads(histories[0].read_text())["history"]))
    done = _cli(settings, "--json", "replay", *map(str, histories), str(bare))
    assert done.returncode == 0, done.stderr
    results = json.loads(done.stdout)
    assert [r["workflow_id"] for r in results] == [
        *(json.loads(p.read_text())["workflow_id"] for p in histories),
        "notes-exported",  # a bare history is named after its file
    ]
    assert results[0]["run_id"] == results[-1]["run_id"]
    assert all(r["ok"] and r["error"] is None and r["run_id"] for r in results)


def test_nothing_to_replay_is_a_usage_error(settings: Settings, tmp_path: Path) -> None:
    done = _cli(settings, "--json", "replay")
    assert done.returncode == 2
    assert json.loads(done.stderr)["error"]["type"] == "UsageError"
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    done = _cli(settings, "replay", str(broken))
    assert done.returncode == 2 and "broken.json" in done.stderr


@pytest.mark.usefixtures("worker")
async def test_query_replays_live_agents(perennial: Perennial, settings: Settings) -> None:
    for name in ("q-alice", "q-bob"):
        agent = perennial.agent("notes", name)
        await agent.ask("first")
        await agent.ask("second")
    query = f"TaskQueue = '{settings.task_queue}'"
    await eventually(lambda: _listed(perennial.client, query, 2))  # visibility trails a little
    done = _cli(settings, "replay", "--query", query)
    assert done.returncode == 0, done.stderr
    assert "notes/q-alice" in done.stdout and "notes/q-bob" in done.stdout
    assert "2 replayed, 0 failed" in done.stdout

    report = await replay_from_server(perennial.client, query=query, limit=1)
    assert len(report.results) == 1 and report.truncated


@pytest.mark.usefixtures("worker")
async def test_query_replays_the_latest_run_of_an_agent_that_continued_as_new(
    perennial: Perennial,
) -> None:
    agent = perennial.agent("test_notes_compacting", "replay-latest")  # compacts when idle
    for i in range(12):
        await agent.ask(f"note {i}")
    query = f"WorkflowId = '{agent.id}'"
    await eventually(lambda: _listed(perennial.client, query, 2), timeout=30)

    report = await replay_from_server(perennial.client, query=query)
    [result] = report.results
    latest = (await perennial.client.get_workflow_handle(agent.id).describe()).run_id
    assert result.ok and result.run_id == latest


async def test_an_incompatible_change_is_reported(
    perennial: Perennial, settings: Settings, tmp_path: Path
) -> None:
    agent = perennial.agent(DRIFT, "drifting")
    worker = Worker(
        perennial.client,
        task_queue=settings.task_queue,
        workflows=[PausingDrift],
        workflow_runner=workflow_runner(),
    )
    async with worker:
        await agent.ask("one")
        await agent.ask("two")
    history = await perennial.client.get_workflow_handle(agent.id).fetch_history()
    saved = tmp_path / "drifting.json"
    saved.write_text(json.dumps({"workflow_id": agent.id, "history": history.to_json_dict()}))

    same = await replay_files([saved], workflows=[PausingDrift])
    assert [r.ok for r in same.results] == [True]

    changed = await replay_files([saved], workflows=[HastyDrift])
    [result] = changed.results
    assert not result.ok and result.workflow_id == agent.id == f"{DRIFT}/drifting"
    assert result.run_id == history.run_id
    # The SDK's line naming the first event the new commands do not match: the old timer.
    assert result.error and "Nondeterminism" in result.error and "TimerStarted" in result.error
    assert "\n" not in result.error and "Failure {" not in result.error

    # The same check from a shell: the next version of the code is an application module.
    (tmp_path / "next_version.py").write_text(NEXT_VERSION)
    done = _cli(settings, "--app", "next_version", "replay", str(saved), pythonpath=tmp_path)
    assert done.returncode == 1, done.stderr
    assert f"FAILED {agent.id}" in done.stdout and "TimerStarted" in done.stdout
    assert "1 replayed, 1 failed" in done.stdout and "Traceback" not in done.stderr


#: `HastyDrift` as a deploy would ship it: a registered agent type in its own module.
NEXT_VERSION = f"""
from pydantic import BaseModel

from perennial import AgentWorkflow, Message, agent_type


class DriftState(BaseModel):
    notes: list[str] = []


@agent_type({DRIFT!r})
class HastyDrift(AgentWorkflow[DriftState]):
    async def on_message(self, message: Message) -> str:
        self.state.notes.append(message.text)
        return "noted"
"""
