"""Process exit for Perennial's entry points (CLI, worker)."""

from __future__ import annotations

import os
import sys


def exit_process(code: int) -> None:
    """Exit with `code`, skipping interpreter finalization: the Temporal SDK's native runtime
    can abort the process there (SIGABRT in PyGILState_Release) after all work is done, which
    would turn a correct exit status into 134 for scripts and supervisors that rely on it."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
