"""Pregnancy tests (hCG, urine or serum, qualitative or quantitative) read through the published
Pregnancy Test value set: a positive makes pregnancy known with the test as evidence; a recent
negative is a stated assumption ("not pregnant") for the clinician to confirm; an old,
equivocal or unreadable result assumes nothing. The newest result decides."""
from __future__ import annotations

import datetime as dt
import re
from urllib.parse import parse_qs, urlsplit

import pytest
import yaml

from service.cdshooks import terminology as term
from service.cdshooks.cards import EXTENSION_KEY
from service.cdshooks.discovery import (
    PREFETCH,
    PREGNANCY_TESTS,
    pregnancy_test_key,
    pregnancy_test_valueset_url,
    pregnancy_tests_by_code_list,
)
from service.cdshooks.fhir_fetch import DataUnavailable, FetchSettings, FhirClient, ServerRefused, _pregnancy_tests
from service.cdshooks.fhirjson import Node
from service.cdshooks.mapping import MAPPING_PATH, default_mapping, load_mapping, pregnancy_test_codes
from tests.cdshooks_spec_model import validate_response
from tests.cdshooks_support import (
    SIGN,
    LOINC,
    FhirServer,
    PATIENT_ID,
    SCT,
    hook_request,
    iso,
    ketamine_order,
    now,
    pregnancy_status,
    searchset,
    situation,
)

PREGNANCY_TEST = "2.16.840.1.113883.3.464.1003.111.12.1011"
INTERPRETATION = "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation"
UCUM = "http://unitsofmeasure.org"


def hcg(oid: str, code: str, when: dt.datetime, *, positive: bool | None = None, quantity: float | None = None,
        unit: str = "m[IU]/mL", interpretation: str | None = None, concept: tuple[str, str, str] | None = None,
        status: str = "final") -> dict:
    """An hCG Observation as labs send it: a SNOMED CT positive/negative, or a quantity, and/or an
    interpretation."""
    out = {"resourceType": "Observation", "id": oid, "status": status,
           "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category",
                                     "code": "laboratory"}]}],
           "code": {"coding": [{"system": LOINC, "code": code}]},
           "subject": {"reference": f"Patient/{PATIENT_ID}"}, "effectiveDateTime": iso(when)}
    if positive is not None:
        concept = (SCT, "10828004", "Positive") if positive else (SCT, "260385009", "Negative")
    if concept is not None:
        out["valueCodeableConcept"] = {"coding": [{"system": concept[0], "code": concept[1], "display": concept[2]}]}
    if quantity is not None:
        out["valueQuantity"] = {"value": quantity, "unit": unit, "system": UCUM, "code": unit}
    if interpretation is not None:
        out["interpretation"] = [{"coding": [{"system": INTERPRETATION, "code": interpretation}]}]
    return out


def _prefetch(*tests: dict, status: dict | None = None) -> dict:
    """The clean situation (a woman of 42) with no pregnancy status unless given, and these tests
    under the one pregnancy test key, in the order given (not sorted: the newest is found by date)."""
    prefetch, _ = situation("clean")
    prefetch["pregnancyStatus"] = searchset(status) if status else searchset()
    prefetch[PREGNANCY_TESTS] = searchset(*tests)
    return prefetch


def _card(cds, prefetch) -> dict:
    r = cds.post(SIGN, hook_request("order-sign", [ketamine_order()], prefetch))
    assert r.status_code == 200, r.get_json()
    validate_response(r.get_json())
    [card] = r.get_json()["cards"]
    return card


def _days(n: int) -> dt.datetime:
    return now() - dt.timedelta(days=n)


# --- the value set and the prefetch ---------------------------------------------------------------

def test_the_published_pregnancy_test_set_is_stored_with_its_provenance():
    vs = term.load_valuesets()[PREGNANCY_TEST]
    assert vs.title == "Pregnancy Test" and vs.url.endswith(PREGNANCY_TEST)
    assert vs.source["commit"] == "9ebd48ffebf2ed2489f3904cc8393ebf8979bfc9"
    # urine and serum, qualitative and quantitative
    assert {"2106-3", "2118-8", "19080-1", "80384-1"} <= vs.codes[term.LOINC]


def test_one_prefetch_query_asks_for_the_whole_pregnancy_test_set():
    """One template, `code:in` the set's canonical URL, newest first: not one per LOINC code (27
    templates an EHR administrator had to configure one by one)."""
    url = term.load_valuesets()[PREGNANCY_TEST].url
    assert PREFETCH[PREGNANCY_TESTS] == (f"Observation?patient={{{{context.patientId}}}}&code:in={url}"
                                         "&_sort=-date&_count=10")
    # the codes of the fallback token list are the set's
    assert set(pregnancy_test_codes(default_mapping())) == set(term.load_valuesets()[PREGNANCY_TEST].codes[term.LOINC])


