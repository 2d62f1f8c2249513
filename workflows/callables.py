"""Callable methods: typed calls into an agent from its clients, each applied as a turn.

    @agent_type("cart")
    class Cart(AgentWorkflow[CartState]):
        @callable_method
        async def add_item(self, sku: str, qty: int = 1) -> CartSummary:
            '''Add qty of sku to the cart.'''
            ...

The parameters, their type hints (`Annotated[..., Field(...)]` if you like) and the docstring
(summary and `Args:`) make the arguments' schema, as for LLM tools (`workflows.llm.tools`,
whose schema helpers this module reuses); the return annotation makes the result's. Nothing is
written by hand. `agent_type` collects a class's callable methods (its bases' included) into
`callable_methods`.

A call travels as a message whose `call` names the method and its JSON arguments (update
`call`; or signal `message` / update `ask` with `call` set), so the inbox, duplicate
suppression, versions, the rollback of a failed turn and the event log treat it like any
message. Its arguments are checked strictly against the schema before the call is accepted
(by the client when it knows the type, and by the agent), and again when its turn runs; the
turn's reply is the method's result as JSON text.

Deterministic (schema building and validation only) and passed through the workflow sandbox.
"""

from __future__ import annotations

import functools
import inspect
import types
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    JsonValue,
    TypeAdapter,
    ValidationError,
    create_model,
)
from pydantic.fields import FieldInfo
from pydantic_core import PydanticSerializationError, to_json

from perennial.workflows.errors import InvalidRequest, summarize
from perennial.workflows.llm.tools import (
    clean_schema,
    has_description,
    model_schema,
    parse_docstring,
    resolved_type_hints,
)
from perennial.workflows.messages import MethodName

F = TypeVar("F", bound=Callable[..., Any])

#: Where `callable_method` leaves a method's spec (on the function itself).
_SPEC_ATTRIBUTE = "__perennial_callable__"
_METHOD_NAME = TypeAdapter(MethodName)
_POSITIONAL = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)


@dataclass(frozen=True, eq=False)
class CallableMethod:
    """One callable method of an agent type: its name, description, schemas and function."""

    name: str
    description: str
    args_model: type[BaseModel]
    result_type: Any
    fn: Callable[..., Any]

    @functools.cached_property
    def parameters_schema(self) -> dict[str, Any]:
        """The arguments' JSON schema (an object, one property per parameter)."""
        return model_schema(self.args_model)

    @functools.cached_property
    def returns_schema(self) -> dict[str, Any]:
        """The result's JSON schema (`{"type": "null"}` for a method returning None)."""
        schema: dict[str, Any] = clean_schema(self._result.json_schema(mode="serialization"))
        return schema

    @functools.cached_property
    def _result(self) -> TypeAdapter[Any]:
        return TypeAdapter(self.result_type)

    def validate_args(self, args: Mapping[str, JsonValue]) -> dict[str, Any]:
        """The arguments as keyword arguments for the method, validated strictly as JSON
        (`"2"` is not an int, unknown names are refused), or InvalidRequest saying what is
        wrong without echoing the values."""
        try:
            parsed = self.args_model.model_validate_json(to_json(dict(args)), strict=True)
        except (ValidationError, PydanticSerializationError) as err:
            problem = summarize(err) if isinstance(err, ValidationError) else "not JSON"
            raise InvalidRequest(f"invalid arguments for {self.name}: {problem}") from None
        return {name: getattr(parsed, name) for name in type(parsed).model_fields}

    def dump_result(self, value: Any) -> JsonValue:
        """The method's return value as JSON, checked against its return annotation; a value
        that does not fit is the method's bug (TypeError, which fails its turn)."""
        try:
            dumped: JsonValue = self._result.dump_python(
                self._result.validate_python(value), mode="json"
            )
        except ValidationError as err:
            raise TypeError(
                f"{self.name} returned {type(value).__name__}, which does not fit its return "
                f"annotation: {summarize(err)}"
            ) from None
        except PydanticSerializationError as err:
            raise TypeError(f"{self.name} returned a value that is not JSON: {err}") from None
        return dumped

    async def invoke(self, agent: Any, args: Mapping[str, JsonValue]) -> str:
        """Run the method on `agent` (sync or async) and return its result as JSON text."""
        result = self.fn(agent, **self.validate_args(args))
        if inspect.isawaitable(result):
            result = await result
        return to_json(self.dump_result(result)).decode()


