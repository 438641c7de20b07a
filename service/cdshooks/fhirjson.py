"""A tolerant, read-only view of FHIR JSON: only what the screening reads, however the EHR shaped it.

EHRs send R4, R4B, STU3-shaped dosages, Bundles without ``type``, orders without ``intent``.
Validating every resource against one version's model refuses all of that, and one unrelated
malformed order would block the screening of the ketamine order beside it. So resources are
read as JSON: an element that is absent or of the wrong shape reads as None (a list element
that holds a single object reads as a one-item list), and the mapping decides what a missing
element means. Nothing here raises on bad content.
"""
from __future__ import annotations

import datetime as dt
import re
from typing import Any

_DATE = re.compile(r"(\d{4})(?:-(\d{2})(?:-(\d{2}))?)?")   # matched whole (fullmatch)


class Node:
    """Attribute access over a JSON object: ``node.code.coding`` is a list of Nodes, or []."""

    __slots__ = ("_d",)

    def __init__(self, data: dict):
        self._d = data

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        value = self._d.get(name)
        if isinstance(value, dict):
            return Node(value)
        if isinstance(value, list):
            return [Node(v) if isinstance(v, dict) else v for v in value]
        return value

    def raw(self) -> dict:
        return self._d

    def __repr__(self) -> str:
        return f"Node({self._d.get('resourceType', '')}/{self._d.get('id', '')})"


def node(value: Any) -> Node | None:
    return Node(value) if isinstance(value, dict) else None


def many(value: Any) -> list:
    """A list element, tolerating a single object sent where a list belongs, and None."""
    if value is None:
        return []
    if isinstance(value, list):
        return [v for v in value if v is not None]
    return [value]


def rtype(resource: Any) -> str | None:
    return resource.resourceType if isinstance(resource, Node) and isinstance(resource.resourceType, str) else None


def text(value: Any) -> str | None:
    return value.strip() if isinstance(value, str) and value.strip() else None


def number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


def when(value: Any) -> dt.datetime | None:
    """A FHIR date / dateTime / instant as an aware datetime. A partial date (2024, 2024-05) or a
    bare date is taken as the start of that period in UTC: the oldest reading of it, so a
    freshness rule errs on the side of 'stale'. A time without an offset is read as UTC."""
    if not isinstance(value, str):
        return None
    value = value.strip()
    m = _DATE.fullmatch(value)
    if m:
        try:
            return dt.datetime(int(m.group(1)), int(m.group(2) or 1), int(m.group(3) or 1), tzinfo=dt.timezone.utc)
        except ValueError:
            return None
    try:
        parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.timezone.utc)


def day(value: Any) -> dt.date | None:
    """A FHIR date (or the date of a dateTime); None for a partial date (it names no day)."""
    if not isinstance(value, str):
        return None
    if re.fullmatch(r"\d{4}-\d{2}-\d{2}", value.strip()):
        try:
            return dt.date.fromisoformat(value.strip())
        except ValueError:
            return None
    parsed = when(value) if "T" in value else None
    return parsed.date() if parsed else None


def codings(concept: Any) -> list[Node]:
    return [c for c in many(concept.coding) if isinstance(c, Node)] if isinstance(concept, Node) else []


def ref(resource: Any) -> str:
    rid = resource.id if isinstance(resource, Node) else None
    return f"{rtype(resource) or 'Resource'}/{rid if isinstance(rid, (str, int)) else '?'}"