@pytest.mark.parametrize("edit", [
    {"loinc": ["2106-3"]},                                                         # a loose code
    {"valuesets": ["2.16.840.1.113883.3.464.1003.111.12.1011", "2.16.840.1.113883.3.3157.4055"]},
], ids=["loose-code", "two-sets"])
def test_a_mapping_one_code_in_search_cannot_ask_for_is_refused(tmp_path, edit):
    raw = yaml.safe_load(MAPPING_PATH.read_text())
    raw["observations"]["pregnancy_test"].update(edit)
    path = tmp_path / "fhir_mapping.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(ValueError, match="exactly one published value set"):
        pregnancy_test_valueset_url(load_mapping(path))


def test_discovery_has_exactly_one_pregnancy_test_template(cds):
    services = cds.get("/cds-services").get_json()["services"]
    for service in services:
        templates = {k: v for k, v in service["prefetch"].items() if PREGNANCY_TEST in v or "pregnancyTest" in k}
        assert templates == {PREGNANCY_TESTS: PREFETCH[PREGNANCY_TESTS]}
        assert not any(re.search(r"\|(2106-3|19080-1)\b", v) for v in service["prefetch"].values())


# --- what a result says -----------------------------------------------------------------------------

@pytest.mark.parametrize("test", [
    hcg("hcg-1", "2106-3", _days(3), positive=True),                                   # urine, qualitative
    hcg("hcg-1", "2118-8", _days(3), interpretation="POS"),                             # serum, interpretation only
    hcg("hcg-1", "80384-1", _days(3), interpretation="A"),
    hcg("hcg-1", "2112-1", _days(3), interpretation="H"),
    hcg("hcg-1", "19080-1", _days(3), quantity=1450.0),                                 # serum, quantitative
    hcg("hcg-1", "21198-7", _days(3), quantity=3.2, unit="[IU]/mL"),                    # 3,200 IU/L
], ids=["urine-snomed", "serum-POS", "rapid-A", "beta-H", "quantitative", "IU-per-mL"])
def test_a_positive_test_makes_pregnancy_known_with_the_test_as_evidence(cds, test):
    card = _card(cds, _prefetch(test))
    decision = card["extension"][EXTENSION_KEY]
    assert decision["decision"] == "ineligible", decision
    assert "pregnancy" in {r["rule_id"] for r in decision["reasons"]}
    row = next(line for line in card["detail"].splitlines() if "`pregnancy`" in line)
    assert "Observation/hcg-1" in row and "pregnancy test" in row
    assert "patient.pregnant" not in decision.get("assumed", [])


@pytest.mark.parametrize("test", [
    hcg("hcg-1", "2106-3", _days(5), positive=False),
    hcg("hcg-1", "2110-5", _days(5), interpretation="NEG"),
    hcg("hcg-1", "19080-1", _days(5), quantity=2.0),
    hcg("hcg-1", "83086-9", _days(5), quantity=1.0, unit="[IU]/L"),
    {**hcg("hcg-1", "19080-1", _days(5), quantity=2.0), "valueQuantity": {"value": 2, "comparator": "<",
                                                                         "unit": "mIU/mL"}},
    {**hcg("hcg-1", "2106-3", _days(5)), "valueString": "Negative"},                  # as Epic sends it
    {**hcg("hcg-1", "2106-3", _days(5)), "valueCodeableConcept": {"text": "negative"}},
], ids=["urine-snomed", "serum-NEG", "quantitative", "IU-per-L", "below-a-limit", "string", "text-only"])
def test_a_recent_negative_test_is_a_stated_assumption_of_not_pregnant(cds, test):
    card = _card(cds, _prefetch(test))
    decision = card["extension"][EXTENSION_KEY]
    assert decision["decision"] == "eligible", decision
    assert "patient.pregnant" in decision["assumed"]
    assert card["indicator"] == "warning" and "assumed from the record" in card["summary"]
    assert "Observation/hcg-1" in card["detail"] and "negative pregnancy test" in card["detail"]


def test_the_negative_window_is_the_not_pregnant_status_window():
    """One definition: a negative test holds as long as a "not pregnant" status does."""
    spec = default_mapping().observations
    assert "negative_valid_days" not in spec["pregnancy_test"]
    assert spec["pregnancy_status"]["negative_valid_days"] == 30


