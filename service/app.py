"""The Flask app factory: everything the app holds hangs off ``app.extensions``."""
from __future__ import annotations

from flask import Flask
from flask_smorest import Api

from service.api import admin, health, problems, rulesets, screenings
from service.config import Settings
from service.observability.hooks import init_app as init_observability
from service.reload import Reloader, load_or_fall_back
from service.ruleset import RulesetHolder


def create_app(settings: Settings | None = None) -> Flask:
    settings = settings or Settings.from_env()
    app = Flask(__name__)
    app.config.update(
        API_TITLE="Ketamine screening service",
        API_VERSION="1.0.0",
        OPENAPI_VERSION="3.0.3",
        OPENAPI_URL_PREFIX="/",
        OPENAPI_JSON_PATH="openapi.json",
        # Werkzeug refuses bodies past this before we read them (413).
        MAX_CONTENT_LENGTH=settings.max_body_bytes,
        JSON_SORT_KEYS=False,
    )
    app.json.sort_keys = False
    app.extensions["settings"] = settings
    # A pack that fails lint or compile stops start-up here, with every problem in the message
    # (a worker restarted while the service is serving falls back to the last good pack).
    ruleset, fallback_reason = load_or_fall_back(settings.rules_dir, settings.engine_backend, settings.state_dir)
    holder = RulesetHolder(ruleset)
    holder.last_error = fallback_reason
    app.extensions["rulesets"] = holder
    reloader = Reloader(holder, settings.rules_dir, settings.engine_backend, settings.state_dir,
                        settings.compile_timeout)
    app.extensions["reloader"] = reloader
    if settings.reload_interval > 0:
        reloader.start(settings.reload_interval)

    api = Api(app)
    for blueprint in (health.blp, screenings.blp, rulesets.blp, admin.blp):
        api.register_blueprint(blueprint)
    problems.register(app)
    # Request ids, the JSON request log and Prometheus metrics for every route.
    init_observability(app)
    return app
