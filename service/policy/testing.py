"""Rule tests: cases beside the rules they test, run through the same screen() as production.

Coverage has two sides: every rule should be triggered by a case, and left untriggered by a
case in which it applies, so that a rule that always fires is caught as surely as one that
never does. Only a passing case counts, and only a case of the rule's own: one in the test file
beside the rule's file (``30-blood-pressure_test.yaml`` for ``30-blood-pressure.yaml``). A
combined case, where many rules fire at once, tests how they add up, not each rule.
"""
from __future__ import annotations

import difflib
import json
from dataclasses import dataclass, field

from marshmallow import ValidationError

from schemas.errors import dotted, flatten_messages
from service.policy.loader import TEST_SUFFIX
from service.policy.model import TestCase
from service.ruleset import Ruleset
from service.screening import screen


@dataclass
class CaseResult:
    case: TestCase
    passed: bool
    diff: str = ""
    fired: list[str] = field(default_factory=list)
    applicable_not_fired: list[str] = field(default_factory=list)


@dataclass
class TestReport:
    results: list[CaseResult]
    rule_ids: list[str]
    triggered: set[str]
    untriggered: set[str]

    @property
    def failed(self) -> list[CaseResult]:
        return [r for r in self.results if not r.passed]

    @property
    def never_triggered(self) -> list[str]:
        return [r for r in self.rule_ids if r not in self.triggered]

    @property
    def never_untriggered(self) -> list[str]:
        return [r for r in self.rule_ids if r not in self.untriggered]

    @property
    def coverage(self) -> float:
        """Share of the 2×rules sides (triggered, left untriggered) that some case covers."""
        if not self.rule_ids:
            return 100.0
        covered = sum((r in self.triggered) + (r in self.untriggered) for r in self.rule_ids)
        return round(100.0 * covered / (2 * len(self.rule_ids)), 1)


def run_case(case: TestCase, ruleset: Ruleset) -> CaseResult:
    try:
        intake = ruleset.intake_schema.load(case.intake)
    except ValidationError as exc:
        problems = "; ".join(f"{dotted(p)}: {m}" for p, m in flatten_messages(exc.messages))
        return CaseResult(case, False, f"the case's intake is not valid: {problems}")
    as_of = case.as_of or ruleset.pack.test_as_of
    decision = screen(intake, ruleset, as_of=as_of, explain=True)
    statuses = {e["rule_id"]: e["status"] for e in decision.explanation}
    fired = [rid for rid, s in statuses.items() if s == "fired"]
    not_fired = [rid for rid, s in statuses.items() if s == "not_fired"]
    expected, actual = _compare(case.expect, decision)
    diff = ""
    if expected != actual:
        diff = "\n".join(difflib.unified_diff(
            _lines(expected), _lines(actual), "expected", "actual", lineterm="", n=20))
    return CaseResult(case, expected == actual, diff, fired, not_fired)


def _compare(expect: dict, decision) -> tuple[dict, dict]:
    """Only what the case states is compared; lists as sorted sets."""
    actual_all = {
        "decision": decision.decision,
        "reasons": sorted(decision.reason_ids),
        "physician_review_required": decision.physician_review_required,
        "findings": sorted(f.finding for f in decision.findings),
        "missing": sorted(decision.missing),
    }
    expected = {k: (sorted(v) if isinstance(v, list) else v) for k, v in expect.items()}
    return expected, {k: actual_all[k] for k in expected}


def _lines(value: dict) -> list[str]:
    return json.dumps(value, indent=2, sort_keys=True).splitlines()


def companion(test_file: str) -> str:
    """The rule file a test file stands beside: ``x/30-bp_test.yaml`` -> ``x/30-bp.yaml``."""
    return test_file[: -len(TEST_SUFFIX)] + ".yaml" if test_file.endswith(TEST_SUFFIX) else ""


def run_tests(ruleset: Ruleset, progress=None) -> TestReport:
    results = []
    triggered: set[str] = set()
    untriggered: set[str] = set()
    home = {r.id: r.location.file if r.location else "" for r in ruleset.pack.rules}
    for case in ruleset.pack.tests:
        result = run_case(case, ruleset)
        results.append(result)
        if result.passed:
            own = companion(case.location.file)
            triggered.update(r for r in result.fired if home.get(r) == own)
            untriggered.update(r for r in result.applicable_not_fired if home.get(r) == own)
        if progress:
            progress(result)
    return TestReport(results, [r.id for r in ruleset.pack.rules], triggered, untriggered)
