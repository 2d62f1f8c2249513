"""Agent types: how a class becomes one (`agent_type`), and every type the worker runs.

    @agent_type("notes")
    class NotesAgent(AgentWorkflow[NotesState]):
        async def on_message(self, message: Message) -> str: ...

`agent_type` makes the class a Temporal workflow of that type name (it supplies the `run`
method every agent shares), collects its callable methods (`workflows.callables`) and registers
it, so the worker runs it and the client reads its state typed and checks calls. The workflow sandbox re-imports an application's agent modules for every run;
registering the same class (same module and name) again is harmless.
"""

from __future__ import annotations

import importlib
import inspect
import typing
from collections.abc import Callable
from typing import Any, TypeVar

from temporalio import workflow
from temporalio.common import RawValue

from perennial.workflows.callables import collect_callable_methods
from perennial.workflows.entity import AgentWorkflow
from perennial.workflows.errors import UnknownAgentType
from perennial.workflows.migrations import check_declaration
from perennial.workflows.payloads import MISSING

A = TypeVar("A", bound=type[AgentWorkflow[Any]])

AGENT_TYPES: dict[str, type[AgentWorkflow[Any]]] = {}

#: The modules of the built-in agent types, imported on first use of the registry.
_BUILTIN_MODULES = ("perennial.workflows.notes", "perennial.workflows.assistant", "perennial.workflows.router")


def agent_type(name: str, *, registered: bool = True) -> Callable[[A], A]:
    """Class decorator: make an `AgentWorkflow` subclass the agent type `name` and register
    it. The class names its state model (`state_model = ...`, or as the generic argument,
    `AgentWorkflow[MyState]`) and implements `on_message`; it defines no `run`. Its methods
    decorated with `callable_method` (its bases' included) become `callable_methods`.
    `registered=False` leaves it out of the registry: another version of a registered type,
    which a test runs on a worker of its own (a deploy of new code, say)."""

    def define(cls: A) -> A:
        _check_class(cls, name)
        check_declaration(cls, version=cls.state_schema_version, migrations=cls.state_migrations)
        cls.run = workflow.run(_run_method(cls))  # type: ignore[attr-defined]
        cls.agent_type_name = name
        cls.callable_methods = collect_callable_methods(cls)
        defined = workflow.defn(name=name)(cls)
        return register(defined) if registered else defined

    return define


def _check_class(cls: type, name: str) -> None:
    if not (isinstance(cls, type) and issubclass(cls, AgentWorkflow)):
        raise TypeError(f"@agent_type({name!r}) decorates AgentWorkflow subclasses, not {cls!r}")
    if not name or "/" in name or len(name) > 100:
        raise ValueError(f"agent type name {name!r}: 1-100 characters, no '/'")
    if "run" in cls.__dict__:
        raise TypeError(
            f"{cls.__qualname__} defines `run`: agent types do not (the runtime runs the "
            "agent); put start-up work in `initial_state` or the `on_*` hooks"
        )
    if getattr(cls, "state_model", None) is None:
        inferred = _state_model_from_generic(cls)
        if inferred is None:
            raise TypeError(
                f"{cls.__qualname__} names no state model: set `state_model = MyState` or "
                "subclass `AgentWorkflow[MyState]`"
            )
        cls.state_model = inferred


def _state_model_from_generic(cls: type) -> type | None:
    for base in getattr(cls, "__orig_bases__", ()):
        args = typing.get_args(base)
        if args and isinstance(args[0], type):
            return args[0]
    return None


def _run_method(cls: type) -> Callable[..., Any]:
    """The `run` method of an agent type: serve. Its signature is copied from the class's
    `__init__` (the SDK requires the two to match exactly, annotations included)."""

    async def run(self: AgentWorkflow[Any], start: RawValue = MISSING) -> None:
        await self.serve()

    run.__module__ = cls.__module__
    run.__qualname__ = f"{cls.__name__}.run"  # the SDK checks the run method is the class's
    run.__signature__ = inspect.signature(cls.__init__)  # type: ignore[attr-defined]
    return run


def register(cls: A) -> A:
    """Register an agent type under its name (`agent_type` does this)."""
    name = cls.agent_type_name
    existing = AGENT_TYPES.get(name)
    if existing is not None and existing is not cls:
        same = (existing.__module__, existing.__qualname__) == (cls.__module__, cls.__qualname__)
        if same:  # the sandbox re-importing the module: keep the first
            return cls
        raise ValueError(f"agent type {name!r} is already registered by {existing.__qualname__}")
    AGENT_TYPES[name] = cls
    return cls


def agent_types() -> dict[str, type[AgentWorkflow[Any]]]:
    """Every registered agent type by name (the built-in ones included)."""
    _load_builtins()
    return dict(AGENT_TYPES)


def agent_class(name: str) -> type[AgentWorkflow[Any]]:
    _load_builtins()
    try:
        return AGENT_TYPES[name]
    except KeyError:
        known = ", ".join(sorted(AGENT_TYPES))
        raise UnknownAgentType(f"unknown agent type {name!r} (known: {known})") from None


def _load_builtins() -> None:
    for module in _BUILTIN_MODULES:
        importlib.import_module(module)


__all__ = ["AGENT_TYPES", "agent_class", "agent_type", "agent_types", "register"]
