"""Tools an LLM agent can call. Their JSON schemas come from typed signatures and docstrings.

Two kinds, told apart by how they are declared:

    @workflow_tool
    def put_state(agent: LLMAgent, key: str, value: JsonValue) -> str:
        '''Remember a value under a key.

        Args:
            key: A short name for the fact.
            value: Any JSON value.
        '''

    @activity_tool(start_to_close_timeout=timedelta(seconds=20))
    async def get_weather(city: Annotated[str, Field(description="A city name")]) -> str:
        '''The current weather in a city.'''

* A **workflow tool** runs inside the agent workflow, deterministically, and may only touch the
  agent (its first parameter, never shown to the model). Use it for state and bookkeeping.
* An **activity tool** does I/O: every call is a Temporal activity with its own timeouts and
  retry policy, registered on the worker by `activities.build_activities`. A parameter
  annotated `ToolContext` receives the worker's settings and the call's ids. A parameter
  annotated `Annotated[str, ToolSecret("github")]` receives a secret from the worker's settings
  (`PERENNIAL_SECRET_GITHUB`): the model never sees it and it never enters history. Raise
  `ToolError` to tell the model the call failed without retrying it.

Both kinds: the other parameters, their type hints (with `Annotated[..., Field(...)]` if you
like) and the Google-style docstring (summary and `Args:`) make the schema; nothing is written
by hand. Arguments that fail the schema, an unknown tool or a tool that raises go back to the
model as the tool's result.

This module is deterministic (schema building only) and passed through the workflow sandbox, so
tools declared outside the sandbox and the agent code inside it share these classes.
"""

from __future__ import annotations

import functools
import inspect
import re
import types
import typing
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, create_model
from pydantic.fields import FieldInfo
from pydantic_core import to_json
from temporalio import activity
from temporalio.common import RetryPolicy

from perennial.workflows.llm.wire import FunctionSchema, ToolDefinition

_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_ACTIVITY_NAME = re.compile(r"^[A-Za-z0-9_.:-]{1,200}$")
_SECRET_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,63}$")
_SECTIONS = ("args", "arguments", "parameters", "params", "returns", "return", "raises",
             "yields", "examples", "example", "notes", "note")  # fmt: skip


class ToolError(Exception):
    """Raise in a tool to report a failure to the model (as the tool's result), not retried."""


class ToolArgumentsError(ValueError):
    """The model's arguments do not fit the tool's schema (the message says why)."""


@dataclass(frozen=True)
class ToolContext:
    """What an activity tool may ask for by annotating a parameter with this type."""

    #: The worker's `client.settings.Settings` (API keys and endpoints live there).
    settings: Any
    agent_id: str
    call_id: str
    attempt: int

    def heartbeat(self, *details: Any) -> None:
        """Tell Temporal the tool is alive (needed when the tool sets `heartbeat_timeout`
        and does not return quickly; the worker also heartbeats for it while it waits)."""
        activity.heartbeat(*details)


@dataclass(frozen=True)
class ToolSecret:
    """Marks an activity tool parameter that the worker fills with a secret, never the model:

        @activity_tool
        async def star_repo(repo: str, token: Annotated[str, ToolSecret("github")]) -> str: ...

    The parameter is left out of the tool's schema. At each call the worker passes the secret
    of this name from its settings (`Settings.tool_secrets`, read from the environment variable
    `PERENNIAL_SECRET_<NAME>`, here `PERENNIAL_SECRET_GITHUB`), inside the activity: the value
    never passes through the workflow, so it cannot reach history. Annotate `SecretStr` instead
    of `str` to receive it wrapped. Names are case-insensitive: letters, digits, underscores.

    Without the secret on the worker a call fails with the non-retryable `ToolSecretMissing`
    (the model reads that the tool failed), unless the parameter has a default, which is then
    passed. Tool results and error texts are redacted of every configured secret.
    """

    name: str

    def __post_init__(self) -> None:
        if not _SECRET_NAME.match(self.name):
            raise ValueError(
                f"tool secret name {self.name!r} must match {_SECRET_NAME.pattern} "
                "(it names the environment variable PERENNIAL_SECRET_<NAME>)"
            )

    @property
    def key(self) -> str:
        """The secret's key in `Settings.tool_secrets` (names are case-insensitive)."""
        return self.name.lower()


@dataclass(frozen=True)
class SecretParameter:
    """An activity tool parameter the worker fills with a secret (see `ToolSecret`)."""

    param: str
    secret: ToolSecret
    #: Annotated `SecretStr`: the tool receives the secret wrapped, not as plain text.
    wrapped: bool
    #: The parameter has a default: passed when the worker has no such secret.
    optional: bool


