"""screen(intake) -> Decision: the one path to a decision, for HTTP, CLI, batch and CDS Hooks.

The engine says which rules fired; this module turns that into a decision with its reasons,
evidence, missing data and, on request, an explanation of every rule.
"""
from __future__ import annotations

import datetime as dt
import re
import uuid
from typing import Any

from service.decision import (
    ELIGIBLE,
    INCOMPLETE,
    INELIGIBLE,
    Assumption,
    Decision,
    FindingResult,
    Reason,
    jsonable,
)
from service.engine.base import partition_key
from service.policy import conditions as C
from service.policy.model import OptionalAnswer, Rule
from service.ruleset import Ruleset

_PLACEHOLDER = re.compile(r"\{([a-z0-9_.]+)\}")
_ITEM = re.compile(r"(?P<array>[a-z0-9_]+)\[(?P<index>\d+)\]\.(?P<field>.+)")
_EFFECT_ORDER = {"exclude": 0, "review": 1}


def screen(intake: dict, ruleset: Ruleset, *, as_of: dt.datetime | None = None,
           explain: bool = False, decision_id: str | None = None) -> Decision:
    """Decide on one intake validated by ``schemas.intake.IntakeSchema``.

    ``as_of`` is "today" for date rules and the decision's time (defaults to now, UTC).

    The engine says which rules fired. A rule that reads something this intake lacks is then
    evaluated in three values (service.policy.completeness): if its answer hinges on an absent
    value it is undecided, the decision is ``incomplete`` (unless something excludes), and the
    absent values are the questions to ask. Nothing unknown is read as an answer.
    """
    as_of = as_of or dt.datetime.now(dt.timezone.utc)
    pack = ruleset.pack
    plan = ruleset.completeness
    match = ruleset.compiled.match(intake, as_of)
    fired = set(match.fired)
    # Findings that hold; a finding the engine concluded through an undecided negation leaves.
    findings = set(match.findings)
    route, indication = partition_key(intake)
    evaluator = C.Evaluator(intake, as_of, findings)
    absent_paths, absent_items = plan.absent(intake)
    suspects = plan.suspects(absent_paths, absent_items) if (absent_paths or absent_items) else set()

    # A finding that could not be decided: the absent paths it hinges on.
    unknown_findings: dict[str, list[str]] = {}
    finding_results: dict[str, FindingResult] = {}
    order = pack.rule_order
    # missing path -> where it was first needed in pack order, so the list reads like the pack
    missing_at: dict[str, tuple[int, int]] = {}
    assumptions: dict[str, OptionalAnswer] = {}
    reasons: list[Reason] = []
    explanation: list[dict] | None = [] if explain else None

    explained: dict[str, dict] = {}
    if explain:
        visited = ruleset.evaluation_order
    else:
        # Only the rules that can add something: a rule that did not fire, reads nothing this
        # intake lacks, requires nothing it lacks and uses no finding that may be undecided is
        # "not fired" and says nothing, so a screening costs what fires and what is missing,
        # not the size of the pack (tests/test_screening_visits.py holds this to ``explain``).
        rank = ruleset.evaluation_rank
        seeds = suspects | plan.requiring_absent(intake)
        if absent_paths:
            # Rules reading only what is absent are settled by group (service.policy.completeness).
            settled, bulk = plan.settle_absent(route, indication, absent_paths, fired)
            seeds -= settled
            missing_at.update(bulk.missing)
            unknown_findings.update(bulk.findings)
            findings.difference_update(bulk.findings)
            seeds |= plan.users_of(bulk.findings)
        ids = fired | plan.with_dependents(seeds)
        visited = [pack.rules[order[i]] for i in sorted(ids, key=rank.__getitem__)]
    # Finding rules first, so that a rule using a finding sees its evidence or its missing data.
    for rule in visited:
        applicable = rule.applies(route, indication)
        if not applicable:
            if explain:
                explained[rule.id] = {"rule_id": rule.id, "status": "not_applicable"}
            continue
        absent: list[str] = []
        is_fired = rule.id in fired
        uses = pack.findings_used[rule.id]
        if rule.id in suspects or (unknown_findings and any(f in unknown_findings for f in uses)):
            for o in plan.assumed(rule.id, absent_paths):
                assumptions.setdefault(o.path, o)
            k = plan.when_all_absent(rule.id, absent_paths, unknown_findings) or \
                C.KleeneEvaluator(intake, as_of, findings, set(unknown_findings)).evaluate(plan.nnf[rule.id])
            if k.value == C.UNKNOWN:
                is_fired = False
                absent = list(k.missing)
                for name in k.findings:
                    absent.extend(p for p in unknown_findings.get(name, []) if p not in absent)
        if not is_fired and not absent and rule.requires:
            absent = [p for p in rule.requires if C.lookup(intake, p) is C.MISSING]
        if is_fired:
            evidence, used = _evidence(rule, evaluator, finding_results)
            if rule.concludes:
                finding_results[rule.concludes] = FindingResult(rule.concludes, rule.id, rule.title, evidence)
            else:
                reasons.append(Reason(
                    rule.id, rule.title, rule.effect, rule.severity, rule.priority,
                    render(rule.message or rule.title, intake, evidence), evidence, rule.citation or "", used,
                    ruleset.sources[rule.id],
                ))
            status = "fired"
        elif absent:
            if rule.concludes:
                unknown_findings[rule.concludes] = absent
                findings.discard(rule.concludes)
            else:  # an undecided finding reaches the decision through the rules using it
                for i, path in enumerate(absent):
                    missing_at[path] = min(missing_at.get(path, (order[rule.id], i)), (order[rule.id], i))
            status = "undecided"
        else:
            status = "not_fired"
        if explain:
            explained[rule.id] = _explain(rule, status, absent, evaluator)

    reasons.sort(key=lambda r: (_EFFECT_ORDER[r.effect], order[r.rule_id]))  # exclusions first, then pack order
    missing = sorted(missing_at, key=missing_at.__getitem__)
    if explain:
        explanation = [explained[r.id] for r in pack.rules]
    if any(r.effect == "exclude" for r in reasons):
        outcome = INELIGIBLE
    elif missing:
        outcome = INCOMPLETE
    else:
        outcome = ELIGIBLE
    stated = [Assumption(o.path, o.means, o.reason, o.citation, ruleset.optional_sources[o.path])
              for o in pack.optional if o.path in assumptions]
    review = outcome != ELIGIBLE or bool(stated) or any(r.effect == "review" for r in reasons)
    # A finding is shown where it explains a reason: a finding that only made a rule not fire
    # (the patient could be pregnant, the pregnancy test is negative) says nothing about her.
    shown = {f for r in reasons for f in r.findings}
    return Decision(
        decision_id=decision_id or str(uuid.uuid4()),
        subject_id=intake.get("subject_id", ""),
        decision=outcome,
        physician_review_required=review,
        urgent=any(r.priority == "urgent" for r in reasons),
        reasons=reasons,
        missing=missing,
        findings=[finding_results[f] for f in match.findings if f in finding_results and f in shown],
        ruleset=ruleset.summary,
        evaluated_at=as_of,
        explanation=explanation,
        assumptions=stated,
    )


