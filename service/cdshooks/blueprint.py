"""HTTP endpoints of the CDS Hooks 2.0 service: discovery, the two screening services, feedback.

These endpoints authenticate CDS clients by their signed JWT (jwt_auth), not by API key, and
answer browser-based clients' CORS preflights. A screening here is the same ``screen()``
decision as POST /v1/screenings, stored in the same decision log.
"""
from __future__ import annotations

import datetime as dt
import logging
from collections import deque
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from flask import Blueprint, Flask, current_app, jsonify, request
from flask_cors import cross_origin
from marshmallow import ValidationError

from schemas.catalog import Catalog
from schemas.cdshooks import FEEDBACK_OUTCOMES
from schemas.errors import dotted, flatten_messages
from service.cdshooks.cards import (
    decision_card,
    prune_empty,
    unidentified_orders_card,
    unscreenable_card,
)
from service.cdshooks.discovery import SERVICES, discovery_document
from service.cdshooks.fhir_fetch import (
    DataUnavailable,
    FetchSettings,
    MalformedFhir,
    build_record,
    gather,
    parse_draft_orders,
)
from service.cdshooks.fhirjson import Node, rtype
from service.cdshooks.jwt_auth import AuthError, StoreJtiCache, Verifier, verifier_from_settings
from service.cdshooks.mapping import (
    DraftOrder,
    Mapping,
    answerable_paths,
    default_mapping,
    find_ketamine_orders,
    map_to_intake,
    not_from_ehr,
    reference_mismatches,
    subject_reference,
    unnamed_orders,
)
from service.cdshooks.urls import fhir_server_allowed, public_base_url
from service.config import CdsHooksSettings
from service.decision import jsonable
# The error model every channel shares; service.http_io maps it (and StoreUnavailable) to responses.
from service.errors import ServiceError as ApiError
from service.http_io import read_json_request
from service.intake_reader import Limits
from service.screening import screen
from service.store.base import Store

bp = Blueprint("cds_hooks", __name__)
log = logging.getLogger("service.cdshooks")

_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="cds-hooks"'}
FEEDBACK_KEPT = 1000


@dataclass
class CdsHooksState:
    verifier: Verifier
    # The public base URL (SCREENING_CDS_BASE_URL): the JWT audience and the card links. Never
    # taken from the request's Host header, which the caller chooses. None: CDS Hooks answers 503.
    base_url: str | None = None
    fetch: FetchSettings = field(default_factory=FetchSettings)
    max_body_bytes: int = 4 * 1024 * 1024
    mapping: Mapping = field(default_factory=default_mapping)
    # Feedback on cards the decision log does not know (see record_feedback): the latest
    # FEEDBACK_KEPT only, so a client repeating it cannot grow the process without bound.
    feedback: deque[dict] = field(default_factory=lambda: deque(maxlen=FEEDBACK_KEPT))
    # Served catalog digest -> the fields the mapping can answer: worked out once per catalog a
    # reload brings, and logged then (what CDS requests will have to ask for).
    answerable: dict[str, frozenset[str]] = field(default_factory=dict)

    def answerable_for(self, catalog: Catalog) -> frozenset[str]:
        found = self.answerable.get(catalog.digest)
        if found is not None:
            return found
        found = answerable_paths(self.mapping, catalog)
        if len(self.answerable) >= 8:  # a catalog no longer served is not asked about again
            self.answerable.clear()
        self.answerable[catalog.digest] = found
        asked = [p for p, info in catalog.flat.items()
                 if p not in found and info.definition is not None and info.definition.question]
        if asked:
            log.info("CDS Hooks: no FHIR mapping answers these fields of the served field catalog; a card "
                     "whose decision needs one lists it as not available from the EHR, to ask: %s", ", ".join(asked))
        for mismatch in reference_mismatches(self.mapping, catalog):
            log.warning("CDS Hooks: field catalog %s", mismatch)
        return found


