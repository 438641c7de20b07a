"""The engine interface, and what every backend shares: layering and applicability."""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Protocol, Sequence

from service.policy.conditions import findings_used
from service.policy.model import Rule


class EngineError(RuntimeError):
    """The engine could not evaluate: a fault of ours or of the backend, never of the intake."""


@dataclass(frozen=True)
class Match:
    fired: tuple[str, ...]      # ids of applicable rules that fired, in pack order
    findings: tuple[str, ...]   # findings concluded, in pack order


class CompiledRules(Protocol):
    backend: str

    def match(self, intake: dict, as_of: dt.datetime) -> Match: ...


def layers(rules: Sequence[Rule]) -> list[list[Rule]]:
    """Stratify rules for forward chaining: a rule runs in the layer after the rules that
    conclude the findings it uses. Findings of one layer are facts for the next. Lint has
    refused cycles and undefined findings before anything is compiled."""
    concluder = {r.concludes: r for r in rules if r.concludes}
    depth: dict[str, int] = {}

    def level(rule: Rule, seen: frozenset = frozenset()) -> int:
        if rule.id in depth:
            return depth[rule.id]
        if rule.id in seen:
            raise EngineError(f"findings form a cycle through rule '{rule.id}'")
        below = [concluder[f] for f in findings_used(rule.when) if f in concluder]
        depth[rule.id] = 1 + max((level(r, seen | {rule.id}) for r in below), default=-1)
        return depth[rule.id]

    out: list[list[Rule]] = []
    for rule in rules:
        n = level(rule)
        while len(out) <= n:
            out.append([])
        out[n].append(rule)
    return out


def partition_key(intake: dict) -> tuple[str | None, str | None]:
    treatment = intake.get("treatment") or {}
    return treatment.get("route"), treatment.get("indication")
