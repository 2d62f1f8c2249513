"""Callable methods: typed calls into an agent (`@callable_method`), each a turn like a message:
declared and checked when the class is defined, validated before anything is sent or enters
history, versioned, rolled back when they raise, applied once per id, and reachable from the
Python client, the raw Temporal client and the CLI."""

from __future__ import annotations

import asyncio
import json
import sys
from datetime import UTC, datetime
from typing import Any

import pytest
from temporalio.api.common.v1 import Payload
from temporalio.common import RawValue
from temporalio.worker import Worker

import tests.callable_agents  # noqa: F401  (registers the test agent types before a worker is built)
from perennial import AgentWorkflow, callable_method
from perennial.client import (
    AgentNotFound,
    AskTimedOut,
    CallReply,
    InvalidRequest,
    MethodNotFound,
    Perennial,
    Settings,
    TurnFailed,
)
from perennial.worker import build_worker
from perennial.workflows.messages import (
    AgentStart,
    CallRequest,
    Message,
    MessageWake,
    TurnFailedEvent,
)
from perennial.workflows.payloads import decode
from tests.callable_agents import Cart, CartItem, CartPlus, CartState, CartSummary
from tests.conftest import ROOT
from tests.support import (
    accepted_updates,
    history,
    rejected_update,
    rejections,
    run_histories,
    unique,
    worker_task_failures,
)

# --------------------------------------------------------------------------- declaring


def _raw(data: bytes) -> RawValue:
    return RawValue(Payload(metadata={"encoding": b"json/plain"}, data=data))


def test_the_schemas_come_from_the_signature_and_the_docstring() -> None:
    add = Cart.callable_methods["add_item"]
    assert add.name == "add_item" and add.description == "Add qty of sku to the cart."
    assert add.parameters_schema == {
        "type": "object",
        "additionalProperties": False,
        "required": ["sku"],
        "properties": {
            "sku": {"type": "string", "minLength": 1, "maxLength": 40,
                    "description": "The product code."},
            "qty": {"type": "integer", "default": 1, "description": "How many to add."},
        },
    }  # fmt: skip
    assert add.returns_schema == {
        "type": "object",
        "description": "What the cart holds after a change.",
        "required": ["items", "skus"],
        "properties": {"items": {"type": "integer"},
                       "skus": {"type": "array", "items": {"type": "string"}}},
    }  # fmt: skip
    assert Cart.callable_methods["checkout"].returns_schema == {"type": "null"}
    assert add.validate_args({"sku": "apple"}) == {"sku": "apple", "qty": 1}
    # JSON in, typed values out: nested models, datetimes
    [item] = Cart.callable_methods["add_many"].validate_args({"items": [{"sku": "a"}]})["items"]
    assert item == CartItem(sku="a", qty=1)
    when = Cart.callable_methods["checkout"].validate_args({"at": "2030-01-02T03:04:05Z"})["at"]
    assert when == datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)
    assert add.dump_result(CartSummary(items=1, skus=["a"])) == {"items": 1, "skus": ["a"]}


def test_subclasses_inherit_add_and_withdraw_callable_methods() -> None:
    assert list(Cart.callable_methods) == [
        "add_item", "add_many", "broken", "checkout", "count", "remove_item",
    ]  # fmt: skip
    # `clear` is added; `count` is overridden without the decorator, so it is withdrawn
    assert list(CartPlus.callable_methods) == [
        "add_item", "add_many", "broken", "checkout", "clear", "remove_item",
    ]  # fmt: skip
    assert dict(AgentWorkflow.callable_methods) == {}


@pytest.mark.parametrize(
    ("args", "problem"),
    [
        ({"sku": "apple", "qty": "2"}, "qty: Input should be a valid integer"),
        ({"sku": "apple", "qty": True}, "qty: Input should be a valid integer"),
        ({"sku": "apple", "qty": 1.5}, "qty: Input should be a valid integer"),
        ({"qty": 2}, "sku: Field required"),
        ({"sku": "apple", "colour": "red"}, "colour: Extra inputs are not permitted"),
        ({"sku": ""}, "sku: String should have at least 1 character"),
        ({"sku": "s" * 5_000}, "sku: String should have at most 40 characters"),
    ],
    ids=["str-for-int", "bool-for-int", "float-for-int", "missing", "extra", "empty", "long"],
)
def test_arguments_are_validated_strictly_and_refused_typed(args: dict[str, Any], problem: str) -> None:
    with pytest.raises(InvalidRequest) as refused:
        Cart.callable_methods["add_item"].validate_args(args)
    assert str(refused.value) == f"invalid arguments for add_item: {problem}"  # no echo


