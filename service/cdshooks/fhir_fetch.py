"""Gathering the patient's FHIR data: prefetch first, then the client's FHIR server for the rest.

Prefetched values are read as tolerant JSON (``fhirjson.Node``), not validated against one FHIR
version: an element of another version's shape, or one malformed resource, is a warning, never a
refusal of the whole call. A prefetch key that is absent, holds an OperationOutcome or holds
something that is not a FHIR resource was not satisfied; a key whose value is null was
satisfied and found nothing. What is unsatisfied is fetched from
``fhirServer`` with the ``fhirAuthorization`` bearer token, in parallel and with short timeouts
(the whole call has a ~500 ms budget). When a required key can be had neither way the caller
answers 412, as the specification requires.

A search is followed through at most ``FetchSettings.max_pages`` pages
(SCREENING_CDS_FHIR_MAX_PAGES). A list read whole (conditions, medications, allergies: no
``_sort``) that has more pages than that, or holds fewer matches than its Bundle's own
``total`` (a prefetch the client cut, which is fetched again when it can be), is *cut short*:
what was read says nothing about the rest, so the key is left out as unread (its fields stay
missing, nothing is assumed absent) and a warning says why; it is not a 412, since the list was
answered. A latest-first search (``_sort``) keeps the pages read: what it asks for comes first (a
paginated prefetch of one, or one short of its ``total``, is taken as it is).

Pregnancy tests are one search, ``code:in`` the published Pregnancy Test set. When the service
runs it itself and the server refuses it (a 4xx: ``:in`` unsupported) or ignores it (it answers
observations outside the set), it asks once more with the set's LOINC codes as one token list;
each search reads its first page only (at most two requests). Whatever comes back, only
observations of the set are read as pregnancy tests.
"""
from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import requests

from service.cdshooks.discovery import (
    LEGACY_PREFETCH,
    PREFETCH,
    PREGNANCY_TESTS,
    REQUIRED_KEYS,
    pregnancy_tests_by_code_list,
)
from service.cdshooks.fhirjson import Node, many, rtype
from service.cdshooks.mapping import FhirRecord, default_mapping

_TOKEN = re.compile(r"\{\{\s*([A-Za-z.]+)\s*\}\}")


class DataUnavailable(Exception):
    """Required data could be had neither from prefetch nor from the FHIR server (412)."""

    def __init__(self, keys: list[str], reasons: dict[str, str]):
        super().__init__(", ".join(keys))
        self.keys = keys
        self.reasons = reasons


class ServerRefused(DataUnavailable):
    """The FHIR server answered a 4xx: ``status`` says which (a 400 may be a search it does not
    support, worth asking another way; a 401 or 403 will not change)."""

    def __init__(self, key: str, status: int):
        super().__init__([key], {key: f"FHIR server answered {status}"})
        self.status = status


class MalformedFhir(Exception):
    """A prefetched or fetched resource is not valid FHIR; ``path`` names where."""

    def __init__(self, path: str, message: str):
        super().__init__(f"{path}: {message}")
        self.path = path
        self.message = message


class SearchCutShort(Exception):
    """A whole-list search answered with less than the whole list: more pages than the limit,
    or fewer matches than the Bundle's own ``total``. ``why`` says which, for the card."""

    def __init__(self, key: str, why: str):
        super().__init__(f"{key}: {why}")
        self.key = key
        self.why = why


@dataclass(frozen=True)
class FetchSettings:
    timeout_seconds: float = 2.0
    max_workers: int = 8
    # Pages followed per search (SCREENING_CDS_FHIR_MAX_PAGES; service.config holds the default
    # the environment overrides): bounds the requests one call makes to a FHIR server.
    max_pages: int = 5


def parse_resource(value: Any, path: str) -> Node:
    """A FHIR resource as a Node; MalformedFhir when it is not a resource at all."""
    if not isinstance(value, dict) or not isinstance(value.get("resourceType"), str) or not value["resourceType"]:
        raise MalformedFhir(path, "is not a FHIR resource (no resourceType)")
    return Node(value)


def resources_of(parsed: Any, path: str = "", warnings: list[str] | None = None) -> list[Node]:
    """A Bundle's resources (search matches and includes), or the single resource. Entries that
    are not resources are skipped, with a warning."""
    if parsed is None:
        return []
    if rtype(parsed) != "Bundle":
        return [parsed]
    out = []
    for i, entry in enumerate(many(parsed.entry)):
        resource = entry.resource if isinstance(entry, Node) else None
        if isinstance(resource, Node) and isinstance(resource.resourceType, str):
            out.append(resource)
        elif warnings is not None:
            warnings.append(f"{path}.entry[{i}] holds no FHIR resource: skipped.")
    return out


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


