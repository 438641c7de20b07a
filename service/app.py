"""The Flask app factory: everything the app holds hangs off ``app.extensions``."""
from __future__ import annotations

from flask import Flask

from service.api import admin, decisions, health, rulesets, screenings
from service import auth
from service.api import docs, headers
from service.api.openapi import ScreeningApi
from service.config import Settings
from service import http_io
from service.observability.hooks import init_app as init_observability
from service.reload import Reloader, load_or_fall_back
from service.ruleset import RulesetHolder
from service.ratelimit import init_app as init_rate_limit
from service.store.factory import open_store
from service.web import init_web


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
    # With the rules cache on, a gunicorn worker takes the ruleset its master loaded before the
    # fork, or the pack from <state_dir>/rules-cache (service.policy.packcache).
    cache = settings.pack_cache()
    ruleset, fallback_reason = load_or_fall_back(settings.rules_dir, settings.engine_backend, settings.state_dir,
                                                 settings.serving, cache)
    holder = RulesetHolder(ruleset)
    holder.last_error = fallback_reason
    app.extensions["rulesets"] = holder
    reloader = Reloader(holder, settings.rules_dir, settings.engine_backend, settings.state_dir,
                        settings.compile_timeout, cache=cache)
    app.extensions["reloader"] = reloader
    if settings.reload_interval > 0:
        reloader.start(settings.reload_interval)

    # The decision log (migrated under a lock; a database down at start is retried on use).
    app.extensions["store"] = open_store(settings.store_url)
    # API keys read from that database are trusted for SCREENING_KEY_CACHE_SECONDS (the bound on
    # honouring a revocation), so a request does not read the key table.
    app.extensions["key_cache"] = auth.KeyCache(app.extensions["store"].keys, settings.key_cache_seconds)
    # Requests per API key, a token bucket in that database (429 past SCREENING_RATE_LIMIT).
    init_rate_limit(app, settings.rate_limit, app.extensions["store"])
    # ScreeningApi: flask-smorest's Api with our error body and the description completed.
    api = ScreeningApi(app)
    auth.register(api)  # API keys: security schemes and 401/403 in the description
    for blueprint in (health.blp, screenings.blp, rulesets.blp, admin.blp, decisions.blp):
        api.register_blueprint(blueprint)
    app.register_blueprint(docs.bp)  # /docs: Swagger UI over /openapi.json, assets from the package
    http_io.register(app)  # one map from errors to responses, for every blueprint
    # no-store on API responses, CSP on /docs, a query parameter given twice refused (400)
    headers.init_app(app)
    init_web(app)  # the clinician pages: sign-in, review queue, decision pages (service/web)
    # CDS Hooks 2.0 for EHRs: /cds-services, JWT-authenticated (no API keys) (service/cdshooks)
    from service.cdshooks import blueprint as cds_hooks
    cds_hooks.register(app, settings.cds_hooks)
    # Request ids, the JSON request log and Prometheus metrics for every route.
    init_observability(app)
    return app
