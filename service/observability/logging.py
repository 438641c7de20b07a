"""JSON log lines: one object per line, for the app's request log and for gunicorn's own logs.

Request lines carry identifiers, timings and the decision (outcome, rule ids, ruleset digest),
never intake values or bodies: the hooks that build them only see ``flask.g.decision``.
"""
from __future__ import annotations

import datetime as dt
import json
import logging
import sys
from typing import Any

REQUEST_LOGGER = "screening.request"
APP_LOGGER = "screening"

# LogRecord attributes that are the record's machinery, not fields a caller attached via extra=.
_RESERVED = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """``{"ts", "level", "logger", "pid", "message", ...extra fields}`` on one line."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": dt.datetime.fromtimestamp(record.created, dt.timezone.utc).isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "pid": record.process,
            "message": record.getMessage(),
        }
        request_id = _current_request_id()
        if request_id:
            out["request_id"] = request_id
        for key, value in vars(record).items():
            if key not in _RESERVED and not key.startswith("_"):
                out[key] = value
        if record.exc_info:
            out["exc_info"] = self.formatException(record.exc_info)
        if record.stack_info:
            out["stack_info"] = self.formatStack(record.stack_info)
        return json.dumps(out, ensure_ascii=False, default=str)


def _current_request_id() -> str | None:
    # Lines logged while handling a request (errors, warnings) carry its id too.
    try:
        from flask import g, has_request_context
    except ImportError:  # pragma: no cover - flask is a dependency; gunicorn's master may not need it
        return None
    if has_request_context():
        return getattr(g, "request_id", None)
    return None


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is at the time (test runners swap it)."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, _value) -> None:
        pass


def configure_logging(level: str = "info") -> None:
    """Single-process runs (flask dev server, tests, CLI): JSON to stderr for the app's loggers,
    unless something (gunicorn's logconfig_dict) configured them already. Records still
    propagate, so whatever the root logger has (pytest's caplog) sees them too."""
    logger = logging.getLogger(APP_LOGGER)
    if logger.handlers:
        return
    handler = _StderrHandler()
    handler.setFormatter(JsonFormatter())
    logger.addHandler(handler)
    logger.setLevel(level.upper())


def gunicorn_logconfig(level: str = "info") -> dict:
    """``logconfig_dict`` for gunicorn: its error log and the app's loggers, JSON to stderr."""
    # Python warnings (deprecations from libraries at import) become JSON lines on the root logger
    # instead of raw stderr text; set in the master, inherited by the workers.
    logging.captureWarnings(True)
    level = level.upper()
    formatter = f"{__name__}.JsonFormatter"
    handler = {"class": "logging.StreamHandler", "formatter": "json", "stream": "ext://sys.stderr"}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": formatter}},
        "handlers": {"console": handler, "error_console": handler},
        "root": {"level": level, "handlers": ["console"]},
        "loggers": {
            "gunicorn.error": {"level": level, "handlers": ["error_console"], "propagate": False,
                               "qualname": "gunicorn.error"},
            # The app writes the request log (with request id, route template and decision), so a
            # request is one line.
            # With a logconfig_dict gunicorn writes access lines whatever ``accesslog`` says;
            # this logger drops them.
            "gunicorn.access": {"level": "CRITICAL", "handlers": [], "propagate": False,
                                "qualname": "gunicorn.access"},
            APP_LOGGER: {"level": level, "handlers": ["console"], "propagate": False},
        },
    }
