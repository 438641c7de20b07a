"""Completeness: which applicable rules cannot be decided on the data at hand, and what to ask.

The engine decides what fires. A rule that does not fire may still be undecided: its answer
could change once an absent answer is given. That is three-valued (Kleene) logic over the rule's
condition in the NNF form the engine compiles (see conditions.KleeneEvaluator), and it is
derived from the condition itself, not from hand-written lists of required fields.

It is cheap on a complete intake: the plan knows, per pack, every path any rule reads and which
rules read it; a screening looks up those paths once, and only the rules that read something
this intake lacks (or use a finding that was left undecided) are evaluated again, in Python.
"""
from __future__ import annotations

import datetime as dt
from collections import Counter
from dataclasses import dataclass
from functools import cached_property
from typing import Container, Iterable

from service.policy import conditions as C
from service.policy.model import OptionalAnswer, RulePack


@dataclass
class _Settled:
    missing: dict[str, tuple[int, int]]   # path -> (rule's place in the pack, place in its list)
    findings: dict[str, list[str]]        # undecided finding -> the paths it hinges on


# "Today" for answers worked out with nothing present: no value is there to compare with it.
_ANY_DAY = dt.datetime(2000, 1, 1, tzinfo=dt.timezone.utc)


class CompletenessPlan:
    def __init__(self, pack: RulePack):
        self.pack = pack
        self.nnf: dict[str, C.Condition] = {}
        self.paths: dict[str, frozenset[str]] = {}
        self.items: dict[str, dict[str, frozenset[str]]] = {}
        by_path: dict[str, set[str]] = {}
        by_item: dict[tuple[str, str], set[str]] = {}
        for rule in pack.rules:
            paths, items = C.reads(rule.when)
            self.nnf[rule.id] = C.to_nnf(rule.when)
            self.paths[rule.id] = paths
            self.items[rule.id] = items
            for p in paths:
                by_path.setdefault(p, set()).add(rule.id)
            for array, names in items.items():
                for name in names:
                    by_item.setdefault((array, name), set()).add(rule.id)
        self.by_path = {p: frozenset(ids) for p, ids in by_path.items()}
        self.by_item = {k: frozenset(ids) for k, ids in by_item.items()}
        self.item_fields: dict[str, tuple[str, ...]] = {}
        for (array, name) in by_item:
            self.item_fields.setdefault(array, ())
            self.item_fields[array] += (name,)
        self.optional: dict[str, OptionalAnswer] = {o.path: o for o in pack.optional}
        # For the rules a screening must look at besides those that fired: a rule whose
        # ``requires`` names an absent path, and the rules using a finding that may be undecided.
        required: dict[str, set[str]] = {}
        users: dict[str, set[str]] = {}
        for rule in pack.rules:
            for p in rule.requires:
                required.setdefault(p, set()).add(rule.id)
            for name in pack.findings_used[rule.id]:
                users.setdefault(name, set()).add(rule.id)
        self.required_by_path = {p: frozenset(ids) for p, ids in required.items()}
        self.finding_users = {name: frozenset(ids) for name, ids in users.items()}
        self.concludes = {r.id: r.concludes for r in pack.rules if r.concludes}
        self._uses_findings = frozenset(r.id for r in pack.rules if pack.findings_used[r.id])
        self._alone: dict[str, C.Kleene] = {}
        self._bulk_cache: dict[tuple, dict] = {}

    @cached_property
    def _tree(self) -> dict:
        """The paths some rule reads, as a tree of their parts: one walk of the intake finds
        every absent one (a dotted lookup per path was a third of a screening)."""
        tree: dict = {}
        for path in self.by_path:
            node = tree
            parts = path.split(".")
            for part in parts[:-1]:
                node = node.setdefault(part, {}).setdefault(None, {})
            node.setdefault(parts[-1], {})[""] = path
        return tree

    def absent(self, intake: dict) -> tuple[set[str], set[tuple[str, str]]]:
        """Paths some rule reads that this intake lacks; and (list, item field) pairs where an
        item of that list lacks a field some rule reads."""
        paths: set[str] = set()
        _walk(self._tree, intake, paths)
        items: set[tuple[str, str]] = set()
        for array, names in self.item_fields.items():
            values = C.lookup(intake, array)
            if not isinstance(values, list):
                continue
            for item in values:
                for name in names:
                    if not isinstance(item, dict) or item.get(name) is None:
                        items.add((array, name))
        return paths, items

    def suspects(self, absent_paths: set[str], absent_items: set[tuple[str, str]]) -> set[str]:
        """Rules that read something absent: the only ones whose answer may be undecided."""
        out: set[str] = set()
        for p in absent_paths:
            out |= self.by_path[p]
        for key in absent_items:
            out |= self.by_item[key]
        return out

    def when_all_absent(self, rule_id: str, absent_paths: set[str],
                        unknown_findings: Container[str]) -> C.Kleene | None:
        """The rule's three-valued answer when everything it reads is absent and every finding
        it uses is undecided, or None otherwise. Such an answer is the same for every intake that
        lacks those answers (a value that is absent has no date to age, no type to compare), so
        it is worked out once per rule. Shared: not to be changed by the caller."""
        if not self.paths[rule_id] <= absent_paths:
            return None
        uses = self.pack.findings_used[rule_id]
        if uses and not all(name in unknown_findings for name in uses):
            return None
        return self._answer_alone(rule_id)

    def _answer_alone(self, rule_id: str) -> C.Kleene:
        answer = self._alone.get(rule_id)
        if answer is None:
            undecided = set(self.pack.findings_used[rule_id])
            answer = self._alone[rule_id] = C.KleeneEvaluator({}, _ANY_DAY, set(), undecided).evaluate(self.nnf[rule_id])
        return answer

    @cached_property
    def _by_reads(self) -> dict[frozenset[str], frozenset[str]]:
        """Rules that can be settled in bulk, by the set of paths they read: no finding used, no
        declared optional answer read, ``requires`` only among what they read, and a finding
        concluded by no other rule. Once everything such a rule reads is absent, its answer is
        ``when_all_absent``'s and all it can add is missing paths (or an undecided finding)."""
        optional = set(self.optional)
        concluders = Counter(r.concludes for r in self.pack.rules if r.concludes)
        groups: dict[frozenset[str], set[str]] = {}
        for rule in self.pack.rules:
            reads = self.paths[rule.id]
            if (not reads or rule.id in self._uses_findings or reads & optional
                    or not set(rule.requires) <= reads or rule.concludes and concluders[rule.concludes] > 1):
                continue
            groups.setdefault(reads, set()).add(rule.id)
        return {reads: frozenset(ids) for reads, ids in groups.items()}

    def _bulk(self, route: str | None, indication: str | None) -> dict[frozenset[str], _Settled]:
        """For one route and indication, per group of ``_by_reads``, what its applicable rules
        add when they did not fire: each path they ask with where it is first asked (pack order,
        place in the rule's list), and each finding left undecided with its missing paths —
        what the rule-by-rule pass of ``screen()`` records for them."""
        key = (route, indication)
        cached = self._bulk_cache.get(key)
        if cached is not None:
            return cached
        order = self.pack.rule_order
        out: dict[frozenset[str], _Settled] = {}
        for reads, ids in self._by_reads.items():
            settled = _Settled({}, {})
            for rule_id in sorted(ids, key=order.__getitem__):
                rule = self.pack.rules[order[rule_id]]
                if not rule.applies(route, indication):
                    continue
                answer = self._answer_alone(rule_id)
                # undecided: what it hinges on; otherwise (not fired) its required paths, all absent
                absent = list(answer.missing) if answer.value == C.UNKNOWN else list(rule.requires)
                if not absent:
                    continue
                if rule.concludes:
                    settled.findings[rule.concludes] = absent
                else:
                    for i, path in enumerate(absent):
                        at = (order[rule_id], i)
                        settled.missing[path] = min(settled.missing.get(path, at), at)
            out[reads] = settled
        self._bulk_cache[key] = out
        return out

    def settle_absent(self, route: str | None, indication: str | None, absent_paths: set[str],
                      fired: set[str]) -> tuple[set[str], _Settled]:
        """The rules settled in bulk for this intake (everything they read is absent, and none of
        their group fired), with the missing paths and undecided findings they add. A screening
        of an intake lacking whole sections then costs one set comparison per group of rules
        reading the same paths, not a visit per rule; a group with a fired rule is left to the
        rule-by-rule pass. tests/test_screening_visits.py holds this to ``explain``, which visits
        every rule."""
        settled: set[str] = set()
        out = _Settled({}, {})
        bulk = self._bulk(route, indication)
        for reads, ids in self._by_reads.items():
            if reads <= absent_paths and ids.isdisjoint(fired):
                settled |= ids
                group = bulk[reads]
                for path, at in group.missing.items():
                    out.missing[path] = min(out.missing.get(path, at), at)
                out.findings.update(group.findings)
        return settled, out

    def requiring_absent(self, intake: dict) -> set[str]:
        """Rules whose ``requires`` names a path this intake lacks (one lookup per distinct
        required path, whatever the number of rules)."""
        out: set[str] = set()
        for path, ids in self.required_by_path.items():
            if C.lookup(intake, path) is C.MISSING:
                out |= ids
        return out

    def users_of(self, names: Iterable[str]) -> set[str]:
        """The rules using any of these findings, and their dependents."""
        return self.with_dependents(set().union(*(self.finding_users.get(n, ()) for n in names)))

    def with_dependents(self, seeds: set[str]) -> set[str]:
        """``seeds`` and every rule using a finding concluded by one of them, transitively: a
        finding can be undecided only if its rule is among the seeds (it reads something absent,
        or requires it), and only the rules using it can be changed by that."""
        out = set(seeds)
        stack = [r for r in seeds if r in self.concludes]
        while stack:
            for user in self.finding_users.get(self.concludes[stack.pop()], ()):
                if user not in out:
                    out.add(user)
                    if user in self.concludes:
                        stack.append(user)
        return out

    def assumed(self, rule_id: str, absent_paths: set[str]) -> list[OptionalAnswer]:
        """Declared optional answers this rule reads and the intake lacks."""
        if not self.optional:
            return []
        return [o for p, o in self.optional.items() if p in absent_paths and p in self.paths[rule_id]]


def _walk(tree: dict, data, out: set[str]) -> None:
    """Add to ``out`` every path of ``tree`` that is absent or null in ``data``."""
    for part, node in tree.items():
        value = data.get(part) if isinstance(data, dict) else None
        if value is None:
            _all(node, out)
            continue
        children = node.get(None)
        if children:
            _walk(children, value, out)


def _all(node: dict, out: set[str]) -> None:
    if "" in node:
        out.add(node[""])
    for child in (node.get(None) or {}).values():
        _all(child, out)
