"""The operator table (service.policy.operators): one entry per operator, and everything that
needs an operator's meaning, form or docs reads it."""
from __future__ import annotations

import ast
import datetime as dt

import pytest

from service.engine import durable
from service.policy import conditions as C
from service.policy import lint
from service.policy import operators as O
from tests.conftest import ROOT

AS_OF = dt.datetime(2026, 11, 24, 12, tzinfo=dt.timezone.utc)
SAMPLE = {O.VALUE: 1, O.VALUES: (1, 2), O.BOOL: True, O.COUNT: 30, O.CONDITION: C.Leaf("x", "eq", 1)}


@pytest.mark.parametrize("name", O.PUBLIC)
def test_every_public_operator_has_a_meaning_a_negation_an_engine_form_and_a_docs_line(name):
    op = O.TABLE[name]
    assert op.evaluate is not None or op.operand in (O.CONDITION, O.BOOL)  # structural, or exists
    assert op.negation in O.TABLE and O.TABLE[op.negation].negation == name
    assert op.zen is not None and op.on
    leaf = C.Leaf("f", name, SAMPLE[op.operand])
    for cond in (leaf, C.Not(leaf)):  # the rule, and its negation, reach the engine as table forms
        for conjunction in C.to_dnf(C.to_nnf(cond)):
            for item in conjunction:
                assert O.TABLE[item.op].durable is not None, item.op
                assert durable._literal(item)


def test_the_docs_operator_table_is_the_table():
    text = (ROOT / "docs" / "rules.md").read_text(encoding="utf-8")
    assert O.docs_table() in text


def test_an_unknown_operator_lists_the_table():
    with pytest.raises(C.ConditionSyntaxError) as refused:
        C.parse({"patient.age_years": {"greater": 1}})
    assert ", ".join(O.PUBLIC) in str(refused.value)


def test_evaluation_is_the_tables():
    assert C.Evaluator({"a": 3}, AS_OF, set()).holds(C.Leaf("a", "gt", 2))
    assert not C.Evaluator({"a": "x"}, AS_OF, set()).holds(C.Leaf("a", "gt", 2))  # no ordering across types
    assert not C.Evaluator({}, AS_OF, set()).holds(C.Leaf("a", "ne", 2))  # absent is never "not equal"
    assert C.Evaluator({"d": dt.date(2026, 11, 1)}, AS_OF, set()).holds(C.Leaf("d", "within_days", 30))
    assert C.Evaluator({"xs": ["a"]}, AS_OF, set()).holds(C.Leaf("xs", "contains_none", ("b",)))


def test_the_engine_limit_is_defined_once():
    assert lint.MAX_ALTERNATIVES == durable.SHARD_CONDITIONS == O.MAX_ALTERNATIVES
    found = [str(p.relative_to(ROOT)) for p in (ROOT / "service").rglob("*.py")
             if any(isinstance(n, ast.Constant) and type(n.value) is int and n.value == O.MAX_ALTERNATIVES
                    for n in ast.walk(ast.parse(p.read_text(encoding="utf-8"))))]
    assert found == ["service/policy/operators.py"]
