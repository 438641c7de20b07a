"""The clinician pages: sign-in, the review queue and the decision page with its sign-off form.

Every page reads the decision log through the DecisionStore interface only; a sign-off is a new
review record (``add_review``), the decision itself is never changed.
"""
from __future__ import annotations

import logging
import math
import re

from flask import (Blueprint, Response, abort, current_app, flash, g, redirect, render_template,
                   request, session, url_for)
from flask_wtf.csrf import CSRFError
from werkzeug.exceptions import HTTPException, NotFound

from schemas.patterns import DECISION_ID, SUBJECT_ID
from schemas.rulefile import DECISIONS
from service import reviewing, signoff
from service.errors import RETRY_AFTER_S
from service.observability.metrics import record_store_failure
from service.store.base import (REVIEW_STATUSES, DecisionNotFound, DecisionStore,
                                StoredDecision, StoreUnavailable)
from service.store.web_sessions import short_ref
from service.web import labels
from service.web.security import csrf, physician_required, safe_next, secure_headers
from service.web.users import UserDirectory

log = logging.getLogger("service.web")
bp = Blueprint("web", __name__)

PUBLIC_ENDPOINTS = {"web.login"}
QUEUE_PAGE_SIZE = 25
_SUBJECT_RE = re.compile(SUBJECT_ID)
_DECISION_ID_RE = re.compile(DECISION_ID)


def _users() -> UserDirectory:
    return current_app.extensions["users"]


def _store() -> DecisionStore:
    return current_app.extensions["store"]


@bp.before_request
def _require_sign_in():
    sid = session.get("sid")
    username = current_app.extensions["web_sessions"].user_of(sid) if isinstance(sid, str) else None
    g.user = _users().get(username) if username else None
    g.session_ref = short_ref(sid) if g.user is not None else ""
    if request.method == "POST":
        csrf.protect()  # 400 before anything else when the token is missing or wrong
    if g.user is None and request.endpoint not in PUBLIC_ENDPOINTS:
        if sid is not None:
            # Signed out elsewhere, expired, or the person was removed from the users file
            # (then their session row goes too).
            if username:
                current_app.extensions["web_sessions"].end(sid)
            session.clear()
        return redirect(url_for("web.login", next=request.full_path.rstrip("?")))
    return None


@bp.after_request
def _headers(response: Response) -> Response:
    return secure_headers(response, hsts=current_app.config["SESSION_COOKIE_SECURE"])


# Globals rather than context: the macros in _macros.html are imported without context.
for _helper in (labels.path_label, labels.question, labels.format_value, labels.format_time, labels.iso_time):
    bp.add_app_template_global(_helper)


@bp.app_context_processor
def _signed_in_user() -> dict:
    return {"current_user": getattr(g, "user", None)}


# --- sign-in ---------------------------------------------------------------------------------

@bp.route("/login", methods=["GET", "POST"])
def login():
    next_url = safe_next(request.values.get("next"))
    if request.method == "GET":
        if g.user is not None:
            return redirect(next_url or url_for("web.index"))
        return render_template("web/login.html", next_url=next_url, username="", error=None)
    username = (request.form.get("username") or "").strip()
    password = request.form.get("password") or ""
    if not username or not password:
        return render_template("web/login.html", next_url=next_url, username=username,
                               error="Enter your user name and password."), 401
    # Counted before the password is checked: past the limit a guesser learns nothing, and the
    # password is not even checked. Only failures keep their place (service.web.signin).
    guard = current_app.extensions["signin_guard"]
    attempt = guard.begin(username)
    if not attempt.allowed:
        log.warning("sign-in refused: too many failed attempts for one user name")
        minutes = max(1, math.ceil(attempt.retry_after_s / 60))
        return render_template("web/login.html", next_url=next_url, username=username,
                               error=f"Too many failed sign-ins for this user name; try again in {minutes} "
                                     f"minute{'s' if minutes > 1 else ''}."), \
            429, {"Retry-After": str(attempt.retry_after_s)}
    user = _users().authenticate(username, password)
    if user is None:
        # The name is logged only when it is a real account: a mistyped password in the name
        # field must not end up in the logs.
        known = _users().get(username) is not None
        log.warning("sign-in refused for %s", f"user {username!r}" if known else "an unknown user name")
        return render_template("web/login.html", next_url=next_url, username=username,
                               error="The user name or password is not correct."), 401
    guard.succeeded(attempt)
    settings = current_app.extensions["web_settings"]
    sid = current_app.extensions["web_sessions"].start(user.username, settings.session_hours * 3600)
    session.clear()  # a new session for the new sign-in, nothing carried over
    session.permanent = True
    session["sid"] = sid
    log.info("signed in: user %r (%s)", user.username, user.role)
    return redirect(next_url or url_for("web.index"))


