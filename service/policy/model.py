"""A loaded rule pack: rules, their source locations, fixtures and test cases."""
from __future__ import annotations

import datetime as dt
import hashlib
import json
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from schemas.catalog import Catalog
from schemas.intake import INDICATIONS, ROUTES
from service.policy.conditions import Condition, findings_used


@dataclass(frozen=True)
class Location:
    file: str
    line: int | None = None
    column: int | None = None

    def __str__(self) -> str:
        parts = [self.file]
        if self.line:
            parts.append(str(self.line))
            if self.column:
                parts.append(str(self.column))
        return ":".join(parts)


@dataclass(frozen=True)
class Rule:
    id: str
    title: str
    when: Condition
    routes: tuple[str, ...] = ROUTES
    indications: tuple[str, ...] = INDICATIONS
    requires: tuple[str, ...] = ()
    effect: str | None = None  # exclude | review; None for a finding rule
    concludes: str | None = None
    severity: str | None = None
    priority: str = "routine"
    message: str | None = None
    citation: str | None = None
    description: str | None = None
    location: Location | None = field(default=None, compare=False)
    # (line, column) of the rule's keys and list items, e.g. ("requires", 0), for lint messages.
    positions: dict = field(default_factory=dict, compare=False, repr=False)
    # The rule as the editor wrote it, normalised: what the digest is computed over.
    canonical: dict = field(default_factory=dict, compare=False, repr=False)

    def where(self, *key) -> Location:
        line, column = self.positions.get(tuple(key), (None, None))
        if line is None and self.location:
            return self.location
        return Location(self.location.file if self.location else "?", line, column)

    def applies(self, route: str | None, indication: str | None) -> bool:
        return route in self.routes and indication in self.indications


@dataclass(frozen=True)
class TestCase:
    name: str
    location: Location
    intake: dict
    expect: dict
    as_of: dt.datetime | None = None


@dataclass(frozen=True)
class OptionalAnswer:
    """A field the pack lets be absent where a rule tests ``exists: false`` on it (see
    schemas.rulefile.OptionalAnswerSchema). A decision that relies on the absence states it."""
    path: str
    means: str
    reason: str
    citation: str
    location: Location | None = field(default=None, compare=False)

    def to_dict(self) -> dict:
        return {"path": self.path, "means": self.means, "reason": self.reason, "citation": self.citation}


@dataclass
class RulePack:
    name: str
    version: str
    rules: tuple[Rule, ...]
    description: str = ""
    source: str = ""
    fixtures: dict[str, Any] = field(default_factory=dict)
    tests: list[TestCase] = field(default_factory=list)
    test_as_of: dt.datetime | None = None
    # code -> the source it stands for (schemas.rulefile.CitationSourceSchema, loaded)
    citations: dict[str, dict] = field(default_factory=dict)
    optional: tuple[OptionalAnswer, ...] = ()
    digest: str = ""
    # The intake vocabulary the rules are written against (schemas.catalog); None: the shipped one.
    catalog: Catalog | None = None
    # Ids and findings of rules the loader could not read (lint does not report them as missing).
    unloaded: frozenset = frozenset()
    # Rule file -> modification time, so a duplicate is reported against the newer file.
    modified: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.catalog is None:
            from schemas.intake import SHIPPED
            self.catalog = SHIPPED
        if not self.digest:
            self.digest = compute_digest(self.name, self.rules, self.citations, self.optional, self.catalog)

    def rule(self, rule_id: str) -> Rule:
        for r in self.rules:
            if r.id == rule_id:
                return r
        raise KeyError(rule_id)

    @cached_property
    def rule_order(self) -> dict[str, int]:
        return {r.id: i for i, r in enumerate(self.rules)}

    @cached_property
    def findings_used(self) -> dict[str, tuple[str, ...]]:
        """rule id -> the findings its condition uses (asked on every screening)."""
        return {r.id: tuple(findings_used(r.when)) for r in self.rules}

    def summary(self) -> dict:
        return {"name": self.name, "version": self.version, "digest": self.digest}


def compute_digest(name: str, rules: tuple[Rule, ...], citations: dict | None = None,
                   optional: tuple[OptionalAnswer, ...] = (), catalog: Catalog | None = None) -> str:
    """sha256 over a canonical JSON form: reformatting or re-commenting a file keeps it.
    The citation registry and the optional answers are part of it: both change decisions. The
    field catalog is too: a changed vocabulary is a changed contract."""
    doc: dict[str, Any] = {"name": name, "rules": [r.canonical for r in rules],
                           "fields": catalog.raw if catalog else None}
    if citations:
        doc["citations"] = citations
    if optional:
        doc["optional"] = [o.to_dict() for o in optional]
    body = json.dumps(
        doc,
        sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str,
    )
    return "sha256:" + hashlib.sha256(body.encode("utf-8")).hexdigest()
