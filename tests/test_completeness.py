"""Missing data never yields eligible: the completeness model, checked against the engine itself.

For every route and indication, from clean complete intakes (the pack's fixtures, and the same
with a substance-use entry and several medications so that list items are exercised), each
answer that an applicable rule reads is removed (and, separately, sent as null). The decision
on the shortened intake is then compared with the decisions on every way of answering the
question again (each value of the field's type that the pack's rules tell apart):

- if some answer would change the decision, the shortened intake must not be decided: it is
  ``incomplete`` naming the question (or ``ineligible`` on an exclusion that every answer keeps);
- if no answer would change it, the shortened intake gets that same decision: the question was
  not needed (a ketamine-naive patient is not asked for adverse events on ketamine).

So "missing data never yields a clean eligible" holds by enumeration, not by a list of required
fields written by hand, and the engine (durable-rules) is the judge of every completed intake.
"""
from __future__ import annotations

import copy
import datetime as dt
import itertools

import pytest
from hypothesis import given, settings

from schemas.intake import INDICATIONS, ROUTES, FieldInfo, catalogue
from service.decision import ELIGIBLE, INCOMPLETE, INELIGIBLE, Decision
from service.engine.base import partition_key
from service.policy import conditions as C
from service.policy.loader import load_pack
from service.ruleset import default_rules_path
from service.screening import screen
from tests.conftest import AS_OF, validated
from tests.strategies import intakes

FIELDS = catalogue()
PACK = load_pack(default_rules_path())
# Item fields the contract requires (an item without them is refused, not incomplete).
REQUIRED_ITEM_FIELDS = {"substance", "name", "class"}
ROUTE_FIXTURE = {"iv_ketamine": "clean_iv", "esketamine_nasal": "clean_esketamine"}


def decide(ruleset, raw: dict) -> Decision:
    return screen(validated(copy.deepcopy(raw)), ruleset, as_of=AS_OF, decision_id="x")


def key(d: Decision) -> tuple:
    return d.decision, tuple(sorted(d.reason_ids)), d.physician_review_required


def _thresholds(path: str) -> list[int]:
    out: set[int] = set()
    for rule in PACK.rules:
        for node in C.walk(rule.when):
            if isinstance(node, C.Leaf) and isinstance(node.operand, int) and not isinstance(node.operand, bool):
                if node.path == path or path.endswith("." + node.path):
                    out.update(node.operand + d for d in (-1, 0, 1))
    return sorted(out)


def values(info: FieldInfo, path: str) -> list:
    """Wire values that the pack's rules can tell apart, for one field."""
    days = (0, 14, 30, 31, 45, 90, 91, 200, 365, 367, 1500)
    if info.kind == "bool":
        return [True, False]
    if info.choices and info.kind != "list":
        return list(info.choices)
    if info.kind == "int":
        found = [v for v in _thresholds(path) if v > 0] or [40]
        return found
    if info.kind == "date":
        return [(AS_OF.date() - dt.timedelta(days=n)).isoformat() for n in days]
    if info.kind == "datetime":
        return [(AS_OF - dt.timedelta(days=n, hours=1)).isoformat() for n in days]
    if info.kind == "list" and not info.items:
        return [[]] + [[c] for c in info.choices or ()]
    if path == "substance_use":
        return [[], [{"substance": "alcohol", "disorder": True, "status": "active"}],
                [{"substance": "ketamine", "disorder": False}],
                [{"substance": "cannabis", "disorder": False}]]
    if path == "medications":
        return [[], [{"name": "x", "class": c} for c in ("ssri",)], [{"name": "x", "class": "theophylline"}],
                [{"name": "x", "class": "opioid"}, {"name": "y", "class": "benzodiazepine"}],
                [{"name": "x", "class": "maoi"}]]
    if info.kind == "str":
        return ["x"]
    raise AssertionError(f"no values for {path} ({info.kind})")


def bases() -> list[tuple[str, dict]]:
    out = []
    for route, indication in itertools.product(ROUTES, INDICATIONS):
        clean = copy.deepcopy(PACK.fixtures[ROUTE_FIXTURE[route]])
        clean["treatment"]["indication"] = indication
        out.append((f"{route}/{indication}", clean))
        items = copy.deepcopy(clean)
        items["substance_use"] = [{"substance": "alcohol", "disorder": True, "status": "in_remission",
                                   "last_use": "2019-05-01"}]
        items["medications"] = [{"name": "sertraline", "class": "ssri"}, {"name": "zolpidem", "class": "sedative"}]
        out.append((f"{route}/{indication}+items", items))
    return out


