"""The same rules as a GoRules zen-engine decision (JDM graph), generated from the loaded pack.

One expression node per forward-chaining layer (``service.engine.base.layers``), chained with
``passThrough`` so a layer sees the previous layers' results; each rule is one expression
``fired.<rule id>``, its applicability and condition in ZEN's expression language. The context
is the same fact the durable backend gets (``build_fact``: date fields with their ages in days
and months beside them). ZEN errors on comparisons with null, so every leaf guards its field.
"""
from __future__ import annotations

import datetime as dt
import json
from typing import Any, Sequence

import zen

from service.engine.base import layers
from service.engine.facts import build_fact
from service.policy import conditions as C
from service.policy.model import Rule

_OPS = {"eq": "==", "ne": "!=", "gt": ">", "gte": ">=", "lt": "<", "lte": "<="}


def _value(v: Any) -> str:
    return json.dumps(v)  # numbers, true/false and "quoted" text read the same in ZEN


def _expr(cond: C.Condition, concluder: dict[str, str], scope: str = "") -> str:
    if isinstance(cond, C.AllOf):
        return "(" + " and ".join(_expr(i, concluder, scope) for i in cond.items) + ")"
    if isinstance(cond, C.AnyOf):
        return "(" + " or ".join(_expr(i, concluder, scope) for i in cond.items) + ")"
    if isinstance(cond, C.Finding):
        ref = f"fired.{concluder[cond.name]}"
        return f"({ref} != true)" if cond.negated else f"({ref} == true)"
    path = scope + cond.path
    op, operand = cond.op, cond.operand
    if op in _OPS:
        return f"({path} != null and {path} {_OPS[op]} {_value(operand)})"
    if op == "in":
        return f"({path} != null and {path} in [{', '.join(map(_value, operand))}])"
    if op == "not_in":
        return f"({path} != null and not ({path} in [{', '.join(map(_value, operand))}]))"
    if op in ("contains_any", "contains_none"):
        found = f"some({path}, # in [{', '.join(map(_value, operand))}])"
        return f"({path} != null and {found})" if op == "contains_any" else f"({path} != null and not {found})"
    if op == "exists":
        return f"({path} {'!=' if operand else '=='} null)"
    if op in C.DATE_OPS:
        derived = path + (C.DAYS_SUFFIX if op.endswith("_days") else C.MONTHS_SUFFIX)
        cmp = "<=" if op.startswith("within") else ">"
        return f"({derived} != null and {derived} {cmp} {operand})"
    if op in ("any_item", "all_items"):
        fn = "some" if op == "any_item" else "all"
        return f"({path} != null and {fn}({path}, {_expr(operand, concluder, '#.')}))"
    raise ValueError(f"operator {op} has no ZEN form here")


def jdm(rules: Sequence[Rule]) -> dict:
    concluder = {r.concludes: r.id for r in rules if r.concludes}

    def node(node_id: str, kind: str, content: dict | None = None) -> dict:
        out = {"id": node_id, "type": kind, "name": node_id, "position": {"x": 0, "y": 0}}
        if content is not None:
            out["content"] = content
        return out

    nodes = [node("request", "inputNode")]
    for depth, layer in enumerate(layers(rules)):
        expressions = []
        for rule in layer:
            applies = (f"treatment.route in [{', '.join(map(_value, rule.routes))}] and "
                       f"treatment.indication in [{', '.join(map(_value, rule.indications))}]")
            expressions.append({"id": rule.id, "key": f"fired.{rule.id}",
                                "value": f"({applies}) and {_expr(C.to_nnf(rule.when), concluder)}"})
        nodes.append(node(f"layer{depth}", "expressionNode", {"expressions": expressions, "passThrough": True}))
    nodes.append(node("response", "outputNode"))
    edges = [{"id": f"e{i}", "sourceId": a["id"], "targetId": b["id"], "type": "edge"}
             for i, (a, b) in enumerate(zip(nodes, nodes[1:]))]
    return {"nodes": nodes, "edges": edges}


class ZenRules:
    """match(intake, as_of) -> fired rule ids in pack order, like the engine backends."""

    def __init__(self, rules: Sequence[Rule]):
        self._ids = [r.id for r in rules]
        self.decision = zen.ZenEngine().create_decision(json.dumps(jdm(rules)))

    def evaluate(self, intake: dict, as_of: dt.datetime) -> dict:
        # A JSON string crosses into Rust faster than a dict walked object by object (measured).
        return self.decision.evaluate(json.dumps(build_fact(intake, as_of)))["result"]

    def match(self, intake: dict, as_of: dt.datetime) -> tuple[str, ...]:
        fired = self.evaluate(intake, as_of).get("fired", {})
        return tuple(rid for rid in self._ids if fired.get(rid) is True)
