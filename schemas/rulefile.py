"""The rule-file contract: pack.yaml, rule files, fixtures and rule tests.

Structure is checked here; meaning (field paths, types against the intake, findings, templates)
is checked by the linter, which knows the intake schema.
"""
from __future__ import annotations

from marshmallow import RAISE, Schema, ValidationError, fields, validate, validates_schema

from schemas.intake import INDICATIONS, ROUTES
from schemas.patterns import FullMatch

RULE_ID = FullMatch(r"^[a-z][a-z0-9_]{0,79}$", error="must be snake_case: a-z, 0-9 and _, starting with a letter")
EFFECTS = ("exclude", "review")
SEVERITIES = ("absolute", "relative", "caution")
PRIORITIES = ("routine", "urgent")
DECISIONS = ("eligible", "ineligible", "incomplete")


class _Strict(Schema):
    class Meta:
        unknown = RAISE
        ordered = True


class AppliesToSchema(_Strict):
    routes = fields.List(fields.String(validate=validate.OneOf(ROUTES)), validate=validate.Length(min=1))
    indications = fields.List(fields.String(validate=validate.OneOf(INDICATIONS)), validate=validate.Length(min=1))


class RuleSchema(_Strict):
    id = fields.String(required=True, validate=RULE_ID)
    title = fields.String(required=True, validate=validate.Length(1, 200))
    description = fields.String(validate=validate.Length(max=4000))
    applies_to = fields.Nested(AppliesToSchema)
    requires = fields.List(fields.String(validate=validate.Length(1, 200)), load_default=list)
    # Structure checked by service.policy.conditions.parse, which knows the condition grammar.
    when = fields.Dict(required=True)
    effect = fields.String(validate=validate.OneOf(EFFECTS))
    concludes = fields.String(validate=RULE_ID)
    severity = fields.String(validate=validate.OneOf(SEVERITIES))
    priority = fields.String(validate=validate.OneOf(PRIORITIES), load_default="routine")
    message = fields.String(validate=validate.Length(1, 1000))
    citation = fields.String(validate=validate.Length(1, 1000))

    @validates_schema
    def _kind(self, data, **_):
        if "effect" in data and "concludes" in data:
            raise ValidationError("a rule either has an effect (exclude/review) or concludes a finding, not both", "concludes")
        if "effect" not in data and "concludes" not in data:
            raise ValidationError("a rule needs an effect (exclude or review) or a finding it concludes", "effect")
        if "effect" in data:
            for name in ("severity", "message"):
                if name not in data:
                    raise ValidationError(f"a rule with an effect needs a {name}", name)


class RuleFileSchema(_Strict):
    rules = fields.List(fields.Dict(), required=True)


class TestDefaultsSchema(_Strict):
    as_of = fields.AwareDateTime(format="iso")


CITATION_CODE = FullMatch(r"^[A-Z][A-Z0-9_-]{0,31}$", error="must be an upper-case code such as SPR")
SOURCE_KINDS = ("label", "guideline", "consensus", "trial", "programme")


class CitationSourceSchema(_Strict):
    """One source a rule may cite by its code: the full reference, where to read it, when it
    was last checked against the rules that cite it."""
    reference = fields.String(required=True, validate=validate.Length(1, 1000))
    kind = fields.String(required=True, validate=validate.OneOf(SOURCE_KINDS))
    url = fields.Url(required=True, schemes={"http", "https"})
    version = fields.String(validate=validate.Length(1, 300))
    checked = fields.Date(required=True)


class OptionalAnswerSchema(_Strict):
    """A field whose absence the pack deliberately lets a rule test with ``exists: false``:
    what the absence is taken to mean, why, and the source. A decision that relies on it says so."""
    path = fields.String(required=True, validate=validate.Length(1, 200))
    means = fields.String(required=True, validate=validate.Length(1, 500))
    reason = fields.String(required=True, validate=validate.Length(1, 1000))
    citation = fields.String(required=True, validate=validate.Length(1, 1000))


class PackSchema(_Strict):
    name = fields.String(required=True, validate=FullMatch(r"^[a-z][a-z0-9-]{0,79}$", error="must be lower-case letters, digits and -"))
    version = fields.String(required=True, validate=validate.Length(1, 64))
    description = fields.String(validate=validate.Length(max=4000))
    test_defaults = fields.Nested(TestDefaultsSchema, load_default=dict)
    citations = fields.Dict(keys=fields.String(validate=CITATION_CODE), values=fields.Nested(CitationSourceSchema),
                            load_default=dict)
    optional = fields.List(fields.Nested(OptionalAnswerSchema), load_default=list)
    # The pack's field catalog, a file in the pack directory (default: fields.yaml if present).
    fields = fields.String(validate=FullMatch(r"^[A-Za-z0-9][A-Za-z0-9._-]*\.yaml$",
                                          error="must be the name of a .yaml file in the pack directory"))


class FixturesFileSchema(_Strict):
    fixtures = fields.Dict(keys=fields.String(), values=fields.Dict(), required=True)


class ExpectSchema(_Strict):
    decision = fields.String(required=True, validate=validate.OneOf(DECISIONS))
    reasons = fields.List(fields.String())
    physician_review_required = fields.Boolean()
    findings = fields.List(fields.String())
    missing = fields.List(fields.String())


class TestCaseSchema(_Strict):
    name = fields.String(required=True, validate=validate.Length(1, 300))
    base = fields.String()
    as_of = fields.AwareDateTime(format="iso")
    intake = fields.Dict(load_default=dict)
    remove = fields.List(fields.String(), load_default=list)
    expect = fields.Nested(ExpectSchema, required=True)


class TestFileSchema(_Strict):
    cases = fields.List(fields.Dict(), required=True)
