"""Property-based fuzz of the wire contract, through the raw Temporal client (as anyone with
access to the namespace can call it): generated payloads to every signal, update and query of
the README's "The wire contract", and to names that are not in it.

What a case sends: any JSON value (NaN, infinities, huge integers, control characters, long
strings, nesting); a "near-valid" argument (a real request of the endpoint's model with one
field set to a wrong or out-of-range value, dropped, or an extra key added, also inside nested
objects); raw payload bytes (invalid UTF-8, lone surrogates, truncation, deep nesting, digit
bombs, BOMs, other encodings, no encoding); no argument; two arguments.

The properties, per call and per batch of calls:

* an update returns, or fails with `WorkflowUpdateFailedError` whose cause is an
  `ApplicationError` typed with one of Perennial's error class names;
* a query returns, or fails with `WorkflowQueryFailedError` (and changes nothing);
* a signal is applied, or shows up as a `rejected` event in the agent's log;
* nothing that is not one valid request of the endpoint's model (strict JSON, the oracle) is
  ever applied or answered;
* every error says what is wrong in a bounded message (it never echoes a large input);
* no workflow task of an agent ever fails (the server's own recovered causes aside);
* state is never lost: the `notes` agent keeps the note it had before the fuzz, at a version
  that never goes down, and every agent still answers an `ask` afterwards;
* the fuzzed agents' histories replay on the current code (`perennial replay`).

Each test runs Hypothesis in a thread and drives the calls on the session's event loop (where
the in-process worker runs): the agents are created once per test, and the checks that belong
after all examples (replay, the summary line) stay in the test. pytest-asyncio also runs
`@given` on `async def` tests, but then every example is the whole test. Shrinking is off: the
agents keep what earlier examples did, so a shrunk example would not replay the same; a failure
names the exact call (endpoint, target, payload bytes) instead. Two kinds of update the SDK
refuses untyped before Perennial's code runs are pinned by a strict xfail test at the end.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel
from temporalio.api.common.v1 import Payload
from temporalio.client import (
    WorkflowHandle,
    WorkflowHistory,
    WorkflowQueryFailedError,
    WorkflowUpdateFailedError,
)
from temporalio.common import RawValue
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError
from temporalio.worker import Replayer, Worker

import tests.callable_agents  # noqa: F401  (registers test_cart before the worker is built)
from perennial.client import AgentHandle, Perennial
from perennial.client.replay import replay_from_server
from perennial.worker import workflow_runner
from perennial.workflows.errors import PerennialError
from perennial.workflows.messages import (
    AgentReply,
    CallRequest,
    CancelScheduleRequest,
    ChildReport,
    DecideRequest,
    EventsQuery,
    ExportRequest,
    Message,
    PeerChange,
    RollbackRequest,
    ScheduleRequest,
    SubscribeRequest,
    SubscriptionCheck,
    UnsubscribeRequest,
    WaitEventsRequest,
)
from perennial.workflows.registry import agent_types
from tests.conftest import eventually
from tests.support import (
    TASK_FAILED,
    history,
    rejected_update,
    run_histories,
    unique,
    worker_task_failures,
)


def _subclasses(cls: type) -> list[type]:
    return [cls, *(d for sub in cls.__subclasses__() for d in _subclasses(sub))]


#: The `type` of every error Perennial raises on purpose.
PERENNIAL_ERRORS = frozenset(cls.__name__ for cls in _subclasses(PerennialError))
#: More examples for a deeper run: `PERENNIAL_FUZZ_SCALE=10 pytest tests/test_wire_fuzz.py`.
FUZZ_SCALE = float(os.environ.get("PERENNIAL_FUZZ_SCALE", "1"))
#: What a rejection may say: enough to fix the request, never the request itself.
MAX_ERROR_CHARS = 2_000
#: A known good note the `notes` agent holds before the fuzz and must hold after it.
KEPT = "keep me: the note from before the fuzz"
TOKEN = "0123456789abcdef" * 2  # the shape of a capability token (nobody issued this one)

# --------------------------------------------------------------------------- the wire contract
# Each endpoint: its model (None: no argument) and real requests a near-valid case mutates.
Bases = tuple[type[BaseModel] | None, list[dict[str, Any]]]

_MESSAGES: list[dict[str, Any]] = [
    {"text": "fuzz note"},
    {"text": "fuzz note", "sender": "fuzzer", "id": "fz-1", "data": {"k": [1, 2.5, None]}},
    {"text": "fuzz call", "call": {"method": "count", "args": {}}},
    {
        "text": "fuzz asked",
        "reply_to": {"asker_id": "notes/fz-asker", "correlation_id": "c-1", "token": TOKEN},
    },
]

SIGNALS: dict[str, Bases] = {
    "message": (Message, _MESSAGES),
    "agent_reply": (
        AgentReply,
        [{"correlation_id": "c-1", "from_id": "notes/fz-peer", "status": "answered",
          "reply": "yes", "token": TOKEN}],  # fmt: skip
    ),
    "child_finished": (
        ChildReport,
        [{"child_id": "notes/fz-child", "task_id": "t-1", "status": "completed",
          "result": "done", "token": TOKEN}],  # fmt: skip
    ),
    "peer_changed": (
        PeerChange,
        [{"peer_id": "notes/fz-peer", "version": 1, "last_offset": 1,
          "changed_at": "2024-01-01T00:00:00Z", "token": TOKEN}],  # fmt: skip
    ),
    "subscribe": (
        SubscribeRequest,
        [{"subscriber_id": "notes/fz-nobody", "watch": "events", "debounce_seconds": 0.05,
          "token": TOKEN}],  # fmt: skip
    ),
    "unsubscribe": (UnsubscribeRequest, [{"subscriber_id": "notes/fz-nobody", "token": TOKEN}]),
}

UPDATES: dict[str, Bases] = {
    "ask": (Message, _MESSAGES),
    "send": (Message, _MESSAGES),
    "call": (
        CallRequest,
        [
            {"method": "add_item", "args": {"sku": "fz", "qty": 2}},
            {"method": "count", "id": "call-1", "sender": "fuzzer"},
            {"method": "checkout", "args": {"at": "2024-05-01T10:00:00Z", "note": "fz"}},
            {"method": "add_many", "args": {"items": [{"sku": "a", "qty": 1}]}},
            {"method": "remove_item", "args": {"sku": "not-in-the-cart"}},
        ],
    ),
    "rollback": (RollbackRequest, [{"version": 1}, {"version": 1, "id": "rb-1"}]),
    "schedule": (
        ScheduleRequest,
        [
            {"id": "fz-s", "payload": "alarm note", "after_seconds": 3600},
            {"id": "fz-at", "payload": "alarm note", "at": "2999-01-01T09:00:00"},
            {"id": "fz-every", "payload": "alarm note", "every_seconds": 3600},
            {"id": "fz-cron", "payload": "alarm note", "cron": "0 9 * * *",
             "timezone": "Europe/Paris", "created_by": "fuzzer"},  # fmt: skip
        ],
    ),
    "cancel_schedule": (CancelScheduleRequest, [{"id": "fz-s"}, {"id": "fz-cron"}]),
    "decide": (
        DecideRequest,
        [
            {"approval_id": "ap-1", "approve": True},
            {"approval_id": "ap-1", "approve": False, "comment": "no", "decided_by": "fuzzer"},
        ],
    ),
    # Short waits: `after` 0 returns at once (the log is not empty), a later one waits 0.2 s.
    "wait_events": (WaitEventsRequest, [{"after": 0, "timeout_seconds": 0.2, "limit": 5}]),
}

QUERIES: dict[str, Bases] = {
    "state": (None, [{}]),
    "events": (EventsQuery, [{"after": 0, "limit": 10}]),
    "schedules": (None, [{}]),
    "approvals": (None, [{}]),
    "children": (None, [{}]),
    "asks": (None, [{}]),
    "subscriptions": (None, [{}]),
    "confirm_subscription": (SubscriptionCheck, [{"peer_id": "notes/fz-peer", "token": TOKEN}]),
    "export": (ExportRequest, [{}, {"version": 0, "with_schedules": True}]),
}

#: Which agents an endpoint is fuzzed on: `rollback` only on the cart (a rollback of the notes
#: agent to a version before its kept note would lose it, as asked).
TARGETS: dict[str, tuple[str, ...]] = {"rollback": ("cart",)}
ALL_TARGETS = ("notes", "cart")

_FIELD_NAMES = sorted(
    {
        name
        for table in (SIGNALS, UPDATES, QUERIES)
        for model, _ in table.values()
        if model is not None
        for name in model.model_fields
    }
)

# --------------------------------------------------------------------------- cases


def _show(payload: Payload) -> str:
    meta = {k: v[:40] for k, v in payload.metadata.items()}
    data = payload.data
    shown = repr(data[:300]) + (f"... ({len(data)} bytes)" if len(data) > 300 else "")
    return f"Payload(metadata={meta!r}, data={shown})"


@dataclass
class Arg:
    """The arguments of one call: `how` it was made, and the payloads as sent."""

    how: str
    payloads: tuple[Payload, ...]

    def values(self) -> list[RawValue]:
        return [RawValue(p) for p in self.payloads]

    def __repr__(self) -> str:
        return f"<{self.how}: [{', '.join(_show(p) for p in self.payloads)}]>"


@dataclass
class Case:
    kind: str  # signal, update, query
    name: str
    target: str  # notes, cart
    arg: Arg
    known: bool = True

    @property
    def endpoint(self) -> str:
        return f"{self.kind} {self.name if self.known else '<unknown name>'}"

    def __repr__(self) -> str:
        return f"{self.kind} {self.name!r} to {self.target} with {self.arg!r}"


def _json(value: Any, ascii_only: bool = True) -> bytes:
    return json.dumps(value, ensure_ascii=ascii_only).encode()


def _payload(data: bytes, encoding: bytes | None = b"json/plain", **extra: bytes) -> Payload:
    metadata = {"encoding": encoding} if encoding is not None else {}
    return Payload(metadata={**metadata, **extra}, data=data)


NO_ARG = Arg("no argument", ())

_INT_EDGES = [0, -1, 1, 2**31, 2**53 + 1, 2**63, -(2**63) - 1, 2**64, 10**30, -(10**100)]
_FLOAT_EDGES = [0.0, -0.0, 1e-300, 0.05, 1.5, 59.9, 60.0, 60.000001, 1e308, 3.3e9,
                float("nan"), float("inf"), float("-inf")]  # fmt: skip
_STRING_EDGES = [
    "", " ", "\x00", "\t\n\r", "\x7f\x1b[31m", "\u202e\u200b", "🙂" * 50, "a" * 201,
    "notes/fz-peer", "notes/", "/x", TOKEN,
    TOKEN.upper(), "2024-01-01T00:00:00Z", "2000-01-01T00:00:00+14:00", "not a time",
    "* * * * * *", "61 * * * *", "Europe/Paris", "Mars/Olympus", "add_item", "__init__",
    "answered", "events", "state",
]  # fmt: skip
#: Long strings: within the limits of a note and a schedule's payload, just over the text limit,
#: far over every limit (built lazily: a strategy's repr shows its values).
_LONG_STRINGS = st.sampled_from([("x", 4_001), ("y", 32_769), ("z", 200_000)]).map(
    lambda spec: spec[0] * spec[1]
)
_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.sampled_from(_INT_EDGES),
    st.floats(),  # NaN and the infinities included
    st.sampled_from(_FLOAT_EDGES),
    st.text(max_size=40),  # control characters included, surrogates not (not UTF-8)
    st.sampled_from(_STRING_EDGES),
    _LONG_STRINGS,
)
_KEYS = st.sampled_from(_FIELD_NAMES) | st.text(max_size=12)
JSON_VALUES = st.recursive(
    _SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_KEYS, inner, max_size=4),
    max_leaves=12,
)

_json_args = st.tuples(JSON_VALUES, st.booleans()).map(
    lambda v: Arg("json", (_payload(_json(*v)),))
)


@st.composite
def _mutated(draw: st.DrawFn, base: dict[str, Any], fields: list[str]) -> tuple[dict, str]:
    """`base` with one change: a field set to another value (recursing into objects), a field
    dropped, or an extra key; or unchanged."""
    value = dict(base)
    op = draw(st.sampled_from(["as is", "set", "set", "drop", "extra"]))
    if op == "drop" and value:
        name = draw(st.sampled_from(sorted(value)))
        del value[name]
        return value, f"drop {name}"
    if op == "extra":
        name = draw(st.text(min_size=1, max_size=12).filter(lambda k: k not in value))
        value[name] = draw(JSON_VALUES)
        return value, f"extra {name!r}"
    if op == "set" and (names := sorted({*fields, *value})):
        name = draw(st.sampled_from(names))
        inner = value.get(name)
        if isinstance(inner, dict) and inner and draw(st.booleans()):
            value[name], how = draw(_mutated(inner, sorted(inner)))
            return value, f"{name}.{how}"
        value[name] = draw(st.one_of(_SCALARS, JSON_VALUES))
        return value, f"set {name}"
    return value, "as is"


def _near_valid(model: type[BaseModel] | None, bases: list[dict[str, Any]]) -> st.SearchStrategy:
    fields = sorted(model.model_fields) if model is not None else []

    @st.composite
    def build(draw: st.DrawFn) -> Arg:
        value, how = draw(_mutated(draw(st.sampled_from(bases)), fields))
        return Arg(f"near-valid ({how})", (_payload(_json(value, draw(st.booleans()))),))

    return build()


_ENCODINGS = st.one_of(
    st.sampled_from(
        [b"json/plain", b"binary/plain", b"binary/null", b"json/protobuf", b"binary/protobuf",
         b"binary/encrypted", b"", b"JSON/PLAIN", b"json/plain\x00", b"\xff\xfe"]  # fmt: skip
    ),
    st.binary(max_size=12),
    st.none(),
)


def _defects(valid: bytes) -> list[tuple[str, bytes]]:
    """Ways the bytes of a valid JSON request (an object) go wrong."""
    text = valid.decode()

    def add(value: bytes) -> bytes:  # one more member, `"data": value`
        return valid[:-1] + (b", " if valid != b"{}" else b"") + b'"data": ' + value + b"}"

    defects = [
        ("invalid utf-8", valid[:-1] + b"\xff\xfe}"),
        ("lone surrogate", add(b'"\\ud800"')),
        ("lone surrogate in a field",
         re.sub(r'"[^"]*"(?=\s*[,}])', r'"\\udfff"', text, count=1).encode()),  # fmt: skip
        ("overlong utf-8", add(b'"\xc0\xae"')),
        ("utf-16", text.encode("utf-16")),
        ("bom", b"\xef\xbb\xbf" + valid),
        ("trailing garbage", valid + b" garbage"),
        ("two documents", valid + b" {}"),
        ("comment", valid[:-1] + b" /* c */}"),
        ("duplicate key", valid[:-1] + b", " + valid[1:]),
        ("single quotes", valid.replace(b'"', b"'")),
        ("nan", add(b"NaN")),
        ("infinity", add(b"-Infinity")),
        ("infinity in a field", re.sub(rb"\d+(\.\d+)?", b"Infinity", valid, count=1)),
        ("digit bomb", add(b"9" * 4_301)),
        ("digit bomb in a field", re.sub(rb"\d+(\.\d+)?", b"9" * 4_301, valid, count=1)),
        ("deep nesting", add(b"[" * 1_100 + b"]" * 1_100)),
        ("truncated", valid[: len(valid) // 2]),
        ("whitespace", b" \n\t "),
        ("empty", b""),
        ("null", b"null"),
    ]
    return [(how, data) for how, data in defects if data != valid]


def _raw_args(bases: list[dict[str, Any]]) -> st.SearchStrategy:
    @st.composite
    def build(draw: st.DrawFn) -> Arg:
        valid = _json(draw(st.sampled_from(bases)))
        how, data = draw(st.sampled_from(_defects(valid)) | st.tuples(st.just("bytes"),
                                                                      st.binary(max_size=64)))  # fmt: skip
        encoding = b"json/plain" if draw(st.booleans()) else draw(_ENCODINGS)
        extra = draw(st.dictionaries(st.sampled_from(["messageType", "encoding-original", "x"]),
                                     st.binary(max_size=8), max_size=1))  # fmt: skip
        shown = "none" if encoding is None else encoding[:12].decode("ascii", "replace")
        return Arg(f"raw ({how}, encoding {shown})", (_payload(data, encoding, **extra),))

    return build()


def _two_args(bases: list[dict[str, Any]]) -> st.SearchStrategy:
    return st.tuples(st.sampled_from(bases), JSON_VALUES).map(
        lambda ab: Arg("two arguments", (_payload(_json(ab[0])), _payload(_json(ab[1]))))
    )


def _args(model: type[BaseModel] | None, bases: list[dict[str, Any]]) -> st.SearchStrategy:
    # Weighted towards near-valid arguments: they reach past decoding, into the handlers.
    near_valid, raw = _near_valid(model, bases), _raw_args(bases)
    branches = [near_valid] * 4 + [_json_args] * 2 + [raw] * 2 + [_two_args(bases), st.just(NO_ARG)]
    return st.sampled_from(branches).flatmap(lambda branch: branch)


def cases(kind: str, table: dict[str, Bases]) -> st.SearchStrategy:
    """Calls of `kind` to every endpoint in `table`, and to names that are not in it."""
    known = [
        st.tuples(st.just(name), st.sampled_from(TARGETS.get(name, ALL_TARGETS)),
                  _args(model, bases)).map(lambda c: Case(kind, *c))  # fmt: skip
        for name, (model, bases) in table.items()
    ]
    unknown = st.tuples(
        st.text(min_size=1, max_size=40).filter(lambda n: n not in table),
        st.sampled_from(ALL_TARGETS),
        st.sampled_from(list(table.values())).flatmap(lambda mb: _args(*mb)),
    ).map(lambda c: Case(kind, *c, known=False))
    return st.one_of(*known, unknown)


# --------------------------------------------------------------------------- the agents


def _reason(text: str) -> str:
    """A rejection's message reduced to its kind, for the summary."""
    text = re.sub(r"^signal ('[^']*'|\"[^\"]*\"): |^[a-z_]+: ", "", text)
    text = re.sub(r"'[^']*'|\"[^\"]*\"", "…", text)
    text = re.sub(r"\d+", "N", re.split(r"[:;(]", text, maxsplit=1)[0]).strip()
    return text[:48]


