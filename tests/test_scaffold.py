"""`perennial init DIR`: the application it writes passes its own tests, in a fresh directory,
with the commands its README prints."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from perennial.client.scaffold import scaffold
from perennial.workflows.errors import UsageError


def test_the_scaffold_passes_its_own_tests(tmp_path: Path) -> None:
    app = tmp_path / "hello-app"
    done = subprocess.run(
        [sys.executable, "-m", "perennial.client.cli", "init", str(app)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "perennial dev --app hello_app.agents" in done.stdout
    readme = (app / "README.md").read_text()
    assert "python -m pytest" in readme and "perennial dev --app hello_app.agents" in readme
    assert "pip install -e '.[test]'" in readme
    tests = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"],
        cwd=app, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert tests.returncode == 0, tests.stdout + tests.stderr
    assert "2 passed" in tests.stdout


def test_init_never_overwrites(tmp_path: Path) -> None:
    scaffold(tmp_path / "app")
    with pytest.raises(UsageError, match="not overwriting"):
        scaffold(tmp_path / "app")