def test_bad_declarations_are_refused_when_the_class_is_defined() -> None:
    with pytest.raises(TypeError, match=r"\*args / \*\*kwargs cannot be called by name"):

        class StarArgs(AgentWorkflow[CartState]):
            @callable_method
            def add(self, *skus: str) -> None: ...

    with pytest.raises(TypeError, match=r"\*args / \*\*kwargs cannot be called by name"):

        class StarKwargs(AgentWorkflow[CartState]):
            @callable_method
            def add(self, **skus: int) -> None: ...

    with pytest.raises(TypeError, match="parameter 'sku' needs a type hint"):

        class Untyped(AgentWorkflow[CartState]):
            @callable_method
            def add(self, sku) -> None: ...  # type: ignore[no-untyped-def]

    with pytest.raises(TypeError, match="needs a return annotation"):

        class NoReturn(AgentWorkflow[CartState]):
            @callable_method
            def add(self, sku: str): ...  # type: ignore[no-untyped-def]

    with pytest.raises(TypeError, match="parameter 'sku' is positional-only"):

        class PositionalOnly(AgentWorkflow[CartState]):
            @callable_method
            def add(self, sku: str, /) -> None: ...

    with pytest.raises(TypeError, match="cannot resolve its type hints"):

        class Unresolvable(AgentWorkflow[CartState]):
            @callable_method
            def add(self, sku: NoSuchType) -> None: ...  # type: ignore[name-defined]  # noqa: F821

    with pytest.raises(TypeError, match="decorates a method"):

        class Static(AgentWorkflow[CartState]):
            @callable_method  # type: ignore[arg-type]
            @staticmethod
            def add(sku: str) -> None: ...

    for name in ("m" * 101, "café"):  # too long; not ASCII (no wire name could address them)

        def method(self: Any) -> None: ...

        method.__name__ = name
        with pytest.raises(TypeError, match="ASCII identifier of at most 100 characters"):
            callable_method(method)


def test_a_queued_call_travels_in_the_continue_as_new_input_and_old_messages_still_decode() -> None:
    message = CallRequest(method="add_item", args={"sku": "a", "qty": 2}, id="c-1").as_message()
    wake = MessageWake(message=message, received_at=datetime(2030, 1, 1, tzinfo=UTC))
    carried = json.dumps(AgentStart(inbox=[wake]).wire()).encode()
    assert decode(_raw(carried), AgentStart).inbox == [wake]
    # a message recorded before calls existed has no `call` field
    old = decode(_raw(b'{"text": "hi", "id": "m-1", "data": null, "reply_to": null}'), Message)
    assert old.call is None


# --------------------------------------------------------------------------- calling


async def test_a_call_is_a_turn_with_a_typed_result_and_a_new_version(
    perennial: Perennial, worker: Worker
) -> None:
    cart = perennial.agent("test_cart", unique())
    first = await cart.call("add_item", {"sku": "apple", "qty": 2}, sender="tester")
    assert isinstance(first, CallReply)
    assert (first.method, first.result, first.version) == ("add_item", {"items": 2, "skus": ["apple"]}, 1)
    assert CartSummary.model_validate(first.result) == CartSummary(items=2, skus=["apple"])
    # arguments may be models and datetimes: they go as JSON
    second = await cart.call("add_many", {"items": [CartItem(sku="pear", qty=3), {"sku": "apple"}]})
    assert (second.result, second.version) == ({"items": 6, "skus": ["apple", "pear"]}, 2)
    assert (await cart.call("count")).result == 6
    done = await cart.call("checkout", {"at": datetime(2030, 1, 2, tzinfo=UTC), "note": "gift"})
    assert (done.result, done.version) == (None, 4)

    state = await cart.state()
    assert state.version == 4 and isinstance(state.state, CartState)
    assert state.state.items == {"apple": 3, "pear": 3}
    assert state.state.checked_out_at == datetime(2030, 1, 2, tzinfo=UTC)
    assert (await cart.ask("how many?")).reply == "6 items"  # messages still go to on_message

    events = (await cart.events()).events
    received = [e for e in events if e.kind == "received"]
    assert [e.text for e in received] == [
        "call add_item", "call add_many", "call count", "call checkout", "how many?",
    ]  # fmt: skip
    assert received[0].sender == "tester" and received[0].message_id == first.id
    [turn] = [e for e in events if e.kind == "turn" and e.message_id == first.id]
    assert json.loads(turn.reply or "") == first.result


