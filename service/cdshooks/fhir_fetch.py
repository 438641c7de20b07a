"""Gathering the patient's FHIR data: prefetch first, then the client's FHIR server for the rest.

Prefetched values are parsed with ``fhir.resources`` (R4B, wire-compatible with R4 for these
resources). A prefetch key that is absent or holds an OperationOutcome was not satisfied; a key
whose value is null was satisfied and found nothing. What is unsatisfied is fetched from
``fhirServer`` with the ``fhirAuthorization`` bearer token, in parallel and with short timeouts
(the whole call has a ~500 ms budget). When a required key can be had neither way the caller
answers 412, as the specification requires.
"""
from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import requests
from pydantic import ValidationError as PydanticError

from fhir.resources.R4B import get_fhir_model_class
from fhir.resources.R4B.bundle import Bundle
from service.cdshooks.discovery import PREFETCH, REQUIRED_KEYS
from service.cdshooks.mapping import FhirRecord

_TOKEN = re.compile(r"\{\{\s*([A-Za-z.]+)\s*\}\}")
MAX_PAGES = 5


class DataUnavailable(Exception):
    """Required data could be had neither from prefetch nor from the FHIR server (412)."""

    def __init__(self, keys: list[str], reasons: dict[str, str]):
        super().__init__(", ".join(keys))
        self.keys = keys
        self.reasons = reasons


class MalformedFhir(Exception):
    """A prefetched or fetched resource is not valid FHIR; ``path`` names where."""

    def __init__(self, path: str, message: str):
        super().__init__(f"{path}: {message}")
        self.path = path
        self.message = message


@dataclass(frozen=True)
class FetchSettings:
    timeout_seconds: float = 2.0
    max_workers: int = 8


def parse_resource(value: dict, path: str) -> Any:
    if not isinstance(value, dict) or not isinstance(value.get("resourceType"), str):
        raise MalformedFhir(path, "is not a FHIR resource (no resourceType)")
    try:
        cls = get_fhir_model_class(value["resourceType"])
    except ValueError:
        raise MalformedFhir(path + ".resourceType", f"unknown resource type {value['resourceType']!r}") from None
    try:
        return cls.model_validate(value)
    except PydanticError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "__root__")
        raise MalformedFhir(f"{path}.{where}" if where else path, first.get("msg", "invalid")) from None


def resources_of(parsed: Any) -> list[Any]:
    """A searchset Bundle's resources (search matches and includes), or the single resource."""
    if parsed is None:
        return []
    if parsed.__resource_type__ == "Bundle":
        return [e.resource for e in parsed.entry or [] if e.resource is not None]
    return [parsed]


def render_template(template: str, context: dict) -> str | None:
    """Replace prefetch tokens; None when the context lacks one (the query cannot be built)."""
    missing = False

    def value(match: re.Match) -> str:
        nonlocal missing
        name = match.group(1)
        if name.startswith("context."):
            found = context.get(name[len("context."):])
        else:
            found = None
        if not isinstance(found, (str, int)) or found == "":
            missing = True
            return ""
        return quote(str(found), safe="")
    rendered = _TOKEN.sub(value, template)
    return None if missing else rendered


class FhirClient:
    def __init__(self, base_url: str, token: str | None, settings: FetchSettings):
        self.base = base_url.rstrip("/") + "/"
        self.settings = settings
        self.session = requests.Session()
        self.session.headers["Accept"] = "application/fhir+json"
        if token:
            self.session.headers["Authorization"] = f"Bearer {token}"

    def get(self, relative_or_absolute: str, path: str) -> Any:
        absolute = relative_or_absolute.startswith(("http://", "https://"))
        url = relative_or_absolute if absolute else self.base + relative_or_absolute
        if not url.startswith(self.base):
            # A paging link that leaves the server we were authorised for is not followed:
            # the bearer token must not travel anywhere else.
            raise DataUnavailable([path], {path: "paging link outside fhirServer"})
        response = self.session.get(url, timeout=self.settings.timeout_seconds, allow_redirects=False)
        if response.status_code == 404 and "?" not in relative_or_absolute:
            return None
        if response.status_code != 200:
            raise DataUnavailable([path], {path: f"FHIR server answered {response.status_code}"})
        try:
            body = response.json()
        except (ValueError, RecursionError):
            raise DataUnavailable([path], {path: "FHIR server answered with something that is not JSON"}) from None
        try:
            return parse_resource(body, path)
        except MalformedFhir:
            # What a FHIR server answers is never quoted back to the caller (it may not be the
            # server the EHR meant, and its text is not ours to pass on).
            raise DataUnavailable([path], {path: "FHIR server answered with something that is not valid FHIR"}) from None

    def search_all(self, query: str, key: str) -> list[Any]:
        parsed = self.get(query, key)
        out = resources_of(parsed)
        pages = 1
        while parsed is not None and parsed.__resource_type__ == "Bundle" and pages < MAX_PAGES:
            nxt = next((link.url for link in parsed.link or [] if link.relation == "next"), None)
            if not nxt:
                break
            parsed = self.get(nxt, key)
            out.extend(resources_of(parsed))
            pages += 1
        return out