@pytest.mark.parametrize("test, why", [
    (hcg("hcg-1", "2106-3", _days(40), positive=False), "40 days ago"),                 # older than the window
    (hcg("hcg-1", "19080-1", _days(2), quantity=12.0), "equivocal"),                    # between the cut-offs
    (hcg("hcg-1", "2119-6", _days(2), quantity=0.5, unit="pmol/L"), "pmol/L"),           # a unit not read
    (hcg("hcg-1", "2106-3", _days(2), concept=(SCT, "82334004", "Indeterminate")), "could not be read"),
    (hcg("hcg-1", "2106-3", _days(2), concept=("urn:oid:1.2.3.4", "NEG", "neg")), "could not be read"),
    (hcg("hcg-1", "2106-3", _days(2), positive=False, interpretation="POS"), "disagree"),
], ids=["stale", "equivocal", "unit", "indeterminate", "local-code", "conflicting"])
def test_an_old_equivocal_or_unreadable_result_assumes_nothing(cds, test, why):
    card = _card(cds, _prefetch(test))
    decision = card["extension"][EXTENSION_KEY]
    assert decision["decision"] == "incomplete", decision
    assert "patient.pregnant" in decision["missing"]
    assert "patient.pregnant" not in decision.get("assumed", [])
    assert why in card["detail"]


def test_an_interpretation_flag_in_a_local_system_is_not_read(cds):
    test = hcg("hcg-1", "2118-8", _days(2))
    test["interpretation"] = [{"coding": [{"system": "urn:oid:1.2.840.114350.1.13.0.1.7.4.698084.2", "code": "A"}]}]
    card = _card(cds, _prefetch(test))
    assert card["extension"][EXTENSION_KEY]["decision"] == "incomplete"
    assert "could not be read" in card["detail"]


def test_a_negative_newer_than_a_positive_is_the_answer(cds):
    """The newest result wins: a negative after a positive (the pregnancy has ended) is today's
    answer, stated as an assumption."""
    card = _card(cds, _prefetch(hcg("hcg-old", "2106-3", _days(20), positive=True),
                                hcg("hcg-new", "2106-3", _days(2), positive=False)))
    decision = card["extension"][EXTENSION_KEY]
    assert decision["decision"] == "eligible" and "patient.pregnant" in decision["assumed"]
    assert "Observation/hcg-new" in card["detail"]


def test_a_positive_newer_than_a_negative_wins(cds):
    card = _card(cds, _prefetch(hcg("hcg-old", "2106-3", _days(10), positive=False),
                                hcg("hcg-new", "19080-1", _days(1), quantity=300.0)))
    decision = card["extension"][EXTENSION_KEY]
    assert decision["decision"] == "ineligible"
    row = next(line for line in card["detail"].splitlines() if "`pregnancy`" in line)
    assert "Observation/hcg-new" in row


def test_a_newer_unreadable_result_leaves_an_older_negative_unused(cds):
    card = _card(cds, _prefetch(hcg("hcg-old", "2106-3", _days(10), positive=False),
                                hcg("hcg-new", "19080-1", _days(1), quantity=11.0)))
    decision = card["extension"][EXTENSION_KEY]
    assert decision["decision"] == "incomplete" and "patient.pregnant" in decision["missing"]


def test_a_positive_test_outweighs_a_not_pregnant_status(cds):
    card = _card(cds, _prefetch(hcg("hcg-1", "2106-3", _days(1), positive=True),
                                status=pregnancy_status(False, _days(8))))
    assert card["extension"][EXTENSION_KEY]["decision"] == "ineligible"


def test_a_stated_not_pregnant_status_is_not_an_assumption_beside_a_negative_test(cds):
    card = _card(cds, _prefetch(hcg("hcg-1", "2106-3", _days(3), positive=False),
                                status=pregnancy_status(False, _days(4))))
    decision = card["extension"][EXTENSION_KEY]
    assert decision["decision"] == "eligible" and "patient.pregnant" not in decision.get("assumed", [])


def test_a_test_that_is_not_final_or_entered_in_error_is_not_read(cds):
    card = _card(cds, _prefetch(hcg("hcg-1", "2106-3", _days(1), positive=True, status="entered-in-error")))
    decision = card["extension"][EXTENSION_KEY]
    assert decision["decision"] == "incomplete" and "patient.pregnant" in decision["missing"]


