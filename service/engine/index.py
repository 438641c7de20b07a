"""Which engine conditions an intake can possibly satisfy, found by lookup rather than by trying
them all: evaluation cost follows the conditions that concern the intake, not the pack's size.

Every condition (one alternative of a rule, a conjunction) is given a *guard*: one of its own
literals that must hold for the conjunction to hold, chosen for how cheaply it can be looked up:

- ``path == value`` (and each value of ``in``): a dictionary from value to conditions;
- ``any_item`` whose item must have ``field == value`` (or one of an ``in`` list): a dictionary
  from value to conditions per list and field, looked up with each item's value (a formulary of
  named medications is met only by the names the patient takes);
- a positive finding: a dictionary from finding to conditions;
- ``>``, ``>=``, ``<``, ``<=`` on a number (date ages included, through their derived numbers):
  the thresholds of one path and operator, sorted, cut with one binary search;
- any other literal on a field (``ne``, ``not_in``, ``any_item``, ``contains``, ``empty``,
  ``exists: true``, ...): the field is present, since a comparison on an absent field is false;
- only ``exists: false`` or negated findings: no guard; the condition is always a candidate.

A guard is a necessary condition, so the candidates are a superset of what can fire: a lookup
that cannot decide (a value of an unexpected type) answers "candidate" and the engine decides.
The lookups read the same fact the engine is given (``service.engine.facts``).
"""
from __future__ import annotations

import bisect
from collections import defaultdict
from dataclasses import dataclass
from typing import Any, Hashable, Sequence

from service.engine.facts import COUNT_SUFFIX
from service.policy import conditions as C

_THRESHOLD_OPS = ("gt", "gte", "lt", "lte")
# Date operators become comparisons on the derived age the fact builder adds beside the date.
_DATE_AS_THRESHOLD = {"within_days": ("lte", C.DAYS_SUFFIX), "within_months": ("lte", C.MONTHS_SUFFIX),
                      "older_than_days": ("gt", C.DAYS_SUFFIX), "older_than_months": ("gt", C.MONTHS_SUFFIX)}


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


@dataclass(frozen=True)
class Guard:
    kind: str              # "eq" | "item" | "finding" | "threshold" | "present" | "none"
    path: str = ""         # field path (derived for dates), the list's path, or the finding's name
    op: str = ""           # threshold operator, or the item's field
    value: Any = None      # eq value, threshold, or the item field's values (a tuple)

    @property
    def group(self) -> tuple:
        """Conditions with the same group are kept together in engine shards, so an intake
        that concerns none of them asserts into none of those shards."""
        return (self.kind, self.path, self.op)


def guard_of(conjunction: Sequence[C.Condition]) -> Guard:
    """The most selective necessary literal of one conjunction (see the module docstring)."""
    best: tuple[int, Guard] | None = None

    def offer(rank: int, guard: Guard) -> None:
        nonlocal best
        if best is None or rank < best[0]:
            best = (rank, guard)

    for lit in conjunction:
        if isinstance(lit, C.Finding):
            if not lit.negated:
                offer(1, Guard("finding", lit.name))
            continue
        if not isinstance(lit, C.Leaf):
            continue
        op, operand = lit.op, lit.operand
        if op == "eq" and isinstance(operand, Hashable) and operand is not None:
            offer(0, Guard("eq", lit.path, value=operand))
        elif op == "any_item" and (item := _item_guard(operand)) is not None:
            offer(0, Guard("item", lit.path, item[0], item[1]))
        elif op in _THRESHOLD_OPS and _number(operand):
            offer(2, Guard("threshold", lit.path, op, operand))
        elif op in _DATE_AS_THRESHOLD and _number(operand):
            derived_op, suffix = _DATE_AS_THRESHOLD[op]
            offer(2, Guard("threshold", lit.path + suffix, derived_op, operand))
        elif op == "exists" and not operand:
            continue  # true when absent: no guard
        else:
            # Any other operator is false on an absent field (C's module docstring).
            offer(3, Guard("present", lit.path))
    return best[1] if best else Guard("none")


