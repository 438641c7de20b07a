"""Response headers and query-string rules of the JSON API, the CDS Hooks endpoints and /docs.

- API and CDS Hooks responses carry intakes and decisions (PHI): ``Cache-Control: no-store`` so
  no shared cache or browser keeps a copy (the clinician pages set the same in service.web).
- /docs (Swagger UI) gets a Content-Security-Policy of its own (no inline script: the page's
  start-up is a file) and may not be framed (``X-Frame-Options: DENY``, ``frame-ancestors``).
- A query parameter given twice is refused (400 naming it) everywhere: "first wins" would let
  ``?subject_id=a&subject_id=b`` mean something other than what a proxy or log shows.
"""
from __future__ import annotations

from flask import Flask, Response, request
from werkzeug.exceptions import BadRequest

# Prefixes of responses that can hold patient data.
NO_STORE_PREFIXES = ("/v1/", "/cds-services")
DOCS_PREFIX = "/docs"
# Swagger UI sets element styles from script (allowed by style-src 'self') and draws icons from
# data: URIs; it calls only this service (connect-src 'self', "Try it out" included).
DOCS_CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "base-uri 'none'; form-action 'self'; frame-ancestors 'none'; object-src 'none'"
)


class RepeatedParameter(BadRequest):
    def __init__(self, name: str, count: int):
        super().__init__(f"The query parameter '{name}' is given {count} times; give it once.")
        # Read by the JSON error handler (service.http_io) as the field problems.
        self.data = {"messages": {name: ["is given more than once"]}}


def init_app(app: Flask) -> None:
    @app.before_request
    def _one_value_per_query_parameter() -> None:
        for name, values in request.args.lists():
            if len(values) > 1:
                raise RepeatedParameter(name, len(values))

    @app.after_request
    def _headers(response: Response) -> Response:
        path = request.path
        if path.startswith(NO_STORE_PREFIXES):
            response.headers["Cache-Control"] = "no-store"
        elif path == DOCS_PREFIX or path.startswith(DOCS_PREFIX + "/"):
            headers = response.headers
            headers.setdefault("Content-Security-Policy", DOCS_CONTENT_SECURITY_POLICY)
            headers.setdefault("X-Frame-Options", "DENY")
            headers.setdefault("X-Content-Type-Options", "nosniff")
            headers.setdefault("Referrer-Policy", "same-origin")
        return response