async def test_bad_calls_are_refused_before_anything_is_sent(
    perennial: Perennial, worker: Worker
) -> None:
    cart = perennial.agent("test_cart", unique())
    await cart.call("add_item", {"sku": "apple"})
    after = (await cart.events()).next_after
    with pytest.raises(InvalidRequest, match="qty: Input should be a valid integer"):
        await cart.call("add_item", {"sku": "apple", "qty": "2"})
    with pytest.raises(InvalidRequest, match="sku: Field required"):
        await cart.call("add_item", {})
    with pytest.raises(InvalidRequest, match="colour: Extra inputs"):
        await cart.call("add_item", {"sku": "apple", "colour": "red"})
    with pytest.raises(MethodNotFound, match=r"no callable method 'clear' \(callable: add_item,"):
        await cart.call("clear")  # CartPlus has it, Cart does not
    with pytest.raises(InvalidRequest, match="cannot be sent as JSON"):
        await cart.call("add_item", {"sku": object()})
    with pytest.raises(InvalidRequest, match="method"):
        await cart.call("add item")
    assert (await cart.state_view()).version == 1
    assert (await cart.events()).next_after == after
    assert [u.name for u in accepted_updates(await history(cart, perennial.client))] == ["call"]


async def test_a_bad_first_call_does_not_create_the_agent(
    perennial: Perennial, worker: Worker
) -> None:
    cart = perennial.agent("test_cart", unique())
    with pytest.raises(InvalidRequest):
        await cart.call("add_item", {"qty": 1})
    with pytest.raises(MethodNotFound):
        await cart.call("no_such_method")
    with pytest.raises(AgentNotFound):
        await cart.describe()


async def test_a_method_that_raises_fails_its_turn_and_leaves_the_state_as_it_was(
    perennial: Perennial, worker: Worker
) -> None:
    cart = perennial.agent("test_cart", unique())
    await cart.call("add_item", {"sku": "apple"})
    with pytest.raises(TurnFailed) as failed:
        await cart.call("remove_item", {"sku": "pear"}, id="remove-pear")
    assert failed.value.error_type == "KeyError" and failed.value.version == 1
    assert "call remove_item 'remove-pear'" in str(failed.value)
    with pytest.raises(TurnFailed) as raised:
        await cart.call("add_item", {"sku": "apple", "qty": 0})
    assert raised.value.error_type == "ValueError"
    # a result that does not fit the return annotation is the method's bug: its turn fails too
    with pytest.raises(TurnFailed) as broken:
        await cart.call("broken")
    assert broken.value.error_type == "TypeError" and "return annotation" in str(broken.value)

    state = await cart.state()
    assert state.version == 1 and isinstance(state.state, CartState)
    assert state.state.items == {"apple": 1} and state.state.note is None
    failures = [e for e in (await cart.events()).events if isinstance(e, TurnFailedEvent)]
    assert [(e.message_id, e.error_type, e.version) for e in failures][0] == ("remove-pear", "KeyError", 1)
    assert [e.error_type for e in failures] == ["KeyError", "ValueError", "TypeError"]
    # a failed call is not remembered: the same id is applied afresh (as a failed message is)
    await cart.call("add_item", {"sku": "pear"})
    retried = await cart.call("remove_item", {"sku": "pear"}, id="remove-pear")
    assert (retried.result, retried.version) == ({"items": 1, "skus": ["apple"]}, 3)


async def test_a_repeated_id_gets_the_first_result_and_is_applied_once(
    perennial: Perennial, worker: Worker
) -> None:
    name = unique()
    cart = perennial.agent("test_cart", name)
    first = await cart.call("add_item", {"sku": "apple"}, id="c-1")
    assert await cart.call("add_item", {"sku": "apple"}, id="c-1") == first
    # from another handle too (its first call is get-or-create)
    assert await perennial.agent("test_cart", name).call("add_item", {"sku": "apple"}, id="c-1") == first
    state = await cart.state()
    assert state.version == 1 and state.state.items == {"apple": 1}  # type: ignore[union-attr]
    # an id that a plain message used is not a call's: refused, typed
    await cart.ask("how many?", id="m-1")
    with pytest.raises(InvalidRequest, match="not a method call"):
        await cart.call("count", id="m-1")


