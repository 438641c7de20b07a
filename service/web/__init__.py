"""The clinician view: server-rendered pages for people (sign-in, review queue, decision page).

``init_web(app)`` is the one call the app factory makes; everything else stays in this package,
its templates under ``service/templates/web`` and its stylesheet under ``service/static/web``.
"""
from __future__ import annotations

from flask import Flask

from service.ratelimit import Rate, RateLimiter
from service.web import security
from service.web.settings import WebSettings
from service.web.users import UserDirectory, UsersConfigError

# At most 10 sign-in attempts per user name in 15 minutes.
SIGNIN_RATE = Rate(10, 15 * 60)


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
    # Password guessing: sign-in attempts per user name are counted in the shared database, so
    # the limit holds across workers and instances (the same counter as API keys).
    store = app.extensions["store"]
    app.extensions["signin_limiter"] = RateLimiter(store.counters, SIGNIN_RATE)
    security.configure(app, settings)

    from service.web.views import bp
    app.register_blueprint(bp)