def answers_read(intake: dict) -> list[tuple[str, FieldInfo, tuple]]:
    """(shown path, field info, where) for every present answer an applicable rule reads;
    ``where`` locates it: ("vitals", "systolic_bp") or ("substance_use", 0, "status")."""
    route, indication = partition_key(intake)
    top: set[str] = set()
    items: dict[str, set[str]] = {}
    for rule in PACK.rules:
        if rule.applies(route, indication):
            paths, inner = C.reads(rule.when)
            top |= paths
            for array, names in inner.items():
                items.setdefault(array, set()).update(names)
    out = []
    for path in sorted(top):
        if path.startswith("treatment.route") or path == "treatment.indication":
            continue  # the question being screened, not an answer
        if C.lookup(intake, path) is not C.MISSING:
            out.append((path, FIELDS[path], tuple(path.split("."))))
    for array, names in sorted(items.items()):
        listed = C.lookup(intake, array)
        for i, item in enumerate(listed if isinstance(listed, list) else []):
            for name in sorted(names - REQUIRED_ITEM_FIELDS):
                if item.get(name) is not None:
                    out.append((f"{array}[{i}].{name}", FIELDS[array].items[name], (array, i, name)))
    return out


def _set(intake: dict, where: tuple, value) -> None:
    holder = intake
    for part in where[:-1]:
        holder = holder[part]
    if value is _REMOVE:
        holder.pop(where[-1], None)
    else:
        holder[where[-1]] = value


_REMOVE = object()
CASES = [(name, base, shown, info, where) for name, base in bases() for shown, info, where in answers_read(base)]


@pytest.mark.parametrize("name,base,shown,info,where", CASES,
                         ids=[f"{c[0]}:{c[2]}" for c in CASES])
def test_a_removed_answer_is_asked_unless_no_answer_could_change_the_decision(ruleset, name, base, shown, info, where):
    completions = {}
    for value in values(info, shown):
        raw = copy.deepcopy(base)
        _set(raw, where, value)
        try:
            completions[repr(value)] = key(decide(ruleset, raw))
        except Exception as exc:  # a value the contract refuses in this intake (e.g. diastolic >= systolic)
            if type(exc).__name__ != "ValidationError":
                raise
    outcomes = set(completions.values())
    assert outcomes, f"no valid value for {shown}"
    for how in (_REMOVE, None):
        raw = copy.deepcopy(base)
        _set(raw, where, how)
        after = decide(ruleset, raw)
        label = "removed" if how is _REMOVE else "null"
        if len(outcomes) > 1:
            assert after.decision in (INCOMPLETE, INELIGIBLE), (label, shown, key(after), completions)
            if after.decision == INCOMPLETE:
                assert shown in after.missing, (label, shown, after.missing)
            else:
                assert all(o[0] == INELIGIBLE for o in outcomes), (label, shown, key(after), completions)
        else:
            # Not needed: every answer gives the same decision, and so does no answer. (Kleene
            # logic may be cautious where an answer cannot matter; the shipped pack never is.)
            assert key(after) == next(iter(outcomes)), (label, shown, key(after), completions)
        assert not (after.decision == ELIGIBLE and not after.physician_review_required and len(outcomes) > 1)


NOT_NEEDED_IN_CLEAN_INTAKES = {
    # Each is read by a rule but answered by another question of the same clean intake.
    "medical_history.severe_hepatic_impairment",  # the Child-Pugh grade answers it
    "patient.sex_at_birth",                       # pregnant and breastfeeding are answered "no"
    "prior_ketamine.adverse_events",              # the patient was never treated with ketamine
    "prior_ketamine.previously_treated",          # the list of adverse events is given (empty)
    "treatment.setting",                          # REMS enrolment and transport are both in place
}


def test_which_answers_a_clean_intake_may_omit_is_a_short_stated_list(ruleset):
    """The answers whose removal from a clean intake keeps it a clean eligible: each one is
    answered by another question, and the list cannot grow unnoticed."""
    omissible = set()
    for name, base in bases():
        if "+items" in name or key(decide(ruleset, base)) != (ELIGIBLE, (), False):
            continue
        for shown, _info, where in answers_read(base):
            raw = copy.deepcopy(base)
            _set(raw, where, _REMOVE)
            if key(decide(ruleset, raw)) == (ELIGIBLE, (), False):
                omissible.add(shown)
    assert omissible == NOT_NEEDED_IN_CLEAN_INTAKES


@settings(max_examples=200, deadline=None)
@given(raw=intakes())
def test_the_plan_finds_exactly_the_absent_answers_a_rule_reads(ruleset, raw):
    """The one walk of the intake that screening does (service/policy/completeness.py) agrees
    with a lookup of every path."""
    plan = ruleset.completeness
    paths, items = plan.absent(raw)
    assert paths == {p for p in plan.by_path if C.lookup(raw, p) is C.MISSING}
    want = {(array, name) for array, names in plan.item_fields.items()
            for item in (C.lookup(raw, array) if isinstance(C.lookup(raw, array), list) else [])
            for name in names if C.lookup(item, name) is C.MISSING}
    assert items == want
