"""Error shapes shared by every entry point: marshmallow messages flattened to field paths."""
from __future__ import annotations

from typing import Any

from marshmallow import Schema, fields


def flatten_messages(messages: Any, prefix: tuple = ()) -> list[tuple[tuple, str]]:
    """marshmallow's nested error dict -> [(key path, message)], '_schema' folded into its parent."""
    if isinstance(messages, dict):
        out = []
        for key, value in messages.items():
            out.extend(flatten_messages(value, prefix if key == "_schema" else prefix + (key,)))
        return out
    if isinstance(messages, list):
        if all(isinstance(m, str) for m in messages):
            return [(prefix, m) for m in messages]
        return [x for m in messages for x in flatten_messages(m, prefix)]
    return [(prefix, str(messages))]


def dotted(path: tuple) -> str:
    """('medications', 0, 'class') -> 'medications[0].class'."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out or "$"


class FieldErrorSchema(Schema):
    path = fields.String(required=True, metadata={"example": "vitals.systolic_bp"})
    message = fields.String(required=True, metadata={"example": "must be between 50 and 300 mmHg"})


class ErrorBodySchema(Schema):
    status = fields.Integer(required=True)
    code = fields.String(required=True, metadata={"example": "validation_error"})
    message = fields.String(required=True)
    errors = fields.List(fields.Nested(FieldErrorSchema))
    request_id = fields.String()


class ErrorSchema(Schema):
    error = fields.Nested(ErrorBodySchema, required=True)