def template_of(key: str) -> str:
    """The prefetch template of ``key``: a discovery key, or a previous release's key still read."""
    return PREFETCH.get(key) or LEGACY_PREFETCH[key]


def answers_key(parsed: Any, key: str) -> bool:
    """Whether a resource can be the answer to prefetch ``key``: a Bundle (a search), or the
    resource type its query names (a read, or a lone resource some clients send). Anything else
    (another type, an unknown type) is not "nothing found": read as an empty list, a problem list
    of garbage would be silence, and silence is taken as absence."""
    kind = rtype(parsed)
    return kind == "Bundle" or kind == template_of(key).split("?")[0].split("/")[0]


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
        if 400 <= response.status_code < 500:
            raise ServerRefused(path, response.status_code)
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

    def search_all(self, query: str, key: str, max_pages: int | None = None) -> list[Any]:
        """Every resource of a search, following ``next`` links up to ``max_pages`` pages (the
        setting unless given). Raises SearchCutShort when a whole-list search has more pages."""
        max_pages = max_pages or self.settings.max_pages
        parsed = self.get(query, key)
        if parsed is not None and not answers_key(parsed, key):
            raise DataUnavailable([key], {key: "FHIR server answered with something that is not the search result asked for"})
        out = resources_of(parsed)
        total = declared_total(parsed)
        matches = match_count(parsed)
        pages = 1
        while parsed is not None and rtype(parsed) == "Bundle":
            nxt = next_link(parsed)
            if not nxt:
                break
            if pages >= max_pages:
                if latest_first(query):
                    break  # the newest come first: later pages hold only older readings
                raise SearchCutShort(key, f"has more than {pages} pages; only {pages} were read "
                                          "(SCREENING_CDS_FHIR_MAX_PAGES)")
            parsed = self.get(nxt, key)
            if rtype(parsed) != "Bundle":  # a page that is not one: the list is not whole
                raise DataUnavailable([key], {key: "a page of the search result is not a Bundle"})
            out.extend(resources_of(parsed))
            matches += match_count(parsed)
            pages += 1
        short = short_of_total(total, matches, query)
        if short:
            raise SearchCutShort(key, short)
        return out


def next_link(bundle: Any) -> str | None:
    return next((link.url for link in many(bundle.link) if isinstance(link, Node) and link.relation == "next"
                 and isinstance(link.url, str)), None)


def match_count(bundle: Any) -> int:
    """The search matches a Bundle holds (entries marked ``include`` or ``outcome`` are not)."""
    if rtype(bundle) != "Bundle":
        return 0
    count = 0
    for entry in many(bundle.entry):
        if isinstance(entry, Node) and isinstance(entry.resource, Node):
            mode = entry.search.mode if isinstance(entry.search, Node) else None
            count += mode in (None, "match")
    return count


def declared_total(bundle: Any) -> int | None:
    total = bundle.total if rtype(bundle) == "Bundle" else None
    return total if isinstance(total, int) and not isinstance(total, bool) and total >= 0 else None


def short_of_total(total: int | None, matches: int, query: str) -> str | None:
    """Why a whole-list answer is not the whole list by its own count, or None."""
    if total is None or matches >= total or latest_first(query):
        return None
    return f"says it has {total} entries but holds {matches}"


def latest_first(query: str) -> bool:
    """A search that asks for the newest entries first (``_sort``): its first pages answer it."""
    return "_sort=" in query


def cut_short_warning(key: str, why: str) -> str:
    resource = template_of(key).split("?")[0]
    return (f"The {resource} list ({key}) {why}: the list counts as unread, so what it would answer is "
            f"not assumed absent and stays missing.")


