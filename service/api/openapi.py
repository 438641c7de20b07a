"""The served OpenAPI description: what flask-smorest generates from the marshmallow schemas,
completed with what the decorators cannot say on their own.

Completed here, for every operation registered (whoever wrote its blueprint):
- the error responses that can happen, each with the one error body (``schemas.errors.ErrorSchema``)
  and an example: a JSON body can be malformed (400), too large (413), not JSON (415) or invalid (422);
  arguments can be invalid (422); a path with an id can name nothing (404); an operation behind an
  API key (``service.auth.require_scope``) can be refused (401, 403; the scope is also said in
  words) or throttled (429, when a rate limiter is installed); one that writes or reads the
  decision log can find it down (503);
- the CDS Hooks endpoints, a plain Flask blueprint, described from ``schemas.cdshooks``;
- examples from the shipped pack: every ``examples/*.json`` intake, and the decision the loaded
  ruleset gives it (computed, so the example can never disagree with the rules).

The description is built once per loaded ruleset and served as built.
"""
from __future__ import annotations

import copy
import datetime as dt
import json
import logging
import threading
import uuid
from pathlib import Path

from flask import Flask, current_app, jsonify
from flask_smorest import Api
from marshmallow import ValidationError

from schemas.errors import ErrorSchema
from schemas.intake import IntakeSchema
from service.errors import envelope, validation_error

log = logging.getLogger(__name__)

EXAMPLES_DIR = Path(__file__).resolve().parents[2] / "examples"
ERROR_REF = {"$ref": "#/components/schemas/Error"}
JSON = "application/json"
METHODS = ("get", "put", "post", "delete", "patch", "head", "options", "trace")

# The reusable error responses: component name (flask-smorest's, from http.HTTPStatus), when it
# happens, and an illustrative message (422's example is produced by real validation instead).
ERRORS: dict[int, tuple[str, str, str]] = {
    400: ("BAD_REQUEST", "The body is not acceptable JSON: malformed or truncated, not UTF-8, NaN or "
          "Infinity, a number out of range, a duplicate key, or nested too deep.",
          "The JSON is malformed: Expecting value at line 1 column 1."),
    401: ("Unauthorized", "No API key, or one that is unknown, revoked or expired.",
          "Send a valid API key as 'Authorization: Bearer <key>'."),
    403: ("Forbidden", "The API key lacks the scope this operation needs.",
          "This API key lacks the scope this operation needs."),
    404: ("NOT_FOUND", "Nothing has this id.", "No such resource."),
    405: ("METHOD_NOT_ALLOWED", "The path exists but not with this method; the Allow header lists "
          "those that do.", "Method not allowed on this resource."),
    413: ("PAYLOAD_TOO_LARGE", "The body is larger than SCREENING_MAX_BODY_BYTES.",
          "The request body is larger than 262144 bytes."),
    415: ("UNSUPPORTED_MEDIA_TYPE", "The body is not sent as application/json.",
          "Send the body as JSON with Content-Type: application/json."),
    422: ("UNPROCESSABLE_CONTENT", "The request is well-formed JSON but not valid: every problem is "
          "listed by field path.", ""),
    429: ("TOO_MANY_REQUESTS", "This API key sent more requests than its rate allows; retry after "
          "the Retry-After header's seconds.", "Too many requests; retry later."),
    503: ("SERVICE_UNAVAILABLE", "The decision log cannot be reached: nothing was decided or stored; "
          "retry after the Retry-After header's seconds.", "The decision log is unavailable; retry later."),
}

def _header(description: str) -> dict:
    return {"description": description, "schema": {"type": "integer", "minimum": 0}}