@bp.route("/logout", methods=["POST"])
def logout():
    # Ended on the server: the cookie, or any copy of it, no longer signs anyone in.
    current_app.extensions["web_sessions"].end(session["sid"])
    log.info("signed out: user %r", g.user.username)
    session.clear()
    flash("You have signed out.", "info")
    return redirect(url_for("web.login"))


# --- pages -----------------------------------------------------------------------------------

@bp.route("/")
def index():
    pending, urgent = _store().queue_counts()
    return render_template("web/index.html", pending=pending, urgent=urgent)


@bp.route("/decisions")
def find_decision():
    """The look-up form on the landing page: an id in, the decision page out."""
    decision_id = (request.args.get("id") or "").strip()
    if not _DECISION_ID_RE.fullmatch(decision_id):
        flash("Enter a decision id (letters, digits and dashes).", "error")
        return redirect(url_for("web.index"))
    return redirect(url_for("web.decision", decision_id=decision_id))


@bp.route("/reviews")
def queue():
    status = request.args.get("status", "pending")
    decision = request.args.get("decision", "")
    subject = (request.args.get("subject") or "").strip()
    cursor = request.args.get("cursor") or None
    errors = {}
    if status not in REVIEW_STATUSES + ("any",):
        errors["status"] = "Choose a review status from the list."
    if decision and decision not in DECISIONS:
        errors["decision"] = "Choose an outcome from the list."
    if subject and not _SUBJECT_RE.fullmatch(subject):
        errors["subject"] = "A subject reference is letters, digits, '.', '_', ':' or '-' (up to 64)."
    filters = {"status": status, "decision": decision, "subject": subject}
    # The physician's queue (pending, no other filter) is urgent first, then oldest first;
    # every other listing is newest first.
    work_queue = status == "pending" and not decision and not subject
    context = dict(filters=filters, statuses=REVIEW_STATUSES, decisions=DECISIONS, work_queue=work_queue,
                   status_names=STATUS_NAMES)
    if errors:
        return render_template("web/queue.html", items=[], next_url=None, errors=errors, counts=None,
                               **context), 422
    store = _store()
    try:
        if work_queue:
            items, next_cursor = store.review_queue(cursor=cursor, limit=QUEUE_PAGE_SIZE)
        else:
            items, next_cursor = store.list_decisions(
                subject_id=subject or None, decision=decision or None,
                review_status=None if status == "any" else status, cursor=cursor, limit=QUEUE_PAGE_SIZE)
    except ValueError:
        # A cursor that was not handed out by the store (edited or stale): start from the top.
        flash("That page of the queue is no longer available; showing the first page.", "error")
        return redirect(url_for("web.queue", **{k: v for k, v in filters.items() if v}))
    next_url = url_for("web.queue", cursor=next_cursor, **{k: v for k, v in filters.items() if v}) if next_cursor else None
    return render_template("web/queue.html", items=items, next_url=next_url, errors={},
                           counts=store.queue_counts() if work_queue else None, **context)


STATUS_NAMES = {"pending": "Pending review", "approved": "Approved", "declined": "Declined",
                "confirmed": "Exclusion confirmed", "overridden": "Exclusion overridden",
                "rescreened": "Re-screened", "not_required": "No review required", "any": "Any"}


def _load(decision_id: str) -> StoredDecision:
    if not _DECISION_ID_RE.fullmatch(decision_id):
        abort(404)
    stored = _store().get_decision(decision_id)
    if stored is None:
        abort(404, "There is no decision with this id in the log.")
    return stored


