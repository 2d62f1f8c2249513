"""What a new user meets in the first hour: one import package, and prompt, typed errors when
no worker runs."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path

from perennial.client import Settings
from tests.conftest import ROOT
from tests.support import unique


def test_only_the_perennial_package_is_importable_from_outside_the_repository(
    tmp_path: Path,
) -> None:
    """`pip install` puts one package into site-packages: names like `client` or `workflows`
    would clash with an application laid out the usual Temporal way."""
    probe = (
        "import importlib.util, perennial, perennial.client, perennial.worker;"
        "print([m for m in ('client', 'workflows', 'activities', 'worker')"
        " if importlib.util.find_spec(m)])"
    )
    done = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, capture_output=True,
                          text=True, timeout=60)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_the_wheel_holds_one_package(tmp_path: Path) -> None:
    # Built from a copy: setuptools writes build/ and egg-info into the tree it builds.
    source = tmp_path / "source"
    shutil.copytree(ROOT, source, symlinks=True, ignore=shutil.ignore_patterns(
        ".venv", ".git", "results", "__pycache__", ".perennial", "build", "*.egg-info"))  # fmt: skip
    done = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps",
         "--disable-pip-version-check", "-q", "-w", str(tmp_path), str(source)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    [wheel] = tmp_path.glob("perennial-*.whl")
    tops = {name.split("/")[0] for name in zipfile.ZipFile(wheel).namelist()}
    assert tops == {"perennial", next(t for t in tops if t.endswith(".dist-info"))}
    assert "perennial/worker.py" in zipfile.ZipFile(wheel).namelist()


async def _cli(settings: Settings, *args: str) -> tuple[int, str, str, float]:
    started = time.monotonic()
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "perennial.client.cli", "--address", settings.address,
        "--task-queue", settings.task_queue, *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, cwd=ROOT,
    )  # fmt: skip
    out, err = await asyncio.wait_for(process.communicate(), 90)
    return process.returncode or 0, out.decode(), err.decode(), time.monotonic() - started


async def test_with_no_worker_ask_and_state_fail_promptly_and_typed(settings: Settings) -> None:
    """No worker on the task queue: `ask` ends with AskTimedOut after its timeout (the
    message stays accepted), `state` with AgentUnreachable within seconds, never a traceback."""
    agent = f"notes/{unique()}"
    code, _, err, took = await _cli(settings, "ask", agent, "hello", "--timeout", "3")
    assert code == 1 and "AskTimedOut" in err and "will be applied when one runs" in err
    assert "Traceback" not in err and took < 30
    code, _, err, took = await _cli(settings, "--json", "state", agent)
    assert code == 1, err
    lines = [line for line in err.splitlines() if line.startswith("{")]
    assert json.loads(lines[-1])["error"]["type"] == "AgentUnreachable"
    assert "waiting for a worker" in err  # it says what it waits for while it waits
    assert "Traceback" not in err and took < 30
