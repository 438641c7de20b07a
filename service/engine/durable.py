"""The durable-rules backend.

How it stays inside durable-rules' limits (measured: docs/performance.md, tests/test_growth.py):
- every rule is compiled to its alternatives (OR of ANDs); each alternative is one engine
  condition. durable-rules fires an alternative at most once per fact, and fails an assert
  that fires more than 64 of them (error 303), and hangs compiling 512 or more. So rules are
  packed into shards of at most ``SHARD_CONDITIONS`` conditions, each shard its own ruleset:
  no assert can fire more than 64, no compile can reach 512, whatever the pack's size.
- facts are asserted (``assert_fact`` fires every matching rule; ``post`` would stop at the
  first), into each shard of the intake's route, layer by layer for forward chaining.
- every shard has a catch-all rule so that no assert is "not handled": a clean intake is the
  common case, and a state that was never created crashes ``delete_state``.
- every condition is anchored on a marker property of the intake fact, because the engine
  matches its own session-state object too: an unanchored ``$nex`` rule loops forever on it.
- session state is deleted after each shard's evaluation, so memory stays flat.
- the stock ``Host`` starts timer threads that dispatch actions behind our back and runs Python
  closures per action; we drive the engine's low-level API directly, and one lock per compiled
  ruleset serialises evaluations (gunicorn threads share it).
"""
from __future__ import annotations

import datetime as dt
import itertools
import json
import threading
from dataclasses import dataclass
from typing import Any, Sequence

import durable_rules_engine as dre

from service.engine.base import EngineError, Match, layers, partition_key
from service.engine.facts import FINDINGS, MARKER, build_fact
from service.engine.index import Guard, GuardIndex, guard_of, top_level_keys
from service.policy import conditions as C
from service.policy import operators
from service.policy.model import Rule

# 63 alternatives + the catch-all = 64, the most one assert can fire (the limit lint enforces).
SHARD_CONDITIONS = operators.MAX_ALTERNATIVES
CATCH_ALL = "catch_all"
# Layers with more shards than this use the guard index to skip shards (service.engine.index).
INDEX_MIN_SHARDS = 3
# Evaluations are serialised per compiled ruleset and every session is deleted right after its
# assert, so one session id serves them all.
SID = "0"
_names = itertools.count()


class DurableRules:
    backend = "durable"

    def __init__(self, rules: Sequence[Rule], shard_conditions: int = SHARD_CONDITIONS):
        if not 1 <= shard_conditions <= SHARD_CONDITIONS:
            raise EngineError(f"shard size must be 1..{SHARD_CONDITIONS}")
        self._rules = {r.id: r for r in rules}
        self._order = {r.id: i for i, r in enumerate(rules)}
        self._lock = threading.Lock()
        # route -> layers; a layer is its guard index and its shards (service.engine.index)
        self._plan: dict[str | None, list[_Layer]] = {}
        self.shard_count = 0
        routes = sorted({route for r in rules for route in r.routes})
        stratified = layers(rules)
        for route in routes:
            self._plan[route] = [self._layer([r for r in layer if route in r.routes], shard_conditions)
                                 for layer in stratified]

    def _layer(self, rules: list[Rule], size: int) -> "_Layer":
        """Conditions that share a guard go into the same shards (thresholds in order of their
        value), so that an intake asserts into the shards holding its candidates only."""
        alternatives = _alternatives(rules, size)
        guards = [guard_of(conj) for _, conj in alternatives]
        order = sorted(range(len(alternatives)), key=lambda i: _shard_order(guards[i], i))
        shards = []
        for start in range(0, len(order), size):
            members = order[start:start + size]
            handle, rule_ids = self._create([alternatives[i] for i in members])
            keys = {MARKER, "sid"}
            for i in members:
                keys |= top_level_keys(alternatives[i][1])
                if any(isinstance(lit, C.Finding) for lit in alternatives[i][1]):
                    keys.add(FINDINGS)
            always = any(guards[i].kind == "none" for i in members)
            shards.append(_Shard(handle, rule_ids, frozenset(members), always, tuple(sorted(keys))))
        return _Layer(GuardIndex(guards), shards)

    def _create(self, alternatives: list[tuple[Rule, list[C.Condition]]]) -> tuple[int, list[str]]:
        definition: dict[str, Any] = {}
        for index, (_rule, conjunction) in enumerate(alternatives):
            definition[f"r{index}"] = {"all": [{"m": {"$and": [{MARKER: 1}] + [_literal(c) for c in conjunction]}}]}
        definition[CATCH_ALL] = {"all": [{"m": {MARKER: 1}}]}
        try:
            handle = dre.create_ruleset(f"s{next(_names)}", json.dumps(definition))
        except Exception as exc:  # the C extension raises its own bare error type
            raise EngineError(f"durable-rules could not compile a ruleset: {exc}") from exc
        self.shard_count += 1
        return handle, [rule.id for rule, _ in alternatives]

    def match(self, intake: dict, as_of: dt.datetime) -> Match:
        route, indication = partition_key(intake)
        fact = build_fact(intake, as_of)
        fact["sid"] = SID
        fired: set[str] = set()
        with self._lock:
            for layer in self._plan.get(route, []):
                # A layer of a few shards is asserted whole: looking up candidates would cost
                # about what it saves (measured on the shipped pack).
                candidates = layer.index.candidates(fact, fact[FINDINGS]) if len(layer.shards) > INDEX_MIN_SHARDS else None
                # One serialisation per layer and set of properties: the fact changes only by
                # the findings it gains, and each shard is given only what it reads.
                bodies: dict[tuple[str, ...], str] = {}
                new: set[str] = set()
                for shard in layer.shards:
                    if candidates is not None and not shard.always and candidates.isdisjoint(shard.members):
                        continue  # nothing in this shard can hold for this intake
                    body = bodies.get(shard.keys)
                    if body is None:
                        # ASCII: text the C parser reads safely, lone surrogates included
                        body = bodies[shard.keys] = json.dumps({k: fact[k] for k in shard.keys if k in fact})
                    for action in _fire(shard.handle, body):
                        if action != CATCH_ALL:
                            new.add(shard.rule_ids[int(action[1:])])
                new = {rid for rid in new if self._rules[rid].applies(route, indication)}
                fired |= new
                for rid in sorted(new, key=self._order.__getitem__):
                    if self._rules[rid].concludes:
                        fact[FINDINGS].append(self._rules[rid].concludes)
        ordered = sorted(fired, key=self._order.__getitem__)
        findings = tuple(self._rules[rid].concludes for rid in ordered if self._rules[rid].concludes)
        return Match(tuple(ordered), findings)


