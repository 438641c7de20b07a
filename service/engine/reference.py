"""The reference backend: the rule semantics in plain Python, with no engine underneath.

It defines what the durable-rules backend must answer, and the tests hold the two to it.
"""
from __future__ import annotations

import datetime as dt
from typing import Sequence

from service.engine.base import Match, layers, partition_key
from service.policy.conditions import Evaluator
from service.policy.model import Rule


class ReferenceRules:
    backend = "reference"

    def __init__(self, rules: Sequence[Rule]):
        self._layers = layers(rules)
        self._order = {r.id: i for i, r in enumerate(rules)}

    def match(self, intake: dict, as_of: dt.datetime) -> Match:
        route, indication = partition_key(intake)
        findings: set[str] = set()
        fired: list[Rule] = []
        for layer in self._layers:
            evaluator = Evaluator(intake, as_of, set(findings))
            for rule in layer:
                if rule.applies(route, indication) and evaluator.holds(rule.when):
                    fired.append(rule)
                    if rule.concludes:
                        findings.add(rule.concludes)
        fired.sort(key=lambda r: self._order[r.id])
        return Match(tuple(r.id for r in fired), tuple(r.concludes for r in fired if r.concludes))