def _sdk_gap(case: Case) -> bool:
    """An update with several arguments, which the SDK refuses untyped before Perennial's
    code sees it: pinned by `test_updates_the_sdk_refuses_are_refused_typed`."""
    return case.kind == "update" and len(case.arg.payloads) > 1


#: Endpoints that read a missing argument as "all defaults".
DEFAULT_WHEN_MISSING = frozenset({"events", "wait_events", "export"})


def _valid(model: type[BaseModel], arg: Arg, *, missing_ok: bool = False) -> bool:
    """The oracle: whether the wire contract accepts `arg` as one `model` (JSON, strict).
    No argument, a `binary/null` one or an empty one without encoding is a missing one."""
    if len(arg.payloads) > 1:
        return False
    payload = arg.payloads[0] if arg.payloads else Payload()
    encoding = payload.metadata.get("encoding")
    if encoding is None and not payload.data or encoding == b"binary/null":
        return missing_ok
    if encoding != b"json/plain":
        return False
    try:
        model.model_validate_json(payload.data, strict=True)
    except ValueError:  # pydantic's ValidationError is one
        return False
    return True


def _invalid(case: Case) -> bool:
    """The wire contract refuses this call (an unknown name, or an argument that is not one
    request of the endpoint's model); False when only the agent can tell."""
    if not case.known:
        return True
    model, _ = {"signal": SIGNALS, "update": UPDATES, "query": QUERIES}[case.kind][case.name]
    if model is None:  # a query without argument: the SDK drops extra ones
        return False
    return not _valid(model, case.arg, missing_ok=case.name in DEFAULT_WHEN_MISSING)