_RETRY_AFTER = {"Retry-After": _header("Seconds to wait before retrying.")}
# The headers service.ratelimit sends (IETF RateLimit header fields draft).
_RATE_LIMIT = {
    "RateLimit-Limit": _header("Requests this API key may make in a burst (its token bucket's size)."),
    "RateLimit-Remaining": _header("About how many requests the key may make now (tokens left)."),
    "RateLimit-Reset": _header("Seconds until the bucket is full again (on a 429: until the next request is allowed)."),
    "RateLimit-Policy": {"description": "The limit and period, e.g. `1200;w=60`: a bucket of 1,200 refilled at "
                                        "1,200 per 60 s.", "schema": {"type": "string"}},
}
_ERROR_HEADERS = {429: {**_RETRY_AFTER, **_RATE_LIMIT}, 503: _RETRY_AFTER}

# Operations that read or write the decision log, by path prefix: they answer 503 when it is down
# ("/cds-services/" with the slash: a hook call is stored, discovery is not).
STORE_PATHS = ("/v1/screenings", "/v1/decisions", "/v1/reviews", "/cds-services/")


def _nullable_ref_is_null(self, field, ret: dict, **_) -> dict:
    """apispec writes a nullable nested schema in OpenAPI 3.0 as ``anyOf: [{type: object,
    nullable: true}, {$ref}]``: the first branch accepts any object at all, so the nested
    schema would constrain nothing. ``enum: [null]`` narrows that branch to null alone."""
    branches = ret.get("anyOf")
    if not branches:
        return {}
    fixed = [dict(b, enum=[None]) if b == {"type": "object", "nullable": True} else b for b in branches]
    return {"anyOf": fixed}


class ScreeningApi(Api):
    """flask-smorest's Api with our error body as the documented one and the description completed."""

    ERROR_SCHEMA = ErrorSchema

    def _init_spec(self, *args, **kwargs) -> None:
        super()._init_spec(*args, **kwargs)
        self.ma_plugin.converter.add_attribute_function(_nullable_ref_is_null)
        self._document: tuple[str, dict] | None = None
        self._document_lock = threading.Lock()
        self._cds_hooks_documented = False

    def openapi_document(self) -> dict:
        """The complete description for the app in the current request/app context."""
        holder = current_app.extensions.get("rulesets")
        key = getattr(getattr(holder, "current", None), "summary", {}).get("digest", "") if holder else ""
        with self._document_lock:
            if self._document is None or self._document[0] != key:
                if "cds_hooks" in current_app.blueprints and not self._cds_hooks_documented:
                    describe_cds_hooks(self)
                    self._cds_hooks_documented = True
                self._document = (key, complete(self.spec.to_dict(), current_app))
            return self._document[1]

    def _openapi_json(self):
        return jsonify(self.openapi_document())


def openapi_document(app: Flask) -> dict:
    """The description ``/openapi.json`` serves, for tools (the JSON Schema export) outside a request."""
    with app.app_context():
        return app.extensions["flask-smorest"]["apis"][""]["ext_obj"].openapi_document()