def state_from_settings(settings: CdsHooksSettings) -> CdsHooksState:
    return CdsHooksState(
        verifier=verifier_from_settings(settings),
        base_url=public_base_url(settings.base_url),
        fetch=FetchSettings(timeout_seconds=settings.fhir_timeout, max_pages=settings.fhir_max_pages),
        max_body_bytes=settings.max_body_bytes,
    )


def register(app: Flask, settings: CdsHooksSettings, state: CdsHooksState | None = None) -> None:
    state = state or state_from_settings(settings)
    # flask-cors takes what the decorator below leaves out from the app's config: the origins
    # are this app's setting, not something read when the module is imported.
    origins = settings.cors_origins
    app.config["CORS_ORIGINS"] = "*" if origins == "*" else list(origins)
    # JWT ids are remembered in the shared database, so a token replayed to another worker fails.
    state.verifier.jtis = StoreJtiCache(app.extensions["store"])
    app.extensions["cds_hooks"] = state
    if state.base_url is None:
        log.warning("SCREENING_CDS_BASE_URL is not set: every CDS Hooks call is answered 503 until it "
                    "names this service's public base URL (the JWT audience)")
    app.register_blueprint(bp)


# Bearer tokens, not cookies: no credentials mode, so "*" does not expose a session.
_cors = cross_origin(methods=["GET", "POST", "OPTIONS"],
                     allow_headers=["Authorization", "Content-Type"], max_age=600)


def _state() -> CdsHooksState:
    return current_app.extensions["cds_hooks"]


_NOT_CONFIGURED = ("CDS Hooks is not configured on this service: SCREENING_CDS_BASE_URL must name its public "
                   "base URL (the audience CDS clients sign their JWTs for).")


def _public_base() -> str:
    base = _state().base_url
    if base is None:
        raise ApiError(503, _NOT_CONFIGURED, code="cds_hooks_not_configured")
    return base


def _authenticate() -> dict:
    state = _state()
    # The audience is this endpoint's public URL from configuration: the Host header is the
    # caller's to choose, so a token minted for another service would pass with its host name.
    audience = _public_base() + request.path
    try:
        return state.verifier.verify(request.headers.get("Authorization"), audience)
    except AuthError as exc:
        raise ApiError(401, str(exc), headers=_CHALLENGE) from None


@bp.before_request
def _larger_bodies() -> None:
    # FHIR prefetch is far larger than an intake: this limit replaces the app's for these routes.
    request.max_content_length = _state().max_body_bytes


@bp.route("/cds-services", methods=["GET"])
@_cors
def discovery():
    _authenticate()
    return jsonify(prune_empty(discovery_document()))