@dataclass(frozen=True, eq=False)
class Tool:
    """A tool's identity and schema; see `WorkflowTool` and `ActivityTool`."""

    name: str
    description: str
    args_model: type[BaseModel]
    fn: Callable[..., Any]
    #: Every call waits for a person to approve it (update `decide`; `workflows.approvals`).
    needs_approval: bool = False
    #: With `needs_approval`: a call nobody decided on within this long is rejected.
    approval_timeout: timedelta | None = None

    def definition(self) -> ToolDefinition:
        """The tool as the model sees it (built once per tool)."""
        return self._definition

    @functools.cached_property
    def _definition(self) -> ToolDefinition:
        return ToolDefinition(
            function=FunctionSchema(
                name=self.name,
                description=self.description,
                parameters=model_schema(self.args_model),
            )
        )

    def parse(self, arguments: str) -> BaseModel:
        """Validate the model's JSON arguments, or raise `ToolArgumentsError`."""
        try:
            return self.args_model.model_validate_json(arguments.strip() or "{}")
        except ValidationError as err:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc']) or 'arguments'}: {e['msg']}"
                for e in err.errors(include_url=False)
            )
            raise ToolArgumentsError(problems) from None

    def kwargs(self, args: BaseModel) -> dict[str, Any]:
        """The validated arguments as keyword arguments (nested models stay models)."""
        return {name: getattr(args, name) for name in type(args).model_fields}


@dataclass(frozen=True, eq=False)
class WorkflowTool(Tool):
    """Runs inside the agent workflow; `fn(agent, **arguments)` may be sync or async."""

    async def invoke(self, agent: Any, args: BaseModel) -> Any:
        result = self.fn(agent, **self.kwargs(args))
        if inspect.isawaitable(result):
            result = await result
        return result


@dataclass(frozen=True, eq=False)
class ActivityTool(Tool):
    """Runs as the Temporal activity `activity_type` (its name, unless it was given an
    `activity_name`), with these options."""

    start_to_close_timeout: timedelta = timedelta(seconds=60)
    heartbeat_timeout: timedelta | None = None
    retry_policy: RetryPolicy = field(
        default_factory=lambda: RetryPolicy(
            initial_interval=timedelta(seconds=1),
            backoff_coefficient=2.0,
            maximum_interval=timedelta(seconds=30),
            maximum_attempts=3,
        )
    )
    #: The parameter that receives the `ToolContext`, if the function has one.
    context_param: str | None = None
    #: The parameters the worker fills with secrets (`ToolSecret`), not part of the schema.
    secret_params: tuple[SecretParameter, ...] = ()
    #: The activity's type name when it is not the tool's name: two applications on one
    #: worker may each have a tool the model knows as `get_weather`.
    activity_name: str | None = None

    @property
    def activity_type(self) -> str:
        """The Temporal activity type this tool runs as."""
        return self.activity_name or self.name


AnyTool = WorkflowTool | ActivityTool


def workflow_tool(
    fn: Callable[..., Any] | None = None,
    *,
    name: str | None = None,
    needs_approval: bool = False,
    approval_timeout: timedelta | None = None,
) -> Any:
    """Declare a workflow tool (usable bare, `@workflow_tool`, or `@workflow_tool(name=...)`).
    The function's first parameter receives the agent and is not part of the schema.
    `needs_approval=True`: every call waits for a person's decision before it runs (rejected
    after `approval_timeout`, if given)."""

    def build(f: Callable[..., Any]) -> WorkflowTool:
        tool_name, description, model, _, _ = _describe(f, name=name, skip_first=True)
        return WorkflowTool(
            name=tool_name,
            description=description,
            args_model=model,
            fn=f,
            needs_approval=needs_approval,
            approval_timeout=approval_timeout,
        )

    return build(fn) if fn is not None else build


