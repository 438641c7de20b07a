"""An independent model of CDS Hooks 2.0 responses, written from the specification text
(cds-hooks.hl7.org/2.0, "Discovery" and "CDS Service Response"; the same constraints as the
CDSHooksResponse / CDSHooksServices logical models of HL7's tooling IG), as JSON Schema.

No PyPI library models CDS Hooks, so this is the spec's logical model, kept apart from our own
marshmallow schemas (schemas/cdshooks.py) on purpose: a response must satisfy both. Plus the
rule both CDS Hooks and FHIR JSON share: no element is null or empty.
"""
from __future__ import annotations

from typing import Any

import jsonschema

_CODING = {
    "type": "object",
    "required": ["code"],
    "properties": {"system": {"type": "string", "minLength": 1}, "code": {"type": "string", "minLength": 1},
                   "display": {"type": "string", "minLength": 1}},
}
# overrideReasons: "code REQUIRED, system REQUIRED, display REQUIRED" (Coding as used there)
_OVERRIDE_REASON = {**_CODING, "required": ["code", "system", "display"]}

_LINK = {
    "type": "object",
    "required": ["label", "url", "type"],
    "properties": {
        "label": {"type": "string", "minLength": 1},
        "url": {"type": "string", "format": "uri", "pattern": "^https?://"},
        "type": {"enum": ["absolute", "smart"]},
        "appContext": {"type": "string"},
    },
}

_ACTION = {
    "type": "object",
    "required": ["type", "description"],
    "properties": {"type": {"enum": ["create", "update", "delete"]}, "description": {"type": "string"},
                   "resource": {"type": "object"}, "resourceId": {"type": "array", "items": {"type": "string"}}},
}

_SUGGESTION = {
    "type": "object",
    "required": ["label"],
    "properties": {"label": {"type": "string", "minLength": 1}, "uuid": {"type": "string"},
                   "isRecommended": {"type": "boolean"}, "actions": {"type": "array", "items": _ACTION}},
}

CARD = {
    "type": "object",
    "required": ["summary", "indicator", "source"],
    "properties": {
        "uuid": {"type": "string", "pattern": "^[0-9a-fA-F-]{36}$"},
        "summary": {"type": "string", "minLength": 1, "maxLength": 139},   # "<140 characters"
        "detail": {"type": "string"},
        "indicator": {"enum": ["info", "warning", "critical"]},
        "source": {
            "type": "object",
            "required": ["label"],
            "properties": {"label": {"type": "string", "minLength": 1}, "url": {"type": "string"},
                           "icon": {"type": "string"}, "topic": _CODING},
        },
        "suggestions": {"type": "array", "items": _SUGGESTION},
        "selectionBehavior": {"enum": ["at-most-one", "any"]},
        "overrideReasons": {"type": "array", "items": _OVERRIDE_REASON},
        "links": {"type": "array", "items": _LINK},
        "extension": {"type": "object"},
    },
    # "selectionBehavior: REQUIRED if suggestions are present"
    "dependentRequired": {"suggestions": ["selectionBehavior"]},
    # feedback names a card by its uuid: a card that can be overridden must have one
    "dependentSchemas": {"overrideReasons": {"required": ["uuid"]}},
}

RESPONSE = {
    "type": "object",
    "required": ["cards"],
    "properties": {"cards": {"type": "array", "items": CARD}, "systemActions": {"type": "array", "items": _ACTION}},
}

DISCOVERY = {
    "type": "object",
    "required": ["services"],
    "properties": {"services": {"type": "array", "items": {
        "type": "object",
        "required": ["hook", "description", "id"],
        "properties": {
            "hook": {"type": "string"}, "title": {"type": "string"}, "description": {"type": "string"},
            "id": {"type": "string", "pattern": "^[A-Za-z0-9._~-]+$"},   # a URL path segment
            "prefetch": {"type": "object", "additionalProperties": {"type": "string"}},
            "usageRequirements": {"type": "string"},
        },
    }}},
}


def validate_response(body: Any) -> None:
    jsonschema.Draft202012Validator(RESPONSE, format_checker=jsonschema.FormatChecker()).validate(body)
    assert_no_empty(body, allow_top_level_cards=True)


def validate_discovery(body: Any) -> None:
    jsonschema.Draft202012Validator(DISCOVERY).validate(body)
    assert_no_empty(body)


def empty_elements(value: Any, path: str = "$") -> list[str]:
    """Paths of every null, "", [] or {} in a JSON value, at any depth."""
    found = []
    if value is None or (isinstance(value, (str, list, dict)) and len(value) == 0):
        return [path]
    if isinstance(value, dict):
        for key, item in value.items():
            found.extend(empty_elements(item, f"{path}.{key}"))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            found.extend(empty_elements(item, f"{path}[{i}]"))
    return found


def assert_no_empty(body: Any, allow_top_level_cards: bool = False) -> None:
    # `cards` is the one element the spec requires even when empty ("an empty array of cards").
    found = [p for p in empty_elements(body) if not (allow_top_level_cards and p == "$.cards")]
    assert not found, f"null or empty elements in the response: {found}"
