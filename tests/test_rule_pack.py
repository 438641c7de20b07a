"""The shipped pack: lint-clean, every case passes, full coverage on both sides, and the
durable-rules backend agrees with the reference semantics on every case."""
from __future__ import annotations

import pytest

from schemas.intake import IntakeSchema
from service.policy.lint import lint
from service.policy.loader import read_pack
from service.policy.testing import run_case, run_tests
from service.ruleset import default_rules_path, load_ruleset
from service.screening import screen

PACK = load_ruleset(default_rules_path())
REFERENCE = load_ruleset(default_rules_path(), "reference")
CASES = PACK.pack.tests


def test_pack_is_lint_clean():
    pack, problems = read_pack(default_rules_path())
    problems = problems + lint(pack)
    assert [str(p) for p in problems if p.level != "note"] == []
    # Notes list the pack's declared optional answers: the absences it reads on purpose.
    assert [p.code for p in problems if p.level == "note"] == ["optional"] * len(pack.optional)


def test_pack_has_cases_for_every_rule_both_ways():
    report = run_tests(PACK)
    assert report.never_triggered == []
    assert report.never_untriggered == []
    assert report.coverage == 100.0


@pytest.mark.parametrize("case", CASES, ids=[f"{c.location.file.split('/')[-1]}:{c.location.line}" for c in CASES])
def test_case(case):
    result = run_case(case, PACK)
    assert result.passed, f"{case.location} {case.name}\n{result.diff}"


@pytest.mark.parametrize("case", CASES, ids=[f"{c.location.file.split('/')[-1]}:{c.location.line}" for c in CASES])
def test_durable_agrees_with_reference(case):
    intake = IntakeSchema().load(case.intake)
    as_of = case.as_of or PACK.pack.test_as_of
    a = screen(intake, PACK, as_of=as_of, explain=True, decision_id="x").to_dict()
    b = screen(intake, REFERENCE, as_of=as_of, explain=True, decision_id="x").to_dict()
    assert a == b


def test_every_rule_cites_a_source_and_software_defaults_say_so():
    for rule in PACK.pack.rules:
        assert rule.citation and len(rule.citation) > 3, rule.id
