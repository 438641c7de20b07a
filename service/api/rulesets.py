"""GET /v1/rulesets/current: the version, digest and rules a decision is made under."""
from __future__ import annotations

from flask import current_app, jsonify
from flask_smorest import Blueprint

from schemas.status import RulesetDescriptionSchema
from service.auth import require_scope
from service.ruleset_description import describe

blp = Blueprint("rulesets", __name__, url_prefix="/v1", description="The loaded ruleset.")


@blp.route("/rulesets/current")
@require_scope("read")
@blp.response(200, RulesetDescriptionSchema, description="The ruleset every decision is now made under.")
def current_ruleset():
    """The ruleset in force: version, digest, load time, rules and citations."""
    return jsonify(describe(current_app.extensions["rulesets"].current))
