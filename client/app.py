"""Loading an application: the modules that define its agent types and tools.

`--app MODULE[,MODULE]` on every command (or `PERENNIAL_APP`) names them. The worker imports
them to run their agent types; the CLI, the client and the gateway import them to check
messages against those types' limits and to read their state typed. Without them, every agent
type is still reachable, untyped.
"""

from __future__ import annotations

import contextlib
import importlib
import sys
from collections.abc import AsyncIterator
from pathlib import Path

from perennial.client.settings import Settings
from perennial.workflows.errors import UsageError

#: The module-level function of an application module that starts its dev-time services.
DEV_SERVICES_HOOK = "dev_services"
#: The module-level tuple of an application module that names modules for the worker's
#: workflow sandbox to pass through.
PASSTHROUGH_HOOK = "passthrough_modules"


def load_app(settings: Settings) -> None:
    """Import the application's modules (the current directory is importable, as it is for
    `python -m`). `UsageError` names a module that cannot be imported, and why."""
    if settings.app and "" not in sys.path and str(Path.cwd()) not in sys.path:
        sys.path.insert(0, str(Path.cwd()))
    for module in settings.app:
        try:
            importlib.import_module(module)
        except ImportError as err:
            raise UsageError(
                f"cannot import application module {module!r} (from --app / PERENNIAL_APP): "
                f"{err}"
            ) from err


def app_passthrough_modules(settings: Settings | None) -> tuple[str, ...]:
    """What the application's `--app` modules ask the worker's workflow sandbox to pass
    through (`passthrough_modules = ("myapp",)`, names and their submodules): imported once
    per worker and shared by every agent, as Perennial's own modules are, instead of imported
    again for every agent's workflow run (each new or replayed agent re-runs such a module's
    top level: its pydantic models, its tools' schemas). The price: the sandbox's runtime
    checks do not run inside them, so they must be deterministic by their own discipline."""
    found: list[str] = []
    for name in settings.app if settings is not None else ():
        declared = getattr(importlib.import_module(name), PASSTHROUGH_HOOK, ())
        if not isinstance(declared, tuple | list) or not all(
            isinstance(module, str) and module for module in declared
        ):
            raise UsageError(
                f"{name}.{PASSTHROUGH_HOOK} must be a tuple of module names, not {declared!r}"
            )
        found.extend(declared)
    return tuple(dict.fromkeys(found))


@contextlib.asynccontextmanager
async def app_dev_services(settings: Settings) -> AsyncIterator[Settings]:
    """What `perennial dev` and `perennial demo` run beside the worker for the application:
    each `--app` module that defines `dev_services(settings)` (an async context manager that
    starts local stand-ins, like a fake provider API, and yields the settings the worker and
    the gateway run with) is entered in order, each given the settings the one before
    yielded; all are left, in reverse order, when the command stops."""
    async with contextlib.AsyncExitStack() as stack:
        for name in settings.app:
            hook = getattr(importlib.import_module(name), DEV_SERVICES_HOOK, None)
            if hook is None:
                continue
            served = await stack.enter_async_context(hook(settings))
            if not isinstance(served, Settings):
                raise UsageError(
                    f"{name}.{DEV_SERVICES_HOOK} yielded {type(served).__name__}, not Settings"
                )
            settings = served
        yield settings


__all__ = [
    "DEV_SERVICES_HOOK",
    "PASSTHROUGH_HOOK",
    "app_dev_services",
    "app_passthrough_modules",
    "load_app",
]