@pytest.mark.parametrize("broken", [
    {"interpretation": "POS"},
    {"interpretation": [{"coding": [{"system": {"not": "a string"}, "code": "POS"}]}]},
    {"valueQuantity": [1, 2]},
    {"valueQuantity": {"value": "lots", "code": {"x": 1}, "comparator": 5}},
    {"valueCodeableConcept": "positive"},
    {"valueString": 12},
    {"code": "2106-3"},
], ids=["interpretation-string", "system-object", "quantity-list", "quantity-junk", "concept-string",
        "string-number", "code-string"])
def test_a_malformed_test_is_read_as_nothing_never_a_500(cds, broken):
    test = {**hcg("hcg-1", "2106-3", _days(2)), **broken}
    card = _card(cds, _prefetch(test))
    decision = card["extension"][EXTENSION_KEY]
    assert decision["decision"] == "incomplete" and "patient.pregnant" in decision["missing"]


# --- one query for the whole set, and what a server does with it ----------------------------------

OTHER_OBSERVATION_CODES = ("85354-9", "8480-6", "8462-4", "8867-4", "82810-3", "63895-7")


def _pregnancy_searches(server: FhirServer) -> list[dict[str, list[str]]]:
    """The pregnancy test searches the stand-in was asked, each as its query parameters."""
    out = []
    for path, _ in server.requests:
        url = urlsplit(path)
        params = parse_qs(url.query)
        if url.path == "/fhir/Observation" and not any(c in ",".join(params.get("code", [])) for c in OTHER_OBSERVATION_CODES):
            out.append(params)
    return out


def _fetched(cds, record: dict, sent: dict, **server_args) -> tuple[dict, list[dict[str, list[str]]]]:
    """The card for ``sent`` as prefetch, with ``record`` behind a trusted FHIR server stand-in."""
    with FhirServer(record, **server_args) as server:
        cds.trust_fhir_server(server.base)
        r = cds.post(SIGN, hook_request("order-sign", [ketamine_order()], sent, fhir_server=server.base))
    assert r.status_code == 200, r.get_json()
    validate_response(r.get_json())
    [card] = r.get_json()["cards"]
    return card, _pregnancy_searches(server)


def _without_tests(prefetch: dict) -> dict:
    return {k: v for k, v in prefetch.items() if k != PREGNANCY_TESTS}


def test_without_prefetch_the_whole_set_is_one_search(cds):
    """27 GETs (one per LOINC code) before; one now, `code:in` the set, newest first."""
    record = _prefetch(hcg("hcg-1", "2118-8", _days(2), positive=True))
    card, searches = _fetched(cds, record, _without_tests(record))
    assert searches == [{"patient": [PATIENT_ID], "code:in": [term.load_valuesets()[PREGNANCY_TEST].url],
                         "_sort": ["-date"], "_count": ["10"]}]
    decision = card["extension"][EXTENSION_KEY]
    assert decision["decision"] == "ineligible" and "pregnancy" in {r["rule_id"] for r in decision["reasons"]}


def test_a_server_refusing_code_in_is_asked_once_more_with_the_codes_as_one_token_list(cds):
    record = _prefetch(hcg("hcg-1", "2106-3", _days(3), positive=False))
    card, searches = _fetched(cds, record, _without_tests(record), code_in="refuse")
    assert len(searches) == 2 and "code:in" in searches[0]
    [codes] = searches[1]["code"]
    assert sorted(codes.split(",")) == sorted(f"{LOINC}|{c}" for c in pregnancy_test_codes(default_mapping()))
    assert searches[1]["_sort"] == ["-date"] and searches[1]["_count"] == ["10"]
    decision = card["extension"][EXTENSION_KEY]
    assert decision["decision"] == "eligible" and "patient.pregnant" in decision["assumed"]


def test_a_server_ignoring_code_in_is_asked_once_more_with_the_codes(cds):
    """A server that drops the modifier answers the patient's other observations: the service
    sees them (not of the set) and asks by the codes, which this server does apply."""
    record = _prefetch(hcg("hcg-1", "2106-3", _days(3), positive=True))
    card, searches = _fetched(cds, record, _without_tests(record), code_in="ignore")
    assert len(searches) == 2 and "code" in searches[1]
    assert card["extension"][EXTENSION_KEY]["decision"] == "ineligible"


def test_a_server_ignoring_the_codes_altogether_leaves_pregnancy_missing_not_assumed(cds, caplog):
    """The newest observations of other kinds (a blood pressure, a heart rate, a breastfeeding
    status) are no pregnancy test: nothing is inferred, the question is asked."""
    record = _prefetch()
    record["breastfeedingStatus"] = searchset({
        "resourceType": "Observation", "id": "bf-1", "status": "final",
        "code": {"coding": [{"system": LOINC, "code": "63895-7"}]}, "effectiveDateTime": iso(_days(1))})
    card, searches = _fetched(cds, record, _without_tests(record), code_in="ignore", ignore_code=True)
    assert len(searches) == 2
    decision = card["extension"][EXTENSION_KEY]
    assert decision["decision"] == "incomplete" and "patient.pregnant" in decision["missing"]
    assert "patient.pregnant" not in decision.get("assumed", [])
    assert "answered 3 resource(s) outside the Pregnancy Test value set" in caplog.text   # the call's log