def callable_method(fn: F) -> F:
    """Method decorator: clients may call this method of an agent type (Python client
    `AgentHandle.call`, `perennial call`, update `call`); each call is a turn, like a message.

    Every parameter after `self` needs a type hint, and the method a return annotation (`->
    None` if it returns nothing); `*args`, `**kwargs` and positional-only parameters cannot be
    called by name and are refused. Raises TypeError when the class is defined."""
    if not isinstance(fn, types.FunctionType):
        raise TypeError(f"@callable_method decorates a method (def or async def), not {fn!r}")
    setattr(fn, _SPEC_ATTRIBUTE, _describe(fn))
    return fn


def collect_callable_methods(cls: type) -> Mapping[str, CallableMethod]:
    """The callable methods of `cls` and its bases by name; a subclass that overrides one
    with a method that is not decorated withdraws it."""
    found: dict[str, CallableMethod] = {}
    for klass in reversed(cls.__mro__):
        for attr, value in vars(klass).items():
            spec = getattr(value, _SPEC_ATTRIBUTE, None) if inspect.isfunction(value) else None
            if spec is None:
                found.pop(attr, None)
            elif spec.name == attr:  # an alias (`other = add_item`) is not a second method
                found[attr] = spec
    return types.MappingProxyType(dict(sorted(found.items())))


# --------------------------------------------------------------------------- schema building


def _describe(fn: types.FunctionType) -> CallableMethod:
    name = fn.__name__
    try:
        _METHOD_NAME.validate_python(name)
    except ValidationError:
        raise TypeError(
            f"callable method {name[:120]!r}: its name must be an ASCII identifier of at most "
            "100 characters"
        ) from None
    params = list(inspect.signature(fn).parameters.values())
    if not params or params[0].kind not in _POSITIONAL:
        raise TypeError(f"callable method {name}: takes `self` first (it is a method)")
    params = params[1:]
    for param in params:
        _check_param(name, param)
    if "return" not in fn.__annotations__:
        raise TypeError(
            f"callable method {name}: needs a return annotation (`-> None` if it returns "
            "nothing): it is the type of the result callers get"
        )
    try:
        hints = resolved_type_hints(fn, [p.name for p in params] + ["return"])
    except NameError as err:
        raise TypeError(
            f"callable method {name}: cannot resolve its type hints ({err}); define the "
            "types it uses at module level, before the class"
        ) from None
    summary, arg_docs = parse_docstring(inspect.getdoc(fn) or "")
    fields: dict[str, Any] = {}
    for param in params:
        hint = hints[param.name]
        default = ... if param.default is inspect.Parameter.empty else param.default
        doc = arg_docs.get(param.name)
        described = doc and not has_description(hint)
        fields[param.name] = (
            hint,
            Field(default, description=doc) if described else FieldInfo(default=default),
        )
    model = create_model(  # type: ignore[call-overload]
        f"{name}_arguments", __config__=ConfigDict(extra="forbid"), **fields
    )
    return CallableMethod(
        name=name, description=summary, args_model=model, result_type=hints["return"], fn=fn
    )


def _check_param(name: str, param: inspect.Parameter) -> None:
    if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
        raise TypeError(
            f"callable method {name}: *args / **kwargs cannot be called by name; declare "
            "each parameter with its type"
        )
    if param.kind is param.POSITIONAL_ONLY:
        raise TypeError(
            f"callable method {name}: parameter {param.name!r} is positional-only; calls "
            "pass arguments by name"
        )
    if param.annotation is inspect.Parameter.empty:
        raise TypeError(f"callable method {name}: parameter {param.name!r} needs a type hint")
    if param.name.startswith("_"):
        raise TypeError(
            f"callable method {name}: parameter {param.name!r} starts with '_'; arguments are "
            "public names"
        )


__all__ = ["CallableMethod", "callable_method", "collect_callable_methods"]