@bp.route("/cds-services/<service_id>", methods=["POST"])
@_cors
def call_service(service_id: str):
    service = SERVICES.get(service_id)
    if service is None:
        raise ApiError(404, f"No CDS service '{service_id}'.")
    claims = _authenticate()
    body = _read_body()
    context = _check_request(body, service.hook)
    state = _state()
    refused_server_url = body.get("fhirServer")
    body, refused_server = _only_configured_fhir_server(body, str(claims["iss"]))
    warnings: list[str] = []
    # One read of the served ruleset per call (a reload may swap it meanwhile): its catalog, its
    # rules and the cards' label all come from the same one.
    ruleset = current_app.extensions["rulesets"].current
    label = f"Ketamine screening rules v{ruleset.summary.get('version', '')}"
    try:
        drafts, index = parse_draft_orders(context, warnings)
        candidates = _selected(drafts, context) if service.hook == "order-select" else drafts
        orders = find_ketamine_orders(candidates, state.mapping, index)
        if not orders:
            unnamed = unnamed_orders(candidates, index)
            _log_warnings(body, warnings)
            return _cards([unidentified_orders_card(unnamed, label=label)] if unnamed else [])
        _check_orders(orders, context, drafts)
        data = gather(body, state.fetch, warnings)
    except MalformedFhir as exc:
        raise ApiError(400, f"Not valid FHIR at {exc.path}: {exc.message}",
                       [{"path": exc.path, "message": exc.message}], code="invalid_fhir") from None
    except DataUnavailable as exc:
        errors = [{"path": f"prefetch.{k}", "message": exc.reasons.get(k, "unavailable")} for k in exc.keys]
        if refused_server:
            errors.insert(0, {"path": "fhirServer", "message": refused_server})
            log.warning("CDS client %s: data unavailable and its fhirServer (host %r) is not configured for it",
                        claims["iss"], _host_of(refused_server_url))
        raise ApiError(412, "The FHIR data the screening rules need could not be obtained from prefetch "
                            "or the FHIR server: " + ", ".join(exc.keys) + ".",
                       errors, code="precondition_failed") from None
    _log_warnings(body, warnings)

    record = build_record(data, drafts, {id(o.resource) for o in orders}, index, warnings)
    # The served ruleset's catalog (a reload may have added fields), never the repository's.
    catalog = ruleset.pack.catalog
    answerable = state.answerable_for(catalog)
    subject = subject_reference(str(claims["iss"]), str(context["patientId"]))
    cards = []
    for order in orders:
        now = dt.datetime.now(dt.timezone.utc)
        mapped = map_to_intake(record, order, state.mapping, as_of=now, subject_id=subject, catalog=catalog)
        if mapped is None:
            continue  # not a screening indication (e.g. procedural anaesthesia)
        try:
            intake = ruleset.intake_schema.load(jsonable(mapped.raw))
        except ValidationError as exc:
            problems = [{"path": dotted(p), "message": m} for p, m in flatten_messages(exc.messages)]
            cards.append(unscreenable_card(problems, route=order.route, label=label))
            continue
        decision = screen(intake, ruleset, as_of=now)
        url = _store(decision, intake, str(claims["iss"]))
        ask = {p: _question(catalog, p) for p in not_from_ehr(decision.missing, answerable)}
        cards.append(decision_card(decision, route=order.route, sources=mapped.sources, notes=mapped.notes,
                                   decision_url=url, assumptions=mapped.assumptions, warnings=mapped.warnings,
                                   not_from_ehr=ask))
    return _cards(cards)


def _question(catalog: Catalog, path: str) -> str:
    """The catalog's question for a field (its label when it asks none)."""
    definition = catalog.definition(path)
    if definition is None:
        return path
    return definition.question or definition.label


def _cards(cards: list[dict]) -> Any:
    # `cards` is required, and empty when there is nothing to say; nothing inside a card is empty.
    return jsonify({"cards": [prune_empty(c) for c in cards]})


def _log_warnings(body: dict, warnings: list[str]) -> None:
    for warning in warnings:
        log.warning("cds-hooks %s: %s", body.get("hookInstance"), warning)


def _check_orders(orders: list[DraftOrder], context: dict, drafts: list[Node]) -> None:
    """The ketamine orders themselves must be readable: the only FHIR problems that refuse a call."""
    for order in orders:
        position = next((i for i, r in enumerate(drafts) if r is order.resource), 0)
        path = f"context.draftOrders.entry.{position}.resource"
        resource = order.resource
        if not isinstance(resource.status, str):
            raise MalformedFhir(f"{path}.status", "the ketamine order has no status")
        subject = resource.subject if isinstance(resource.subject, Node) else resource.patient
        reference = subject.reference if isinstance(subject, Node) else None
        if isinstance(reference, str) and reference.split("/")[-1] != str(context.get("patientId")):
            raise MalformedFhir(f"{path}.subject.reference",
                                "the ketamine order is for another patient than context.patientId")
        for key in ("reasonCode", "reasonReference"):
            value = resource.raw().get(key)
            if value is not None and not isinstance(value, (list, dict)):
                raise MalformedFhir(f"{path}.{key}", "must be a list of CodeableConcepts / References")


