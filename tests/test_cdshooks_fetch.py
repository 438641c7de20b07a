"""What prefetch lacks is fetched from the client's FHIR server (a stand-in on 127.0.0.1); when the
rules' data can be had neither way the answer is 412."""
from __future__ import annotations

import pytest

from service.cdshooks.cards import EXTENSION_KEY
from service.cdshooks.fhir_fetch import DataUnavailable, FetchSettings, FhirClient
from service.cdshooks.fhirjson import Node
from tests.cdshooks_support import FhirServer, hook_request, ketamine_order, situation

SIGN = "/cds-services/ketamine-screening-sign"


def _decision(response) -> dict:
    assert response.status_code == 200, response.get_json()
    [card] = response.get_json()["cards"]
    return card["extension"][EXTENSION_KEY]


def test_no_prefetch_everything_fetched_with_the_bearer_token(cds):
    prefetch, _ = situation("hypertensive")
    with FhirServer(prefetch) as server:
        cds.trust_fhir_server(server.base)
        full = _decision(cds.post(SIGN, hook_request("order-sign", [ketamine_order()], prefetch)))
        fetched = _decision(cds.post(SIGN, hook_request("order-sign", [ketamine_order()], None, fhir_server=server.base)))
    for key in ("decision", "reasons", "missing", "physician_review_required"):
        assert fetched.get(key) == full.get(key), key
    paths = [p for p, _ in server.requests]
    assert any(p.startswith("/fhir/Patient/pat-1288992") for p in paths)
    assert any(p.startswith("/fhir/Condition?patient=pat-1288992") for p in paths)
    assert any("85354-9" in p for p in paths)
    assert {auth for _, auth in server.requests} == {"Bearer opaque-fhir-token"}


def test_only_what_prefetch_lacks_is_fetched(cds):
    prefetch, _ = situation("psychosis")
    partial = {k: v for k, v in prefetch.items() if k != "conditions"}
    with FhirServer(prefetch) as server:
        cds.trust_fhir_server(server.base)
        decision = _decision(cds.post(SIGN, hook_request("order-sign", [ketamine_order()], partial, fhir_server=server.base)))
    assert [p.split("?")[0] for p, _ in server.requests] == ["/fhir/Condition"]
    assert "active_psychosis" in {r["rule_id"] for r in decision["reasons"]}


def test_operation_outcome_in_prefetch_is_fetched_again(cds):
    prefetch, _ = situation("clean")
    sent = dict(prefetch, allergies={"resourceType": "OperationOutcome",
                                     "issue": [{"severity": "error", "code": "timeout"}]})
    with FhirServer(prefetch) as server:
        cds.trust_fhir_server(server.base)
        decision = _decision(cds.post(SIGN, hook_request("order-sign", [ketamine_order()], sent, fhir_server=server.base)))
    assert [p.split("?")[0] for p, _ in server.requests] == ["/fhir/AllergyIntolerance"]
    assert decision["decision"] == "eligible"


def test_412_when_prefetch_lacks_required_data_and_there_is_no_fhir_server(cds):
    prefetch, _ = situation("clean")
    del prefetch["bloodPressure"], prefetch["conditions"]
    r = cds.post(SIGN, hook_request("order-sign", [ketamine_order()], prefetch))
    assert r.status_code == 412
    error = r.get_json()["error"]
    assert error["code"] == "precondition_failed"
    assert {e["path"] for e in error["errors"]} == {"prefetch.bloodPressure", "prefetch.conditions"}


def test_a_prefetch_that_is_not_the_search_asked_for_is_not_an_empty_list(cds):
    """A problem list prefetched as some other resource (here a Patient) is not "no conditions":
    read as an empty list, its silence would be taken as the absence of every diagnosis."""
    prefetch, _ = situation("clean")
    sent = dict(prefetch, conditions=prefetch["patient"])
    r = cds.post(SIGN, hook_request("order-sign", [ketamine_order()], sent))
    assert r.status_code == 412, r.get_json()
    assert [e["path"] for e in r.get_json()["error"]["errors"]] == ["prefetch.conditions"]


def test_a_later_page_that_is_not_a_bundle_leaves_the_list_unread():
    pages = {"Condition?patient=p": {"resourceType": "Bundle", "type": "searchset", "entry": [],
                                     "link": [{"relation": "next", "url": "http://fhir.test/page2"}]},
             "http://fhir.test/page2": {"resourceType": "Patient", "id": "p"}}

    class Canned(FhirClient):
        def get(self, relative_or_absolute: str, path: str):
            return Node(pages[relative_or_absolute])

    client = Canned("http://fhir.test", None, FetchSettings())
    with pytest.raises(DataUnavailable):
        client.search_all("Condition?patient=p", "conditions")


def test_412_when_the_fhir_server_fails(cds):
    prefetch, _ = situation("clean")
    with FhirServer(prefetch, fail=("Condition",)) as server:
        cds.trust_fhir_server(server.base)
        r = cds.post(SIGN, hook_request("order-sign", [ketamine_order()], None, fhir_server=server.base))
    assert r.status_code == 412
    assert [e["path"] for e in r.get_json()["error"]["errors"]] == ["prefetch.conditions"]


def test_412_when_the_fhir_server_is_unreachable(cds):
    # a port nothing listens on: bound, then closed
    import socket
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    cds.trust_fhir_server(f"http://127.0.0.1:{port}/fhir")
    r = cds.post(SIGN, hook_request("order-sign", [ketamine_order()], None, fhir_server=f"http://127.0.0.1:{port}/fhir"))
    assert r.status_code == 412
    assert len(r.get_json()["error"]["errors"]) == 7


def test_missing_questionnaire_is_not_a_precondition(cds):
    prefetch, _ = situation("clean")
    del prefetch["intakeQuestionnaire"]
    decision = _decision(cds.post(SIGN, hook_request("order-sign", [ketamine_order()], prefetch)))
    assert decision["decision"] == "incomplete"
    assert "psychiatric_history.suicidal_ideation" in decision["missing"]


def test_no_fetch_at_all_for_an_order_that_is_not_ketamine(cds):
    prefetch, _ = situation("clean")
    from tests.cdshooks_support import amoxicillin_order
    with FhirServer(prefetch) as server:
        cds.trust_fhir_server(server.base)
        r = cds.post(SIGN, hook_request("order-sign", [amoxicillin_order()], None, fhir_server=server.base))
    assert r.get_json() == {"cards": []}
    assert server.requests == []


def test_fhir_authorization_without_fhir_server_is_a_bad_request(cds):
    body = hook_request("order-sign", [ketamine_order()], None)
    body["fhirAuthorization"] = {"access_token": "t", "token_type": "Bearer", "expires_in": 300, "scope": "", "subject": "s"}
    r = cds.post(SIGN, body)
    assert r.status_code == 400
    assert "fhirServer" in {e["path"] for e in r.get_json()["error"]["errors"]}
