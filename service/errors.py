"""The error model every channel shares: HTTP, CDS Hooks, the pages, batch and the CLI.

An error has a code, a message, the locations at fault (``errors``: ``{"path", "message"}``),
a status hint (the HTTP status it maps to; the CLI and batch report it as it is) and, when
trying again later can help, ``retry_after`` seconds. service.http_io maps these to responses,
in one place; nothing here knows about HTTP.
"""
from __future__ import annotations

from typing import Iterable

from marshmallow import ValidationError

from schemas.errors import dotted, flatten_messages
from service.store.base import StoreUnavailable

# Seconds a caller waits before retrying when the decision log is down (503 Retry-After).
RETRY_AFTER_S = 5

CODES = {
    400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
    405: "method_not_allowed", 409: "conflict", 412: "precondition_failed", 413: "payload_too_large",
    415: "unsupported_media_type", 422: "validation_error", 429: "too_many_requests",
    500: "internal_error", 503: "unavailable",
}

# A list of 5,000 wrong items is 5,000 problems: the error lists the first ones and says how
# many there were, rather than answering a small request with a large one.
MAX_LISTED_ERRORS = 50


class ServiceError(Exception):
    """A refusal with a code, a message and the field paths at fault."""

    def __init__(self, status: int, message: str, errors: Iterable[dict] | None = None,
                 code: str | None = None, headers: dict | None = None, retry_after: int | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.errors = list(errors or [])
        self.code = code or CODES.get(status, "error")
        # Protocol headers a channel must send with it (WWW-Authenticate, RateLimit-*).
        self.headers = dict(headers or {})
        self.retry_after = retry_after

    def to_dict(self, request_id: str | None = None) -> dict:
        """The error body every channel returns (HTTP wraps it as ``{"error": ...}``)."""
        return envelope(self.status, self.message, self.errors, self.code, request_id)


def envelope(status: int, message: str, errors: list | None = None, code: str | None = None,
             request_id: str | None = None) -> dict:
    body = {"status": status, "code": code or CODES.get(status, "error"), "message": message}
    if errors:
        body["errors"] = errors
    if request_id:
        body["request_id"] = request_id
    return body


def validation_error(exc: ValidationError, message: str = "The request is not valid.") -> ServiceError:
    errors = [{"path": dotted(path), "message": text} for path, text in flatten_messages(exc.messages)]
    if len(errors) > MAX_LISTED_ERRORS:
        message = f"{message} {len(errors)} problems; the first {MAX_LISTED_ERRORS} are listed."
        errors = errors[:MAX_LISTED_ERRORS]
    return ServiceError(422, message, errors)


def store_unavailable(exc: StoreUnavailable) -> ServiceError:
    """The decision log is down: nothing was decided or recorded (a decision that cannot be kept
    is not given). The message never carries the driver's text."""
    return ServiceError(503, "The decision log is unavailable, so nothing was decided or recorded; retry later.",
                        retry_after=RETRY_AFTER_S)