@dataclass(frozen=True)
class _Shard:
    handle: int
    rule_ids: list[str]            # the rule of each alternative, by position in the ruleset
    members: frozenset[int]        # the alternatives' numbers in the layer's guard index
    always: bool                   # holds an unguarded alternative: asserted for every intake
    keys: tuple[str, ...]          # the fact's top-level properties its conditions read


@dataclass(frozen=True)
class _Layer:
    index: GuardIndex
    shards: list[_Shard]


def _shard_order(guard: Guard, position: int) -> tuple:
    value = guard.value if guard.kind == "threshold" else 0
    return (guard.kind, guard.path if guard.kind != "finding" else "", guard.op, value,
            repr(guard.value) if guard.kind in ("eq", "item") else "", position)


def _fire(handle: int, body: str) -> list[str]:
    """Assert one fact into one shard and drain its actions: the names of what matched.

    The low-level API, not durable's Host: no timer threads, no Python closures per action,
    no state write-back (our actions change nothing), and the session is deleted at once."""
    try:
        _, state = dre.assert_fact(handle, body)
        names = []
        result = dre.start_action_for_state(handle, state)
        message = result[1] if result else None
        while message:
            names.append(message[2:message.index('"', 2)])  # '{"r12":{"m":…}}' -> r12
            message = dre.complete_and_start_action(handle, state)
        return names
    except Exception as exc:
        raise EngineError(f"durable-rules could not evaluate: {exc}") from exc
    finally:
        try:
            dre.delete_state(handle, SID)
        except Exception:  # nosec B110 - nothing to delete if the assert itself failed
            pass


def _alternatives(rules: list[Rule], size: int) -> list[tuple[Rule, list[C.Condition]]]:
    """Every rule's alternatives (OR of ANDs), in rule order; a rule may not need more than one
    shard's worth (its alternatives may land in different shards: each fires on its own)."""
    out: list[tuple[Rule, list[C.Condition]]] = []
    for rule in rules:
        alternatives = [(rule, conj) for conj in C.to_dnf(C.to_nnf(rule.when))]
        if len(alternatives) > size:
            raise EngineError(f"rule '{rule.id}' has {len(alternatives)} alternatives; at most {size} fit the engine")
        out.extend(alternatives)
    return out


def _literal(cond: C.Condition, prefix: str = "") -> dict:
    if isinstance(cond, C.Finding):
        if cond.negated:
            return {"$iall": {FINDINGS: {"$neq": {"$i": cond.name}}}}
        return {"$iany": {FINDINGS: {"$i": cond.name}}}
    if isinstance(cond, C.AllOf):
        return {"$and": [_literal(i, prefix) for i in cond.items]}
    if isinstance(cond, C.AnyOf):
        return {"$or": [_literal(i, prefix) for i in cond.items]}
    operator = operators.TABLE.get(cond.op)
    if operator is None or operator.durable is None:
        raise EngineError(f"operator '{cond.op}' has no durable-rules form")
    return operator.durable(prefix + cond.path, cond.operand, _literal)