async def test_a_call_with_no_worker_times_out_and_its_id_gets_the_result_later(
    perennial: Perennial, settings: Settings
) -> None:
    cart = perennial.agent("test_cart", unique())
    with pytest.raises(AskTimedOut) as timed_out:
        await cart.call("add_item", {"sku": "apple"}, id="slow-1", timeout=2)
    assert timed_out.value.message_id == "slow-1"
    assert "call again with id='slow-1' for its result" in str(timed_out.value)
    async with build_worker(perennial.client, settings):
        reply = await cart.call("add_item", {"sku": "apple"}, id="slow-1", timeout=30)
    assert (reply.result, reply.version) == ({"items": 1, "skus": ["apple"]}, 1)


# --------------------------------------------------------------------------- the wire


_BAD_CALLS: list[tuple[Any, str]] = [
    ({}, "InvalidRequest"),
    ({"method": 5}, "InvalidRequest"),
    ({"method": "add item"}, "InvalidRequest"),
    ({"method": "m" * 101}, "InvalidRequest"),
    ({"method": "add_item", "args": ["apple"]}, "InvalidRequest"),
    ({"method": "add_item", "args": {"sku": 5}}, "InvalidRequest"),
    ({"method": "add_item", "args": {"sku": "a", "qty": "1"}}, "InvalidRequest"),
    ({"method": "add_item", "args": {"sku": "a"}, "id": ""}, "InvalidRequest"),
    ({"method": "add_item", "args": {"sku": "a"}, "text": "hi"}, "InvalidRequest"),
    ({"method": "add_item", "args": {"sku": "a", "x" * 10_000: 1}}, "InvalidRequest"),
    ({"method": "no_such_method"}, "MethodNotFound"),
    ({"method": "clear"}, "MethodNotFound"),
    ("add_item", "InvalidRequest"),
    (_raw(b'{"method": "add_item", "args": {"sku": NaN}}'), "InvalidRequest"),
    (_raw(b'{"method": "add_item", "args": {"sku": "a"'), "InvalidRequest"),
]


async def test_raw_calls_are_checked_by_the_agent_and_never_fail_a_task(
    perennial: Perennial, worker: Worker
) -> None:
    cart = perennial.agent("test_cart", unique())
    await cart.call("add_item", {"sku": "apple"})
    handle = perennial.client.get_workflow_handle(cart.id)
    for arg, error_type in _BAD_CALLS:
        cause = await rejected_update(perennial, cart, "call", arg)
        assert cause.type == error_type, (arg, cause)
        assert len(cause.message) < 400  # says what is wrong without echoing the input
    assert (await rejected_update(perennial, cart, "call")).type == "InvalidRequest"  # no argument

    # the wire shape of a good call
    reply = await handle.execute_update(
        "call", {"method": "add_item", "args": {"sku": "pear", "qty": 2}, "id": "raw-1"}
    )
    assert reply == {"id": "raw-1", "method": "add_item",
                     "result": {"items": 3, "skus": ["apple", "pear"]}, "version": 2}  # fmt: skip
    # a call carried by update `ask`: its reply is the result as JSON text; checked the same way
    asked = await handle.execute_update("ask", {"text": "call count", "call": {"method": "count"}})
    assert json.loads(asked["reply"]) == 3
    bad_ask = {"text": "call add_item", "call": {"method": "add_item", "args": {}}}
    assert (await rejected_update(perennial, cart, "ask", bad_ask)).type == "InvalidRequest"
    # by signal `message`: what cannot be applied becomes a `rejected` event, never a wedge
    for call in ({"method": "add_item", "args": {"sku": 1}}, {"method": "nope"}, {"method": "a-b"}):
        await handle.signal("message", {"text": "call", "call": call})
    await handle.signal(
        "message", {"text": "call add_item", "id": "sig-1", "call": {"method": "add_item", "args": {"sku": "fig"}}}
    )
    assert (await cart.call("count")).result == 4
    rejected = await rejections(cart)
    assert len(rejected) == 3
    assert "sku: Input should be a valid string" in rejected[0]
    assert "no callable method 'nope'" in rejected[1]
    assert "call.method" in rejected[2]

    events = await history(cart, perennial.client)
    assert len(accepted_updates(events)) == 4  # nothing refused entered history
    assert worker_task_failures(events) == []


# --------------------------------------------------------------------------- the CLI


