"""Prometheus metrics, correct under gunicorn's worker processes.

With ``PROMETHEUS_MULTIPROC_DIR`` set (service/gunicorn_conf.py sets it in the master, before
workers fork) every worker writes its samples to files there and a scrape, whichever worker
answers it, sums them all. Without it (flask dev server, tests) the ordinary in-process registry
is used. The variable must be set before prometheus_client is first imported, which is why the
gunicorn config and not the app decides it.

Others call the ``record_*`` functions; label values are bounded (rule ids, outcomes, digests,
route templates, schema field paths), never request data.
"""
from __future__ import annotations

import os
import re
import threading
from typing import Any, Iterable

from prometheus_client import (
    CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics,
    generate_latest,
)

# *_created samples (one per series, the time it appeared) double the scrape for no use here.
disable_created_metrics()

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

DECISIONS = Counter(
    "screening_decisions_total", "Screening decisions made, by outcome and ruleset digest.",
    ["decision", "ruleset_digest"],
)
RULE_HITS = Counter(
    "screening_rule_hits_total", "Rules that fired as a reason in a decision, by rule id.",
    ["rule_id"],
)
REQUEST_LATENCY = Histogram(
    "screening_http_request_duration_seconds", "HTTP request latency, by route template and status.",
    ["method", "route", "status"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
RELOADS = Counter(
    "screening_ruleset_reloads_total",
    "Rule pack changes taken on by a reload, counted once per change however many workers reload it.",
)
RELOAD_FAILURES = Counter(
    "screening_ruleset_reload_failures_total",
    "Rule pack changes a reload refused (unreadable file, lint error, compile error or timeout, failing rule "
    "test, unchanged version, or a change that needs a restart), counted once per change however many "
    "workers check it.",
)
VALIDATION_ERRORS = Counter(
    "screening_validation_errors_total", "Field problems in rejected (422) requests, by field path.",
    ["path"],
)
STORE_FAILURES = Counter(
    "screening_store_failures_total", "Decision-log operations that failed (store unavailable).",
    ["operation"],
)
# Group commit (service/store/groupcommit.py): how many decisions shared each commit (and its
# fsync). _count is the commits, _sum the decisions written.
DECISION_LOG_COMMIT_ROWS = Histogram(
    "screening_decision_log_commit_rows",
    "Decisions written per decision-log commit: the requests in flight share one transaction and one fsync.",
    buckets=(1, 2, 3, 4, 6, 8, 12, 16, 32, 64, 128, 256),
)
# 1 for the ruleset a live worker serves. "livemax" across workers: during a rolling reload both
# digests show 1 until every worker has swapped; dead workers drop out (child_exit hook).
RULESET_INFO = Gauge(
    "screening_ruleset_info", "The ruleset this instance serves (value 1).",
    ["name", "version", "digest"], multiprocess_mode="livemax",
)

# Field names a client invents are unbounded label values: every unknown field counts as one path.
_UNKNOWN_FIELD = "<unknown field>"
_INDEX = re.compile(r"\[\d+\]")
_MAX_PATH = 120

_served_lock = threading.Lock()
_served: tuple[str, str, str] | None = None


def multiprocess_dir() -> str | None:
    return os.environ.get(MULTIPROC_ENV) or None


def record_decision_log_commit(rows: int) -> None:
    DECISION_LOG_COMMIT_ROWS.observe(rows)


def record_decision(decision: str, ruleset_digest: str, rule_ids: Iterable[str]) -> None:
    DECISIONS.labels(decision=decision, ruleset_digest=ruleset_digest).inc()
    for rule_id in rule_ids:
        RULE_HITS.labels(rule_id=rule_id).inc()


# The request method is the client's to invent (`curl -X RTMETHODA`): one label value each would
# be a new series per request. Anything but the standard methods counts as "other".
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "CONNECT"})


def method_label(method: str) -> str:
    return method if method in _METHODS else "other"


def record_request(method: str, route: str, status: int, seconds: float) -> None:
    REQUEST_LATENCY.labels(method=method_label(method), route=route, status=str(status)).observe(seconds)


def record_reload(ok: bool, ruleset: Any = None, counted: bool = True) -> None:
    """Count a reload attempt; pass the new Ruleset on success so the served version updates.
    ``counted=False``: another worker already counted this change (the gauge still moves)."""
    if ok:
        if counted:
            RELOADS.inc()
        if ruleset is not None:
            set_ruleset_served(ruleset.summary)
    else:
        RELOAD_FAILURES.inc()


def record_validation_errors(errors: Iterable[dict]) -> None:
    """``errors`` as in a 422 body: ``[{"path": ..., "message": ...}]``."""
    for error in errors:
        VALIDATION_ERRORS.labels(path=validation_label(error)).inc()


def validation_label(error: dict) -> str:
    if str(error.get("message", "")).startswith("Unknown field"):
        return _UNKNOWN_FIELD
    # medications[3].class and medications[0].class are one series: medications[].class
    return _INDEX.sub("[]", str(error.get("path") or "$"))[:_MAX_PATH]


def record_store_failure(operation: str) -> None:
    STORE_FAILURES.labels(operation=operation).inc()


def set_ruleset_served(summary: dict[str, str]) -> None:
    """Mark ``summary`` (name, version, digest) as what this process serves, un-marking the last."""
    global _served
    labels = (summary["name"], summary["version"], summary["digest"])
    with _served_lock:
        if labels == _served:
            return
        if _served is not None:
            if multiprocess_dir():
                # Another worker may still serve it: this process's sample goes to 0 and the
                # livemax across workers decides.
                RULESET_INFO.labels(*_served).set(0)
            else:
                RULESET_INFO.remove(*_served)
        RULESET_INFO.labels(*labels).set(1)
        _served = labels


def exposition() -> tuple[bytes, str]:
    """The text a scrape returns, and its content type: every worker's samples when multiprocess."""
    if multiprocess_dir():
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