@pytest.mark.parametrize("code_in", ["apply", "ignore"])
def test_a_paging_server_is_asked_for_the_first_page_only(cds, code_in):
    """Newest first, the first page holds the test that decides: at most two requests however
    the server pages (here two entries a page, with a next link)."""
    tests = [hcg(f"hcg-{i}", "2106-3", _days(2 + 40 * i), positive=i == 0) for i in range(5)]
    record = _prefetch(*tests)
    card, searches = _fetched(cds, record, _without_tests(record), page_size=2, code_in=code_in)
    assert len(searches) == (1 if code_in == "apply" else 2) and not any("_page" in s for s in searches)
    assert card["extension"][EXTENSION_KEY]["decision"] == "ineligible"


def test_a_server_with_no_test_leaves_pregnancy_missing(cds):
    record = _prefetch()
    card, searches = _fetched(cds, record, _without_tests(record))
    assert len(searches) == 1
    decision = card["extension"][EXTENSION_KEY]
    assert decision["decision"] == "incomplete" and "patient.pregnant" in decision["missing"]


@pytest.mark.parametrize("status", [400, 401, 403, 429, 500])
def test_at_most_two_searches_and_none_again_after_an_authorisation_answer(status):
    asked: list[str] = []

    class Refusing(FhirClient):
        def get(self, relative_or_absolute: str, path: str):
            asked.append(relative_or_absolute)
            if "code:in" in relative_or_absolute:
                raise ServerRefused(path, status) if status < 500 else DataUnavailable([path], {path: "500"})
            return Node(searchset(hcg("hcg-1", "2106-3", _days(3), positive=True)))

    client = Refusing("http://fhir.test", None, FetchSettings())
    by_valueset = PREFETCH[PREGNANCY_TESTS].replace("{{context.patientId}}", PATIENT_ID)
    by_codes = pregnancy_tests_by_code_list().replace("{{context.patientId}}", PATIENT_ID)
    if status == 400:
        assert [r.id for r in _pregnancy_tests(client, by_valueset, by_codes)] == ["hcg-1"]
        assert asked == [by_valueset, by_codes]
    else:   # the same answer would come back (or the server is failing): unread, not asked again
        with pytest.raises(DataUnavailable):
            _pregnancy_tests(client, by_valueset, by_codes)
        assert asked == [by_valueset]


def test_a_prefetched_search_cut_short_of_its_total_is_read_newest_first_not_unread(cds):
    """Sorted newest first, the first ten of forty tests hold the one that decides: a Bundle
    short of its `total`, with a next link, is read as it is (no "unread list" warning)."""
    tests = [hcg(f"hcg-{i}", "2106-3", _days(3 + 30 * i), positive=False) for i in range(10)]
    prefetch = _prefetch(*tests)
    prefetch[PREGNANCY_TESTS].update(total=40, link=[{"relation": "next", "url": "http://fhir.test/p2"}])
    card = _card(cds, prefetch)
    decision = card["extension"][EXTENSION_KEY]
    assert decision["decision"] == "eligible" and "patient.pregnant" in decision["assumed"]
    assert "Observation/hcg-0" in card["detail"]
    assert not any("unread" in w for w in card["extension"].get("warnings", []))


def test_the_previous_per_code_keys_are_still_read_for_one_release(cds):
    """An EHR still configured from the previous discovery document (27 keys) is read, and not
    fetched again; one per-code key alone is read beside the new search."""
    record = _prefetch()
    legacy = {pregnancy_test_key(c): searchset() for c in pregnancy_test_codes(default_mapping())}
    legacy[pregnancy_test_key("19080-1")] = searchset(hcg("hcg-1", "19080-1", _days(2), quantity=1450.0))
    card, searches = _fetched(cds, record, {**_without_tests(record), **legacy})
    assert searches == []
    assert card["extension"][EXTENSION_KEY]["decision"] == "ineligible"
    one = {pregnancy_test_key("2106-3"): searchset(hcg("hcg-2", "2106-3", _days(1), positive=True))}
    card = _card(cds, {**_without_tests(record), **one})
    assert card["extension"][EXTENSION_KEY]["decision"] == "ineligible"
