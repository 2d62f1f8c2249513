"""The worker's sandboxed runner: agent code still runs under the sandbox's restrictions, and
the runner falls back to the SDK's own when the SDK's internals are not the ones it knows."""

from __future__ import annotations

import gc

import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.worker import Worker
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner
from temporalio.worker.workflow_sandbox import _runner as sdk_sandbox

import perennial.worker as worker_module
import tests.agents  # noqa: F401  (registers the test agent types before a worker is built)
from perennial import sdk_internals
from perennial.client import Perennial, Settings
from tests.agents import WALL_CLOCK
from tests.conftest import eventually
from tests.support import history, unique


async def test_agent_code_still_runs_inside_the_sandbox(
    perennial: Perennial, worker: Worker
) -> None:
    """Reading the wall clock in a turn is caught by the sandbox: a code error, so the
    workflow task fails (and is retried until the code is fixed)."""
    agent = perennial.agent("test_flaky", unique())
    await agent.ask("one")
    await agent.send(WALL_CLOCK, id="clock")

    async def restricted() -> bool:
        failures = [
            e.workflow_task_failed_event_attributes.failure
            for e in await history(agent, perennial.client)
            if e.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED
        ]
        return any(
            f.application_failure_info.type == "RestrictedWorkflowAccessError"
            and "datetime.datetime.now" in f.message
            for f in failures
        )

    await eventually(restricted)


def test_the_lean_runner_is_used_when_the_sdk_is_the_known_one() -> None:
    runner = worker_module.workflow_runner()
    assert isinstance(runner, sdk_internals._LeanSandboxedWorkflowRunner)


def test_an_unknown_sdk_gets_the_sdks_own_runner(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delattr(sdk_sandbox._Instance, "get_serialization_context")
    runner = worker_module.workflow_runner()
    assert type(runner) is SandboxedWorkflowRunner


def test_an_untested_sdk_release_gets_the_sdks_own_runner(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(sdk_internals.temporalio, "__version__", "1.40.0")
    assert not sdk_internals.sdk_is_tested()
    assert type(worker_module.workflow_runner()) is SandboxedWorkflowRunner


def test_the_lean_runner_can_be_turned_off(settings: Settings) -> None:
    off = settings.model_copy(update={"lean_runner": False})
    assert type(worker_module.workflow_runner(off)) is SandboxedWorkflowRunner
    assert Settings.from_env({"PERENNIAL_LEAN_RUNNER": "false"}).lean_runner is False


def test_settle_heap_freezes_what_survives_start_up() -> None:
    try:
        worker_module.settle_heap()
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()
