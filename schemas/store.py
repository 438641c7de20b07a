"""The decision-log contracts: a recorded decision with its reviews, pages of them, sign-offs."""
from __future__ import annotations

import datetime as dt

from marshmallow import Schema, ValidationError, fields, validate

from schemas.decision import DecisionSchema
from schemas.rulefile import DECISIONS
from service.signoff import ACTION_NAMES, LEGACY, MAX_ANSWERS, MAX_NOTE_CHARS, REVIEW_STATUSES

# Every outcome a review record can hold: today's actions, and approve/decline of old records.
REVIEW_OUTCOMES = tuple(dict.fromkeys(ACTION_NAMES + tuple(LEGACY)))
MAX_PAGE = 200


class ReviewSchema(Schema):
    review_id = fields.String(required=True)
    decision_id = fields.String(required=True)
    created_at = fields.AwareDateTime(required=True, metadata={"example": "2026-11-24T10:05:00Z"})
    reviewer = fields.String(required=True, metadata={
        "description": "Who signed off: the signed-in physician, or the physician the API key was issued to.",
        "example": "dr.ada"})
    credential = fields.String(required=True, allow_none=True, metadata={
        "description": "How the reviewer was authenticated: session (the clinician pages) or api_key; "
                       "null on records made before credentials were recorded.", "example": "api_key"})
    client = fields.String(required=True, metadata={
        "description": "The credential's id: the API key id, or the session's short id."})
    outcome = fields.String(required=True, validate=validate.OneOf(REVIEW_OUTCOMES), metadata={
        "description": "The action: confirm/override (ineligible), rescreen/decline (incomplete), "
                       "approve/decline (eligible). Older records hold approve or decline on any decision."})
    meaning = fields.String(required=True, metadata={"description": "What the sign-off means, as stated when it was made."})
    treatment = fields.String(required=True, validate=validate.OneOf(("may_proceed", "must_not_proceed", "rescreened")))
    overridden_rules = fields.List(fields.String(), required=True, metadata={"description": "Rules an override sets aside."})
    rescreen_decision_id = fields.String(required=True, allow_none=True, metadata={
        "description": "For a re-screen: the new decision made with the missing answers added."})
    note = fields.String(required=True)


def _no_nul(value: str) -> None:
    # Databases store text without NUL characters; refuse them here rather than fail later.
    if "\x00" in value:
        raise ValidationError("must not contain NUL characters")


class ReviewRequestSchema(Schema):
    """A physician's sign-off. The screening decision never changes; this is a new record.
    The reviewer is not part of the request: it is the physician the API key was issued to.
    Which actions fit which decision, and when a note is required: service.signoff."""
    action = fields.String(required=True, validate=validate.OneOf(ACTION_NAMES), metadata={
        "description": "ineligible: confirm | override; incomplete: rescreen | decline; "
                       "eligible (with review): approve | decline."})
    note = fields.String(load_default="", validate=[validate.Length(max=MAX_NOTE_CHARS), _no_nul], metadata={
        "description": "Required to override, and to decline."})
    overridden_rules = fields.List(fields.String(validate=[validate.Length(min=1, max=200), _no_nul]),
                                   load_default=list, validate=validate.Length(max=200), metadata={
        "description": "override only: every rule id of the reasons that exclude treatment."})
    answers = fields.Dict(keys=fields.String(validate=validate.Length(min=1, max=200)), load_default=dict,
                          validate=validate.Length(max=MAX_ANSWERS), metadata={
        "description": "rescreen only: values for paths named in the decision's `missing`, "
                       "e.g. {\"vitals.systolic_bp\": 128}.",
        "example": {"vitals.systolic_bp": 128, "vitals.diastolic_bp": 82}})


class StoredDecisionSchema(DecisionSchema):
    """The decision exactly as it was returned, and what the log adds beside it."""
    recorded_at = fields.AwareDateTime(required=True, metadata={"description": "When the log committed it."})
    client = fields.String(required=True, metadata={"description": "Who asked: an API key id, cli, batch, …"})
    source = fields.String(required=True, metadata={"example": "http"})
    review_status = fields.String(required=True, validate=validate.OneOf(REVIEW_STATUSES),
                                  metadata={"description": "The latest review counts."})
    reviews = fields.List(fields.Nested(ReviewSchema), required=True, metadata={"description": "Oldest first."})
    intake = fields.Dict(metadata={"description": "The intake as validated (in GET /v1/decisions/{id} only)."})


class DecisionSummarySchema(StoredDecisionSchema):
    """A recorded decision in a list: everything but the intake."""

    class Meta:
        exclude = ("intake",)


class DecisionPageSchema(Schema):
    items = fields.List(fields.Nested(DecisionSummarySchema), required=True)
    next_cursor = fields.String(allow_none=True, required=True,
                                metadata={"description": "Pass as ?cursor= for the next page; null on the last."})


class _PageQuerySchema(Schema):
    cursor = fields.String(metadata={"description": "From the previous page's next_cursor."})
    limit = fields.Integer(load_default=50, validate=validate.Range(min=1, max=MAX_PAGE))


class DecisionQuerySchema(_PageQuerySchema):
    subject_id = fields.String(validate=[validate.Length(max=200), _no_nul])
    decision = fields.String(validate=validate.OneOf(DECISIONS))
    review_status = fields.String(validate=validate.OneOf(REVIEW_STATUSES))
    ruleset_digest = fields.String(validate=[validate.Length(max=200), _no_nul], metadata={"example": "sha256:…"})
    since = fields.AwareDateTime(default_timezone=dt.timezone.utc,
                                 metadata={"description": "Recorded at or after (ISO 8601; UTC if no zone)."})
    until = fields.AwareDateTime(default_timezone=dt.timezone.utc,
                                 metadata={"description": "Recorded before (ISO 8601; UTC if no zone)."})


class ReviewQueueQuerySchema(_PageQuerySchema):
    status = fields.String(load_default="pending",
                           validate=validate.OneOf(tuple(s for s in REVIEW_STATUSES if s != "not_required")),
                           metadata={"description": "pending: urgent first, then oldest first. "
                                                    "Any other status: newest first."})
