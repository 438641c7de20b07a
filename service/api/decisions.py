"""The decision log over HTTP: read decisions, the physician review queue, sign-offs.

Append-only: there is no route that changes or deletes a decision or a review (PUT, PATCH and
DELETE get 405). A sign-off is a new record beside the decision.
"""
from __future__ import annotations

from flask import current_app, g, jsonify
from flask_smorest import Blueprint
from marshmallow import RAISE

from schemas.errors import ErrorSchema
from schemas.store import (DecisionPageSchema, DecisionQuerySchema, ReviewQueueQuerySchema,
                           ReviewRequestSchema, ReviewSchema, StoredDecisionSchema)
from service.api.jsonbody import load_body
from service.api.problems import ApiError
from service.auth import require_scope
from service.decision import jsonable
from service.store.base import DecisionNotFound, Review, ReviewNotAllowed, StoredDecision

# Unknown query parameters are refused (422): a misspelt filter must not silently list everything.
blp = Blueprint("decisions", __name__, url_prefix="/v1",
                description="The decision log and the physician review queue (append-only).")

_review_request = ReviewRequestSchema()


def review_to_dict(review: Review) -> dict:
    return {
        "review_id": review.review_id, "decision_id": review.decision_id,
        "created_at": jsonable(review.created_at), "reviewer": review.reviewer,
        "outcome": review.outcome, "note": review.note,
    }


def stored_to_dict(stored: StoredDecision, *, with_intake: bool) -> dict:
    """The decision as it was returned when made, plus what the log keeps beside it."""
    out = dict(stored.body)
    out.update({
        "recorded_at": jsonable(stored.created_at),
        "client": stored.client,
        "source": stored.source,
        "review_status": stored.review_status,
        "reviews": [review_to_dict(r) for r in stored.reviews],
    })
    if with_intake:
        out["intake"] = stored.intake
    return out


def _not_found(decision_id: str) -> ApiError:
    return ApiError(404, "No decision with this id.", [{"path": "decision_id", "message": "unknown"}])


def _page(**filters) -> dict:
    try:
        items, next_cursor = current_app.extensions["store"].list_decisions(**filters)
    except ValueError as exc:  # the one filter the schema cannot check: a forged or damaged cursor
        raise ApiError(422, "The query is not valid.", [{"path": "cursor", "message": str(exc)}]) from None
    return {"items": [stored_to_dict(s, with_intake=False) for s in items], "next_cursor": next_cursor}


@blp.route("/decisions/<decision_id>", methods=["GET"])
@require_scope("read")
@blp.response(200, StoredDecisionSchema, description="The decision, its intake and its reviews.")
@blp.alt_response(404, schema=ErrorSchema, description="No decision with this id.")
def get_decision(decision_id: str):
    """One recorded decision."""
    stored = current_app.extensions["store"].get_decision(decision_id)
    if stored is None:
        raise _not_found(decision_id)
    return jsonify(stored_to_dict(stored, with_intake=True))


@blp.route("/decisions", methods=["GET"])
@require_scope("read")
@blp.arguments(DecisionQuerySchema, location="query", as_kwargs=True, unknown=RAISE)
@blp.response(200, DecisionPageSchema, description="Newest first; follow next_cursor for more.")
@blp.alt_response(422, schema=ErrorSchema, description="A filter or the cursor is not valid.")
def list_decisions(**query):
    """Recorded decisions, filtered by subject, decision, review status, ruleset and time."""
    return jsonify(_page(**query))


@blp.route("/reviews", methods=["GET"])
@require_scope("read")
@blp.arguments(ReviewQueueQuerySchema, location="query", as_kwargs=True, unknown=RAISE)
@blp.response(200, DecisionPageSchema, description="Decisions by review status, newest first.")
@blp.alt_response(422, schema=ErrorSchema, description="A parameter or the cursor is not valid.")
def review_queue(status: str = "pending", **page):
    """The physician review queue (status=pending), or the decisions already signed off."""
    return jsonify(_page(review_status=status, **page))


@blp.route("/decisions/<decision_id>/review", methods=["POST"])
@require_scope("review")
@blp.doc(requestBody={"required": True, "content": {"application/json": {"schema": ReviewRequestSchema}}})
@blp.response(201, ReviewSchema, description="The sign-off as recorded.")
@blp.alt_response(404, schema=ErrorSchema, description="No decision with this id.")
@blp.alt_response(409, schema=ErrorSchema, description="The decision does not require physician review.")
@blp.alt_response(422, schema=ErrorSchema, description="The sign-off is not valid; every problem by field path.")
def review_decision(decision_id: str):
    """Record a physician's sign-off (approve or decline) on a decision that requires review."""
    body = load_body(_review_request, "sign-off")
    store = current_app.extensions["store"]
    try:
        review = store.add_review(decision_id, reviewer=body["reviewer"], outcome=body["outcome"],
                                  note=body["note"], client=g.api_key.id)
    except DecisionNotFound:
        raise _not_found(decision_id) from None
    except ReviewNotAllowed:
        raise ApiError(409, "This decision does not require physician review; there is nothing to sign off.") from None
    response = jsonify(review_to_dict(review))
    response.status_code = 201
    return response
