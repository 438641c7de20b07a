"""A screening decision and the values it carries."""
from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field
from typing import Any

ELIGIBLE, INELIGIBLE, INCOMPLETE = "eligible", "ineligible", "incomplete"


@dataclass(frozen=True)
class Reason:
    rule_id: str
    title: str
    effect: str
    severity: str
    priority: str
    message: str
    evidence: dict[str, Any]
    citation: str
    findings: list[str] = field(default_factory=list)
    # The citation with each source spelled out (service.policy.citations.expand).
    sources: list[dict] = field(default_factory=list)


@dataclass(frozen=True)
class Assumption:
    """An absent answer the pack deliberately lets a rule read as absent (pack.yaml
    ``optional``): stated on the decision so that a clinician confirms it."""
    path: str
    means: str
    reason: str
    citation: str
    sources: list[dict] = field(default_factory=list)


@dataclass(frozen=True)
class FindingResult:
    finding: str
    rule_id: str
    title: str
    evidence: dict[str, Any]


@dataclass
class Decision:
    decision_id: str
    subject_id: str
    decision: str
    physician_review_required: bool
    urgent: bool
    reasons: list[Reason]
    missing: list[str]
    findings: list[FindingResult]
    ruleset: dict[str, str]
    evaluated_at: dt.datetime
    explanation: list[dict] | None = None
    assumptions: list[Assumption] = field(default_factory=list)

    def to_dict(self) -> dict:
        # By hand, not dataclasses.asdict: that deep-copies every value and was the largest
        # single cost of a screening.
        out = {
            "decision_id": self.decision_id,
            "subject_id": self.subject_id,
            "decision": self.decision,
            "physician_review_required": self.physician_review_required,
            "urgent": self.urgent,
            "reasons": [
                {"rule_id": r.rule_id, "title": r.title, "effect": r.effect, "severity": r.severity,
                 "priority": r.priority, "message": r.message, "evidence": r.evidence, "citation": r.citation,
                 "findings": list(r.findings), "sources": [dict(x) for x in r.sources]}
                for r in self.reasons
            ],
            "missing": list(self.missing),
            "assumptions": [{"path": a.path, "means": a.means, "reason": a.reason, "citation": a.citation,
                             "sources": [dict(x) for x in a.sources]} for a in self.assumptions],
            "findings": [{"finding": f.finding, "rule_id": f.rule_id, "title": f.title, "evidence": f.evidence}
                         for f in self.findings],
            "ruleset": dict(self.ruleset),
            "evaluated_at": _iso(self.evaluated_at),
        }
        if self.explanation is not None:
            out["explanation"] = self.explanation
        return out

    @property
    def reason_ids(self) -> list[str]:
        return [r.rule_id for r in self.reasons]


def _iso(value: dt.datetime) -> str:
    return value.astimezone(dt.timezone.utc).isoformat().replace("+00:00", "Z")


def _json_default(value: Any) -> str:
    """What ``json.dumps`` cannot encode itself, as ``jsonable`` spells it (dates as ISO text)."""
    if isinstance(value, dt.datetime):
        return _iso(value)
    if isinstance(value, dt.date):
        return value.isoformat()
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def to_json(value: Any, *, compact: bool = False) -> str:
    """``json.dumps(jsonable(value))`` in one pass of the C encoder: the same text, without
    first copying the whole structure in Python (that copy was a tenth of a screening request)."""
    if compact:
        return json.dumps(value, separators=(",", ":"), default=_json_default)
    return json.dumps(value, default=_json_default)


def jsonable(value: Any) -> Any:
    """Intake values as JSON shows them (dates as ISO text)."""
    if isinstance(value, dt.datetime):
        return _iso(value)
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    return value
