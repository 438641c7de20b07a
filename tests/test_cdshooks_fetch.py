"""What prefetch lacks is fetched from the client's FHIR server (a stand-in on 127.0.0.1); when the
rules' data can be had neither way the answer is 412."""
from __future__ import annotations

import pytest

from service.cdshooks.cards import EXTENSION_KEY
from service.cdshooks.fhir_fetch import DataUnavailable, FetchSettings, FhirClient, SearchCutShort
from service.cdshooks.fhirjson import Node
from tests.cdshooks_support import SIGN, FhirServer, hook_request, ketamine_order, situation



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


# --- long lists: a search is followed at most SCREENING_CDS_FHIR_MAX_PAGES pages ----------------

def _long_problem_list(last: dict) -> dict:
    """The clean patient with six readable conditions and ``last`` seventh: seven pages of one."""
    from tests.cdshooks_support import ICD, condition, searchset

    prefetch, _ = situation("clean")
    fillers = [("E78.5", "Hyperlipidemia, unspecified"), ("K21.9", "Gastro-esophageal reflux disease without esophagitis"),
               ("H52.4", "Presbyopia"), ("L70.0", "Acne vulgaris"), ("J30.9", "Allergic rhinitis, unspecified")]
    conditions = [e["resource"] for e in prefetch["conditions"]["entry"]]
    conditions += [condition(f"fill-{i}", ICD, code, text) for i, (code, text) in enumerate(fillers)] + [last]
    prefetch["conditions"] = searchset(*conditions)
    return prefetch


def _schizophrenia() -> dict:
    from tests.cdshooks_support import ICD, condition
    return condition("scz-late", ICD, "F20.9", "Schizophrenia, unspecified")


def _card(response) -> dict:
    assert response.status_code == 200, response.get_json()
    [card] = response.get_json()["cards"]
    return card


def test_a_problem_list_longer_than_the_page_limit_is_unread_not_absent(cds):
    """Seven pages of conditions, schizophrenia on the seventh, five pages read: the pages read
    prove nothing about the rest, so no diagnosis is assumed absent (it was: `eligible`, with
    psychosis "none" assumed from a list that was never read to its end)."""
    prefetch = _long_problem_list(_schizophrenia())
    with FhirServer(prefetch, page_size=1) as server:
        cds.trust_fhir_server(server.base)
        card = _card(cds.post(SIGN, hook_request("order-sign", [ketamine_order()], None, fhir_server=server.base)))
    decision = card["extension"][EXTENSION_KEY]
    assert decision["decision"] == "incomplete"
    assert "psychiatric_history.psychosis" in decision["missing"]
    assert "psychiatric_history.schizophrenia" in decision["missing"]
    assert not any(a.startswith("psychiatric_history.") for a in decision.get("assumed", []))
    assert any("Condition" in w and "5 pages" in w and "not assumed absent" in w for w in decision["warnings"])
    assert "more than 5 pages" in card["detail"]
    condition_pages = [p for p, _ in server.requests if p.startswith("/fhir/Condition")]
    assert len(condition_pages) == 5


def test_a_long_list_within_the_page_limit_is_read_to_its_end(cds):
    from tests.cdshooks_support import ICD, condition, searchset

    prefetch, _ = situation("clean")
    conditions = [e["resource"] for e in prefetch["conditions"]["entry"]]
    conditions += [condition("fill-1", ICD, "E78.5", "Hyperlipidemia, unspecified"),
                   condition("fill-2", ICD, "K21.9", "Gastro-esophageal reflux disease"), _schizophrenia()]
    prefetch["conditions"] = searchset(*conditions)
    with FhirServer(prefetch, page_size=1) as server:
        cds.trust_fhir_server(server.base)
        decision = _decision(cds.post(SIGN, hook_request("order-sign", [ketamine_order()], None, fhir_server=server.base)))
    assert "active_psychosis" in {r["rule_id"] for r in decision["reasons"]}
    assert len([p for p, _ in server.requests if p.startswith("/fhir/Condition")]) == 4


def test_the_page_limit_is_the_setting(cds, monkeypatch):
    state = cds.app.extensions["cds_hooks"]
    monkeypatch.setattr(state, "fetch", FetchSettings(timeout_seconds=state.fetch.timeout_seconds, max_pages=10))
    prefetch = _long_problem_list(_schizophrenia())
    with FhirServer(prefetch, page_size=1) as server:
        cds.trust_fhir_server(server.base)
        decision = _decision(cds.post(SIGN, hook_request("order-sign", [ketamine_order()], None, fhir_server=server.base)))
    assert decision["decision"] == "ineligible"
    assert "active_psychosis" in {r["rule_id"] for r in decision["reasons"]}


def test_the_page_limit_setting_is_read_once_from_the_environment(monkeypatch):
    from service.cdshooks.blueprint import state_from_settings
    from service.config import CdsHooksSettings

    monkeypatch.setenv("SCREENING_CDS_FHIR_MAX_PAGES", "12")
    settings = CdsHooksSettings.from_env()
    assert settings.fhir_max_pages == 12
    assert state_from_settings(settings).fetch.max_pages == 12
    assert CdsHooksSettings().fhir_max_pages == FetchSettings().max_pages == 5


