"""GET /v1/rulesets/current: the version, digest and rules a decision is made under."""
from __future__ import annotations

from flask import current_app, jsonify
from flask_smorest import Blueprint

from schemas.status import RulesetDescriptionSchema
from service.auth import require_scope
from service.ruleset import Ruleset

blp = Blueprint("rulesets", __name__, url_prefix="/v1", description="The loaded ruleset.")


def describe(ruleset: Ruleset) -> dict:
    pack = ruleset.pack
    return {
        **pack.summary(),
        "description": pack.description,
        "loaded_at": ruleset.loaded_at.isoformat().replace("+00:00", "Z"),
        "engine": ruleset.compiled.backend,
        "rules": [
            {
                "rule_id": r.id, "title": r.title, "effect": r.effect, "concludes": r.concludes,
                "severity": r.severity, "priority": r.priority if r.effect else None,
                "routes": list(r.routes), "indications": list(r.indications),
                "requires": list(r.requires), "citation": r.citation, "source": str(r.location),
            }
            for r in pack.rules
        ],
    }


@blp.route("/rulesets/current")
@require_scope("read")
@blp.response(200, RulesetDescriptionSchema, description="The ruleset every decision is now made under.")
def current_ruleset():
    """The ruleset in force: version, digest, load time, rules and citations."""
    return jsonify(describe(current_app.extensions["rulesets"].current))
