"""The travel planner's tests run on the suite's own fixtures (tests/conftest.py): one real dev
server per session, a task queue per test, the scripted Chat Completions server, workers in
process or in a child process, the gateway. The planner's own fixtures (the local provider
server, the scripted planner model) are in fixtures.py."""

from tests.conftest import (  # noqa: F401  (fixtures, for the tests of this folder)
    gateway,
    perennial,
    settings,
    worker,
    worker_process,
)

pytest_plugins = ["perennial.testing.pytest_plugin"]
