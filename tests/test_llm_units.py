"""The LLM layer's pure parts: tool schemas from signatures, the context window, the model
activity's error classification, and the request digest across the data converter."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Annotated, Any

import httpx2
import openai
import pytest
from pydantic import BaseModel, Field
from temporalio.contrib.pydantic import pydantic_data_converter

from perennial.activities.llm import MAX_RETRY_AFTER, classify, retry_after
from perennial.workflows.llm.context import ContextWindow, fit_window, keep_last_exchanges
from perennial.workflows.llm.tools import (
    ToolArgumentsError,
    ToolContext,
    activity_tool,
    parse_docstring,
    render_result,
    tool_index,
    workflow_tool,
)
from perennial.workflows.llm.wire import (
    AssistantItem,
    ModelRequest,
    ModelSettings,
    SystemItem,
    ToolCall,
    ToolItem,
    UserItem,
)

# --------------------------------------------------------------------------- tool schemas


class Address(BaseModel):
    street: str
    city: str


@activity_tool(start_to_close_timeout=timedelta(seconds=5))
async def ship(
    ctx: ToolContext,
    to: Address,
    items: Annotated[list[str], Field(min_length=1, description="What to ship")],
    express: bool = False,
    note: str | None = None,
) -> str:
    """Ship items to an address.

    The parcel leaves today.

    Args:
        to: Where the parcel goes.
        items: Ignored: the Field description wins.
        express: Next-day delivery,
            at extra cost.

    Returns:
        A tracking number.
    """
    return "T-1"


def test_schema_comes_from_the_signature_and_docstring() -> None:
    fn = ship.definition().function
    assert fn.name == "ship"
    assert fn.description == "Ship items to an address.\n\nThe parcel leaves today."
    params: Any = fn.parameters
    assert params["type"] == "object"
    assert params["additionalProperties"] is False
    assert params["required"] == ["to", "items"]
    props = params["properties"]
    assert list(props) == ["to", "items", "express", "note"]  # ctx is injected, not shown
    assert props["to"]["description"] == "Where the parcel goes."
    assert props["to"]["$ref"] == "#/$defs/Address"
    assert params["$defs"]["Address"]["required"] == ["street", "city"]
    assert props["items"] == {
        "description": "What to ship",
        "items": {"type": "string"},
        "minItems": 1,
        "type": "array",
    }
    assert props["express"]["description"] == "Next-day delivery, at extra cost."
    assert props["express"]["default"] is False
    assert "title" not in props["express"]
    assert ship.context_param == "ctx"
    assert ship.start_to_close_timeout == timedelta(seconds=5)


def test_arguments_are_validated_against_the_schema() -> None:
    args = ship.parse('{"to": {"street": "1 Main St", "city": "Oslo"}, "items": ["book"]}')
    kwargs = ship.kwargs(args)
    assert isinstance(kwargs["to"], Address)
    assert kwargs["items"] == ["book"] and kwargs["express"] is False
    for bad, fragment in (
        ('{"to": {"street": "x"}, "items": ["a"]}', "to.city"),
        ('{"to": {"street": "x", "city": "y"}, "items": []}', "items"),
        ('{"to": {"street": "x", "city": "y"}, "items": ["a"], "rush": 1}', "rush"),
        ("not json", "arguments"),
    ):
        with pytest.raises(ToolArgumentsError, match=fragment):
            ship.parse(bad)
    assert ship.args_model.model_validate({"to": {"street": "a", "city": "b"}, "items": ["x"]})


def test_workflow_tools_take_the_agent_first_and_hide_it() -> None:
    @workflow_tool(name="remember-it")
    def remember(agent: SomethingOnlyATypeCheckerKnows, fact: str, weight: int = 1) -> str:  # type: ignore[name-defined] # noqa: F821
        """Remember a fact."""
        return f"{agent}:{fact}:{weight}"

    schema: Any = remember.definition().function.parameters
    assert list(schema["properties"]) == ["fact", "weight"]
    assert remember.name == "remember-it"


def test_tools_that_cannot_be_described_are_refused() -> None:
    with pytest.raises(TypeError, match="async def"):

        @activity_tool
        def sync_tool(x: int) -> int:
            return x

    with pytest.raises(TypeError, match="type hint"):

        @activity_tool
        async def untyped(x) -> int:  # type: ignore[no-untyped-def]
            return x

    with pytest.raises(TypeError, match=r"\*args"):

        @workflow_tool
        def splat(agent: Any, *values: int) -> int:
            return 0

    with pytest.raises(ValueError, match="must match"):

        @workflow_tool(name="has space")
        def named(agent: Any) -> None:
            return None

    with pytest.raises(TypeError, match="not a tool"):
        tool_index([len])  # type: ignore[list-item]


def test_parse_docstring_reads_google_style() -> None:
    summary, args = parse_docstring(
        "Do it.\n\nArgs:\n    a (int): First.\n    b: Second,\n        continued.\n"
        "\nRaises:\n    ValueError: never.\n"
    )
    assert summary == "Do it."
    assert args == {"a": "First.", "b": "Second, continued."}


def test_render_result() -> None:
    assert render_result("plain") == "plain"
    assert render_result({"a": [1, None]}) == '{"a":[1,null]}'
    assert render_result(Address(street="s", city="c")) == '{"street":"s","city":"c"}'
    assert render_result(None) == "null"


# --------------------------------------------------------------------------- context window


def _exchange(n: int, *, tools: int = 0) -> list[Any]:
    items: list[Any] = [UserItem(content=f"q{n}")]
    if tools:
        calls = [ToolCall(id=f"c{n}{i}", name="t") for i in range(tools)]
        items.append(AssistantItem(tool_calls=calls))
        items += [ToolItem(tool_call_id=c.id, content="r") for c in calls]
    items.append(AssistantItem(content=f"a{n}"))
    return items


def test_fit_window_drops_whole_exchanges_oldest_first() -> None:
    context = _exchange(1, tools=2) + _exchange(2) + _exchange(3)
    dropped = fit_window(context, ContextWindow(max_items=4))
    assert dropped == 5
    assert [getattr(i, "content", None) for i in context] == ["q2", "a2", "q3", "a3"]


def test_fit_window_never_drops_the_latest_exchange() -> None:
    context = _exchange(1) + _exchange(2, tools=5)
    fit_window(context, ContextWindow(max_items=2, max_chars=100))
    assert isinstance(context[0], UserItem) and context[0].content == "q2"
    assert len(context) == 8


def test_fit_window_counts_characters() -> None:
    context = [UserItem(content="x" * 60), AssistantItem(content="y" * 60)]
    context += [UserItem(content="z" * 10)]
    fit_window(context, ContextWindow(max_items=100, max_chars=100))
    assert len(context) == 1


def test_keep_last_exchanges() -> None:
    context = _exchange(1) + _exchange(2) + _exchange(3, tools=1)
    assert keep_last_exchanges(context, 2) == 2
    assert context[0].content == "q2"
    assert keep_last_exchanges(context, 0) == 2  # the current exchange always stays
    assert context[0].content == "q3"
    assert keep_last_exchanges([], 1) == 0


# --------------------------------------------------------------------------- failures


def _status_error(status: int, headers: dict[str, str] | None = None) -> openai.APIStatusError:
    request = httpx2.Request("POST", "http://model.test/v1/chat/completions")
    response = httpx2.Response(status, headers=headers or {}, request=request)
    return openai.APIStatusError(f"status {status}", response=response, body=None)


@pytest.mark.parametrize(
    ("status", "failure", "retryable"),
    [
        (400, "ModelBadRequest", False),
        (401, "ModelAuthenticationFailed", False),
        (403, "ModelAuthenticationFailed", False),
        (404, "ModelNotFound", False),
        (408, "ModelTimeout", True),
        (409, "ModelConflict", True),
        (413, "ModelBadRequest", False),
        (422, "ModelBadRequest", False),
        (429, "ModelRateLimited", True),
        (500, "ModelServerError", True),
        (503, "ModelServerError", True),
    ],
)
def test_status_codes_are_classified(status: int, failure: str, retryable: bool) -> None:
    err = classify(_status_error(status), attempt=3)
    assert err.type == failure
    assert err.non_retryable is (not retryable)
    assert err.details[0] == {"status_code": status, "attempt": 3}
    assert err.message == f"status {status}"


def test_connection_errors_and_timeouts_are_retried() -> None:
    request = httpx2.Request("POST", "http://model.test/v1/chat/completions")
    assert classify(openai.APIConnectionError(request=request)).type == "ModelConnectionError"
    timeout = classify(openai.APITimeoutError(request=request))
    assert timeout.type == "ModelTimeout" and not timeout.non_retryable


def test_retry_after_sets_the_next_retry_delay() -> None:
    err = classify(_status_error(429, {"retry-after": "7"}))
    assert err.next_retry_delay == timedelta(seconds=7)
    assert classify(_status_error(400, {"retry-after": "7"})).next_retry_delay is None


def test_retry_after_forms() -> None:
    now = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
    assert retry_after({"retry-after": "1.5"}) == timedelta(seconds=1.5)
    assert retry_after({"retry-after-ms": "250", "retry-after": "9"}) == timedelta(milliseconds=250)
    date = format_datetime(now + timedelta(seconds=30), usegmt=True)
    assert retry_after({"retry-after": date}, now=now) == timedelta(seconds=30)
    assert retry_after({"retry-after": "86400"}) == MAX_RETRY_AFTER
    assert retry_after({"retry-after": "soon"}) is None
    assert retry_after({"retry-after": "-3"}) is None
    assert retry_after({}) is None


# --------------------------------------------------------------------------- the digest


def test_the_digest_survives_the_data_converter() -> None:
    """The workflow hashes the request it holds; the activity hashes what the query decoded.
    They must agree for every kind of item and setting."""
    request = ModelRequest(
        model="m",
        messages=[
            SystemItem(content="sys ✓"),
            UserItem(content='q "quoted" \n newline', message_id="m1"),
            AssistantItem(content=None, tool_calls=[ToolCall(id="c", name="t", arguments="{}")]),
            ToolItem(tool_call_id="c", content="1.5e3", name="t"),
            AssistantItem(content="done"),
        ],
        tools=[ship.definition()],
        settings=ModelSettings(temperature=0.1, stop=["\n"], extra_body={"x": [1, 2.5, None]}),
    )
    converter = pydantic_data_converter.payload_converter
    [payload] = converter.to_payloads([request])
    [decoded] = converter.from_payloads([payload], [ModelRequest])
    assert decoded == request
    assert decoded.digest() == request.digest()
    changed = request.model_copy(update={"model": "other"})
    assert changed.digest() != request.digest()
