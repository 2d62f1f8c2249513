"""Process exit for Perennial's entry points (CLI, worker)."""

from __future__ import annotations

import os
import sys


def exit_process(code: int) -> None:
    """Exit with `code`, skipping interpreter finalization: the Temporal SDK's native runtime
    can abort the process there (SIGABRT in PyGILState_Release) after all work is done, which
    would turn a correct exit status into 134 for scripts and supervisors that rely on it.
    Spans not exported yet are sent first (finalization would have, `os._exit` does not)."""
    if "perennial.client.telemetry" in sys.modules:  # only a process that traced has any
        sys.modules["perennial.client.telemetry"].flush_process_tracing()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
