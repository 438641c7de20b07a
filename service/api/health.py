"""Liveness and readiness; no credentials needed."""
from __future__ import annotations

from flask import current_app, jsonify
from flask_smorest import Blueprint

blp = Blueprint("health", __name__, description="Health of the service.")


@blp.route("/healthz")
def healthz():
    """Alive: the process answers."""
    return jsonify({"status": "ok"})


@blp.route("/readyz")
def readyz():
    """Ready: a ruleset is loaded (and the store answers, where there is one)."""
    holder = current_app.extensions["rulesets"]
    ruleset = holder.current
    body = {
        "status": "ready",
        "ruleset": {**ruleset.summary, "loaded_at": ruleset.loaded_at.isoformat()},
        "last_reload_error": holder.last_error,
    }
    return jsonify(body)