def test_a_latest_first_search_cut_short_keeps_its_newest_pages():
    """A `_sort=-date` search asks for the newest readings, which come first: its later pages
    hold only older ones, so a long history is not "unread" (nothing is assumed from it)."""
    def page(n: int) -> dict:
        return {"resourceType": "Bundle", "type": "searchset",
                "entry": [{"resource": {"resourceType": "Observation", "id": f"o{n}"}}],
                "link": [{"relation": "next", "url": f"http://fhir.test/page{n + 1}"}]}

    class Canned(FhirClient):
        def get(self, relative_or_absolute: str, path: str):
            n = 1 if "?" in relative_or_absolute else int(relative_or_absolute.rsplit("page", 1)[1])
            return Node(page(n))

    client = Canned("http://fhir.test", None, FetchSettings(max_pages=3))
    found = client.search_all("Observation?patient=p&code=http://loinc.org|85354-9&_sort=-date&_count=3", "bloodPressure")
    assert [r.id for r in found] == ["o1", "o2", "o3"]
    with pytest.raises(SearchCutShort):
        client.search_all("Condition?patient=p", "conditions")


# --- a list short of its own total ------------------------------------------------------------

def test_a_prefetched_list_short_of_its_total_is_unread_not_absent(cds):
    """A prefetched problem list whose Bundle says it has 7 entries and holds 6 (the client cut
    it) proves nothing about the seventh: without a FHIR server to ask, it is unread."""
    prefetch = _long_problem_list(_schizophrenia())
    prefetch["conditions"]["entry"].pop()
    assert prefetch["conditions"]["total"] == 7
    card = _card(cds.post(SIGN, hook_request("order-sign", [ketamine_order()], prefetch)))
    decision = card["extension"][EXTENSION_KEY]
    assert decision["decision"] == "incomplete"
    assert "psychiatric_history.psychosis" in decision["missing"]
    assert any("prefetched incomplete" in w and "says it has 7 entries but holds 6" in w for w in decision["warnings"])


def test_a_prefetched_list_short_of_its_total_is_fetched_whole_from_the_server(cds):
    prefetch = _long_problem_list(_schizophrenia())
    sent = dict(prefetch, conditions=dict(prefetch["conditions"], entry=prefetch["conditions"]["entry"][:-1]))
    with FhirServer(prefetch) as server:
        cds.trust_fhir_server(server.base)
        decision = _decision(cds.post(SIGN, hook_request("order-sign", [ketamine_order()], sent, fhir_server=server.base)))
    assert [p.split("?")[0] for p, _ in server.requests] == ["/fhir/Condition"]
    assert "active_psychosis" in {r["rule_id"] for r in decision["reasons"]}
    assert not any("Condition list" in w for w in decision.get("warnings", []))


def test_a_server_answer_short_of_its_total_is_cut_short_and_includes_do_not_count():
    entries = [{"resource": {"resourceType": "Condition", "id": "c1"}, "search": {"mode": "match"}},
               {"resource": {"resourceType": "Medication", "id": "m1"}, "search": {"mode": "include"}}]

    class Canned(FhirClient):
        def get(self, relative_or_absolute: str, path: str):
            return Node({"resourceType": "Bundle", "type": "searchset", "total": self.total, "entry": entries})

    client = Canned("http://fhir.test", None, FetchSettings())
    client.total = 1
    assert [r.id for r in client.search_all("Condition?patient=p", "conditions")] == ["c1", "m1"]
    client.total = 2
    with pytest.raises(SearchCutShort, match="says it has 2 entries but holds 1"):
        client.search_all("Condition?patient=p", "conditions")
    # a latest-first search reads only its newest few: its total counts the whole history
    client.total = 40
    assert len(client.search_all("Observation?patient=p&code=http://loinc.org|85354-9&_sort=-date&_count=3",
                                 "bloodPressure")) == 2


def _paginated(bundle: dict) -> dict:
    return dict(bundle, link=[{"relation": "next", "url": "https://ehr.example.org/fhir/page2"}])


def test_a_paginated_prefetch_of_a_whole_list_without_a_server_is_unread():
    """Only the first page of the problem list was prefetched and no FHIR server may be asked:
    the list is unread (incomplete, naming its fields), not a 412 and not an empty list."""
    from service.cdshooks.fhir_fetch import gather

    prefetch, _ = situation("clean")
    prefetch["conditions"] = _paginated(prefetch["conditions"])
    warnings: list[str] = []
    data = gather(hook_request("order-sign", [ketamine_order()], prefetch), FetchSettings(), warnings)
    assert "conditions" not in data
    assert any("Condition list (conditions) was prefetched as its first page only" in w for w in warnings)


def test_a_paginated_prefetch_of_a_latest_first_search_is_taken_as_it_is(cds):
    """The newest blood pressures come first: the prefetched first page answers, without a 412."""
    prefetch, _ = situation("hypertensive")
    prefetch["bloodPressure"] = _paginated(prefetch["bloodPressure"])
    decision = _decision(cds.post(SIGN, hook_request("order-sign", [ketamine_order()], prefetch)))
    assert any(r["evidence"].get("vitals.systolic_bp") == 192 for r in decision["reasons"])
