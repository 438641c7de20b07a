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
from service import reviewing, signoff
from service.auth import require_scope
from service.decision import jsonable
from service.store.base import DecisionNotFound, Review, StoredDecision

# Unknown query parameters are refused (422): a misspelt filter must not silently list everything.
blp = Blueprint("decisions", __name__, url_prefix="/v1",
                description="The decision log and the physician review queue (append-only).")

_review_request = ReviewRequestSchema()


def review_to_dict(review: Review, decision: str) -> dict:
    return {
        "review_id": review.review_id, "decision_id": review.decision_id,
        "created_at": jsonable(review.created_at), "reviewer": review.reviewer,
        "credential": review.credential, "client": review.client,
        "outcome": review.outcome, "meaning": signoff.meaning_of(review.outcome, decision, review.meaning),
        "treatment": review.treatment, "overridden_rules": list(review.overridden_rules),
        "rescreen_decision_id": review.rescreen_decision_id, "note": review.note,
    }


def stored_to_dict(stored: StoredDecision, *, with_intake: bool) -> dict:
    """The decision as it was returned when made, plus what the log keeps beside it."""
    out = dict(stored.body)
    out.update({
        "recorded_at": jsonable(stored.created_at),
        "client": stored.client,
        "source": stored.source,
        "review_status": stored.review_status,
        "reviews": [review_to_dict(r, stored.decision) for r in stored.reviews],
    })
    if with_intake:
        out["rescreen_of"] = stored.rescreen_of
    if with_intake:
        out["intake"] = stored.intake
    return out


def _not_found(decision_id: str) -> ApiError:
    return ApiError(404, "No decision with this id.", [{"path": "decision_id", "message": "unknown"}])


def _page(review_queue: bool = False, **filters) -> dict:
    store = current_app.extensions["store"]
    try:
        items, next_cursor = store.review_queue(**filters) if review_queue else store.list_decisions(**filters)
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
@blp.response(200, DecisionPageSchema, description="Pending: urgent first, then oldest first. "
                                                    "Signed off: newest first.")
@blp.alt_response(422, schema=ErrorSchema, description="A parameter or the cursor is not valid.")
def review_queue(status: str = "pending", **page):
    """The physician review queue (status=pending, urgent first, then oldest first), or the
    decisions signed off with a given status."""
    if status == "pending":
        return jsonify(_page(review_queue=True, **page))
    return jsonify(_page(review_status=status, **page))


@blp.route("/decisions/<decision_id>/review", methods=["POST"])
@require_scope("review")
@blp.doc(requestBody={"required": True, "content": {"application/json": {"schema": ReviewRequestSchema}}})
@blp.response(201, ReviewSchema, description="The sign-off as recorded, with the physician the key was issued to.")
@blp.alt_response(403, schema=ErrorSchema, description="The API key is not issued to a physician who may sign off.")
@blp.alt_response(404, schema=ErrorSchema, description="No decision with this id.")
@blp.alt_response(409, schema=ErrorSchema, description="The decision does not require physician review.")
@blp.alt_response(422, schema=ErrorSchema, description="The sign-off is not valid for this decision; every problem by field path.")
def review_decision(decision_id: str):
    """Record a physician's sign-off: the actions that fit the decision (service.signoff), as
    the physician the API key was issued to. `reviewer` is not accepted in the body."""
    reviewer = _reviewer_of_key()
    body = load_body(_review_request, "sign-off")
    store = current_app.extensions["store"]
    stored = store.get_decision(decision_id)
    if stored is None:
        raise _not_found(decision_id)
    request = signoff.SignOff(action=body["action"], note=body["note"],
                              overridden_rules=tuple(body["overridden_rules"]), answers=body["answers"])
    try:
        recorded = reviewing.record(store, current_app.extensions["rulesets"], stored, request, reviewer)
    except DecisionNotFound:
        raise _not_found(decision_id) from None
    except reviewing.SignOffRefused as exc:
        if "decision" in exc.errors:
            raise ApiError(409, "This decision does not require physician review; there is nothing to sign off.") from None
        raise ApiError(422, "The sign-off is not valid for this decision.",
                       [{"path": path, "message": message} for path, message in exc.errors.items()]) from None
    response = jsonify(review_to_dict(recorded.review, stored.decision))
    response.status_code = 201
    return response


def _reviewer_of_key() -> reviewing.Reviewer:
    """The physician the key was issued to; 403 when it names none or they may not sign off."""
    key = g.api_key
    if not key.physician:
        raise ApiError(403, "This API key is not issued to a physician, so it cannot sign off: "
                            "make one with `screening keys create --scope review --physician <user name>`.")
    users = current_app.extensions.get("users")
    if users is not None and len(users):
        user = users.get(key.physician)
        if user is None or not user.can_sign_off:
            raise ApiError(403, f"The physician this API key was issued to ({key.physician}) is not a "
                                "physician in the users file (removed, or not a physician).")
    return reviewing.Reviewer(name=key.physician, credential="api_key", client=key.id)
