"""Sessions, CSRF and response headers of the clinician pages.

The JSON API authenticates machines with API keys and is not touched here: CSRF is checked only
for this blueprint's forms, and the headers only go on its pages.
"""
from __future__ import annotations

import datetime as dt
import functools
import logging
from pathlib import Path
from typing import Callable
from urllib.parse import urlsplit

from flask import Flask, Response, abort, g, redirect, request, url_for
from flask_wtf.csrf import CSRFProtect

from service.web.settings import WebSettings
from service.web.signin import MIN_SECRET_CHARS, shared_secret

log = logging.getLogger("service.web")
csrf = CSRFProtect()

# No inline script or style anywhere, so 'self' is the whole policy.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'; object-src 'none'"
)


def configure(app: Flask, settings: WebSettings, state_dir: Path) -> None:
    if not app.config.get("SECRET_KEY"):
        if settings.secret_key is None:
            # One key for every worker and across restarts (service.web.signin).
            app.config["SECRET_KEY"] = shared_secret(state_dir)
        elif len(settings.secret_key) < MIN_SECRET_CHARS:
            raise SystemExit(f"configuration: SCREENING_SECRET_KEY must be at least {MIN_SECRET_CHARS} characters")
        else:
            app.config["SECRET_KEY"] = settings.secret_key
    app.config.update(
        SESSION_COOKIE_NAME="screening_session",
        SESSION_COOKIE_SECURE=settings.cookie_secure,
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        PERMANENT_SESSION_LIFETIME=dt.timedelta(hours=settings.session_hours),
        # The API's POSTs carry API keys, not cookies: forms of the web blueprint are checked
        # explicitly (web.views) instead of every POST of the app.
        WTF_CSRF_CHECK_DEFAULT=False,
        # A token lives as long as the sign-in: a physician who reads a long record before signing
        # off must not lose the form to a one-hour token.
        WTF_CSRF_TIME_LIMIT=None,
        WTF_CSRF_SSL_STRICT=settings.cookie_secure,
    )
    csrf.init_app(app)


def secure_headers(response: Response, *, hsts: bool) -> Response:
    headers = response.headers
    headers.setdefault("Content-Security-Policy", CONTENT_SECURITY_POLICY)
    headers.setdefault("X-Content-Type-Options", "nosniff")
    headers.setdefault("X-Frame-Options", "DENY")
    headers.setdefault("Referrer-Policy", "same-origin")
    headers.setdefault("Cross-Origin-Opener-Policy", "same-origin")
    headers.setdefault("Permissions-Policy", "camera=(), microphone=(), geolocation=()")
    # Pages carry clinical data: no copy in shared caches or the browser's back/forward store.
    headers["Cache-Control"] = "no-store"
    if hsts:
        headers.setdefault("Strict-Transport-Security", "max-age=31536000; includeSubDomains")
    return response


def safe_next(target: str | None) -> str | None:
    """A path on this site to go back to after signing in; anything else (another host,
    //evil.example, a scheme) is dropped."""
    if not target:
        return None
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return None
    return target


def physician_required(view: Callable) -> Callable:
    @functools.wraps(view)
    def wrapper(*args, **kwargs):
        if g.user is None:
            return redirect(url_for("web.login", next=request.full_path.rstrip("?")))
        if not g.user.can_sign_off:
            abort(403, "Only physicians may sign off a screening decision.")
        return view(*args, **kwargs)
    return wrapper
