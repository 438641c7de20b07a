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
from typing import Any, Sequence

import durable_rules_engine as dre

from service.engine.base import EngineError, Match, layers, partition_key
from service.engine.facts import FINDINGS, MARKER, build_fact
from service.policy import conditions as C
from service.policy import operators
from service.policy.model import Rule

# 63 alternatives + the catch-all = 64, the most one assert can fire (the limit lint enforces).
SHARD_CONDITIONS = operators.MAX_ALTERNATIVES
CATCH_ALL = "catch_all"
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
        # route -> layers -> shards; a shard is (engine handle, rule id of each alternative)
        self._plan: dict[str | None, list[list[tuple[int, list[str]]]]] = {}
        self.shard_count = 0
        routes = sorted({route for r in rules for route in r.routes})
        stratified = layers(rules)
        for route in routes:
            route_layers = []
            for layer in stratified:
                shards = []
                for shard in _shards([r for r in layer if route in r.routes], shard_conditions):
                    shards.append(self._create(shard))
                route_layers.append(shards)
            self._plan[route] = route_layers

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
            for shards in self._plan.get(route, []):
                # One serialisation per layer: the fact changes only by the findings it gains.
                body = json.dumps(fact)  # ASCII: text the C parser reads safely, lone surrogates included
                new: set[str] = set()
                for handle, rule_ids in shards:
                    for action in _fire(handle, body):
                        if action != CATCH_ALL:
                            new.add(rule_ids[int(action[1:])])
                new = {rid for rid in new if self._rules[rid].applies(route, indication)}
                fired |= new
                for rid in sorted(new, key=self._order.__getitem__):
                    if self._rules[rid].concludes:
                        fact[FINDINGS].append(self._rules[rid].concludes)
        ordered = sorted(fired, key=self._order.__getitem__)
        findings = tuple(self._rules[rid].concludes for rid in ordered if self._rules[rid].concludes)
        return Match(tuple(ordered), findings)


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


def _shards(rules: list[Rule], size: int) -> list[list[tuple[Rule, list[C.Condition]]]]:
    """Pack rules' alternatives into shards of at most ``size``, never splitting a rule."""
    shards: list[list] = []
    current: list = []
    for rule in rules:
        alternatives = [(rule, conj) for conj in C.to_dnf(C.to_nnf(rule.when))]
        if len(alternatives) > size:
            raise EngineError(f"rule '{rule.id}' has {len(alternatives)} alternatives; at most {size} fit the engine")
        if len(current) + len(alternatives) > size:
            shards.append(current)
            current = []
        current.extend(alternatives)
    if current:
        shards.append(current)
    return shards


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