@bp.route("/cds-services/<service_id>/feedback", methods=["POST"])
@_cors
def feedback(service_id: str):
    if service_id not in SERVICES:
        raise ApiError(404, f"No CDS service '{service_id}'.")
    claims = _authenticate()
    body = _read_body()
    items = body.get("feedback")
    if not isinstance(items, list) or not items:
        raise ApiError(422, "The body must hold a non-empty 'feedback' array.",
                       [{"path": "feedback", "message": "must be a non-empty array"}])
    errors = []
    for i, item in enumerate(items):
        errors.extend(_check_feedback(item, f"feedback[{i}]"))
    if errors:
        raise ApiError(422, "The feedback is not valid.", errors)
    recorded = [record_feedback(service_id, str(claims["iss"]), item) for item in items]
    return jsonify(prune_empty({"recorded": len(recorded),
                                "unknown_cards": [r["card"] for r in recorded if r["decision_found"] is False]}))


def record_feedback(service_id: str, issuer: str, item: dict) -> dict:
    """Record one feedback item against the decision its card was made from (card uuid = decision
    id), in the decision log. Feedback on a card the log does not know, or on a card issued to
    another CDS client (the decision's client is bound to the JWT issuer it was issued to), is
    reported back as unknown and never attached to that decision: one EHR cannot record an
    outcome on another's screening, nor learn that it exists. Unknown cards are kept in memory
    only, the latest FEEDBACK_KEPT (there is no decision to attach them to)."""
    store: Store = current_app.extensions["store"]
    client = f"cds-hooks:{issuer}"
    stored = store.get_decision(item["card"])
    found = stored is not None and stored.client == client
    entry = {
        "card": item["card"], "decision_id": item["card"], "decision_found": found, "service": service_id,
        "client": client, "outcome": item["outcome"],
        "override_reason": (item.get("overrideReason") or {}).get("reason"),
        "user_comment": (item.get("overrideReason") or {}).get("userComment"),
        "accepted_suggestions": [s.get("id") for s in item.get("acceptedSuggestions") or []],
        "outcome_timestamp": item["outcomeTimestamp"],
    }
    if found:
        store.save_feedback(entry)
    else:
        _state().feedback.append(entry)
    return entry


def _check_feedback(item: Any, path: str) -> list[dict]:
    if not isinstance(item, dict):
        return [{"path": path, "message": "must be an object"}]
    errors = []
    if not isinstance(item.get("card"), str) or not item["card"]:
        errors.append({"path": f"{path}.card", "message": "the card's uuid is required"})
    if item.get("outcome") not in FEEDBACK_OUTCOMES:
        errors.append({"path": f"{path}.outcome", "message": "must be 'accepted' or 'overridden'"})
    stamp = item.get("outcomeTimestamp")
    try:  # the spec: "ISO8601 representation of the date and time in Coordinated Universal Time (UTC)"
        parsed = dt.datetime.fromisoformat(stamp.replace("Z", "+00:00")) if isinstance(stamp, str) else None
        if parsed is None or parsed.utcoffset() != dt.timedelta(0) or "T" not in stamp:
            raise ValueError
    except ValueError:
        errors.append({"path": f"{path}.outcomeTimestamp", "message": "must be a date-time in UTC (Z or +00:00)"})
    if item.get("outcome") == "accepted" and not item.get("acceptedSuggestions"):
        errors.append({"path": f"{path}.acceptedSuggestions",
                       "message": "is required when the outcome is 'accepted' (the suggestions the user accepted)"})
    if item.get("outcome") == "accepted" and item.get("overrideReason") is not None:
        errors.append({"path": f"{path}.overrideReason", "message": "only an 'overridden' outcome has an override reason"})
    reason = item.get("overrideReason")
    if reason is not None:
        if not isinstance(reason, dict):
            errors.append({"path": f"{path}.overrideReason", "message": "must be an object"})
        else:
            coding = reason.get("reason")
            if coding is not None and not (isinstance(coding, dict) and isinstance(coding.get("code"), str)
                                           and isinstance(coding.get("system"), str)):
                errors.append({"path": f"{path}.overrideReason.reason", "message": "must be a Coding with system and code"})
            if reason.get("userComment") is not None and not isinstance(reason.get("userComment"), str):
                errors.append({"path": f"{path}.overrideReason.userComment", "message": "must be a string"})
    accepted = item.get("acceptedSuggestions")
    if accepted is not None and not (isinstance(accepted, list) and all(isinstance(s, dict) and isinstance(s.get("id"), str) and s["id"] for s in accepted)):
        errors.append({"path": f"{path}.acceptedSuggestions", "message": "must be an array of {id}"})
    if item.get("outcome") == "overridden" and accepted:
        errors.append({"path": f"{path}.acceptedSuggestions", "message": "only an 'accepted' outcome accepts suggestions"})
    return errors


