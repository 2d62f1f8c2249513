"""The README is code: every Python block in it runs as written, and so do its commands.

Blocks are marked with an HTML comment just above them:

    <!-- readme-test: file PATH -->     the block is a file of the reader's project
    <!-- readme-test: run -->           a Python script, or shell commands, run as printed
    <!-- readme-test: pytest PATH -->   a test file, run with pytest in the reader's project

The reader's project is a temporary directory holding the `file` blocks; a worker process
runs its agent types on the task queue the README's commands use (`perennial`), on the
session's dev server, which the commands reach through TEMPORAL_ADDRESS. A gateway process
serves them too, on a free port that replaces the README's `127.0.0.1:8000`.
"""

from __future__ import annotations

import asyncio
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
from itertools import takewhile
from pathlib import Path

import pytest

from perennial.client import Settings
from tests.conftest import ROOT

_BLOCK = re.compile(
    r"(?:<!-- readme-test: (?P<marker>[^>]*?) -->\n)?```(?P<lang>\w*)[^\n]*\n(?P<body>.*?)```",
    re.S,
)


def _blocks() -> list[tuple[str, str, str]]:
    """(marker, language, body) of every fenced block in the README."""
    text = (ROOT / "README.md").read_text()
    return [(m["marker"] or "", m["lang"], m["body"]) for m in _BLOCK.finditer(text)]


def test_every_python_block_is_run_by_this_test() -> None:
    python = [(marker, body) for marker, lang, body in _blocks() if lang == "python"]
    assert python, "the README has Python blocks"
    unmarked = [body[:60] for marker, body in python if not marker]
    assert unmarked == []


def _commands(body: str) -> list[str]:
    """Shell commands of a block: comments dropped, continued lines joined."""
    joined = re.sub(r"\\\n\s*", " ", body)
    return [line for line in joined.splitlines() if line.strip() and not line.startswith("#")]


def _write_project(root: Path) -> list[str]:
    modules = []
    for marker, _, body in _blocks():
        if marker.startswith("file "):
            path = root / marker.removeprefix("file ").strip()
            path.parent.mkdir(parents=True, exist_ok=True)
            (path.parent / "__init__.py").touch()
            path.write_text(body)
            modules.append(".".join(path.relative_to(root).with_suffix("").parts))
    return modules


async def test_the_readme_runs_as_written(perennial_server: Settings, tmp_path: Path) -> None:
    modules = _write_project(tmp_path)
    assert "myapp.agents" in modules
    env = {**os.environ, "TEMPORAL_ADDRESS": perennial_server.address,
           "PYTHONPATH": str(tmp_path), "PERENNIAL_LOG_LEVEL": "WARNING"}  # fmt: skip
    env.pop("PERENNIAL_TASK_QUEUE", None)  # the README's commands use the default, `perennial`
    # The reader's worker, in a process of its own (its agent types stay out of this one's).
    app = ["-m", "perennial.client.cli", "--app", ",".join(modules)]
    worker = await asyncio.create_subprocess_exec(sys.executable, *app, "worker",
                                                  cwd=tmp_path, env=env)  # fmt: skip
    port = _free_port()
    gateway = await asyncio.create_subprocess_exec(
        sys.executable, *app, "gateway", "--port", str(port), cwd=tmp_path, env=env
    )
    try:
        await _until_healthy(port)
        for marker, lang, body in _blocks():
            if marker != "run":
                continue
            body = body.replace("127.0.0.1:8000", f"127.0.0.1:{port}")
            if lang == "python":
                await _run([sys.executable, "-c", body], env)
            else:
                for command in _commands(body):
                    await _run(["bash", "-c", command], env)
    finally:
        for process in (gateway, worker):
            process.terminate()
            await process.wait()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def _until_healthy(port: int) -> None:
    """Until the gateway answers /health with 200 (it is up, and the worker polls)."""
    for _ in range(600):
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"GET /health HTTP/1.0\r\n\r\n")
            status = await reader.readline()
            writer.close()
            if b" 200 " in status:
                return
        except OSError:
            pass
        await asyncio.sleep(0.1)
    raise AssertionError("the gateway did not become healthy in 60 s")


async def _run(command: list[str], env: dict[str, str]) -> None:
    """Run a command while this process's worker keeps serving (no blocking wait)."""
    process = await asyncio.create_subprocess_exec(
        *command, cwd=ROOT, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(process.communicate(), 120)
    if process.returncode == -signal.SIGABRT and _sdk_abort_at_exit(err.decode()):
        return  # the script's work was done (scripts/test has the same rule for pytest)
    assert process.returncode == 0, f"{command[-1][:200]}\n{out.decode()}\n{err.decode()}"


def _sdk_abort_at_exit(stderr: str) -> bool:
    """The Temporal SDK's known abort while the interpreter finalizes, after all work (its
    native runtime releasing the GIL late): nothing else on stderr says anything failed."""
    return (
        "Fatal Python error: PyGILState_Release" in stderr
        and "Python runtime state: finalizing" in stderr
        and "Traceback" not in stderr
    )


def test_the_readme_test_passes_in_a_project_of_its_own(tmp_path: Path) -> None:
    """The testing kit as the README sets it up: its pyproject settings, its conftest line,
    its test file; pytest starts a dev server of its own."""
    _write_project(tmp_path)
    blocks = _blocks()
    [toml] = [body for _, lang, body in blocks if lang == "toml" and "[tool.pytest" in body]
    (tmp_path / "pyproject.toml").write_text(toml)
    (tmp_path / "tests").mkdir(exist_ok=True)
    (tmp_path / "tests" / "conftest.py").write_text(
        'pytest_plugins = ["perennial.testing.pytest_plugin"]\n'
    )
    for marker, _, body in blocks:
        if marker.startswith("pytest "):
            (tmp_path / marker.removeprefix("pytest ").strip()).write_text(body)
    env = {k: v for k, v in os.environ.items() if k not in ("TEMPORAL_ADDRESS", "PERENNIAL_APP")}
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 passed" in done.stdout


@pytest.mark.parametrize("command", ["make demo", "make test"])
def test_the_quick_start_commands_exist(command: str) -> None:
    target = command.split()[1]
    done = subprocess.run(["make", "-n", target], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_every_perennial_command_the_readme_prints_parses() -> None:
    """Commands the test cannot run (the long-running `dev`, say) are still parsed as
    printed, so a flag in the wrong place cannot slip through."""
    from perennial.client.cli import build_parser

    parser = build_parser()
    text = (ROOT / "README.md").read_text()
    printed = [
        command
        for _, lang, body in _blocks()
        if lang == "bash"
        for command in _commands(body)
        if command.startswith(".venv/bin/perennial ")
    ] + re.findall(r"`(?:\.venv/bin/)?(perennial (?:dev|init|demo) [^`\[|]*)`", text)
    assert any(" dev --app " in c for c in printed)
    for command in printed:
        words = list(takewhile(lambda w: w not in (">", ">>", "|", "&&"),
                               shlex.split(command.split("#")[0])))  # fmt: skip
        parser.parse_args(words[1:])
