"""The Flask app factory: everything the app holds hangs off ``app.extensions``."""
from __future__ import annotations

from flask import Flask
from flask_smorest import Api

from service.api import health, problems, rulesets, screenings
from service.config import Settings
from service.ruleset import RulesetHolder, load_ruleset


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
    # A pack that fails lint or compile stops start-up here, with every problem in the message.
    app.extensions["rulesets"] = RulesetHolder(load_ruleset(settings.rules_dir, settings.engine_backend))

    api = Api(app)
    for blueprint in (health.blp, screenings.blp, rulesets.blp):
        api.register_blueprint(blueprint)
    problems.register(app)
    return app