def _read_body() -> dict:
    settings = current_app.extensions["settings"]
    # FHIR nests deeper than an intake (QuestionnaireResponse items within items).
    return read_json_request(request, Limits(_state().max_body_bytes, max(settings.max_json_depth, 64)))


def _check_request(body: dict, hook: str) -> dict:
    errors = []
    if body.get("hook") != hook:
        errors.append({"path": "hook", "message": f"must be '{hook}' for this service"})
    if not isinstance(body.get("hookInstance"), str) or not body["hookInstance"]:
        errors.append({"path": "hookInstance", "message": "a UUID string is required"})
    context = body.get("context")
    if not isinstance(context, dict):
        errors.append({"path": "context", "message": "must be an object"})
        context = {}
    else:
        if not isinstance(context.get("patientId"), str) or not context["patientId"]:
            errors.append({"path": "context.patientId", "message": "is required"})
        if not isinstance(context.get("userId"), str):
            errors.append({"path": "context.userId", "message": "is required"})
        if "draftOrders" not in context:
            errors.append({"path": "context.draftOrders", "message": "is required"})
        if hook == "order-select" and not isinstance(context.get("selections"), list):
            errors.append({"path": "context.selections", "message": "is required for order-select"})
    if body.get("fhirAuthorization") is not None:
        auth = body["fhirAuthorization"]
        if not isinstance(auth, dict) or not isinstance(auth.get("access_token"), str):
            errors.append({"path": "fhirAuthorization.access_token", "message": "is required"})
        if not isinstance(body.get("fhirServer"), str):
            errors.append({"path": "fhirServer", "message": "is required when fhirAuthorization is given"})
    if errors:
        raise ApiError(400, "Not a valid CDS Hooks request.", errors, code="invalid_hook_request")
    return context


def _only_configured_fhir_server(body: dict, issuer: str) -> tuple[dict, str | None]:
    """The body as gather() may use it: a `fhirServer` that is not configured for the JWT's
    issuer (SCREENING_CDS_ISSUERS fhir_servers) is removed with its token, so it is never
    contacted; the second value says why, for the 412 should prefetch not be enough."""
    server = body.get("fhirServer")
    if server is None:
        return body, None
    configured = _state().verifier.issuers.get(issuer)
    if configured is not None and fhir_server_allowed(server, configured.fhir_servers):
        return body, None
    # An EHR can be wrong about where its FHIR server is (or be made to be): its token stays here.
    # (Info here: a client that prefetches everything loses nothing; the 412 path warns.)
    log.info("CDS client %s named a fhirServer not configured for it (host %r); not contacted",
             issuer, _host_of(server))
    return ({k: v for k, v in body.items() if k not in ("fhirServer", "fhirAuthorization")},
            "not configured for this client (SCREENING_CDS_ISSUERS fhir_servers); it was not contacted")


def _host_of(url: object) -> str | None:
    try:
        return urlsplit(url).hostname if isinstance(url, str) else None
    except ValueError:
        return None


def _selected(drafts: list, context: dict) -> list:
    """order-select: decision support is about the newly selected orders only."""
    wanted = {s for s in context.get("selections") or [] if isinstance(s, str)}
    return [r for r in drafts if f"{rtype(r)}/{r.id}" in wanted]


def _store(decision, intake: dict, issuer: str) -> str:
    store: Store = current_app.extensions["store"]
    # StoreUnavailable propagates (503 from service.http_io): a decision that is not in the log is
    # not shown, as its card would link to nothing and no physician would see it in the queue.
    store.save_decision(decision, jsonable(intake), client=f"cds-hooks:{issuer}", source="cds-hooks")
    return f"{_public_base()}/decisions/{decision.decision_id}"
