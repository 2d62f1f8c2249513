"""Every use of the Temporal Python SDK's private names, in one place, each with a way out.

Perennial is tested against one temporalio release line (`TESTED_SDK`, the range pinned in
pyproject.toml). Two things reach past the SDK's public API:

* `lean_runner()`: the SDK's sandboxed workflow runner, minus two costs it pays for every
  payload of every activation (an `exec` of a code string compiled each time, and three
  sandbox entries per payload only to read its serialization context). Workflow code still
  runs inside the sandbox, restrictions and all. The worker uses it when the setting
  `lean_runner` is on (PERENNIAL_LEAN_RUNNER, default on), the SDK's private structure is
  the one this module knows, and the SDK is in `TESTED_SDK`; otherwise it uses the SDK's own
  runner, which runs everything the same, only slower (bench/README.md has the figures).
  It also validates each workflow class once per process instead of once per worker.
* `collect_start_outcome()`: retrieves the failed start-operation future of an
  update-with-start nobody awaits, so asyncio does not log "Future exception was never
  retrieved" for every retried call. Without the private name it does nothing.
"""

from __future__ import annotations

import asyncio
import functools
from types import CodeType
from typing import Any

import structlog
import temporalio
from temporalio.client import WithStartWorkflowOperation
from temporalio.converter import SerializationContext
from temporalio.worker import WorkflowInstance, WorkflowInstanceDetails
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions
from temporalio.worker.workflow_sandbox import _runner as sdk_sandbox

log = structlog.get_logger("perennial.sdk")

#: The temporalio releases these internals were checked against: (first, past the last).
TESTED_SDK = ((1, 35), (1, 36))

#: The private `_Instance` members the lean runner overrides or reads.
_INSTANCE_MEMBERS = ("_run_code", "get_serialization_context", "get_external_store_context")
#: Where the SDK's sandboxed instance keeps the object it runs inside the sandbox.
_IN_SANDBOX = "__temporal_in_sandbox"


def sdk_version() -> tuple[int, int]:
    major, minor = temporalio.__version__.split(".")[:2]
    return int(major), int(minor)


def sdk_is_tested() -> bool:
    low, high = TESTED_SDK
    return low <= sdk_version() < high


def runner(restrictions: SandboxRestrictions, *, lean: bool) -> SandboxedWorkflowRunner:
    """The lean runner when asked for and safe (see the module docstring), else the SDK's."""
    if not lean:
        return SandboxedWorkflowRunner(restrictions=restrictions)
    if not sdk_is_tested():
        log.warning(
            "temporalio %s is outside the range Perennial was tested with (%s); using the "
            "SDK's own workflow runner", temporalio.__version__, _range_text()
        )  # fmt: skip
        return SandboxedWorkflowRunner(restrictions=restrictions)
    if not all(name in vars(sdk_sandbox._Instance) for name in _INSTANCE_MEMBERS):
        log.warning("unknown temporalio sandbox internals; using the SDK's own runner")
        return SandboxedWorkflowRunner(restrictions=restrictions)
    return _LeanSandboxedWorkflowRunner(restrictions=restrictions)


def _range_text() -> str:
    (a, b), (c, d) = TESTED_SDK
    return f">={a}.{b},<{c}.{d}"


class _LeanSandboxInstance(sdk_sandbox._Instance):
    """The SDK's sandboxed instance, compiling its sandbox-entry code once and reading
    serialization contexts without entering the sandbox (bookkeeping, no workflow code)."""

    def _run_code(self, code: str | CodeType, **extra_globals: Any) -> None:
        super()._run_code(_compiled(code) if isinstance(code, str) else code, **extra_globals)  # type: ignore[arg-type]

    def get_serialization_context(self, command_info: Any) -> SerializationContext | None:
        return self.globals_and_locals[_IN_SANDBOX].get_serialization_context(command_info)

    def get_external_store_context(self, command_info: Any) -> Any:
        return self.globals_and_locals[_IN_SANDBOX].get_external_store_context(command_info)


@functools.lru_cache(maxsize=64)
def _compiled(code: str) -> CodeType:
    return compile(code, "<string>", "exec")


#: Workflow classes already validated in this process, with the modules passed through then.
_PREPARED: set[tuple[type, frozenset[str]]] = set()


class _LeanSandboxedWorkflowRunner(SandboxedWorkflowRunner):
    def prepare_workflow(self, defn: Any) -> None:
        """Validate a workflow class in the sandbox once per process, not once per worker:
        validation builds a whole sandbox (~70 ms of CPU per agent type), and a process that
        builds many workers (a test suite, a testing kit) paid it for every type each time."""
        key = (defn.cls, frozenset(self.restrictions.passthrough_modules))
        if key in _PREPARED:
            return
        super().prepare_workflow(defn)
        _PREPARED.add(key)

    def create_instance(self, det: WorkflowInstanceDetails) -> WorkflowInstance:
        instance = _LeanSandboxInstance(det, self.runner_class, self.restrictions)
        if _IN_SANDBOX not in instance.globals_and_locals:  # the SDK changed: be the SDK's
            return super().create_instance(det)
        return instance


def collect_start_outcome(start: WithStartWorkflowOperation[Any, Any]) -> None:
    """Retrieve a failed update-with-start's start-operation outcome (see the docstring)."""
    outcome = getattr(start, "_workflow_handle", None)
    if isinstance(outcome, asyncio.Future) and outcome.done() and not outcome.cancelled():
        outcome.exception()


__all__ = ["TESTED_SDK", "collect_start_outcome", "runner", "sdk_is_tested", "sdk_version"]