async def _cli(settings: Settings, *args: str) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "perennial.client.cli",
        "--address", settings.address, "--task-queue", settings.task_queue, *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, cwd=ROOT,
    )  # fmt: skip
    out, err = await asyncio.wait_for(process.communicate(), 60)
    return process.returncode or 0, out.decode(), err.decode()


def _error(stderr: str) -> dict[str, str]:
    line = [line for line in stderr.splitlines() if line.startswith("{")][-1]
    error: dict[str, str] = json.loads(line)["error"]
    return error


async def test_the_cli_calls_methods_with_and_without_the_app(
    perennial: Perennial, worker: Worker, settings: Settings
) -> None:
    agent = f"test_cart/{unique()}"
    app = ("--app", "tests.callable_agents")
    code, out, err = await _cli(settings, *app, "--json", "call", agent, "add_item",
                                "--arg", "sku=apple", "--arg", "qty=2")  # fmt: skip
    assert code == 0, err
    reply = json.loads(out)
    assert (reply["method"], reply["result"], reply["version"]) == (
        "add_item", {"items": 2, "skus": ["apple"]}, 1,
    )  # fmt: skip
    # --args is a JSON object; a --arg value that is JSON is read as JSON (`"42"`: a string)
    code, out, err = await _cli(settings, "call", agent, "add_many",
                                "--args", '{"items": [{"sku": "007", "qty": 1}]}')  # fmt: skip
    assert code == 0, err
    assert '"items": 3' in out and "(v2, call " in out
    code, out, err = await _cli(settings, "--json", "call", agent, "add_item", "--arg", 'sku="42"')
    assert code == 0, err
    assert json.loads(out)["result"]["skus"] == ["007", "42", "apple"]

    # with the app loaded, a bad call is refused here and creates nothing
    fresh = perennial.agent("test_cart", unique())
    code, _, err = await _cli(settings, *app, "--json", "call", fresh.id, "add_item",
                              "--arg", "qty=two")  # fmt: skip
    assert code == 2 and _error(err)["type"] == "InvalidRequest", err
    with pytest.raises(AgentNotFound):
        await fresh.describe()
    # without it the agent checks: the same typed errors
    code, _, err = await _cli(settings, "--json", "call", agent, "add_item",
                              "--arg", "sku=apple", "--arg", "qty=two")  # fmt: skip
    assert code == 2 and _error(err)["type"] == "InvalidRequest" and "qty" in _error(err)["message"]
    code, _, err = await _cli(settings, "--json", "call", agent, "no_such_method")
    assert code == 2 and _error(err)["type"] == "MethodNotFound"
    code, _, err = await _cli(settings, "--json", "call", agent, "remove_item", "--arg", "sku=plum")
    assert code == 1 and _error(err)["type"] == "TurnFailed"
    # mistakes in the command line itself
    code, _, err = await _cli(settings, "call", agent, "add_item", "--arg", "sku")
    assert code == 2 and "write NAME=VALUE" in err
    code, _, err = await _cli(settings, "call", agent, "add_item", "--args", "[1]")
    assert code == 2 and "must be a JSON object" in err
    code, _, err = await _cli(settings, "call", agent, "add_item", "--args", '{"sku": "a"}',
                              "--arg", "sku=b")  # fmt: skip
    assert code == 2 and "given twice" in err
    assert (await perennial.agent("test_cart", agent.split("/")[1]).state_view()).version == 3


async def test_calls_queued_across_continue_as_new_are_applied_once(
    perennial: Perennial, worker: Worker
) -> None:
    cart = perennial.agent("test_cart_small", unique())
    await cart.call("count", id="first")
    handle = perennial.client.get_workflow_handle(cart.id)
    for round_ in range(4):
        # calls by signal may wait in the inbox and travel to the next run
        for i in range(15):
            sku = f"s{round_}-{i}"
            call = {"method": "add_item", "args": {"sku": sku}}
            await handle.signal("message", {"text": "call add_item", "id": sku, "call": call})
        await asyncio.gather(
            *(cart.call("add_item", {"sku": f"c{round_}-{i}"}, id=f"c{round_}-{i}") for i in range(5))
        )
    assert (await cart.call("count")).result == 80
    again = await cart.call("add_item", {"sku": "c0-0"}, id="c0-0")  # remembered across runs
    assert again.version < (await cart.state_view()).version
    assert (await cart.call("count")).result == 80
    runs = await run_histories(perennial.client, cart.id)
    assert len(runs) > 1, "the agent did not continue as new"
    assert worker_task_failures([e for run in runs for e in run]) == []
