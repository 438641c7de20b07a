"""Reading an intake from bytes, the same way on every channel (HTTP body, CDS Hooks, a batch
line, a file at the terminal, a `rules diff` replay line): the parts of JSON that Python accepts
and we do not are refused with a ServiceError that says why.

Refused: a document over the size limit (413), bytes that are not UTF-8, malformed or truncated
JSON, NaN/Infinity, numbers too large to be a float, duplicate keys, nesting deeper than the
limit, unpaired surrogate escapes (400), and a top level that is not an object (422).
"""
from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Any

from marshmallow import ValidationError

from schemas.errors import dotted
from schemas.intake import IntakeSchema
from service.errors import ServiceError, validation_error


@dataclass(frozen=True)
class Limits:
    """How large and how deeply nested a document may be (Settings.max_body_bytes, max_json_depth)."""
    max_bytes: int
    max_depth: int

    @classmethod
    def of(cls, settings) -> "Limits":
        return cls(settings.max_body_bytes, settings.max_json_depth)


class _Reject(ValueError):
    pass


def _pairs(pairs: list[tuple[str, Any]]) -> dict:
    out: dict = {}
    for key, value in pairs:
        if key in out:
            raise _Reject(f"duplicate key '{key}'")
        out[key] = value
    return out


def _constant(name: str) -> Any:
    raise _Reject(f"{name} is not a JSON number")


def _float(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise _Reject(f"number {text[:20]} is out of range")
    return value


def _depth_ok(raw: str, limit: int) -> bool:
    """Nesting depth without recursion (a deep body must not exhaust the parser's stack)."""
    # Depth never exceeds the number of opening brackets: the common intake (a dozen of them)
    # skips the character-by-character scan, which costs ~100 µs per kilobyte.
    if raw.count("{") + raw.count("[") <= limit:
        return True
    depth = 0
    in_string = escaped = False
    for ch in raw:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            if depth > limit:
                return False
        elif ch in "]}":
            depth -= 1
    return True


# json.loads turns an unpaired \uD800-\uDFFF escape into a lone surrogate, which no encoder accepts:
# the rules engine, the decision log and the log lines would fail on it later (a 500), so it is
# refused here. The text is searched first: the walk runs only when such an escape is present.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")
_SURROGATE = re.compile("[\ud800-\udfff]")


def _lone_surrogate(value: Any, path: tuple) -> tuple | None:
    """The path of the first string (or the object holding the key) with a lone surrogate.
    Recursion is bounded: the depth was checked before parsing."""
    if isinstance(value, str):
        return path if _SURROGATE.search(value) else None
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, item in items:
        if isinstance(key, str) and _SURROGATE.search(key):
            return path
        found = _lone_surrogate(item, path + (key,))
        if found is not None:
            return found
    return None


def read_json(data: bytes, limits: Limits) -> dict:
    """A JSON object from ``data``, read strictly; ServiceError (413, 400, 422) otherwise."""
    max_bytes, max_depth = limits.max_bytes, limits.max_depth
    if len(data) > max_bytes:
        raise ServiceError(413, f"The request body is larger than {max_bytes} bytes.")
    if not data.strip():
        raise ServiceError(400, "The request body is empty; send a JSON object.", code="malformed_json")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ServiceError(400, f"The request body is not UTF-8 (invalid byte at position {exc.start}).",
                       code="malformed_json") from None
    if not _depth_ok(text, max_depth):
        raise ServiceError(400, f"The JSON is nested deeper than {max_depth} levels.", code="malformed_json")
    try:
        value = json.loads(text, object_pairs_hook=_pairs, parse_constant=_constant, parse_float=_float)
    except _Reject as exc:
        raise ServiceError(400, f"The JSON is not acceptable: {exc}.", code="malformed_json") from None
    except json.JSONDecodeError as exc:
        raise ServiceError(400, f"The JSON is malformed: {exc.msg} at line {exc.lineno} column {exc.colno}.",
                       code="malformed_json") from None
    except (ValueError, RecursionError) as exc:  # e.g. integers with more digits than Python allows
        raise ServiceError(400, f"The JSON is not acceptable: {str(exc)[:120]}.", code="malformed_json") from None
    if _SURROGATE_ESCAPE.search(text):
        where = _lone_surrogate(value, ())
        if where is not None:
            raise ServiceError(400, "The JSON has text that is not Unicode: an unpaired surrogate escape such as \\ud800.",
                           [{"path": dotted(where), "message": "contains an unpaired surrogate escape"}],
                           code="malformed_json")
    if not isinstance(value, dict):
        kind = {list: "an array", str: "a string", bool: "a boolean", type(None): "null"}.get(type(value), "a number")
        raise ServiceError(422, f"The body must be a JSON object, not {kind}.",
                       [{"path": "$", "message": "must be an object"}])
    return value


def read_intake(data: bytes, limits: Limits, loader: Any = None) -> dict:
    """An intake, read strictly and validated (IntakeSchema, or ``loader``: anything with the
    schema's ``load``, such as service.fastload's); ServiceError naming every field at fault."""
    raw = read_json(data, limits)
    try:
        return (loader or IntakeSchema()).load(raw)
    except ValidationError as exc:
        raise validation_error(exc, "The intake is not valid.") from None
