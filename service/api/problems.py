"""JSON errors for every failure: a status, a code, a message and the field paths at fault."""
from __future__ import annotations

from typing import Iterable

from flask import Flask, Response, g, jsonify, request
from marshmallow import ValidationError
from werkzeug.exceptions import HTTPException

from schemas.errors import dotted, flatten_messages
from service.observability.metrics import record_store_failure
from service.store.base import StoreUnavailable

# Seconds a client waits before retrying when the decision log is down (503).
STORE_RETRY_AFTER_S = 5

_CODES = {
    400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
    405: "method_not_allowed", 409: "conflict", 413: "payload_too_large",
    415: "unsupported_media_type", 422: "validation_error", 429: "too_many_requests",
    500: "internal_error", 503: "unavailable",
}


class ApiError(Exception):
    def __init__(self, status: int, message: str, errors: Iterable[dict] | None = None,
                 code: str | None = None, headers: dict | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.errors = list(errors or [])
        self.code = code or _CODES.get(status, "error")
        self.headers = headers or {}


# A list of 5,000 wrong items is 5,000 problems: the response lists the first ones and says how
# many there were, rather than answering a small request with a large one.
MAX_LISTED_ERRORS = 50


def validation_error(exc: ValidationError, message: str = "The request is not valid.") -> ApiError:
    errors = [{"path": dotted(path), "message": text} for path, text in flatten_messages(exc.messages)]
    if len(errors) > MAX_LISTED_ERRORS:
        message = f"{message} {len(errors)} problems; the first {MAX_LISTED_ERRORS} are listed."
        errors = errors[:MAX_LISTED_ERRORS]
    return ApiError(422, message, errors)


def error_response(status: int, message: str, errors: list | None = None, code: str | None = None,
                   headers: dict | None = None) -> Response:
    body = {"status": status, "code": code or _CODES.get(status, "error"), "message": message}
    if errors:
        body["errors"] = errors
    request_id = getattr(g, "request_id", None)
    if request_id:
        body["request_id"] = request_id
    response = jsonify({"error": body})
    response.status_code = status
    for key, value in (headers or {}).items():
        response.headers[key] = value
    return response


def register(app: Flask) -> None:
    @app.errorhandler(ApiError)
    def _api_error(exc: ApiError):
        return error_response(exc.status, exc.message, exc.errors, exc.code, exc.headers)

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException):
        # flask-smorest/webargs attach parsed messages to exc.data
        data = getattr(exc, "data", None) or {}
        errors = None
        if isinstance(data.get("messages"), dict):
            errors = [{"path": dotted(p), "message": m} for p, m in flatten_messages(data["messages"])]
        message = {
            404: "No such resource.", 405: "Method not allowed on this resource.",
            413: "The request body is too large.",
        }.get(exc.code, exc.description or exc.name)
        headers = dict(exc.get_headers()) if exc.code == 405 else {}
        headers.pop("Content-Type", None)
        return error_response(exc.code or 500, message, errors, headers=headers)

    @app.errorhandler(StoreUnavailable)
    def _store_unavailable(exc: StoreUnavailable):
        # The message names the operation and the driver's error class, never intake values.
        app.logger.warning("decision log unavailable: %s", exc)
        record_store_failure(request.endpoint or "unknown")
        return error_response(503, "The decision log is unavailable, so nothing was decided or recorded; "
                              "retry later.", headers={"Retry-After": str(STORE_RETRY_AFTER_S)})

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception):
        # Logged with its traceback, never shown: a stack trace can carry intake values.
        app.logger.exception("unhandled error: %s", type(exc).__name__)
        return error_response(500, "Internal error; the request was not processed.")
