"""`perennial` from a shell: output, --json, exit codes, --follow, and the demo."""

from __future__ import annotations

import asyncio
import json
import sys

import pytest

from perennial.client import Perennial, Settings
from perennial.client.server import free_port
from tests.conftest import ROOT, eventually


async def perennial_cli(
    settings: Settings, *args: str, timeout: float = 60
) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "perennial.client.cli",
        "--address", settings.address, "--task-queue", settings.task_queue, *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, cwd=ROOT,
    )  # fmt: skip
    out, err = await asyncio.wait_for(process.communicate(), timeout)
    return process.returncode or 0, out.decode(), err.decode()


@pytest.mark.usefixtures("worker")
async def test_send_ask_state_events_rollback_list(settings: Settings) -> None:
    code, out, _ = await perennial_cli(settings, "send", "notes/gina", "first", "--id", "g1")
    assert code == 0 and "sent g1 to notes/gina" in out
    code, out, _ = await perennial_cli(settings, "ask", "notes/gina", "second")
    assert code == 0 and out.startswith("Noted (note #2).")

    code, out, _ = await perennial_cli(settings, "--json", "state", "notes/gina")
    assert code == 0
    assert json.loads(out)["state"] == {"counter": 2, "notes": ["first", "second"]}

    code, out, _ = await perennial_cli(settings, "events", "notes/gina")
    assert code == 0
    assert "#1" in out and "message g1 from anonymous: first" in out and "turn v2" in out

    code, out, _ = await perennial_cli(settings, "--json", "rollback", "notes/gina", "1")
    assert code == 0 and json.loads(out) == {"restored_version": 1, "version": 3}

    async def listed() -> bool:
        code, out, _ = await perennial_cli(settings, "--json", "list", "--type", "notes")
        return code == 0 and any(a["workflow_id"] == "notes/gina" for a in json.loads(out))

    await eventually(listed)


@pytest.mark.usefixtures("worker")
async def test_errors_have_types_and_exit_codes(settings: Settings) -> None:
    code, _, err = await perennial_cli(settings, "ask", "notes/hal", "   ")
    assert code == 2 and "InvalidMessage" in err
    code, _, err = await perennial_cli(settings, "ask", "no such type/x", "hi")
    assert code == 2 and "InvalidRequest" in err
    code, _, err = await perennial_cli(settings, "state", "notes/never-created")
    assert code == 2 and "AgentNotFound" in err
    code, _, err = await perennial_cli(settings, "send", "notes", "no name")
    assert code == 2 and "TYPE/NAME" in err
    code, _, err = await perennial_cli(settings, "send", "notes/hal", "x", "--data", "{oops")
    assert code == 2 and "--data is not valid JSON" in err
    await perennial_cli(settings, "ask", "notes/hal", "one")
    code, _, err = await perennial_cli(settings, "rollback", "notes/hal", "7")
    assert code == 2 and "VersionNotKept" in err


@pytest.mark.usefixtures("worker")
async def test_events_follow_streams_live(settings: Settings, perennial: Perennial) -> None:
    agent = perennial.agent("notes", "ivy")
    await agent.ask("before following")
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "perennial.client.cli", "--json",
        "--address", settings.address, "--task-queue", settings.task_queue,
        "events", "notes/ivy", "--follow", "--after", "2",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL, cwd=ROOT,
    )  # fmt: skip
    try:
        await agent.send("while following", id="live-1")
        assert process.stdout is not None
        received = json.loads(await asyncio.wait_for(process.stdout.readline(), 30))
        turn = json.loads(await asyncio.wait_for(process.stdout.readline(), 30))
        assert received["kind"] == "received" and received["message_id"] == "live-1"
        assert received["offset"] == 3
        assert turn["kind"] == "turn" and turn["version"] == 2
    finally:
        process.kill()
        await process.wait()


async def test_demo_runs_end_to_end(tmp_path) -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "perennial.client.cli",
        "--state-dir", str(tmp_path), "--port", str(free_port()), "--ui-port", str(free_port()),
        "demo", "--exit",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, cwd=ROOT,
        env={"PATH": "/usr/bin:/bin", "PERENNIAL_LOG_LEVEL": "WARNING"},
    )  # fmt: skip
    out, err = await asyncio.wait_for(process.communicate(), 180)
    text = out.decode()
    assert process.returncode == 0, err.decode()
    assert "Web UI:" in text
    assert "Noted (note #1)." in text
    assert "bob   -> Noted (note #6)." in text
    assert "(same reply, one note)" in text
    assert (tmp_path / "temporal.sqlite").exists()
