"""The decision-log contracts: a recorded decision with its reviews, pages of them, sign-offs."""
from __future__ import annotations

import datetime as dt

from marshmallow import Schema, ValidationError, fields, validate

from schemas.decision import DecisionSchema
from schemas.rulefile import DECISIONS

REVIEW_OUTCOMES = ("approve", "decline")
REVIEW_STATUSES = ("pending", "approved", "declined", "not_required")
MAX_PAGE = 200


class ReviewSchema(Schema):
    review_id = fields.String(required=True)
    decision_id = fields.String(required=True)
    created_at = fields.AwareDateTime(required=True, metadata={"example": "2026-11-24T10:05:00Z"})
    reviewer = fields.String(required=True, metadata={"example": "Dr A. Example"})
    outcome = fields.String(required=True, validate=validate.OneOf(REVIEW_OUTCOMES))
    note = fields.String(required=True)


def _no_nul(value: str) -> None:
    # Databases store text without NUL characters; refuse them here rather than fail later.
    if "\x00" in value:
        raise ValidationError("must not contain NUL characters")


class ReviewRequestSchema(Schema):
    """A physician's sign-off. The screening decision never changes; this is a new record."""
    outcome = fields.String(required=True, validate=validate.OneOf(REVIEW_OUTCOMES))
    reviewer = fields.String(required=True, validate=[validate.Length(min=1, max=200), _no_nul],
                             metadata={"description": "Who signs off (name or staff id).", "example": "Dr A. Example"})
    note = fields.String(load_default="", validate=[validate.Length(max=4000), _no_nul])


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
    status = fields.String(load_default="pending", validate=validate.OneOf(("pending", "approved", "declined")))
