"""The CDS Hooks 2.0 wire shapes this service speaks (cds-hooks.hl7.org, STU2), for the OpenAPI
description. service/cdshooks checks requests itself (with the spec's error paths); these
schemas describe the same shapes to integrators. FHIR resources stay opaque objects here: the
service reads only the elements a screening needs, tolerating R4 / R4B / STU3 shapes.
"""
from __future__ import annotations

from marshmallow import INCLUDE, Schema, fields, validate

HOOKS = ("order-select", "order-sign")
INDICATORS = ("info", "warning", "critical")
FEEDBACK_OUTCOMES = ("accepted", "overridden")


class OpenSchema(Schema):
    """CDS Hooks lets clients and services add fields (extensions): unknown keys are allowed."""

    class Meta:
        unknown = INCLUDE
        ordered = True


class CodingSchema(OpenSchema):
    system = fields.String()
    code = fields.String(required=True)
    display = fields.String()


class ServiceSchema(OpenSchema):
    hook = fields.String(required=True, validate=validate.OneOf(HOOKS))
    title = fields.String()
    description = fields.String(required=True)
    id = fields.String(required=True, metadata={"example": "ketamine-screening-sign"})
    prefetch = fields.Dict(keys=fields.String(), values=fields.String(),
                           metadata={"description": "Prefetch templates by key."})
    usageRequirements = fields.String()


class DiscoverySchema(OpenSchema):
    services = fields.List(fields.Nested(ServiceSchema), required=True)


class FhirAuthorizationSchema(OpenSchema):
    access_token = fields.String(required=True)
    token_type = fields.String(metadata={"example": "Bearer"})
    expires_in = fields.Integer()
    scope = fields.String()
    subject = fields.String()


class HookContextSchema(OpenSchema):
    userId = fields.String(required=True, metadata={"example": "Practitioner/123"})
    patientId = fields.String(required=True, metadata={"example": "1288992"})
    encounterId = fields.String()
    selections = fields.List(fields.String(), metadata={
        "description": "order-select only (required there): the draft orders just selected, as Type/id."})
    draftOrders = fields.Dict(required=True, metadata={"description": "A FHIR R4 Bundle of the draft orders."})


class HookRequestSchema(OpenSchema):
    hook = fields.String(required=True, validate=validate.OneOf(HOOKS))
    hookInstance = fields.String(required=True, metadata={"example": "d1577c69-dfbe-44ad-ba6d-3e05e953b2ea"})
    fhirServer = fields.String(metadata={"description": "Where to fetch what prefetch did not supply."})
    fhirAuthorization = fields.Nested(FhirAuthorizationSchema)
    context = fields.Nested(HookContextSchema, required=True)
    prefetch = fields.Dict(keys=fields.String(), allow_none=True,
                           metadata={"description": "FHIR resources or Bundles by prefetch key (null: not available)."})


class SourceSchema(OpenSchema):
    label = fields.String(required=True)
    url = fields.String()
    icon = fields.String()
    topic = fields.Nested(CodingSchema)


class LinkSchema(OpenSchema):
    label = fields.String(required=True)
    url = fields.String(required=True)
    type = fields.String(required=True, validate=validate.OneOf(("absolute", "smart")))
    appContext = fields.String()


class CardSchema(OpenSchema):
    uuid = fields.String(metadata={"description": "The decision id: feedback refers to it."})
    summary = fields.String(required=True, validate=validate.Length(max=140))
    detail = fields.String(metadata={"description": "GitHub Flavored Markdown: every reason, its evidence and citation."})
    indicator = fields.String(required=True, validate=validate.OneOf(INDICATORS))
    source = fields.Nested(SourceSchema, required=True)
    overrideReasons = fields.List(fields.Nested(CodingSchema))
    links = fields.List(fields.Nested(LinkSchema))
    extension = fields.Dict(metadata={"description": "The machine-readable decision, under its own key."})


class CardsSchema(OpenSchema):
    cards = fields.List(fields.Nested(CardSchema), required=True)


class OverrideReasonSchema(OpenSchema):
    reason = fields.Nested(CodingSchema)
    userComment = fields.String()


class AcceptedSuggestionSchema(OpenSchema):
    id = fields.String(required=True)


class FeedbackItemSchema(OpenSchema):
    card = fields.String(required=True, metadata={"description": "The card's uuid."})
    outcome = fields.String(required=True, validate=validate.OneOf(FEEDBACK_OUTCOMES))
    overrideReason = fields.Nested(OverrideReasonSchema)
    acceptedSuggestions = fields.List(fields.Nested(AcceptedSuggestionSchema), metadata={
        "description": "Required when the outcome is 'accepted'; only then."})
    outcomeTimestamp = fields.String(required=True, metadata={
        "example": "2026-11-24T10:00:00Z", "description": "In UTC (Z or +00:00), as the spec requires."})


class FeedbackRequestSchema(OpenSchema):
    feedback = fields.List(fields.Nested(FeedbackItemSchema), required=True, validate=validate.Length(min=1))


class FeedbackRecordedSchema(Schema):
    recorded = fields.Integer(required=True)
    unknown_cards = fields.List(fields.String(), metadata={
        "description": "Card uuids no decision issued to this client has (absent when there are none)."})