def _evidence(rule: Rule, evaluator: C.Evaluator, known: dict[str, FindingResult]) -> tuple[dict, list[str]]:
    witness = evaluator.witness(rule.when) or []
    evidence: dict[str, Any] = {}
    used: list[str] = []
    for item in witness:
        if isinstance(item, str):  # a finding: its own evidence explains it
            used.append(item)
            if item in known:
                evidence.update(known[item].evidence)
        else:
            evidence[item.path] = jsonable(item.value)
    return evidence, used


def render(template: str, intake: dict, evidence: dict) -> str:
    """Fill ``{dotted.path}`` placeholders. An array item field (``substance_use.substance``)
    shows the values of the items the rule matched; a list of plain values shows its values
    ("none" when empty); an absent value reads "not recorded". Nothing else is interpreted.
    Lint refuses a placeholder that could not render (a group, a list of records, a value that
    may be absent when the rule fires)."""
    def value_for(match: re.Match) -> str:
        path = match.group(1)
        value = C.lookup(intake, path)
        if isinstance(value, list) and all(not isinstance(v, (dict, list)) for v in value):
            return ", ".join(_text(v) for v in value) if value else "none"
        if value is not C.MISSING and not isinstance(value, (dict, list)):
            return _text(value)
        array, _, field = path.partition(".")
        items = sorted({int(m.group("index")) for k in evidence if (m := _ITEM.fullmatch(k)) and m.group("array") == array})
        values = C.lookup(intake, array)
        if field and isinstance(values, list):
            picked = [values[i].get(field) for i in items if i < len(values)] or [v.get(field) for v in values]
            shown = [_text(v) for v in picked if v is not None]
            if shown:
                return ", ".join(dict.fromkeys(shown))
        return "not recorded"
    return _PLACEHOLDER.sub(value_for, template)


def _text(value: Any) -> str:
    value = jsonable(value)
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value).replace("_", " ")


def _explain(rule: Rule, status: str, absent: list[str], evaluator: C.Evaluator) -> dict:
    trace: list[C.LeafResult] = []
    evaluator.holds(rule.when, trace=trace)
    return {
        "rule_id": rule.id,
        "status": status,
        "effect": rule.effect,
        "concludes": rule.concludes,
        "missing": absent,
        "comparisons": [
            {"path": t.path, "op": t.op, "operand": jsonable(list(t.operand) if isinstance(t.operand, tuple) else t.operand),
             "value": jsonable(t.value), "held": t.held}
            for t in trace
        ],
    }