@dataclass
class Fleet:
    """The agents a test fuzzes, what they held before, and what each call did."""

    perennial: Perennial
    notes: AgentHandle
    cart: AgentHandle
    versions: dict[str, int] = field(default_factory=dict)
    offsets: dict[str, int] = field(default_factory=dict)
    outcomes: Counter[tuple[str, str]] = field(default_factory=Counter)
    #: Calls that broke a property without harming the agent (an untyped or unbounded error):
    #: the first call of each kind, reported together at the end.
    findings: dict[tuple[str, str, str], str] = field(default_factory=dict)

    @classmethod
    async def create(cls, perennial: Perennial) -> Fleet:
        notes = perennial.agent("notes", unique("fuzz"))
        cart = perennial.agent("test_cart", unique("fuzz"))
        await notes.ask(KEPT, id="kept")
        await cart.call("add_item", {"sku": "seed"})
        fleet = cls(perennial, notes, cart)
        for agent in fleet.agents:
            view = await agent.state_view()
            fleet.versions[agent.id] = view.version
            fleet.offsets[agent.id] = view.last_event_offset
        return fleet

    @property
    def agents(self) -> tuple[AgentHandle, AgentHandle]:
        return self.notes, self.cart

    def handle(self, target: str) -> WorkflowHandle[Any, Any]:
        agent = self.notes if target == "notes" else self.cart
        return self.perennial.client.get_workflow_handle(agent.id)

    # ------------------------------------------------------------------ one batch

    async def run(self, batch: list[Case]) -> None:
        for case in batch:
            call = {"signal": self._signal, "update": self._update, "query": self._query}
            outcome = await call[case.kind](case)
            self.outcomes[case.endpoint, outcome] += 1
            if outcome.startswith(("applied", "answered")) and _invalid(case):
                self._found(case, "accepted although invalid", outcome)
        await self.check(batch)

    async def _signal(self, case: Case) -> str:
        handle = self.handle(case.target)
        try:
            await handle.signal(case.name, args=case.arg.values())
        except RPCError as err:  # the server refused it: it never reached the agent
            assert not case.known, f"{case!r}: the server refused a signal: {err}"
            return f"refused by the server: {err.status.name}"
        # Signals cannot be refused: the agent applies one or records a `rejected` event, in
        # the task that takes it in; an update sent after it runs after it.
        await handle.execute_update("wait_events", {"after": 0, "timeout_seconds": 1})
        page = await handle.query("events", {"after": self.offsets[handle.id], "limit": 1000})
        self.offsets[handle.id] = page["next_after"]
        rejected = [e["error"] for e in page["events"] if e["kind"] == "rejected"]
        for error in rejected:
            self._bounded(case, error)
        # A subscription is refused later, when its subscriber does not confirm it (an
        # activity asks): that rejection belongs to an earlier `subscribe`.
        late = [e for e in rejected if e.endswith("did not confirm the subscription")]
        self.outcomes["signal subscribe (later)", "rejected: not confirmed"] += len(late)
        rejected = [e for e in rejected if e not in late]
        return f"rejected: {_reason(rejected[0])}" if rejected else "applied"

    async def _update(self, case: Case) -> str:
        handle = self.handle(case.target)
        timeout = 5 if case.name == "wait_events" else 60
        try:
            await asyncio.wait_for(handle.execute_update(case.name, args=case.arg.values()), timeout)
        except WorkflowUpdateFailedError as err:
            cause = err.cause
            kind = cause.type if isinstance(cause, ApplicationError) else type(cause).__name__
            if kind not in PERENNIAL_ERRORS:
                if _sdk_gap(case):
                    return f"untyped (known gap): {kind}"
                self._found(case, f"untyped {kind}", repr(cause)[:300])
                return f"untyped: {kind}"
            self._bounded(case, str(cause.message))
            return f"rejected: {kind}"
        except TimeoutError:  # only a valid long poll may still be waiting
            assert case.name == "wait_events" and not _invalid(case), (
                f"{case!r}: no answer in {timeout} s"
            )
            return "applied (still waiting)"
        return "applied"

    async def _query(self, case: Case) -> str:
        try:
            await self.handle(case.target).query(case.name, args=case.arg.values())
        except WorkflowQueryFailedError as err:
            self._bounded(case, err.message)
            return f"failed: {_reason(err.message)}"
        return "answered"

    def _bounded(self, case: Case, error: str) -> None:
        if len(error) > MAX_ERROR_CHARS:
            self._found(case, "unbounded error", f"{len(error)} chars: {error[:200]}...")

    def _found(self, case: Case, problem: str, detail: str) -> None:
        key = (case.endpoint, case.arg.how.split(" (")[0], problem)
        self.findings.setdefault(key, f"{case!r}\n    -> {detail}")

    # ------------------------------------------------------------------ the properties

    async def check(self, batch: Iterable[Case] = ()) -> None:
        """No task failed; no version went back; the notes agent kept its note."""
        for agent in self.agents:
            events = await history(agent, self.perennial.client)
            failures = worker_task_failures(events)
            if failures:
                [first] = [e for e in events if e.event_type == TASK_FAILED][:1]
                failure = first.workflow_task_failed_event_attributes.failure
                raise AssertionError(
                    f"{agent.id}: workflow task failed ({failures[0]}: {failure.message}\n"
                    f"{failure.stack_trace[-1500:]}) in the batch {list(batch)!r}"
                )
            view = await agent.state_view()
            assert view.version >= self.versions[agent.id], (agent.id, view.version)
            self.versions[agent.id] = view.version
            if agent is self.notes:
                assert KEPT in view.state["notes"], view.state["notes"]

    async def finish(self, test: str) -> None:
        """After the fuzz: every agent answers, its history replays; the summary line."""
        print(self.summary(test))
        await self.check()
        assert (await self.notes.ask("after the fuzz")).reply.startswith("Noted")
        assert (await self.cart.ask("after the fuzz")).reply.endswith("items")
        await self.replays()
        found = [f"{' / '.join(key)}: {case}" for key, case in self.findings.items()]
        assert not found, "\n".join(["calls that broke a property (first of each kind):", *found])

    async def replays(self) -> None:
        """The agents' histories replay on this code: the latest runs as `perennial replay`
        checks them, and the runs before each continue-as-new."""
        client = self.perennial.client
        current = {(a.id, (await client.get_workflow_handle(a.id).describe()).run_id)
                   for a in self.agents}  # fmt: skip
        query = " OR ".join(f"WorkflowId = '{agent_id}'" for agent_id, _ in current)

        async def listed() -> bool:  # visibility catches up with the runs (some continued)
            running = f"({query}) AND ExecutionStatus = 'Running'"
            return {(e.id, e.run_id) async for e in client.list_workflows(running)} == current

        await eventually(listed)
        report = await replay_from_server(client, query=query)
        assert {(r.workflow_id, r.run_id) for r in report.results} == current, report
        assert not report.failed, report.failed

        async def runs() -> AsyncIterator[WorkflowHistory]:
            for agent in self.agents:
                for run in await run_histories(client, agent.id):
                    yield WorkflowHistory(agent.id, run)

        replayer = Replayer(workflows=list(agent_types().values()),
                            workflow_runner=workflow_runner(), data_converter=client.data_converter)  # fmt: skip
        replayed = await replayer.replay_workflows(runs(), raise_on_replay_failure=False)
        assert not replayed.replay_failures, replayed.replay_failures

    def summary(self, test: str) -> str:
        by_endpoint: dict[str, Counter[str]] = {}
        for (endpoint, outcome), n in sorted(self.outcomes.items()):
            by_endpoint.setdefault(endpoint, Counter())[outcome] += n
        calls = sum(n for (endpoint, _), n in self.outcomes.items() if "(later)" not in endpoint)
        lines = [f"{test}: {calls} cases"]
        for endpoint, outcomes in by_endpoint.items():
            ok = sum(n for o, n in outcomes.items() if not o.startswith(("rejected", "failed")))
            shown = ", ".join(f"{o} x{n}" for o, n in outcomes.most_common())
            lines.append(f"  {endpoint}: {outcomes.total()} ({ok} ok) - {shown}")
        return "\n".join(lines)


