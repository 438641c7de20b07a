"""What every HTTP channel shares (the JSON API, CDS Hooks, the pages' JSON): the strict request
body reader, and the one map from errors to HTTP responses.

Every JSON error response is built by ``error_response`` from a ServiceError (service.errors):
the same body everywhere, Retry-After from the error's ``retry_after``, and a StoreUnavailable
raised anywhere becomes 503 here (logged and counted), whichever blueprint it came from.
"""
from __future__ import annotations

from flask import Flask, Request, Response, g, jsonify, request
from werkzeug.exceptions import HTTPException

from schemas.errors import dotted, flatten_messages
from service.errors import ServiceError, store_unavailable
from service.intake_reader import Limits, read_json
from service.observability.metrics import record_store_failure
from service.store.base import StoreUnavailable


def read_json_request(req: Request, limits: Limits) -> dict:
    """The request's body as a JSON object: 415 for another content type, 413 past the limit
    (with or without Content-Length), then service.intake_reader's strict reading."""
    mimetype = req.mimetype or ""
    if mimetype != "application/json" and not mimetype.endswith("+json"):
        raise ServiceError(415, "Send the body as JSON with Content-Type: application/json.")
    length = req.content_length
    if length is not None and length > limits.max_bytes:
        raise ServiceError(413, f"The request body is larger than {limits.max_bytes} bytes.")
    data = req.get_data(cache=True)
    # A chunked body has no Content-Length: Werkzeug stops reading at MAX_CONTENT_LENGTH without
    # saying so, and the first max_bytes of a larger body could parse. One more byte tells.
    if length is None and len(data) >= limits.max_bytes and req.environ["wsgi.input"].read(1):
        raise ServiceError(413, f"The request body is larger than {limits.max_bytes} bytes.")
    return read_json(data, limits)


def error_response(error: ServiceError) -> Response:
    response = jsonify({"error": error.to_dict(getattr(g, "request_id", None))})
    response.status_code = error.status
    for key, value in error.headers.items():
        response.headers[key] = value
    if error.retry_after is not None:
        response.headers["Retry-After"] = str(error.retry_after)
    return response


_HTTP_MESSAGES = {404: "No such resource.", 405: "Method not allowed on this resource.",
                  413: "The request body is too large."}


def register(app: Flask) -> None:
    """Install the map for every blueprint of ``app`` (the pages add HTML for their own routes)."""

    @app.errorhandler(ServiceError)
    def _service_error(exc: ServiceError):
        return error_response(exc)

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException):
        # flask-smorest/webargs attach parsed messages to exc.data
        data = getattr(exc, "data", None) or {}
        errors = None
        if isinstance(data.get("messages"), dict):
            errors = [{"path": dotted(p), "message": m} for p, m in flatten_messages(data["messages"])]
        message = _HTTP_MESSAGES.get(exc.code, exc.description or exc.name)
        headers = dict(exc.get_headers()) if exc.code == 405 else {}
        headers.pop("Content-Type", None)
        return error_response(ServiceError(exc.code or 500, message, errors, headers=headers))

    @app.errorhandler(StoreUnavailable)
    def _store_unavailable(exc: StoreUnavailable):
        # The message names the operation and the driver's error class, never intake values.
        app.logger.warning("decision log unavailable: %s", exc)
        record_store_failure(request.endpoint or "unknown")
        return error_response(store_unavailable(exc))

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception):
        # Logged with its traceback, never shown: a stack trace can carry intake values.
        app.logger.exception("unhandled error: %s", type(exc).__name__)
        return error_response(ServiceError(500, "Internal error; the request was not processed."))