def describe_cds_hooks(api: Api) -> None:
    """The CDS Hooks endpoints are a plain Flask blueprint (their errors and CORS follow the CDS
    Hooks spec, not flask-smorest): their operations are described here, from schemas.cdshooks."""
    from schemas import cdshooks as cds
    from service.cdshooks.discovery import SERVICES

    api.spec.components.security_scheme("cdsHooksJwt", {
        "type": "http", "scheme": "bearer", "bearerFormat": "JWT",
        "description": "The CDS client's signed JWT (ES384 or RS384; iss, aud = the exact endpoint URL, exp, "
                       "iat, jti), verified against the issuer's allow-listed JWKS. API keys do not apply here."})
    api.spec.tag({"name": "cds-hooks", "description": "CDS Hooks 2.0 for EHRs: discovery, order-select and "
                                                      "order-sign screening services, feedback."})
    jwt = [{"cdsHooksJwt": []}]
    service_id = {"in": "path", "name": "service_id", "required": True,
                  "schema": {"type": "string", "enum": list(SERVICES)},
                  "description": "A service id from discovery.", "example": "ketamine-screening-sign"}

    def body(schema) -> dict:
        return {"required": True, "content": {JSON: {"schema": schema}}}

    def ok(schema, description: str) -> dict:
        return {"description": description, "content": {JSON: {"schema": schema}}}

    jwt_refused = {"description": "No JWT, or one that is expired, for another audience, from an issuer not "
                                  "allow-listed, signed with a refused algorithm, or replayed (jti).",
                   "content": {JSON: {"schema": ERROR_REF}}}
    not_configured = {"description": "CDS Hooks is not configured here: SCREENING_CDS_BASE_URL (the JWT audience) "
                                     "is not set (code `cds_hooks_not_configured`).",
                      "content": {JSON: {"schema": ERROR_REF}}}
    rules = {rule.endpoint: rule for rule in current_app.url_map.iter_rules()}
    api.spec.path(rule=rules["cds_hooks.discovery"], operations={"get": {
        "tags": ["cds-hooks"], "summary": "CDS Hooks discovery: the services, their hooks and prefetch templates.",
        "security": jwt, "responses": {"200": ok(cds.DiscoverySchema, "The services this server publishes."),
                                       "401": jwt_refused, "503": not_configured}}})
    api.spec.path(rule=rules["cds_hooks.call_service"], parameters=[dict(service_id)], operations={"post": {
        "tags": ["cds-hooks"], "summary": "Call a screening service with an order-select or order-sign hook request.",
        "description": "Answers `{\"cards\": []}` when no draft order is ketamine or esketamine. What prefetch "
                       "did not supply is fetched from `fhirServer` with `fhirAuthorization`.",
        "security": jwt, "requestBody": body(cds.HookRequestSchema),
        "responses": {
            "200": ok(cds.CardsSchema, "Cards: critical (ineligible), warning (physician review), info (eligible)."),
            "412": {"description": "The FHIR data the rules need could not be had from prefetch or the FHIR server "
                                   "(a `fhirServer` not configured for the client's issuer is never contacted).",
                    "content": {JSON: {"schema": ERROR_REF}}},
            "401": jwt_refused,
            "503": not_configured,
        }}})
    api.spec.path(rule=rules["cds_hooks.feedback"], parameters=[dict(service_id)], operations={"post": {
        "tags": ["cds-hooks"], "summary": "Record what the clinician did with the cards (accepted or overridden).",
        "security": jwt, "requestBody": body(cds.FeedbackRequestSchema),
        "responses": {"200": ok(cds.FeedbackRecordedSchema, "Recorded against the cards' decisions."),
                      "401": jwt_refused, "503": not_configured}}})


# --- completing the generated description ----------------------------------------------------

def complete(spec: dict, app: Flask) -> dict:
    doc = copy.deepcopy(spec)
    doc["info"]["description"] = _DESCRIPTION
    components = doc.setdefault("components", {})
    _prune_unused_schemas(doc)
    responses = components.setdefault("responses", {})
    for status, (name, description, message) in ERRORS.items():
        example = _validation_example() if status == 422 else _error_body(status, message)
        # A response another module registered (service.auth's 401/403) keeps its wording.
        response = responses.setdefault(name, {"description": description})
        media = response.setdefault("content", {}).setdefault(JSON, {})
        media.setdefault("schema", ERROR_REF)
        media.setdefault("example", example)
        if status in _ERROR_HEADERS:
            response.setdefault("headers", {}).update(_ERROR_HEADERS[status])
    responses["DEFAULT_ERROR"] = {
        "description": "Any other failure (500: an unexpected error; nothing was decided).",
        "content": {JSON: {"schema": ERROR_REF,
                           "example": _error_body(500, "Internal error; the request was not processed.")}},
    }
    rate_limited = bool(app.config.get("RATELIMIT_ENABLED", app.extensions.get("limiter") is not None))
    for path, method, operation in _operations(doc):
        _error_responses(path, method, operation, rate_limited)
    _intake_components(doc, app)
    _intake_examples(doc, app)
    return doc