def activity_tool(
    fn: Callable[..., Any] | None = None,
    *,
    name: str | None = None,
    start_to_close_timeout: timedelta = timedelta(seconds=60),
    heartbeat_timeout: timedelta | None = None,
    retry_policy: RetryPolicy | None = None,
    needs_approval: bool = False,
    approval_timeout: timedelta | None = None,
    activity_name: str | None = None,
) -> Any:
    """Declare an activity tool (`@activity_tool` or `@activity_tool(...)` with options).
    `needs_approval=True`: every call waits for a person's decision before it runs (rejected
    after `approval_timeout`, if given). `activity_name`: the Temporal activity type it runs
    as, when that must differ from the name the model sees (default: the same)."""
    if activity_name is not None and not _ACTIVITY_NAME.match(activity_name):
        raise ValueError(f"activity name {activity_name!r} must match {_ACTIVITY_NAME.pattern}")

    def build(f: Callable[..., Any]) -> ActivityTool:
        if not inspect.iscoroutinefunction(f):
            raise TypeError(f"activity tool {f.__qualname__} must be `async def`")
        tool_name, description, model, context_param, secret_params = _describe(
            f, name=name, skip_first=False
        )
        extra: dict[str, Any] = {"retry_policy": retry_policy} if retry_policy else {}
        return ActivityTool(
            name=tool_name,
            description=description,
            args_model=model,
            fn=f,
            start_to_close_timeout=start_to_close_timeout,
            heartbeat_timeout=heartbeat_timeout,
            context_param=context_param,
            secret_params=secret_params,
            needs_approval=needs_approval,
            approval_timeout=approval_timeout,
            activity_name=activity_name,
            **extra,
        )

    return build(fn) if fn is not None else build


def tool_index(tools: Sequence[AnyTool]) -> dict[str, AnyTool]:
    """Tools by name; two tools of one name are a mistake in the agent type."""
    index: dict[str, AnyTool] = {}
    for tool in tools:
        if not isinstance(tool, WorkflowTool | ActivityTool):
            raise TypeError(
                f"{tool!r} is not a tool: declare it with @workflow_tool or @activity_tool"
            )
        if tool.name in index and index[tool.name] is not tool:
            raise ValueError(f"two tools are named {tool.name!r}")
        index[tool.name] = tool
    return index


def render_result(value: Any) -> str:
    """A tool's return value as the text the model reads."""
    if isinstance(value, str):
        return value
    if isinstance(value, BaseModel):
        return value.model_dump_json()
    return to_json(value).decode()


# --------------------------------------------------------------------------- schema building


def _describe(
    fn: Callable[..., Any], *, name: str | None, skip_first: bool
) -> tuple[str, str, type[BaseModel], str | None, tuple[SecretParameter, ...]]:
    tool_name = name or fn.__name__
    if not _NAME.match(tool_name):
        raise ValueError(f"tool name {tool_name!r} must match {_NAME.pattern}")
    summary, arg_docs = parse_docstring(inspect.getdoc(fn) or "")
    params = list(inspect.signature(fn).parameters.values())
    if skip_first:
        if not params:
            raise TypeError(f"workflow tool {tool_name} must take the agent as first parameter")
        params = params[1:]
    hints = resolved_type_hints(fn, [p.name for p in params])
    fields: dict[str, Any] = {}
    context_param: str | None = None
    secret_params: list[SecretParameter] = []
    for param in params:
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            raise TypeError(f"tool {tool_name}: *args / **kwargs cannot be described to a model")
        if param.name not in hints:
            raise TypeError(f"tool {tool_name}: parameter {param.name!r} needs a type hint")
        hint = hints[param.name]
        if hint is ToolContext:
            context_param = param.name
            continue
        secret = _secret_parameter(tool_name, param, hint, in_workflow=skip_first)
        if secret is not None:
            secret_params.append(secret)
            continue
        default = ... if param.default is inspect.Parameter.empty else param.default
        described = has_description(hint)
        doc = arg_docs.get(param.name)
        fields[param.name] = (
            hint,
            Field(default, description=doc)
            if doc and not described
            else FieldInfo(default=default),
        )
    model = create_model(  # type: ignore[call-overload]
        f"{tool_name}_arguments", __config__=ConfigDict(extra="forbid"), **fields
    )
    return tool_name, summary, model, context_param, tuple(secret_params)


def _secret_parameter(
    tool_name: str, param: inspect.Parameter, hint: Any, *, in_workflow: bool
) -> SecretParameter | None:
    """The parameter as a `SecretParameter` if it is annotated with a `ToolSecret`."""
    if typing.get_origin(hint) is not typing.Annotated:
        return None
    base, *metadata = typing.get_args(hint)
    marks = [m for m in metadata if isinstance(m, ToolSecret)]
    if not marks:
        return None
    where = f"tool {tool_name}, parameter {param.name!r}"
    if in_workflow:
        raise TypeError(
            f"{where}: a ToolSecret cannot go to a workflow tool (workflow code and its "
            "history would hold the secret); declare the tool with @activity_tool"
        )
    if len(marks) > 1:
        raise TypeError(f"{where}: one ToolSecret per parameter")
    kinds = set(typing.get_args(base)) - {type(None)} if _is_union(base) else {base}
    if kinds not in ({str}, {SecretStr}):
        raise TypeError(f"{where}: a ToolSecret parameter must be str or SecretStr")
    return SecretParameter(
        param=param.name,
        secret=marks[0],
        wrapped=kinds == {SecretStr},
        optional=param.default is not inspect.Parameter.empty,
    )


