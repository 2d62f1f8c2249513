"""Loading an application: the modules that define its agent types and tools.

`--app MODULE[,MODULE]` on every command (or `PERENNIAL_APP`) names them. The worker imports
them to run their agent types; the CLI, the client and the gateway import them to check
messages against those types' limits and to read their state typed. Without them, every agent
type is still reachable, untyped.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

from perennial.client.settings import Settings
from perennial.workflows.errors import UsageError


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


__all__ = ["load_app"]