def _render_decision(stored: StoredDecision, *, form: dict | None = None, errors: dict | None = None):
    body = stored.body
    evidence_paths = {path for reason in body.get("reasons", []) for path in reason.get("evidence", {})}
    signed = None
    signed_id = request.args.get("signed")
    if signed_id and not errors:
        signed = next((r for r in stored.reviews if r.review_id == signed_id), None)
    next_item = None
    if signed is not None:
        waiting, _ = _store().review_queue(limit=2)
        next_item = next((item for item in waiting if item.decision_id != stored.decision_id), None)
    return render_template(
        "web/decision.html", d=stored, body=body, sections=labels.intake_sections(stored.intake),
        evidence_paths=evidence_paths, form=form or {"action": "", "note": "", "overridden_rules": [], "answers": {}},
        errors=errors or {}, max_note=signoff.MAX_NOTE_CHARS, actions=signoff.actions_for(stored.decision),
        excluding=signoff.excluding_rules(body), answer_fields=labels.answer_fields(body.get("missing", [])),
        signed=signed, next_item=next_item, signoff=signoff, status_names=STATUS_NAMES)


@bp.route("/decisions/<decision_id>")
def decision(decision_id: str):
    return _render_decision(_load(decision_id))


@bp.route("/decisions/<decision_id>/review", methods=["POST"])
@physician_required
def sign_off(decision_id: str):
    stored = _load(decision_id)
    action = request.form.get("action", "")
    note = (request.form.get("note") or "").strip()
    overridden = tuple(dict.fromkeys(request.form.getlist("overridden_rules")))
    answers, answer_errors = labels.read_answers(body_missing=stored.body.get("missing", []), form=request.form)
    form = {"action": action, "note": note, "overridden_rules": list(overridden),
            "answers": {p: request.form.get("answer." + p, "") for p in stored.body.get("missing", [])}}
    request_ = signoff.SignOff(action=action, note=note, overridden_rules=overridden,
                               answers=answers if action == signoff.RESCREEN.name else None)
    errors = signoff.check(stored.decision, stored.body, stored.physician_review_required, request_)
    if action == signoff.RESCREEN.name:
        errors.update(answer_errors)
    if not errors:
        try:
            recorded = reviewing.record(_store(), current_app.extensions["rulesets"], stored, request_,
                                        reviewing.Reviewer(g.user.username, "session", g.session_ref))
        except DecisionNotFound:
            abort(404, "There is no decision with this id in the log.")
        except reviewing.SignOffRefused as exc:
            errors = exc.errors
    if errors:
        return _render_decision(stored, form=form, errors=errors), 422
    review = recorded.review
    log.info("sign-off recorded: decision %s, review %s, %s by %r",
             stored.decision_id, review.review_id, review.outcome, g.user.username)
    # Post/redirect/get: reloading the page must not record the sign-off twice. The fragment
    # takes the physician to the confirmation, which also has autofocus.
    return redirect(url_for("web.decision", decision_id=stored.decision_id, signed=review.review_id)
                    + "#confirmation")


# --- errors as pages ------------------------------------------------------------------------

_TITLES = {400: "The request was not accepted", 403: "Not allowed", 404: "Not found",
           405: "Not allowed", 413: "Too large", 503: "The decision log is unavailable"}


def error_page(status: int, message: str) -> tuple[str, int]:
    return render_template("web/error.html", status=status, title=_TITLES.get(status, "Something went wrong"),
                           message=message), status


@bp.errorhandler(HTTPException)
def _http_error(exc: HTTPException):
    if isinstance(exc, CSRFError):
        return error_page(400, "The form had expired or did not come from this site. Go back, "
                               "reload the page and submit it again.")
    message = exc.description or exc.name
    if isinstance(exc, NotFound) and message == NotFound.description:
        message = "There is no such page."
    return error_page(exc.code or 500, message)


@bp.errorhandler(StoreUnavailable)
def _store_unavailable(exc: StoreUnavailable):
    # The HTML form of service.http_io's 503: the same Retry-After, the same failure metric.
    log.error("decision log unavailable: %s", type(exc).__name__)
    record_store_failure(request.endpoint or "unknown")
    body, status = error_page(503, "The decision log cannot be reached right now. Nothing was "
                                   "changed; try again in a few seconds.")
    return body, status, {"Retry-After": str(RETRY_AFTER_S)}


@bp.errorhandler(Exception)
def _unexpected(exc: Exception):
    # Logged with its traceback but never shown: a stack trace can carry intake values.
    current_app.logger.exception("unhandled error on a page: %s", type(exc).__name__)
    return error_page(500, "Something went wrong; nothing was changed. Try again, and tell the "
                           "service's administrators if it happens again.")