def fuzz(fleet: Fleet, strategy: st.SearchStrategy, *, examples: int) -> Callable[[], None]:
    """A Hypothesis run of `examples` batches of calls, to run in a thread: each batch's calls
    run on the event loop of the caller (where the worker runs)."""
    loop = asyncio.get_running_loop()

    @settings(
        max_examples=max(1, round(examples * FUZZ_SCALE)),
        deadline=None,
        database=None,  # the agents are new each run: a stored example means nothing
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
        print_blob=False,
    )
    @given(st.lists(strategy, min_size=4, max_size=12))
    def run(batch: list[Case]) -> None:
        asyncio.run_coroutine_threadsafe(fleet.run(batch), loop).result()

    return run


# --------------------------------------------------------------------------- the tests


async def test_fuzzed_signals_are_applied_or_rejected_and_never_fail_a_task(
    perennial: Perennial, worker: Worker
) -> None:
    fleet = await Fleet.create(perennial)
    await asyncio.to_thread(fuzz(fleet, cases("signal", SIGNALS), examples=12))
    await fleet.finish("signals")


async def test_fuzzed_updates_return_or_fail_typed_and_never_fail_a_task(
    perennial: Perennial, worker: Worker
) -> None:
    fleet = await Fleet.create(perennial)
    await asyncio.to_thread(fuzz(fleet, cases("update", UPDATES), examples=30))
    await fleet.finish("updates")


