"""Reading a JSON request body strictly: the parts of JSON that Python accepts and we do not.

Rejected with a clear 4xx: a wrong content type (415), a body over the limit (413), bytes that
are not UTF-8, malformed or truncated JSON, NaN/Infinity, numbers too large to be a float,
duplicate keys, nesting deeper than the limit (400), and a top level that is not an object (422).
"""
from __future__ import annotations

import json
import math
import re
from typing import Any

from flask import Request, current_app, request
from marshmallow import Schema, ValidationError

from schemas.errors import dotted
from service.api.problems import ApiError, validation_error


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


def parse_json_object(request: Request, max_bytes: int, max_depth: int) -> dict:
    mimetype = request.mimetype or ""
    if mimetype != "application/json" and not mimetype.endswith("+json"):
        raise ApiError(415, "Send the body as JSON with Content-Type: application/json.")
    length = request.content_length
    if length is not None and length > max_bytes:
        raise ApiError(413, f"The request body is larger than {max_bytes} bytes.")
    data = request.get_data(cache=True)
    # A chunked body has no Content-Length: Werkzeug stops reading at MAX_CONTENT_LENGTH without
    # saying so, and the first max_bytes of a larger body could parse. One more byte tells.
    if length is None and len(data) >= max_bytes and request.environ["wsgi.input"].read(1):
        raise ApiError(413, f"The request body is larger than {max_bytes} bytes.")
    return parse_json_bytes(data, max_bytes, max_depth)


def parse_json_bytes(data: bytes, max_bytes: int, max_depth: int) -> dict:
    """The same strict reading for a document that did not come over HTTP (a batch line)."""
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
    if _SURROGATE_ESCAPE.search(text):
        where = _lone_surrogate(value, ())
        if where is not None:
            raise ApiError(400, "The JSON has text that is not Unicode: an unpaired surrogate escape such as \\ud800.",
                           [{"path": dotted(where), "message": "contains an unpaired surrogate escape"}],
                           code="malformed_json")
    if not isinstance(value, dict):
        kind = {list: "an array", str: "a string", bool: "a boolean", type(None): "null"}.get(type(value), "a number")
        raise ApiError(422, f"The body must be a JSON object, not {kind}.",
                       [{"path": "$", "message": "must be an object"}])
    return value


def load_body(schema: Schema, what: str) -> dict:
    """The request's JSON body, read strictly and validated by ``schema``: 4xx JSON errors that
    name every field path at fault, with the app's body limits."""
    settings = current_app.extensions["settings"]
    raw = parse_json_object(request, settings.max_body_bytes, settings.max_json_depth)
    try:
        return schema.load(raw)
    except ValidationError as exc:
        raise validation_error(exc, f"The {what} is not valid.") from None
