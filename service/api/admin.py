"""Administration: reload the rule pack now instead of waiting for the watcher."""
from __future__ import annotations

from flask import current_app, jsonify
from flask_smorest import Blueprint

from schemas.errors import ErrorSchema
from service.auth import require_scope
from service.errors import envelope

blp = Blueprint("admin", __name__, url_prefix="/v1/admin", description="Administration (scope: admin).")


@blp.route("/reload", methods=["POST"])
@require_scope("admin")
@blp.response(200, description="Loaded, or unchanged: the ruleset now serving.")
@blp.alt_response(422, schema=ErrorSchema, description="The candidate was refused; the last good ruleset keeps serving.")
def reload_rules():
    """Check the rules directory and load it if it passes lint, a bounded compile and its tests.

    Reaches the worker that serves this request at once; every other worker picks the same
    files up through its watcher within SCREENING_RELOAD_INTERVAL seconds."""
    outcome = current_app.extensions["reloader"].reload()
    body = outcome.to_dict()
    if outcome.status == "refused":
        return jsonify({"error": envelope(422, outcome.message, [{"path": "rules", "message": p} for p in outcome.problems],
                                          "ruleset_refused"),
                        "serving": {"version": outcome.version, "digest": outcome.digest}}), 422
    return jsonify(body)
