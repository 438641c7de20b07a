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
from service.policy import operators
from service.policy.model import Rule

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
    # Each operator's ZEN form is its entry in the operator table.
    operator = operators.TABLE.get(cond.op)
    if operator is None or operator.zen is None:
        raise ValueError(f"operator {cond.op} has no ZEN form here")
    return operator.zen(scope + cond.path, cond.operand, lambda sub, inner: _expr(sub, concluder, inner))


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


# Decision-table form: one table per layer (hit policy "collect"), with a column per plain field
# that a rule tests with a comparison (unary cells, ZEN's fastest form: a cell left empty matches
# anything), the rule's route and indication as unary lists, and one expression column for the
# conditions a cell cannot hold (any/not, lists of records, dates, findings).
_UNARY = {"gt": ">", "gte": ">=", "lt": "<", "lte": "<="}


def _cells(cond: C.Condition) -> dict[str, str] | None:
    """path -> unary cell, when the condition is comparisons of plain fields joined by "and"."""
    leaves = cond.items if isinstance(cond, C.AllOf) else (cond,)
    parts: dict[str, list[str]] = {}
    for leaf in leaves:
        if not isinstance(leaf, C.Leaf) or isinstance(leaf.operand, dict):
            return None
        if leaf.op in _UNARY:
            parts.setdefault(leaf.path, []).append(f"$ {_UNARY[leaf.op]} {_value(leaf.operand)}")
        elif leaf.op == "eq":
            parts.setdefault(leaf.path, []).append(f"$ == {_value(leaf.operand)}")
        elif leaf.op == "in":
            parts.setdefault(leaf.path, []).append(f"$ in [{', '.join(map(_value, leaf.operand))}]")
        else:
            return None
    return {path: " and ".join(p) for path, p in parts.items()}


def jdm_table(rules: Sequence[Rule], routes: Sequence[str], indications: Sequence[str]) -> dict:
    concluder = {r.concludes: r.id for r in rules if r.concludes}

    def node(node_id: str, kind: str, content: dict) -> dict:
        return {"id": node_id, "type": kind, "name": node_id, "position": {"x": 0, "y": 0}, "content": content}

    nodes = [{"id": "request", "type": "inputNode", "name": "request", "position": {"x": 0, "y": 0}}]
    for depth, layer in enumerate(layers(rules)):
        cells = {r.id: _cells(C.to_nnf(r.when)) for r in layer}
        paths = sorted({p for c in cells.values() if c for p in c})
        column = {p: f"c{i}" for i, p in enumerate(paths)}
        inputs = [{"id": "route", "name": "route", "field": "treatment.route"},
                  {"id": "indication", "name": "indication", "field": "treatment.indication"},
                  *({"id": column[p], "name": p, "field": p} for p in paths),
                  {"id": "x", "name": "condition"}]
        rows = []
        for rule in layer:
            row = {"_id": rule.id, "id": _value(rule.id)}
            if set(routes) - set(rule.routes):
                row["route"] = ", ".join(map(_value, rule.routes))
            if set(indications) - set(rule.indications):
                row["indication"] = ", ".join(map(_value, rule.indications))
            if cells[rule.id]:
                row.update({column[p]: cell for p, cell in cells[rule.id].items()})
            else:
                row["x"] = _expr(C.to_nnf(rule.when), concluder)
            rows.append(row)
        nodes.append(node(f"table{depth}", "decisionTableNode", {
            "hitPolicy": "collect", "passThrough": True, "outputPath": f"layer{depth}",
            "inputs": inputs, "outputs": [{"id": "id", "name": "rule", "field": "id"}], "rules": rows}))
        concluding = [r for r in layer if r.concludes]
        if concluding:  # the next layers read a finding as fired.<rule id>, as in the graph form
            nodes.append(node(f"findings{depth}", "expressionNode", {"passThrough": True, "expressions": [
                {"id": r.id, "key": f"fired.{r.id}", "value": f"some(layer{depth}, #.id == {_value(r.id)})"}
                for r in concluding]}))
    nodes.append({"id": "response", "type": "outputNode", "name": "response", "position": {"x": 0, "y": 0}})
    edges = [{"id": f"e{i}", "sourceId": a["id"], "targetId": b["id"], "type": "edge"}
             for i, (a, b) in enumerate(zip(nodes, nodes[1:]))]
    return {"nodes": nodes, "edges": edges}


class ZenTable(ZenRules):
    """The same rules as decision tables (``jdm_table``): the form ZEN evaluates fastest."""

    def __init__(self, rules: Sequence[Rule]):
        from schemas.intake import INDICATIONS, ROUTES
        self._ids = [r.id for r in rules]
        self.decision = zen.ZenEngine().create_decision(json.dumps(jdm_table(rules, ROUTES, INDICATIONS)))

    def match(self, intake: dict, as_of: dt.datetime) -> tuple[str, ...]:
        result = self.evaluate(intake, as_of)
        fired = {row["id"] for key, rows in result.items() if key.startswith("layer") for row in rows}
        return tuple(rid for rid in self._ids if rid in fired)