def _intake_components(doc: dict, app: Flask) -> None:
    """The Intake and its parts as the served ruleset's field catalog defines them. The
    blueprint registered the installation's schema at start; a reload that brings a catalog
    with another field replaces those components, so the description never lags the validator."""
    from schemas.intake import SHIPPED

    ruleset = getattr(app.extensions.get("rulesets"), "current", None)
    catalog = getattr(getattr(ruleset, "pack", None), "catalog", None)
    schemas = doc.get("components", {}).get("schemas", {})
    if catalog is None or catalog.digest == SHIPPED.digest or "Intake" not in schemas:
        return
    derived = intake_components(ruleset.intake_schema, doc["info"]["title"], doc["info"]["version"], doc["openapi"])
    for name in _component_closure(schemas, "Intake"):
        schemas.pop(name, None)
    schemas.update(derived)


def intake_components(intake_schema, title: str = "intake", version: str = "1", openapi: str = "3.0.3") -> dict:
    """OpenAPI components for an intake schema, converted as the served description converts
    it (one converter, so the JSON Schema of a candidate catalog compares with the published one)."""
    from apispec import APISpec
    from apispec.ext.marshmallow import MarshmallowPlugin

    plugin = MarshmallowPlugin()
    spec = APISpec(title, version, openapi, plugins=[plugin])
    plugin.converter.add_attribute_function(_nullable_ref_is_null)
    spec.components.schema("Intake", schema=intake_schema)
    return spec.to_dict()["components"]["schemas"]


def _component_closure(schemas: dict, name: str) -> set[str]:
    seen, todo = set(), [name]
    while todo:
        current = todo.pop()
        if current in seen or current not in schemas:
            continue
        seen.add(current)
        text = json.dumps(schemas[current])
        todo.extend(part.split('"')[0] for part in text.split("#/components/schemas/")[1:])
    return seen


_DESCRIPTION = """\
Screens an intake for ketamine treatment (IV racemic ketamine, esketamine nasal spray) against a
declarative rule pack and answers with a decision — `eligible`, `ineligible` or `incomplete` — with
every reason that applies, the data that was missing, the ruleset it was decided under and whether a
physician must review it.

Every error has the same body (`Error`): `{"error": {"status", "code", "message", "errors": [{"path",
"message"}], "request_id"}}`. An invalid intake gets 422 with every problem by field path; a method
a path does not have gets 405 with an `Allow` header. The intake and decision are also published as
JSON Schema files (`schemas/json/`), generated from this description.
"""


def _error_body(status: int, message: str, errors: list | None = None) -> dict:
    return {"error": envelope(status, message, errors)}


def _validation_example() -> dict:
    """A real 422: what an impossible intake gets from the validation the endpoint runs."""
    impossible = {"subject_id": "pt-0001", "treatment": {"route": "iv_ketamine", "indication": "ptsd"},
                  "vitals": {"systolic_bp": 900, "diastolic_bp": 95}, "weight_kg": 80}
    try:
        IntakeSchema().load(impossible)
    except ValidationError as exc:
        error = validation_error(exc, "The intake is not valid.")
        return _error_body(422, error.message, error.errors)
    raise AssertionError("the impossible intake validated")  # pragma: no cover - a schema regression


def _operations(doc: dict):
    for path, item in doc.get("paths", {}).items():
        for method in METHODS:
            if method in item:
                yield path, method, item[method]