def _item_guard(body: C.Condition) -> tuple[str, tuple] | None:
    """(field, values) that one item must have for ``body`` to hold of it, if ``body`` has such
    a literal: ``field == value`` or ``field in [values]`` among its top-level conjuncts."""
    for lit in body.items if isinstance(body, C.AllOf) else (body,):
        if not isinstance(lit, C.Leaf) or "." in lit.path:
            continue
        if lit.op == "eq" and isinstance(lit.operand, Hashable) and lit.operand is not None:
            return lit.path, (lit.operand,)
        if lit.op == "in" and all(isinstance(v, Hashable) and v is not None for v in lit.operand):
            return lit.path, tuple(lit.operand)
    return None


class GuardIndex:
    """Candidates among conditions numbered 0..n-1, each with its guard."""

    def __init__(self, guards: Sequence[Guard]):
        self.size = len(guards)
        self._always: list[int] = []
        self._eq: dict[str, dict[Any, list[int]]] = defaultdict(lambda: defaultdict(list))
        self._items: dict[tuple[str, str], dict[Any, list[int]]] = defaultdict(lambda: defaultdict(list))
        self._findings: dict[str, list[int]] = defaultdict(list)
        self._present: dict[str, list[int]] = defaultdict(list)
        thresholds: dict[tuple[str, str], list[tuple[float, int]]] = defaultdict(list)
        for i, guard in enumerate(guards):
            if guard.kind == "eq":
                self._eq[guard.path][guard.value].append(i)
            elif guard.kind == "item":
                for value in guard.value:
                    self._items[(guard.path, guard.op)][value].append(i)
            elif guard.kind == "finding":
                self._findings[guard.path].append(i)
            elif guard.kind == "threshold":
                thresholds[(guard.path, guard.op)].append((guard.value, i))
            elif guard.kind == "present":
                self._present[guard.path].append(i)
            else:
                self._always.append(i)
        self._thresholds = {}
        for key, pairs in thresholds.items():
            pairs.sort(key=lambda p: p[0])
            self._thresholds[key] = ([p[0] for p in pairs], [p[1] for p in pairs])
        self._eq = {path: dict(values) for path, values in self._eq.items()}
        self._items = {key: dict(values) for key, values in self._items.items()}

    def candidates(self, fact: dict, findings: Sequence[str] | set[str]) -> set[int]:
        out = set(self._always)
        for path, by_value in self._eq.items():
            value = C.lookup(fact, path)
            if value is not C.MISSING:
                _look_up(by_value, value, out)
        for (path, name), by_value in self._items.items():
            items = C.lookup(fact, path)
            if not isinstance(items, list):
                continue
            for item in items:
                value = item.get(name) if isinstance(item, dict) else None
                if value is not None:
                    _look_up(by_value, value, out)
        for name in findings:
            hit = self._findings.get(name)
            if hit:
                out.update(hit)
        for (path, op), (values, ids) in self._thresholds.items():
            value = C.lookup(fact, path)
            if value is C.MISSING:
                continue
            if not _number(value):
                out.update(ids)
                continue
            if op == "gt":      # value > t: every t below value
                out.update(ids[:bisect.bisect_left(values, value)])
            elif op == "gte":   # value >= t
                out.update(ids[:bisect.bisect_right(values, value)])
            elif op == "lt":    # value < t: every t above value
                out.update(ids[bisect.bisect_right(values, value):])
            else:               # lte: value <= t
                out.update(ids[bisect.bisect_left(values, value):])
        for path, ids in self._present.items():
            if C.lookup(fact, path) is not C.MISSING:
                out.update(ids)
        return out


def _look_up(by_value: dict[Any, list[int]], value: Any, out: set[int]) -> None:
    """Add the conditions guarded by ``value``; every one of them for a value that cannot be
    looked up (unhashable: the engine decides)."""
    try:
        hit = by_value.get(value)
    except TypeError:
        for ids in by_value.values():
            out.update(ids)
        return
    if hit:
        out.update(hit)


def top_level_keys(conjunction: Sequence[C.Condition]) -> set[str]:
    """The fact's top-level properties a conjunction can read (derived ages and counts included):
    a shard is asserted with these alone, so the engine parses and copies no more than it reads."""
    keys: set[str] = set()
    for lit in conjunction:
        if isinstance(lit, C.Leaf):
            for path in (lit.path, lit.path + C.DAYS_SUFFIX, lit.path + C.MONTHS_SUFFIX, lit.path + COUNT_SUFFIX):
                keys.add(path.split(".", 1)[0])
    return keys
