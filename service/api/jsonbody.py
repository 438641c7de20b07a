"""Reading a JSON request body strictly: the parts of JSON that Python accepts and we do not.

Rejected with a clear 4xx: a wrong content type (415), a body over the limit (413), bytes that
are not UTF-8, malformed or truncated JSON, NaN/Infinity, numbers too large to be a float,
duplicate keys, nesting deeper than the limit (400), and a top level that is not an object (422).
"""
from __future__ import annotations

import json
import math
from typing import Any

from flask import Request

from service.api.problems import ApiError


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


def parse_json_object(request: Request, max_bytes: int, max_depth: int) -> dict:
    mimetype = request.mimetype or ""
    if mimetype != "application/json" and not mimetype.endswith("+json"):
        raise ApiError(415, "Send the body as JSON with Content-Type: application/json.")
    length = request.content_length
    if length is not None and length > max_bytes:
        raise ApiError(413, f"The request body is larger than {max_bytes} bytes.")
    data = request.get_data(cache=True)
    if len(data) > max_bytes:
        raise ApiError(413, f"The request body is larger than {max_bytes} bytes.")
    if not data.strip():
        raise ApiError(400, "The request body is empty; send a JSON object.", code="malformed_json")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ApiError(400, f"The request body is not UTF-8 (invalid byte at position {exc.start}).",
                       code="malformed_json") from None
    if not _depth_ok(text, max_depth):
        raise ApiError(400, f"The JSON is nested deeper than {max_depth} levels.", code="malformed_json")
    try:
        value = json.loads(text, object_pairs_hook=_pairs, parse_constant=_constant, parse_float=_float)
    except _Reject as exc:
        raise ApiError(400, f"The JSON is not acceptable: {exc}.", code="malformed_json") from None
    except json.JSONDecodeError as exc:
        raise ApiError(400, f"The JSON is malformed: {exc.msg} at line {exc.lineno} column {exc.colno}.",
                       code="malformed_json") from None
    except (ValueError, RecursionError) as exc:  # e.g. integers with more digits than Python allows
        raise ApiError(400, f"The JSON is not acceptable: {str(exc)[:120]}.", code="malformed_json") from None
    if not isinstance(value, dict):
        kind = {list: "an array", str: "a string", bool: "a boolean", type(None): "null"}.get(type(value), "a number")
        raise ApiError(422, f"The body must be a JSON object, not {kind}.",
                       [{"path": "$", "message": "must be an object"}])
    return value
