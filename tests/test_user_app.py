"""An application's own agent type, as a user writes it (tests/user_app.py: no future import,
the state model named only as the generic argument): through the testing kit, the client,
and the CLI with and without `--app`."""

from __future__ import annotations

import asyncio
import json
import sys

import pytest

from perennial.client import TurnFailed
from perennial.client.agents import AgentState
from perennial.testing import AgentTestEnv
from tests.conftest import ROOT
from tests.support import unique


async def _cli(address: str, task_queue: str, *args: str) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "perennial.client.cli", "--address", address,
        "--task-queue", task_queue, *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, cwd=ROOT,
    )  # fmt: skip
    out, err = await asyncio.wait_for(process.communicate(), 60)
    return process.returncode or 0, out.decode(), err.decode()


async def test_a_user_agent_type_runs_through_the_kit_client_and_cli(perennial_server) -> None:  # type: ignore[no-untyped-def]
    async with AgentTestEnv(app=["tests.user_app"], settings=perennial_server) as env:
        alice = env.agent("user_counter", unique())
        assert (await alice.ask("2")).reply == "total is 2"
        assert (await alice.ask("40")).reply == "total is 42"
        with pytest.raises(TurnFailed, match="ValueError"):
            await alice.ask("forty")
        state = await alice.state()
        assert isinstance(state, AgentState) and state.state.total == 42  # typed

        address, queue = env.settings.address, env.settings.task_queue
        code, out, err = await _cli(address, queue, "--app", "tests.user_app", "ask",
                                    alice.id, "8")  # fmt: skip
        assert code == 0, err
        assert "total is 50" in out
        # A CLI that does not know the type still speaks to it, untyped.
        code, out, err = await _cli(address, queue, "--json", "state", alice.id)
        assert code == 0, err
        assert json.loads(out)["state"] == {"total": 50, "seen": ["2", "40", "8"]}
        code, _, err = await _cli(address, queue, "--json", "--app", "no_such_module", "state", alice.id)
        assert code == 2
        assert json.loads(err)["error"]["type"] == "UsageError"
