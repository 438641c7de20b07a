"""The clinician view: server-rendered pages for people (sign-in, review queue, decision page).

``init_web(app)`` is the one call the app factory makes; everything else stays in this package,
its templates under ``service/templates/web`` and its stylesheet under ``service/static/web``.
"""
from __future__ import annotations

from flask import Flask

from service.web import security
from service.web.settings import WebSettings
from service.web.signin import SigninGuard
from service.web.users import UserDirectory, UsersConfigError


def init_web(app: Flask, settings: WebSettings | None = None) -> None:
    settings = settings or app.extensions["settings"].web
    try:
        users = UserDirectory.from_setting(settings.users)
    except UsersConfigError as exc:
        raise SystemExit(f"configuration: {exc}") from None
    if not len(users):
        app.logger.warning("SCREENING_USERS is not set: nobody can sign in to the clinician pages "
                           "(add people with `screening users add`)")
    app.extensions["web_settings"] = settings
    app.extensions["users"] = users
    # Password guessing: failed sign-ins per user name are counted in the shared database (a
    # sliding window), and sessions live there too, so both hold across workers and instances.
    store = app.extensions["store"]
    app.extensions["signin_guard"] = SigninGuard(store.signin_failures)
    app.extensions["web_sessions"] = store.web_sessions
    security.configure(app, settings, app.extensions["settings"].state_dir)

    from service.web.views import bp
    app.register_blueprint(bp)