def gather(request_body: dict, settings: FetchSettings) -> dict[str, list[Any]]:
    """Every prefetch key -> its resources. Raises DataUnavailable (412) or MalformedFhir (400)."""
    context = request_body.get("context") or {}
    prefetch = request_body.get("prefetch") or {}
    if not isinstance(prefetch, dict):
        raise MalformedFhir("prefetch", "must be an object")
    out: dict[str, list[Any]] = {}
    unsatisfied: dict[str, str] = {}
    for key, template in PREFETCH.items():
        if key in prefetch:
            value = prefetch[key]
            if value is None:
                out[key] = []
                continue
            parsed = parse_resource(value, f"prefetch.{key}")
            if parsed.__resource_type__ == "OperationOutcome":
                unsatisfied[key] = "the client reported an error prefetching it"
                continue
            out[key] = resources_of(parsed)
            # A paginated prefetch (a next link) needs the server for the rest.
            if parsed.__resource_type__ == "Bundle" and any(link.relation == "next" for link in parsed.link or []):
                unsatisfied[key] = "paginated"
                del out[key]
            continue
        unsatisfied[key] = "not prefetched"

    if unsatisfied:
        out.update(_fetch(unsatisfied, request_body, context, settings))
    missing = [k for k in REQUIRED_KEYS if k not in out]
    if missing:
        raise DataUnavailable(missing, {k: unsatisfied.get(k, "unavailable") for k in missing})
    return out


def _fetch(keys: dict[str, str], request_body: dict, context: dict, settings: FetchSettings) -> dict[str, list[Any]]:
    server = request_body.get("fhirServer")
    auth = request_body.get("fhirAuthorization") or {}
    if not isinstance(server, str) or not server.startswith(("http://", "https://")):
        return {}
    token = auth.get("access_token") if isinstance(auth, dict) else None
    client = FhirClient(server, token if isinstance(token, str) else None, settings)
    queries = {k: render_template(PREFETCH[k], context) for k in keys}

    def one(key: str) -> tuple[str, list[Any] | None]:
        query = queries[key]
        if query is None:
            return key, None
        try:
            return key, client.search_all(query, key)
        except (requests.RequestException, DataUnavailable):
            return key, None

    out: dict[str, list[Any]] = {}
    with ThreadPoolExecutor(max_workers=min(settings.max_workers, len(keys))) as pool:
        for key, resources in pool.map(one, keys):
            if resources is not None:
                out[key] = resources
    return out


def build_record(data: dict[str, list[Any]], draft_resources: list[Any], ordered_ids: set[int]) -> FhirRecord:
    """The record the mapping reads. ``ordered_ids`` are id()s of the ketamine draft orders,
    which are the treatment, not a co-medication."""
    patients = [r for r in data.get("patient", []) if r.__resource_type__ == "Patient"]
    observations = [r for k in ("bloodPressure", "reproductiveStatus") for r in data.get(k, [])
                    if r.__resource_type__ == "Observation"]
    meds = None
    if "medicationStatements" in data or "medicationRequests" in data:
        meds = [r for k in ("medicationStatements", "medicationRequests") for r in data.get(k, [])
                if r.__resource_type__ in ("MedicationStatement", "MedicationRequest")]
    return FhirRecord(
        patient=patients[0] if patients else None,
        observations=observations,
        conditions=[r for r in data["conditions"] if r.__resource_type__ == "Condition"] if "conditions" in data else None,
        medications=meds,
        allergies=[r for r in data["allergies"] if r.__resource_type__ == "AllergyIntolerance"] if "allergies" in data else None,
        questionnaire_responses=[r for r in data.get("intakeQuestionnaire", []) if r.__resource_type__ == "QuestionnaireResponse"],
        other_draft_orders=[r for r in draft_resources
                            if r.__resource_type__ == "MedicationRequest" and id(r) not in ordered_ids],
    )


def parse_draft_orders(context: dict) -> list[Any]:
    draft = context.get("draftOrders")
    if not isinstance(draft, dict):
        raise MalformedFhir("context.draftOrders", "must be a Bundle of draft orders")
    parsed = parse_resource(draft, "context.draftOrders")
    if not isinstance(parsed, Bundle):
        raise MalformedFhir("context.draftOrders.resourceType", "must be Bundle")
    return resources_of(parsed)
