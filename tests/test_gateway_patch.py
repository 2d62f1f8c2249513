"""The gateway's JSON Patches (RFC 6902), checked with an independent implementation."""

from __future__ import annotations

import copy
import random
from typing import Any

import jsonpatch
import pytest

from perennial.client.gateway.patch import diff

CASES: list[tuple[Any, Any]] = [
    ({}, {}),
    ({"a": 1}, {"a": 2}),
    ({"a": 1}, {"a": 1.0}),  # equal in Python, a change in JSON
    ({"a": True}, {"a": 1}),
    ({"a": {"b": [1, 2]}}, {"a": {"b": [1, 2, 3]}}),
    ({"a": [1, 2, 3, 4]}, {"a": [1, 2]}),
    ({"a": [1, 2, 3]}, {"a": [3, 2, 1]}),
    ({"a": [{"x": 1}, {"x": 2}]}, {"a": [{"x": 1}, {"x": 3}]}),
    ({"a/b": 1, "c~d": 2}, {"a/b": 3, "e~/f": 4}),
    ({"": 1}, {"": 2, " ": 3}),
    ({"a": None}, {"a": {"now": "an object"}}),
    ({"a": [1, 2]}, {"a": "a string"}),
    ({"nested": {"deep": {"deeper": [[1], [2]]}}}, {"nested": {"deep": {"deeper": [[1], [2, 3]]}}}),
    ({"unicode": "é"}, {"unicode": "é✓", "emoji": "🙂"}),
    ({"a": 1, "b": 2}, {}),
    ({}, {"a": [], "b": {}}),
]


@pytest.mark.parametrize(("old", "new"), CASES)
def test_applying_the_diff_gives_the_new_document(old: Any, new: Any) -> None:
    ops = diff(old, new)
    assert {op["op"] for op in ops} <= {"add", "remove", "replace"}
    result = jsonpatch.apply_patch(copy.deepcopy(old), ops)
    assert result == new and _types(result) == _types(new)
    if old == new and _types(old) == _types(new):
        assert ops == []


def test_random_documents() -> None:
    rng = random.Random(7)
    for _ in range(500):
        old = _document(rng, 3)
        new = _mutate(rng, copy.deepcopy(old))
        result = jsonpatch.apply_patch(copy.deepcopy(old), diff(old, new))
        assert result == new and _types(result) == _types(new)


def test_a_grown_list_is_appended_not_replaced() -> None:
    old = {"notes": [f"note {i}" for i in range(100)]}
    new = {"notes": [*old["notes"], "one more"]}
    assert diff(old, new) == [{"op": "add", "path": "/notes/-", "value": "one more"}]


def _types(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _types(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_types(v) for v in value]
    return type(value).__name__


def _scalar(rng: random.Random) -> Any:
    return rng.choice([None, True, False, rng.randint(-5, 5), rng.random(), "s", "t/~", ""])


def _document(rng: random.Random, depth: int) -> Any:
    if depth == 0 or rng.random() < 0.3:
        return _scalar(rng)
    if rng.random() < 0.5:
        return [_document(rng, depth - 1) for _ in range(rng.randint(0, 4))]
    return {rng.choice("abc/~") + str(i): _document(rng, depth - 1) for i in range(rng.randint(0, 4))}


def _mutate(rng: random.Random, doc: Any) -> Any:
    if isinstance(doc, dict) and doc and rng.random() < 0.7:
        key = rng.choice(sorted(doc))
        action = rng.random()
        if action < 0.3:
            del doc[key]
        elif action < 0.6:
            doc[key] = _mutate(rng, doc[key])
        else:
            doc[key + "x"] = _document(rng, 2)
        return doc
    if isinstance(doc, list) and rng.random() < 0.7:
        action = rng.random()
        if action < 0.3 and doc:
            doc.pop(rng.randrange(len(doc)))
        elif action < 0.6:
            doc.append(_document(rng, 2))
        elif doc:
            i = rng.randrange(len(doc))
            doc[i] = _mutate(rng, doc[i])
        return doc
    return _document(rng, 2)
