"""POST /v1/screenings: an intake in, a decision out."""
from __future__ import annotations

from flask import Response, current_app, g
from flask_smorest import Blueprint
from marshmallow import Schema, fields

from schemas.decision import DecisionSchema
from schemas.errors import ErrorSchema
from schemas.intake import IntakeSchema
from service.api.jsonbody import load_body
from service.auth import require_scope
from service.decision import to_json
from service.screening import screen

blp = Blueprint("screenings", __name__, url_prefix="/v1", description="Screen an intake for ketamine treatment.")


class ScreeningQuerySchema(Schema):
    explain = fields.Boolean(load_default=False, metadata={"description": "Report every rule's outcome."})


@blp.route("/screenings", methods=["POST"])
@require_scope("screen")
@blp.arguments(ScreeningQuerySchema(), location="query", as_kwargs=True)
@blp.doc(requestBody={"required": True, "content": {"application/json": {"schema": IntakeSchema}}})
@blp.response(200, DecisionSchema, description="The decision, with every reason that applies.")
@blp.alt_response(400, schema=ErrorSchema, description="Malformed JSON.")
@blp.alt_response(413, schema=ErrorSchema, description="Body too large.")
@blp.alt_response(415, schema=ErrorSchema, description="Not JSON.")
@blp.alt_response(422, schema=ErrorSchema, description="The intake is not valid; every problem by field path.")
@blp.alt_response(503, schema=ErrorSchema, description="The decision log is down: no decision is given (Retry-After).")
def create_screening(explain: bool = False):
    """Screen one intake."""
    # One read of the holder: the intake is validated by the catalog of the rules that screen it,
    # on that ruleset's fast path for valid intakes (marshmallow's own errors otherwise).
    ruleset = current_app.extensions["rulesets"].current
    intake = load_body(ruleset.intake_loader, "intake")
    decision = screen(intake, ruleset, explain=explain)
    g.decision = decision  # for request logs and metrics, which never see intake values
    # Encoded once: the same text is the response and the log's record of it.
    body = to_json(decision.to_dict(), compact=True)
    # Committed before it is returned: a decision that is not in the log is never handed out
    # (StoreUnavailable becomes 503 with Retry-After). The store encodes the intake itself.
    current_app.extensions["store"].save_decision(decision, intake, client=g.api_key.id, source="http", body=body)
    # Returned as a ready response: the dataclass is already in the documented shape.
    return Response(body + "\n", mimetype="application/json")
