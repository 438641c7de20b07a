"""The clinician pages: sign-in, the review queue and the decision page with its sign-off form.

Every page reads the decision log through the DecisionStore interface only; a sign-off is a new
review record (``add_review``), the decision itself is never changed.
"""
from __future__ import annotations

import hashlib
import logging
import re

from flask import (Blueprint, Response, abort, current_app, flash, g, redirect, render_template,
                   request, session, url_for)
from flask_wtf.csrf import CSRFError
from werkzeug.exceptions import HTTPException, NotFound

from schemas.rulefile import DECISIONS
from service.store.base import (REVIEW_OUTCOMES, REVIEW_STATUSES, DecisionNotFound, DecisionStore,
                                ReviewNotAllowed, StoredDecision, StoreUnavailable)
from service.web import labels
from service.web.security import csrf, physician_required, safe_next, secure_headers
from service.web.users import UserDirectory

log = logging.getLogger("service.web")
bp = Blueprint("web", __name__)

PUBLIC_ENDPOINTS = {"web.login"}
MAX_NOTE_CHARS = 2000
QUEUE_PAGE_SIZE = 25
_SUBJECT_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$")
_DECISION_ID_RE = re.compile(r"^[A-Za-z0-9-]{1,64}$")
RETRY_AFTER_SECONDS = 5


def _users() -> UserDirectory:
    return current_app.extensions["users"]


def _store() -> DecisionStore:
    store = current_app.extensions.get("store")
    if store is None:
        raise StoreUnavailable("no decision log is configured")
    return store


@bp.before_request
def _require_sign_in():
    username = session.get("user")
    g.user = _users().get(username) if isinstance(username, str) else None
    if request.method == "POST":
        csrf.protect()  # 400 before anything else when the token is missing or wrong
    if g.user is None and request.endpoint not in PUBLIC_ENDPOINTS:
        if username is not None:
            session.clear()  # the user was removed from the configuration
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
    if username:
        # Counted before the password is checked: a guesser learns nothing past the limit.
        key = "s" + hashlib.sha256(username.lower().encode("utf-8")).hexdigest()[:31]
        usage = current_app.extensions["signin_limiter"].hit(key)
        if not usage.allowed:
            log.warning("sign-in refused: too many attempts for one user name")
            minutes = max(1, round(usage.reset / 60))
            return render_template("web/login.html", next_url=next_url, username=username,
                                   error=f"Too many sign-in attempts for this user name; try again in {minutes} minutes."), \
                429, {"Retry-After": usage.headers()["Retry-After"]}
    user = _users().authenticate(username, password) if username and password else None
    if user is None:
        # The name is logged only when it is a real account: a mistyped password in the name
        # field must not end up in the logs.
        known = _users().get(username) is not None
        log.warning("sign-in refused for %s", f"user {username!r}" if known else "an unknown user name")
        return render_template("web/login.html", next_url=next_url, username=username,
                               error="The user name or password is not correct."), 401
    session.clear()  # a new session for the new sign-in, nothing carried over
    session.permanent = True
    session["user"] = user.username
    log.info("signed in: user %r (%s)", user.username, user.role)
    return redirect(next_url or url_for("web.index"))


@bp.route("/logout", methods=["POST"])
def logout():
    log.info("signed out: user %r", g.user.username)
    session.clear()
    flash("You have signed out.", "info")
    return redirect(url_for("web.login"))


# --- pages -----------------------------------------------------------------------------------

@bp.route("/")
def index():
    return render_template("web/index.html")


