"""JSON Patch (RFC 6902) between two committed versions of an agent's state.

Only `add`, `remove` and `replace` are emitted, so a client needs a small applier. Objects
are compared key by key; a list that only grew or shrank at its end gets per-item ops, any
other list change replaces the list (an agent's lists are mostly logs that grow at the end).
"""

from __future__ import annotations

from typing import Any

from pydantic import JsonValue

Op = dict[str, Any]


def diff(old: JsonValue, new: JsonValue) -> list[Op]:
    """The ops that turn `old` into `new`; applying them in order gives a value equal to
    `new`."""
    ops: list[Op] = []
    _diff(old, new, "", ops)
    return ops


def _diff(old: JsonValue, new: JsonValue, path: str, ops: list[Op]) -> None:
    if _same(old, new):
        return
    if isinstance(old, dict) and isinstance(new, dict):
        for key in old:
            if key not in new:
                ops.append({"op": "remove", "path": f"{path}/{_escape(key)}"})
        for key, value in new.items():
            child = f"{path}/{_escape(key)}"
            if key in old:
                _diff(old[key], value, child, ops)
            else:
                ops.append({"op": "add", "path": child, "value": value})
        return
    if isinstance(old, list) and isinstance(new, list) and _list_edit(old, new, path, ops):
        return
    ops.append({"op": "replace", "path": path, "value": new})


def _list_edit(old: list[JsonValue], new: list[JsonValue], path: str, ops: list[Op]) -> bool:
    """Per-item ops when `new` is `old` with items changed in place, appended, or removed
    from the end; False (the caller replaces the list) otherwise."""
    common = min(len(old), len(new))
    changed = sum(1 for i in range(common) if not _same(old[i], new[i]))
    if changed > max(1, common // 4):
        return False
    for i in range(common):
        _diff(old[i], new[i], f"{path}/{i}", ops)
    ops.extend({"op": "add", "path": f"{path}/-", "value": v} for v in new[common:])
    ops.extend({"op": "remove", "path": f"{path}/{i}"} for i in range(len(old) - 1, common - 1, -1))
    return True


def _same(a: JsonValue, b: JsonValue) -> bool:
    # 1 == 1.0 == True in Python, but not in JSON: a change of type is a change, also nested.
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        assert isinstance(b, dict)
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        assert isinstance(b, list)
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return a == b


def _escape(key: str) -> str:
    return key.replace("~", "~0").replace("/", "~1")


__all__ = ["Op", "diff"]
