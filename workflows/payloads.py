"""Reading wire payloads strictly: every signal, update and query argument, and the start input.

Agent handlers take their argument as a `RawValue` (the payload as it arrived) instead of
letting the SDK decode it: a payload the SDK cannot decode is dropped by it with only a worker
log line (signals) or refused with an untyped error (updates). Here every way an argument can
be wrong becomes the caller's `UsageError` subclass, with a message that describes the problem
without echoing the payload (which may be megabytes):

* no argument, `null`, or an encoding other than JSON;
* bytes that are not JSON (invalid UTF-8, lone surrogates, truncation, nesting deeper than
  the parser's limit, integers beyond Python's digit limit, NaN / Infinity);
* JSON of the wrong shape, validated strictly (`true` is not an int, `"1"` is not an int).
"""

from __future__ import annotations

from typing import TypeVar

from pydantic import BaseModel, ValidationError
from pydantic_core import from_json
from temporalio.api.common.v1 import Payload
from temporalio.common import RawValue

from perennial.workflows.errors import InvalidRequest, UsageError, summarize

ModelT = TypeVar("ModelT", bound=BaseModel)

#: The default of every handler parameter: the caller sent no argument at all.
MISSING = RawValue(Payload())

_JSON = b"json/plain"
_NULL = b"binary/null"


def is_missing(raw: RawValue) -> bool:
    """True when no argument (or a JSON-less `null`) was sent."""
    encoding = raw.payload.metadata.get("encoding")
    return raw is MISSING or encoding is None and not raw.payload.data or encoding == _NULL


def decode(
    raw: RawValue,
    model: type[ModelT],
    *,
    error: type[UsageError] = InvalidRequest,
    default: ModelT | None = None,
    max_bytes: int | None = None,
) -> ModelT:
    """The argument as `model`, or `error` saying what is wrong. A missing argument is
    `default` when one is given, else an error."""
    if is_missing(raw):
        if default is not None:
            return default
        raise error(f"missing argument: send one {model.__name__} as a JSON object")
    payload = raw.payload
    encoding = payload.metadata.get("encoding", b"")
    if encoding != _JSON:
        shown = encoding[:40].decode("ascii", "replace") or "none"
        raise error(f"the argument is encoded as {shown!r}; send JSON (json/plain)")
    data = payload.data
    if max_bytes is not None and len(data) > max_bytes:
        raise error(f"the argument is {len(data)} bytes; at most {max_bytes} are accepted")
    return parse_json(data, model, error=error)


def parse_json(data: bytes | str, model: type[ModelT], *, error: type[UsageError]) -> ModelT:
    """Strictly validate JSON text into `model`, or raise `error` with a short summary."""
    probe = data if isinstance(data, bytes) else data.encode()
    if b"NaN" in probe or b"Infinity" in probe:
        try:  # NaN / Infinity are not JSON; the model parser lets them into JsonValue fields
            from_json(data, allow_inf_nan=False)
        except ValueError as err:
            raise error(f"invalid {model.__name__}: {str(err)[:120]}") from None
    try:
        return model.model_validate_json(data, strict=True)
    except ValidationError as err:
        raise error(f"invalid {model.__name__}: {summarize(err)}") from None


__all__ = ["MISSING", "decode", "is_missing", "parse_json"]
