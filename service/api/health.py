"""Liveness, readiness and metrics: what probes and scrapers call, without credentials."""
from __future__ import annotations

import time

from flask import Response, current_app, jsonify
from flask_smorest import Blueprint

from schemas.status import HealthSchema, ReadinessSchema
from service.errors import RETRY_AFTER_S
from service.observability import metrics
from service.store.base import StoreUnavailable

blp = Blueprint("health", __name__, description="Health of the service.")


@blp.route("/healthz")
@blp.response(200, HealthSchema, description="The process answers.")
def healthz():
    """Alive: the process answers."""
    return jsonify({"status": "ok"})


@blp.route("/readyz")
@blp.response(200, ReadinessSchema, description="Ready to screen.")
@blp.alt_response(503, schema=ReadinessSchema, description="Not ready: the failing check says why; Retry-After is set.")
def readyz():
    """Ready: a ruleset is loaded and the decision log answers (503 with the failing check if not)."""
    checks = {"ruleset": _ruleset_check(), "store": _store_check()}
    ready = all(check["ok"] for check in checks.values())
    holder = current_app.extensions.get("rulesets")
    body = {
        "status": "ready" if ready else "not_ready",
        "checks": checks,
        # Which version this instance serves, for comparing instances behind a load balancer.
        "ruleset": checks["ruleset"].get("ruleset"),
        "last_reload_error": getattr(holder, "last_error", None),
    }
    response = jsonify(body)
    response.status_code = 200 if ready else 503
    if not ready:
        response.headers["Retry-After"] = str(RETRY_AFTER_S)
    return response


@blp.route("/metrics")
@blp.response(200, content_type="text/plain", description="Prometheus text exposition format.")
def prometheus_metrics():
    """Prometheus text exposition, summed over every worker process."""
    payload, content_type = metrics.exposition()
    return Response(payload, content_type=content_type)


def _ruleset_check() -> dict:
    holder = current_app.extensions.get("rulesets")
    ruleset = getattr(holder, "current", None)
    if ruleset is None:
        return {"ok": False, "detail": "no ruleset loaded"}
    return {"ok": True, "ruleset": {**ruleset.summary, "loaded_at": ruleset.loaded_at.isoformat()}}


def _store_check() -> dict:
    store = current_app.extensions["store"]
    started = time.perf_counter()
    try:
        store.ping()
    except StoreUnavailable as exc:
        metrics.record_store_failure("ping")
        return {"ok": False, "detail": f"decision log unreachable: {exc}"}
    except Exception as exc:  # a driver error the store did not translate: still not ready
        metrics.record_store_failure("ping")
        current_app.logger.exception("store ping failed")
        return {"ok": False, "detail": f"decision log unreachable: {type(exc).__name__}"}
    return {"ok": True, "latency_ms": round((time.perf_counter() - started) * 1000, 3)}