def gather(request_body: dict, settings: FetchSettings, warnings: list[str] | None = None) -> dict[str, list[Any]]:
    """Every prefetch key -> its resources. Raises DataUnavailable (412) when a required key can
    be had neither from prefetch nor from the FHIR server. What cannot be read is a warning."""
    warnings = warnings if warnings is not None else []
    context = request_body.get("context") or {}
    prefetch = request_body.get("prefetch") or {}
    if not isinstance(prefetch, dict):
        warnings.append("prefetch is not an object: ignored.")
        prefetch = {}
    out: dict[str, list[Any]] = {}
    unsatisfied: dict[str, str] = {}
    cut_short: dict[str, str] = {}
    for key in PREFETCH:
        if key not in prefetch:
            unsatisfied[key] = "not prefetched"
            continue
        _read_prefetched(key, prefetch[key], out, unsatisfied, cut_short, warnings)
    # The previous release's per-code pregnancy test keys: read when sent, never fetched. All of
    # them (an EHR still configured from that discovery document) stand for `pregnancyTests`.
    legacy: dict[str, str] = {}
    for key in LEGACY_PREFETCH:
        if key in prefetch:
            _read_prefetched(key, prefetch[key], out, legacy, {}, warnings, "not read (a previous release's key)")
    if (unsatisfied.get(PREGNANCY_TESTS) == "not prefetched" and not legacy
            and all(key in out for key in LEGACY_PREFETCH)):
        del unsatisfied[PREGNANCY_TESTS]

    if unsatisfied:
        out.update(_fetch(unsatisfied, request_body, context, settings, cut_short))
    for key, why in cut_short.items():
        # The list exists and is longer than what came: not a 412, an unread list.
        if key not in out:
            warnings.append(cut_short_warning(key, why))
    foreign = sum(1 for r in out.get(PREGNANCY_TESTS, ()) if not _in_pregnancy_test_set(r))
    if foreign:
        warnings.append(f"The pregnancy test search ({PREGNANCY_TESTS}) answered {foreign} resource(s) outside "
                        "the Pregnancy Test value set (a server that does not apply code:in?): not read as "
                        "pregnancy tests.")
    missing = [k for k in REQUIRED_KEYS if k not in out and k not in cut_short]
    if missing:
        raise DataUnavailable(missing, {k: unsatisfied.get(k, "unavailable") for k in missing})
    return out


def _read_prefetched(key: str, value: Any, out: dict[str, list[Any]], unsatisfied: dict[str, str],
                     cut_short: dict[str, str], warnings: list[str], then: str = "fetched again") -> None:
    """One prefetched value: its resources into ``out``, or why not into ``unsatisfied`` (and
    ``cut_short`` for a whole list that came incomplete). ``then`` says, in a warning, what
    becomes of a value that cannot be read."""
    if value is None:
        out[key] = []
        return
    try:
        parsed = parse_resource(value, f"prefetch.{key}")
    except MalformedFhir as exc:
        warnings.append(f"{exc.path} {exc.message}: {then}.")
        unsatisfied[key] = "not a FHIR resource"
        return
    if rtype(parsed) == "OperationOutcome":
        unsatisfied[key] = "the client reported an error prefetching it"
        return
    if not answers_key(parsed, key):
        warnings.append(f"prefetch.{key} is neither a Bundle nor a {template_of(key).split('?')[0].split('/')[0]}: "
                        f"{then}.")
        unsatisfied[key] = "not the search result asked for"
        return
    # A paginated prefetch (a next link) of a whole list needs the server for the rest, and
    # is an unread list without it; a latest-first search's first page holds what it asks.
    if rtype(parsed) == "Bundle" and next_link(parsed) and not latest_first(template_of(key)):
        unsatisfied[key] = "paginated"
        cut_short[key] = "was prefetched as its first page only (a next link)"
        return
    # A prefetched list short of its own total (the client cut it): the server, if it can,
    # else an unread list.
    short = short_of_total(declared_total(parsed), match_count(parsed), template_of(key))
    if short:
        unsatisfied[key] = "incomplete"
        cut_short[key] = f"was prefetched incomplete (it {short})"
        return
    out[key] = resources_of(parsed, f"prefetch.{key}", warnings)


def _fetch(keys: dict[str, str], request_body: dict, context: dict, settings: FetchSettings,
           cut_short: dict[str, str]) -> dict[str, list[Any]]:
    """The keys' resources from ``fhirServer``; a key cut short at the page limit goes into
    ``cut_short`` (key -> why), not into the answer."""
    server = request_body.get("fhirServer")
    auth = request_body.get("fhirAuthorization") or {}
    if not isinstance(server, str) or not server.startswith(("http://", "https://")):
        return {}
    token = auth.get("access_token") if isinstance(auth, dict) else None
    client = FhirClient(server, token if isinstance(token, str) else None, settings)
    queries = {k: render_template(PREFETCH[k], context) for k in keys}

    def one(key: str) -> tuple[str, list[Any] | None | SearchCutShort]:
        query = queries[key]
        if query is None:
            return key, None
        try:
            if key == PREGNANCY_TESTS:
                return key, _pregnancy_tests(client, query, render_template(pregnancy_tests_by_code_list(), context))
            return key, client.search_all(query, key)
        except SearchCutShort as exc:
            return key, exc
        except (requests.RequestException, DataUnavailable):
            return key, None

    out: dict[str, list[Any]] = {}
    with ThreadPoolExecutor(max_workers=min(settings.max_workers, len(keys))) as pool:
        for key, resources in pool.map(one, keys):
            if isinstance(resources, SearchCutShort):
                cut_short[key] = resources.why
            elif resources is not None:
                out[key] = resources
    return out


