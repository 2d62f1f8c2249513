"""`perennial init DIR`: a new application with one agent type, its tests and its README.

    DIR/
      pyproject.toml          the application, with its test settings (pytest, the kit)
      README.md               its two commands: run it, test it
      <package>/agents.py     an agent type: a state model and `on_message`
      tests/conftest.py       the testing kit's fixtures (a real dev server per session)
      tests/test_agents.py    tests of the agent type, through the Python client

The package is named after DIR (`my-app` -> `my_app`). Nothing is overwritten: a DIR that
already holds any of these files is refused.
"""

from __future__ import annotations

import re
from pathlib import Path

from perennial.workflows.errors import UsageError

_PYPROJECT = """\
[project]
name = "{name}"
version = "0.1.0"
description = "Agents on Perennial."
requires-python = ">=3.11"
dependencies = ["perennial"]

[project.optional-dependencies]
test = ["perennial[testing]"]

[tool.pytest.ini_options]
asyncio_mode = "auto"
asyncio_default_fixture_loop_scope = "session"
asyncio_default_test_loop_scope = "session"
# The application's modules: the test worker runs their agent types.
perennial_app = ["{package}.agents"]
"""

_README = """\
# {name}

Agents on Perennial: each agent is a long-lived Temporal workflow, keyed by name.

Set it up, in a virtualenv that has `perennial` (this application, and pytest for its tests):

```bash
pip install -e '.[test]'
```

Run it (an embedded Temporal dev server, a worker with this application's agent types, and
the Web UI):

```bash
perennial dev --app {package}.agents
```

Then, from another terminal:

```bash
perennial --app {package}.agents ask tally/groceries "3"
perennial --app {package}.agents state tally/groceries
```

Test it (a real dev server per test session; nothing is mocked):

```bash
python -m pytest
```

The agent type is in `{package}/agents.py`; its tests in `tests/test_agents.py`.
"""

_AGENTS = '''\
"""This application's agent types (workflow code: deterministic, no I/O)."""

from pydantic import BaseModel

from perennial import AgentWorkflow, Message, agent_type


class TallyState(BaseModel):
    total: int = 0
    entries: list[int] = []


@agent_type("tally")
class Tally(AgentWorkflow[TallyState]):
    """Adds up the numbers it is sent, and remembers each one."""

    async def on_message(self, message: Message) -> str:
        amount = int(message.text)  # not a number: the turn fails and nothing changes
        self.state.entries.append(amount)
        self.state.total += amount
        return f"total is {{self.state.total}}"
'''

_CONFTEST = '''\
"""The testing kit: a real Temporal dev server per session, a worker per test."""

pytest_plugins = ["perennial.testing.pytest_plugin"]
'''

_TESTS = '''\
"""The tally agent, through the Python client, against a real dev server."""

import pytest

from perennial.client import TurnFailed


async def test_it_adds_up_and_keeps_its_state(perennial, perennial_worker):
    groceries = perennial.agent("tally", "groceries")
    assert (await groceries.ask("3")).reply == "total is 3"
    assert (await groceries.ask("4")).reply == "total is 7"
    state = await groceries.state()
    assert state.state.entries == [3, 4]


async def test_a_bad_message_changes_nothing(perennial, perennial_worker):
    books = perennial.agent("tally", "books")
    await books.ask("10")
    with pytest.raises(TurnFailed):
        await books.ask("ten")
    assert (await books.state()).state.total == 10
'''


def scaffold(directory: Path) -> list[Path]:
    """Write a new application into `directory` (created if needed); the files written."""
    name = directory.resolve().name
    package = re.sub(r"\W", "_", name).strip("_").lower() or "app"
    if package[0].isdigit():
        package = f"app_{package}"
    files = {
        directory / "pyproject.toml": _PYPROJECT.format(name=name, package=package),
        directory / "README.md": _README.format(name=name, package=package),
        directory / package / "__init__.py": "",
        directory / package / "agents.py": _AGENTS.format(),
        directory / "tests" / "conftest.py": _CONFTEST,
        directory / "tests" / "test_agents.py": _TESTS,
    }
    existing = [str(path) for path in files if path.exists()]
    if existing:
        raise UsageError(f"not overwriting what is there: {', '.join(existing)}")
    for path, text in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return list(files)


__all__ = ["scaffold"]