def _error_responses(path: str, method: str, operation: dict, rate_limited: bool) -> None:
    statuses: set[int] = set()
    body = operation.get("requestBody", {}).get("content", {})
    if JSON in body:
        statuses |= {400, 413, 415, 422}
    parameters = operation.get("parameters", [])
    if any(p.get("in") in ("query", "header") for p in parameters if "in" in p):
        statuses.add(422)
    if "{" in path:
        statuses.add(404)
    if path.startswith(STORE_PATHS):
        statuses.add(503)
    if operation.get("security"):
        # service.auth.require_scope marks the operation; OpenAPI 3.0 gives bearer schemes no
        # scopes, so the one needed is said in words as well as in x-required-scope.
        statuses.add(401)
        scope = operation.get("x-required-scope")
        if scope:
            statuses.add(403)
        if scope and "API key scope" not in operation.get("description", ""):
            operation["description"] = (operation.get("description", "") + f"\n\nAPI key scope: `{scope}` "
                                        "(or `admin`).").lstrip()
        if rate_limited:
            statuses.add(429)
    responses = operation.setdefault("responses", {})
    for status in sorted(statuses):
        existing = responses.get(str(status))
        if existing is None:
            responses[str(status)] = {"$ref": f"#/components/responses/{ERRORS[status][0]}"}
        elif "$ref" not in existing:
            # Declared by the blueprint with its own wording: keep it, make sure the body is there.
            existing.setdefault("content", {}).setdefault(JSON, {}).setdefault("schema", ERROR_REF)
    responses.setdefault("default", {"$ref": "#/components/responses/DEFAULT_ERROR"})
    # Ordered by status for readers, "default" last.
    operation["responses"] = dict(sorted(responses.items(), key=lambda kv: (kv[0] == "default", kv[0])))


def _prune_unused_schemas(doc: dict) -> None:
    """flask-smorest registers PaginationMetadata whether or not anything pages."""
    schemas = doc.get("components", {}).get("schemas", {})
    if "PaginationMetadata" in schemas and "#/components/schemas/PaginationMetadata" not in json.dumps(doc):
        del schemas["PaginationMetadata"]


# --- examples from the shipped pack ----------------------------------------------------------

def shipped_examples() -> dict[str, dict]:
    """examples/*.json by name; empty when the package is installed without them."""
    if not EXAMPLES_DIR.is_dir():
        return {}
    return {p.stem: json.loads(p.read_text()) for p in sorted(EXAMPLES_DIR.glob("*.json"))}


def _intake_examples(doc: dict, app: Flask) -> None:
    """Every operation whose body is an Intake gets the shipped intakes as examples, and its 200
    response the decision each one gets from the loaded ruleset."""
    from service.screening import screen  # the screening core, imported only when documenting

    holder = app.extensions.get("rulesets")
    ruleset = getattr(holder, "current", None)
    requests: dict[str, dict] = {}
    decisions: dict[str, dict] = {}
    schema = ruleset.intake_schema if ruleset is not None else IntakeSchema()  # the served catalog's
    for name, raw in shipped_examples().items():
        try:
            intake = schema.load(raw)
        except ValidationError as exc:  # a broken example must not break the description
            log.warning("examples/%s.json is not a valid intake: %s", name, exc.messages)
            continue
        decision = None
        if ruleset is not None:
            decision = screen(intake, ruleset, decision_id=str(uuid.uuid5(uuid.NAMESPACE_URL, name)),
                              as_of=dt.datetime.now(dt.timezone.utc)).to_dict()
        summary = f"examples/{name}.json"
        if decision is not None:
            summary += f" → {decision['decision']}" + (", physician review" if decision["physician_review_required"] else "")
            decisions[name] = {"summary": summary, "value": decision}
        requests[name] = {"summary": summary, "value": raw}
    if not requests:
        return
    for _path, _method, operation in _operations(doc):
        media = operation.get("requestBody", {}).get("content", {}).get(JSON)
        if not media or media.get("schema") != {"$ref": "#/components/schemas/Intake"}:
            continue
        media.setdefault("examples", copy.deepcopy(requests))
        ok = operation.get("responses", {}).get("200", {}).get("content", {}).get(JSON)
        if ok is not None and ok.get("schema") == {"$ref": "#/components/schemas/Decision"} and decisions:
            ok.setdefault("examples", copy.deepcopy(decisions))