@bp.route("/decisions")
def find_decision():
    """The look-up form on the landing page: an id in, the decision page out."""
    decision_id = (request.args.get("id") or "").strip()
    if not _DECISION_ID_RE.match(decision_id):
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
    if subject and not _SUBJECT_RE.match(subject):
        errors["subject"] = "A subject reference is letters, digits, '.', '_', ':' or '-' (up to 64)."
    filters = {"status": status, "decision": decision, "subject": subject}
    if errors:
        return render_template("web/queue.html", items=[], next_url=None, filters=filters,
                               errors=errors, statuses=REVIEW_STATUSES, decisions=DECISIONS), 422
    try:
        items, next_cursor = _store().list_decisions(
            subject_id=subject or None, decision=decision or None,
            review_status=None if status == "any" else status, cursor=cursor, limit=QUEUE_PAGE_SIZE)
    except ValueError:
        # A cursor that was not handed out by the store (edited or stale): start from the top.
        flash("That page of the queue is no longer available; showing the newest decisions.", "error")
        return redirect(url_for("web.queue", **{k: v for k, v in filters.items() if v}))
    next_url = url_for("web.queue", cursor=next_cursor, **{k: v for k, v in filters.items() if v}) if next_cursor else None
    return render_template("web/queue.html", items=items, next_url=next_url, filters=filters,
                           errors={}, statuses=REVIEW_STATUSES, decisions=DECISIONS)


def _load(decision_id: str) -> StoredDecision:
    if not _DECISION_ID_RE.match(decision_id):
        abort(404)
    stored = _store().get_decision(decision_id)
    if stored is None:
        abort(404, "There is no decision with this id in the log.")
    return stored


def _render_decision(stored: StoredDecision, *, form: dict | None = None, errors: dict | None = None):
    body = stored.body
    evidence_paths = {path for reason in body.get("reasons", []) for path in reason.get("evidence", {})}
    return render_template(
        "web/decision.html", d=stored, body=body, sections=labels.intake_sections(stored.intake),
        evidence_paths=evidence_paths, form=form or {"outcome": "", "note": ""}, errors=errors or {},
        max_note=MAX_NOTE_CHARS)


@bp.route("/decisions/<decision_id>")
def decision(decision_id: str):
    return _render_decision(_load(decision_id))


@bp.route("/decisions/<decision_id>/review", methods=["POST"])
@physician_required
def sign_off(decision_id: str):
    stored = _load(decision_id)
    outcome = request.form.get("outcome", "")
    note = (request.form.get("note") or "").strip()
    errors = {}
    if not stored.physician_review_required:
        errors["form"] = "This decision does not require a physician's sign-off."
    if outcome not in REVIEW_OUTCOMES:
        errors["outcome"] = "Choose approve or decline."
    if len(note) > MAX_NOTE_CHARS:
        errors["note"] = f"The note is {len(note)} characters; the limit is {MAX_NOTE_CHARS}."
    elif outcome == "decline" and not note:
        errors["note"] = "Say why you decline: the note is required when declining."
    if errors:
        return _render_decision(stored, form={"outcome": outcome, "note": note}, errors=errors), 422
    try:
        review = _store().add_review(stored.decision_id, reviewer=g.user.username, outcome=outcome, note=note)
    except DecisionNotFound:
        abort(404, "There is no decision with this id in the log.")
    except ReviewNotAllowed:
        errors["form"] = "This decision does not require a physician's sign-off."
        return _render_decision(stored, form={"outcome": outcome, "note": note}, errors=errors), 422
    log.info("sign-off recorded: decision %s, review %s, %s by %r",
             stored.decision_id, review.review_id, outcome, g.user.username)
    flash("Your sign-off was recorded: " + ("approved." if outcome == "approve" else "declined."), "success")
    # Post/redirect/get: reloading the page must not record the sign-off twice.
    return redirect(url_for("web.decision", decision_id=stored.decision_id) + "#reviews")


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
    log.error("decision log unavailable: %s", type(exc).__name__)
    body, status = error_page(503, "The decision log cannot be reached right now. Nothing was "
                                   "changed; try again in a few seconds.")
    return body, status, {"Retry-After": str(RETRY_AFTER_SECONDS)}


@bp.errorhandler(Exception)
def _unexpected(exc: Exception):
    # Logged with its traceback but never shown: a stack trace can carry intake values.
    current_app.logger.exception("unhandled error on a page: %s", type(exc).__name__)
    return error_page(500, "Something went wrong; nothing was changed. Try again, and tell the "
                           "service's administrators if it happens again.")
