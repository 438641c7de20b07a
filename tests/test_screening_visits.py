"""screen() looks only at the rules that can add something, and that changes nothing.

A screening visits the rules that fired, the rules that read something the intake lacks (or
require it), and the rules using a finding that may be undecided; every other rule is "not
fired" and says nothing. ``explain=True`` visits every rule, so it is the reference: without the
explanation, both must give the same decision, reasons, findings, missing data and assumptions.
The visit count is what keeps a screening's cost following what fires and what is missing rather
than the size of the pack (measured in ``python -m bench``; here only counted, never timed).
"""
from __future__ import annotations

import copy
import functools

import pytest
from hypothesis import HealthCheck, given, settings

from bench.packs import AS_OF as PACK_AS_OF
from bench.packs import FIVE, intakes, write_pack
from schemas.intake import IntakeSchema
from service.policy.model import Rule
from service.ruleset import load_ruleset
from service.screening import screen
from tests.conftest import AS_OF
from tests.strategies import intakes as intake_strategy


def _without_explanation(ruleset, intake, as_of) -> tuple[dict, dict]:
    quick = screen(intake, ruleset, as_of=as_of, decision_id="x").to_dict()
    full = screen(intake, ruleset, as_of=as_of, decision_id="x", explain=True).to_dict()
    full.pop("explanation", None)
    quick.pop("explanation", None)
    return quick, full


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(raw=intake_strategy())
def test_the_shipped_pack_decides_the_same_without_explain(ruleset, raw):
    intake = ruleset.intake_schema.load(raw)
    quick, full = _without_explanation(ruleset, intake, AS_OF)
    assert quick == full


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    return load_ruleset(write_pack(tmp_path_factory.mktemp("visits") / "pack", 1000), "durable")


def _variants() -> list[dict]:
    """The growth intakes, the complete five-firing one, and each with one part taken away."""
    out = []
    for raw in [*intakes(), FIVE]:
        out.append(raw)
        for key in ("patient", "vitals", "medications", "substance_use", "psychiatric_history", "medical_history"):
            if key in raw:
                shorter = copy.deepcopy(raw)
                del shorter[key]
                out.append(shorter)
    return out


@pytest.mark.parametrize("raw", _variants(), ids=lambda r: f"{r['subject_id']}-{'-'.join(sorted(r))[:40]}")
def test_a_generated_pack_decides_the_same_without_explain(generated, raw):
    intake = IntakeSchema().load(raw)
    quick, full = _without_explanation(generated, intake, PACK_AS_OF)
    assert quick == full


def test_a_complete_intake_visits_the_rules_that_fire_not_the_pack(generated, monkeypatch):
    """1,000 rules, of which hundreds have ``requires`` or use a finding: a complete intake that
    fires five of them looks at those five (before, every rule with ``requires`` or a finding)."""
    visits = []
    real = Rule.applies

    @functools.wraps(real)
    def counted(self, route, indication):
        visits.append(self.id)
        return real(self, route, indication)

    monkeypatch.setattr(Rule, "applies", counted)
    decision = screen(IntakeSchema().load(FIVE), generated, as_of=PACK_AS_OF)
    assert len(decision.reasons) == 5 and decision.missing == []
    assert set(visits) == {r.rule_id for r in decision.reasons}


def test_an_answer_worked_out_once_for_absent_reads_is_the_answer_on_the_intake(generated, ruleset):
    """``when_all_absent`` stands in for the three-valued evaluation of a rule whose every read is
    absent: on every such rule and intake here, it must be exactly that evaluation."""
    from service.policy import conditions as C

    checked = 0
    cases = [(generated, IntakeSchema().load(raw), PACK_AS_OF) for raw in _variants()]
    cases += [(ruleset, ruleset.intake_schema.load({k: v for k, v in case.intake.items() if k not in drop}),
               case.as_of or ruleset.pack.test_as_of)
              for case in ruleset.pack.tests
              for drop in ((), ("vitals",), ("patient", "medications"), ("psychiatric_history", "substance_use"))]
    for rs, intake, as_of in cases:
        plan = rs.completeness
        absent, _ = plan.absent(intake)
        for rule in rs.pack.rules:
            uses = set(rs.pack.findings_used[rule.id])
            memo = plan.when_all_absent(rule.id, absent, uses)
            if memo is None:
                continue
            full = C.KleeneEvaluator(intake, as_of, set(), uses).evaluate(plan.nnf[rule.id])
            assert (memo.value, memo.missing, memo.findings) == (full.value, full.missing, full.findings), rule.id
            checked += 1
    assert checked > 1000
