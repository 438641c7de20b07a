"""What the operational endpoints answer: liveness, readiness and the ruleset in force.

Documentation contracts: the endpoints build these bodies themselves; the schemas put them in
the OpenAPI description, and the tests check real responses against it.
"""
from __future__ import annotations

from marshmallow import Schema, fields, validate

from schemas.decision import RulesetRefSchema
from schemas.rulefile import EFFECTS, PRIORITIES, SEVERITIES


class HealthSchema(Schema):
    status = fields.String(required=True, validate=validate.OneOf(("ok",)))


class LoadedRulesetSchema(RulesetRefSchema):
    loaded_at = fields.String(required=True, metadata={"example": "2026-11-24T10:00:00+00:00"})


class CheckSchema(Schema):
    ok = fields.Boolean(required=True)
    detail = fields.String()
    latency_ms = fields.Float()
    ruleset = fields.Nested(LoadedRulesetSchema)


class ChecksSchema(Schema):
    ruleset = fields.Nested(CheckSchema, required=True)
    store = fields.Nested(CheckSchema, required=True)


class ReadinessSchema(Schema):
    status = fields.String(required=True, validate=validate.OneOf(("ready", "not_ready")))
    checks = fields.Nested(ChecksSchema, required=True)
    ruleset = fields.Nested(LoadedRulesetSchema, required=True, allow_none=True,
                            metadata={"description": "The version this instance serves."})
    last_reload_error = fields.String(required=True, allow_none=True,
                                      metadata={"description": "Why the last reload was refused, if it was."})


class RuleSummarySchema(Schema):
    rule_id = fields.String(required=True)
    title = fields.String(required=True)
    effect = fields.String(required=True, allow_none=True, validate=validate.OneOf(EFFECTS))
    concludes = fields.String(required=True, allow_none=True,
                              metadata={"description": "The finding a finding rule concludes."})
    severity = fields.String(required=True, allow_none=True, validate=validate.OneOf(SEVERITIES))
    priority = fields.String(required=True, allow_none=True, validate=validate.OneOf(PRIORITIES))
    routes = fields.List(fields.String(), required=True)
    indications = fields.List(fields.String(), required=True)
    requires = fields.List(fields.String(), required=True, metadata={"description": "Intake paths the rule needs."})
    citation = fields.String(required=True, allow_none=True)
    source = fields.String(required=True, metadata={"example": "ketamine-screening/10-hypersensitivity.yaml:11:5"})


class RulesetDescriptionSchema(RulesetRefSchema):
    description = fields.String(required=True, allow_none=True)
    loaded_at = fields.String(required=True, metadata={"example": "2026-11-24T10:00:00Z"})
    engine = fields.String(required=True, metadata={"example": "durable"})
    rules = fields.List(fields.Nested(RuleSummarySchema), required=True)