async def test_fuzzed_queries_answer_or_fail_and_change_nothing(
    perennial: Perennial, worker: Worker
) -> None:
    fleet = await Fleet.create(perennial)
    before = [(await a.state_view(), len(await history(a, perennial.client))) for a in fleet.agents]
    await asyncio.to_thread(fuzz(fleet, cases("query", QUERIES), examples=40))
    after = [(await a.state_view(), len(await history(a, perennial.client))) for a in fleet.agents]
    assert after == before
    await fleet.finish("queries")


@pytest.mark.parametrize("name", ["message", "subscribe"])
def test_near_valid_cases_include_valid_requests(name: str) -> None:
    """The near-valid strategy reaches the handlers' real paths: some of its arguments are
    valid requests (as sent unchanged, or changed within range)."""
    model, bases = SIGNALS[name]
    assert model is not None
    seen: list[bool] = []

    @settings(max_examples=60, database=None, phases=[Phase.generate])
    @given(_near_valid(model, bases))
    def collect(arg: Arg) -> None:
        seen.append(_valid(model, arg))

    collect()
    assert any(seen) and not all(seen)


# Found by the fuzz: the SDK converts an update's arguments before Perennial's validator runs.
# With more arguments than the handler declares, it decodes them without the handler's types
# and calls the validator with all of them (TypeError; RuntimeError "Failed decoding
# arguments" when one is not JSON). A validator cannot take extra arguments itself: a handler
# with `*args` loses its type hints for every call. Nothing enters history and no task fails
# (the fuzz checks that too), but the caller gets an untyped error: a known gap, pinned
# strictly. An unknown update name was another (a RuntimeError); the dynamic update handler
# now refuses it typed.
_SDK_GAP = pytest.mark.xfail(strict=True, reason="the SDK calls the validator untyped")
_SDK_REFUSED: dict[str, tuple[str, list[Any]]] = {
    "two arguments": ("ask", [{"text": "a"}, {"text": "b"}]),
    "an undecodable second argument": ("send", [{"text": "a"}, RawValue(_payload(b"\xff"))]),
    "an unknown update": ("no_such_update", [{"text": "a"}]),
}


@pytest.mark.parametrize(
    "case",
    [pytest.param(case, marks=[_SDK_GAP] if "argument" in case else []) for case in _SDK_REFUSED],
)
async def test_updates_the_sdk_refuses_are_refused_typed(
    perennial: Perennial, worker: Worker, case: str
) -> None:
    update, args = _SDK_REFUSED[case]
    agent = perennial.agent("notes", unique("fuzz"))
    await agent.ask(KEPT)
    cause = await rejected_update(perennial, agent, update, *args)
    assert cause.type in PERENNIAL_ERRORS, cause