def _in_pregnancy_test_set(resource: Any) -> bool:
    return rtype(resource) == "Observation" and default_mapping().pregnancy_test.matches(resource.code) is not None


def _pregnancy_tests(client: FhirClient, by_valueset: str, by_code_list: str | None) -> list[Any]:
    """The pregnancy test search: ``code:in`` the value set, then, when the server refuses that
    (a 4xx other than an authorisation or rate limit answer, which asking again will not change)
    or ignores it (it answers observations outside the set), once more with the set's codes as a
    token list. Each search reads its first page only, the newest `_count` tests (later pages
    hold older ones), so a call makes at most two requests for pregnancy tests, however the
    server pages. What is outside the set is never read as a test."""
    try:
        found = client.search_all(by_valueset, PREGNANCY_TESTS, max_pages=1)
    except ServerRefused as exc:
        if exc.status in (401, 403, 429) or by_code_list is None:
            raise
        return client.search_all(by_code_list, PREGNANCY_TESTS, max_pages=1)
    if by_code_list is None or all(_in_pregnancy_test_set(r) for r in found):
        return found
    try:
        return client.search_all(by_code_list, PREGNANCY_TESTS, max_pages=1)
    except (requests.RequestException, DataUnavailable):
        return found  # the first answer, whose tests (if any) are still read and the rest not


_OBSERVATION_KEYS = ("bloodPressure", "systolicBP", "diastolicBP", "heartRate", "pregnancyStatus",
                     "breastfeedingStatus", PREGNANCY_TESTS, *LEGACY_PREFETCH)


def build_record(data: dict[str, list[Any]], draft_resources: list[Any], ordered_ids: set[int],
                 index: dict[str, Node] | None = None, warnings: list[str] | None = None) -> FhirRecord:
    """The record the mapping reads. ``ordered_ids`` are id()s of the ketamine draft orders,
    which are the treatment, not a co-medication."""
    def of(keys: tuple[str, ...], *types: str) -> list[Any]:
        seen, out = set(), []
        for k in keys:
            for r in data.get(k, []):
                if rtype(r) in types and id(r) not in seen:
                    seen.add(id(r))
                    out.append(r)
        return out

    full_index = dict(index or {})
    for resources in data.values():
        for r in resources:
            if isinstance(r.id, str):
                full_index.setdefault(f"{rtype(r)}/{r.id}", r)
    patients = of(("patient",), "Patient")
    meds = None
    # The medication list is both searches: one unread (cut short) leaves the list unread.
    if "medicationStatements" in data and "medicationRequests" in data:
        meds = of(("medicationStatements", "medicationRequests"), "MedicationStatement", "MedicationRequest")
    return FhirRecord(
        patient=patients[0] if patients else None,
        observations=of(_OBSERVATION_KEYS, "Observation"),
        conditions=of(("conditions",), "Condition") if "conditions" in data else None,
        medications=meds,
        allergies=of(("allergies",), "AllergyIntolerance") if "allergies" in data else None,
        questionnaire_responses=of(("intakeQuestionnaire",), "QuestionnaireResponse"),
        other_draft_orders=[r for r in draft_resources
                            if rtype(r) == "MedicationRequest" and id(r) not in ordered_ids],
        index=full_index,
        warnings=list(warnings or []),
    )


def parse_draft_orders(context: dict, warnings: list[str] | None = None) -> tuple[list[Node], dict[str, Node]]:
    """The draft orders (any FHIR version's request resources) and an index of every resource in
    the Bundle by 'Type/id' and fullUrl, for references between entries (a MedicationRequest's
    medicationReference to a Medication entry). Only a draftOrders that is not a Bundle at all is
    refused; entries that are not resources are skipped with a warning."""
    draft = context.get("draftOrders")
    if not isinstance(draft, dict):
        raise MalformedFhir("context.draftOrders", "must be a Bundle of draft orders")
    parsed = parse_resource(draft, "context.draftOrders")
    if rtype(parsed) != "Bundle":
        raise MalformedFhir("context.draftOrders.resourceType", "must be Bundle")
    resources = resources_of(parsed, "context.draftOrders", warnings)
    index: dict[str, Node] = {}
    for entry in many(parsed.entry):
        if isinstance(entry, Node) and isinstance(entry.resource, Node):
            res = entry.resource
            if isinstance(res.id, str):
                index[f"{rtype(res)}/{res.id}"] = res
            if isinstance(entry.fullUrl, str):
                index[entry.fullUrl] = res
    return resources, index
