"""The decision contract: what every entry point returns for one screening."""
from __future__ import annotations

from marshmallow import Schema, fields, validate

from schemas.rulefile import DECISIONS, EFFECTS, PRIORITIES, SEVERITIES


class ReasonSourceSchema(Schema):
    code = fields.String(allow_none=True, metadata={"example": "SPR"})
    kind = fields.String(allow_none=True, metadata={
        "description": "label, guideline, consensus, trial, programme, or software default (this pack's choice)."})
    section = fields.String(allow_none=True, metadata={"example": "Contraindications"})
    reference = fields.String(allow_none=True)
    url = fields.String(allow_none=True)
    checked = fields.String(allow_none=True, metadata={"description": "When the source was last checked (ISO date)."})
    text = fields.String(required=True, metadata={"description": "The citation part as the rule file gives it."})


class ReasonSchema(Schema):
    rule_id = fields.String(required=True, metadata={"example": "active_psychosis"})
    title = fields.String(required=True)
    effect = fields.String(required=True, validate=validate.OneOf(EFFECTS))
    severity = fields.String(required=True, validate=validate.OneOf(SEVERITIES))
    priority = fields.String(required=True, validate=validate.OneOf(PRIORITIES))
    message = fields.String(required=True)
    evidence = fields.Dict(keys=fields.String(), required=True,
                           metadata={"description": "The intake values that made the rule fire, by field path.",
                                     "example": {"psychiatric_history.psychosis": "active"}})
    citation = fields.String(required=True)
    findings = fields.List(fields.String(), metadata={"description": "Derived findings the rule used."})
    sources = fields.List(fields.Nested(ReasonSourceSchema),
                          metadata={"description": "The citation with each source spelled out."})


class AssumptionSchema(Schema):
    path = fields.String(required=True, metadata={"example": "medical_history.hepatic_impairment"})
    means = fields.String(required=True, metadata={"description": "What the absence is taken to mean."})
    reason = fields.String(required=True)
    citation = fields.String(required=True)
    sources = fields.List(fields.Nested(ReasonSourceSchema))


class FindingSchema(Schema):
    finding = fields.String(required=True)
    rule_id = fields.String(required=True)
    title = fields.String(required=True)
    evidence = fields.Dict(keys=fields.String(), required=True)


class RulesetRefSchema(Schema):
    name = fields.String(required=True, metadata={"example": "ketamine-screening"})
    version = fields.String(required=True, metadata={"example": "2026.11.0"})
    digest = fields.String(required=True, metadata={"example": "sha256:…"})


class ComparisonSchema(Schema):
    path = fields.String(required=True)
    op = fields.String(required=True)
    operand = fields.Raw(allow_none=True)
    value = fields.Raw(allow_none=True)
    held = fields.Boolean(required=True)


class RuleExplanationSchema(Schema):
    rule_id = fields.String(required=True)
    status = fields.String(required=True, validate=validate.OneOf(("fired", "not_fired", "undecided", "not_applicable")))
    effect = fields.String(allow_none=True)
    concludes = fields.String(allow_none=True)
    missing = fields.List(fields.String())
    comparisons = fields.List(fields.Nested(ComparisonSchema))


class DecisionSchema(Schema):
    decision_id = fields.String(required=True)
    subject_id = fields.String(required=True)
    decision = fields.String(required=True, validate=validate.OneOf(DECISIONS))
    physician_review_required = fields.Boolean(required=True)
    urgent = fields.Boolean(required=True, metadata={"description": "A reason asks for urgent review."})
    reasons = fields.List(fields.Nested(ReasonSchema), required=True)
    missing = fields.List(fields.String(), required=True,
                          metadata={"description": "Intake paths a rule needed and did not get."})
    assumptions = fields.List(fields.Nested(AssumptionSchema), metadata={
        "description": "Absent answers the rule pack deliberately reads as absent (pack.yaml optional). "
                       "Each needs a clinician's confirmation: the decision requires physician review."})
    findings = fields.List(fields.Nested(FindingSchema), required=True)
    ruleset = fields.Nested(RulesetRefSchema, required=True)
    evaluated_at = fields.String(required=True, metadata={"example": "2026-11-24T10:00:00Z"})
    explanation = fields.List(fields.Nested(RuleExplanationSchema),
                              metadata={"description": "Every rule's outcome; only with ?explain=true."})
