"""Per-request hooks: request id, latency, metrics and the one JSON log line per request."""
from __future__ import annotations

import logging
import re
import time
import uuid

from flask import Flask, Response, g, request

from service.observability import metrics
from service.observability.logging import REQUEST_LOGGER, configure_logging

REQUEST_ID_HEADER = "X-Request-ID"
# An incoming id is echoed into headers, logs and bodies: only short, plain tokens are honoured.
_SANE_REQUEST_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:\-]{0,127}")
_UNMATCHED = "<unmatched>"

request_log = logging.getLogger(REQUEST_LOGGER)


def init_app(app: Flask) -> None:
    configure_logging(app.extensions["settings"].log_level)
    holder = app.extensions["rulesets"]
    served = [holder.current]
    metrics.set_ruleset_served(holder.current.summary)
    _observe_reloads(app)
    # Decisions per decision-log commit (group commit), for the store that has a group committer.
    writer = getattr(app.extensions.get("store"), "decision_writer", None)
    if writer is not None:
        writer.on_commit = metrics.record_decision_log_commit

    def _start() -> None:
        g.request_started = time.perf_counter()
        g.request_id = request_id_from(request.headers.get(REQUEST_ID_HEADER))

    # First of all before-request hooks: one that refuses the request (a session or CSRF check)
    # still gets an id in its error body, and its time is measured.
    app.before_request_funcs.setdefault(None, []).insert(0, _start)

    @app.after_request
    def _finish(response: Response) -> Response:
        started = g.get("request_started")
        elapsed = time.perf_counter() - started if started is not None else 0.0
        request_id = g.get("request_id") or request_id_from(None)
        response.headers[REQUEST_ID_HEADER] = request_id
        # Route templates, not paths: /v1/decisions/<decision_id> is one series, and an id in a
        # path is not copied into metrics.
        route = request.url_rule.rule if request.url_rule is not None else _UNMATCHED
        metrics.record_request(request.method, route, response.status_code, elapsed)

        fields = {
            "request_id": request_id, "method": request.method, "route": route,
            "status": response.status_code, "latency_ms": round(elapsed * 1000, 3),
        }
        decision = g.get("decision")
        if decision is not None:
            digest = decision.ruleset.get("digest", "")
            metrics.record_decision(decision.decision, digest, decision.reason_ids)
            fields.update(decision=decision.decision, reasons=decision.reason_ids,
                          review_required=decision.physician_review_required,
                          ruleset_version=decision.ruleset.get("version"), ruleset_digest=digest)
        elif response.status_code == 422:
            errors = _error_list(response)
            metrics.record_validation_errors(errors)
            fields["invalid_fields"] = sorted({metrics.validation_label(e) for e in errors})
        # Which API key asked (service/auth sets g.api_key): an id, not a secret.
        client_id = g.get("client_id") or getattr(g.get("api_key"), "id", None)
        if client_id:
            fields["client_id"] = client_id
        # A reload swaps the holder's ruleset; keep "which version do I serve" current (one
        # identity check per request).
        current = holder.current
        if current is not served[0]:
            served[0] = current
            metrics.set_ruleset_served(current.summary)
        request_log.info("request", extra=fields)
        return response


def _observe_reloads(app: Flask) -> None:
    """Count the reloader's outcomes and update the served-ruleset gauge at the swap, so a worker
    that reloads while idle reports its new digest too."""
    reloader = app.extensions.get("reloader")
    if reloader is None:
        return
    holder = app.extensions["rulesets"]
    previous = getattr(reloader, "on_outcome", None)

    def on_outcome(outcome) -> None:
        # Every worker reloads the same edit; the change is counted by the first to report it.
        if outcome.status == "loaded":
            metrics.record_reload(True, holder.current, counted=getattr(outcome, "first", True))
        elif outcome.status == "refused" and getattr(outcome, "first", True):
            metrics.record_reload(False)
        if previous is not None:
            previous(outcome)

    reloader.on_outcome = on_outcome


def request_id_from(header: str | None) -> str:
    if header and _SANE_REQUEST_ID.fullmatch(header):
        return header
    return uuid.uuid4().hex


def _error_list(response: Response) -> list[dict]:
    """The field problems of a 422 in this service's error shape (other shapes: none)."""
    body = response.get_json(silent=True) if response.is_json else None
    error = body.get("error") if isinstance(body, dict) else None
    errors = error.get("errors") if isinstance(error, dict) else None
    return [e for e in errors if isinstance(e, dict)] if isinstance(errors, list) else []
