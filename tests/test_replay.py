"""Determinism guard: recorded agent histories must replay on the current code.

A long-lived agent replays its history after every deploy (and whenever it is evicted from a
worker's cache); a code change that would take a different path on an old history breaks it.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from temporalio.client import WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer

from perennial.client import Perennial
from perennial.workflows.registry import agent_types
from tests.histories.record import notes_scenario

HISTORIES = sorted((Path(__file__).parent / "histories").glob("*.json"))


def _replayer() -> Replayer:
    return Replayer(workflows=list(agent_types().values()), data_converter=pydantic_data_converter)


@pytest.mark.parametrize("path", HISTORIES, ids=[p.name for p in HISTORIES])
async def test_checked_in_history_replays(path: Path) -> None:
    doc = json.loads(path.read_text())
    history = WorkflowHistory.from_json(doc["workflow_id"], doc["history"])
    await _replayer().replay_workflow(history)


def test_there_are_checked_in_histories() -> None:
    assert HISTORIES, "record some with: python -m tests.histories.record"


@pytest.mark.usefixtures("worker")
async def test_fresh_history_replays(perennial: Perennial) -> None:
    workflow_id = await notes_scenario(perennial, "fresh-replay")
    history = await perennial.client.get_workflow_handle(workflow_id).fetch_history()
    await _replayer().replay_workflow(history)


async def test_the_benchmarks_replay_tool_reads_both_history_formats(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """bench/replay_history.py (instruction counts of the workflow code) replays what phase
    `replay` saves (the format of these checked-in histories) and bare exported histories."""
    from bench.replay_history import _main, load

    saved = next(p for p in HISTORIES if p.name.startswith("notes-"))
    doc = json.loads(saved.read_text())
    bare = tmp_path / "exported.json"
    bare.write_text(json.dumps(doc["history"]))
    assert load(saved).workflow_id == doc["workflow_id"]
    assert load(bare).events == load(saved).events
    await _main([saved, bare], replays=1)
    out = capsys.readouterr().out
    assert "2 run(s)" in out and "us per message" in out
