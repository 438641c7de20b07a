"""GET /docs: the interactive API reference (Swagger UI) over /openapi.json.

The Swagger UI files come from the ``swagger-ui-bundle`` package, so the page works with no
network access beyond this service (no CDN), and it carries no inline script (a strict
Content-Security-Policy of ``script-src 'self'`` does not break it).
"""
from __future__ import annotations

from flask import Blueprint, abort, render_template, send_from_directory
from swagger_ui_bundle import swagger_ui_path

bp = Blueprint("docs", __name__)

# Only what the page loads; the bundle's demo index and source maps are not served.
ASSETS = frozenset({"swagger-ui.css", "swagger-ui-bundle.js", "favicon-32x32.png", "favicon-16x16.png"})


@bp.get("/docs")
def docs_page():
    return render_template("docs/index.html")


@bp.get("/docs/assets/<name>")
def docs_asset(name: str):
    if name not in ASSETS:
        abort(404)
    return send_from_directory(str(swagger_ui_path), name, max_age=24 * 3600)