def _is_union(hint: Any) -> bool:
    return typing.get_origin(hint) in (typing.Union, types.UnionType)


def resolved_type_hints(fn: Callable[..., Any], names: list[str]) -> dict[str, Any]:
    """The hints of `names` only: the agent parameter of a workflow tool is often annotated
    with a name imported under TYPE_CHECKING, which must not be evaluated."""
    wanted = {k: v for k, v in getattr(fn, "__annotations__", {}).items() if k in names}
    holder = types.SimpleNamespace(__annotations__=wanted, __globals__=fn.__globals__)
    return typing.get_type_hints(holder, globalns=fn.__globals__, include_extras=True)


def has_description(hint: Any) -> bool:
    if typing.get_origin(hint) is not typing.Annotated:
        return False
    return any(isinstance(m, FieldInfo) and m.description for m in typing.get_args(hint)[1:])


def parse_docstring(doc: str) -> tuple[str, dict[str, str]]:
    """A Google-style docstring's description and its `Args:` entries."""
    description: list[str] = []
    args: dict[str, str] = {}
    section: str | None = None
    current: str | None = None
    entry_indent = _arg_indent(doc)
    for line in doc.splitlines():
        stripped = line.strip()
        header = stripped.rstrip(":").lower()
        if stripped.endswith(":") and header in _SECTIONS and not line.startswith(" "):
            section, current = header, None
            continue
        if section is None:
            description.append(line)
        elif section in ("args", "arguments", "parameters", "params") and stripped:
            match = re.match(r"^(\*{0,2}\w+)\s*(\([^)]*\))?\s*:\s*(.*)$", stripped)
            indent = len(line) - len(line.lstrip())
            if match and (current is None or indent <= entry_indent):
                current = match.group(1).lstrip("*")
                args[current] = match.group(3).strip()
            elif current is not None:
                args[current] = f"{args[current]} {stripped}".strip()
    paragraphs = "\n".join(description).strip().split("\n\n")
    summary = "\n\n".join(" ".join(p.split()) for p in paragraphs if p.strip())
    return summary, args


def _arg_indent(doc: str) -> int:
    """Indentation of the entries of the `Args:` section (the first entry's)."""
    lines = doc.splitlines()
    for i, line in enumerate(lines):
        if line.strip().rstrip(":").lower() in ("args", "arguments", "parameters", "params"):
            for entry in lines[i + 1 :]:
                if entry.strip():
                    return len(entry) - len(entry.lstrip())
    return 0


def model_schema(model: type[BaseModel]) -> dict[str, Any]:
    """The arguments' JSON schema, with any-JSON references (`JsonValue`) inlined."""
    schema = model.model_json_schema()
    defs = schema.get("$defs", {})
    empty = {f"#/$defs/{name}" for name, sub in defs.items() if sub == {}}
    if empty:
        schema = _inline(schema, empty)
        schema["$defs"] = {k: v for k, v in defs.items() if f"#/$defs/{k}" not in empty}
        if not schema["$defs"]:
            del schema["$defs"]
    return clean_schema(schema)


def _inline(schema: Any, empty: set[str]) -> Any:
    if isinstance(schema, dict):
        if schema.get("$ref") in empty:
            return {k: _inline(v, empty) for k, v in schema.items() if k != "$ref"}
        return {k: _inline(v, empty) for k, v in schema.items()}
    if isinstance(schema, list):
        return [_inline(item, empty) for item in schema]
    return schema


def clean_schema(schema: Any, *, in_properties: bool = False) -> Any:
    """Drop pydantic's `title`s (noise for the model); keep property names, even `title`."""
    if isinstance(schema, dict):
        return {
            key: clean_schema(value, in_properties=(key == "properties" and not in_properties))
            for key, value in schema.items()
            if in_properties or key != "title"
        }
    if isinstance(schema, list):
        return [clean_schema(item) for item in schema]
    return schema


__all__ = [
    "ActivityTool",
    "AnyTool",
    "SecretParameter",
    "Tool",
    "ToolArgumentsError",
    "ToolContext",
    "ToolError",
    "ToolSecret",
    "WorkflowTool",
    "activity_tool",
    "clean_schema",
    "has_description",
    "model_schema",
    "parse_docstring",
    "render_result",
    "resolved_type_hints",
    "tool_index",
    "workflow_tool",
]
