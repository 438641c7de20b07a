"""Issue 13's findings, one test each: EHR data as EHRs code it (SNOMED CT below the mapped codes,
ICD-10-CM under its OID and by category, ICD-9-CM, BP as single observations, pregnancy as a
Condition, stale pregnancy status, esketamine by SNOMED indication / medicationReference /
product code, the spec's own example requests, feedback per the spec, no empty elements), and
the terminology data itself (every set has its source; every ICD-10-CM code is a real one)."""
from __future__ import annotations

import copy
import datetime as dt
import json
import re
import uuid
from pathlib import Path

import pytest

from service.cdshooks import terminology as term
from service.cdshooks.cards import EXTENSION_KEY
from service.cdshooks.discovery import PREFETCH
from service.cdshooks.mapping import default_mapping
from tests.cdshooks_spec_model import validate_discovery, validate_response
from tests.cdshooks_support import (
    SIGN,
    SELECT,
    ICD,
    LOINC,
    PATIENT_ID,
    RXN,
    SCT,
    condition,
    hook_request,
    iso,
    ketamine_order,
    now,
    pregnancy_status,
    searchset,
    situation,
)

SPEC = Path(__file__).resolve().parent / "cdshooks_corpus" / "spec"
ICD_OID = "urn:oid:2.16.840.1.113883.6.90"


def _post(cds, prefetch, orders=None, hook="order-sign", path=SIGN, **kw):
    r = cds.post(path, hook_request(hook, orders or [ketamine_order()], prefetch, **kw))
    assert r.status_code == 200, r.get_json()
    validate_response(r.get_json())
    return r.get_json()["cards"]


def _decision(cds, prefetch, orders=None) -> dict:
    [card] = _post(cds, prefetch, orders)
    return card["extension"][EXTENSION_KEY]


def _rules(decision: dict) -> set[str]:
    return {r["rule_id"] for r in decision.get("reasons", [])}


def _with_condition(*conds) -> dict:
    prefetch, _ = situation("clean")
    prefetch["conditions"]["entry"].extend({"resource": c} for c in conds)
    return prefetch


# --- codes below the mapped ones ----------------------------------------------------------------

def test_snomed_descendant_paranoid_schizophrenia_is_recognised(cds):
    decision = _decision(cds, _with_condition(condition("c9", SCT, "64905009", "Paranoid schizophrenia")))
    assert decision["decision"] == "ineligible" and "active_psychosis" in _rules(decision)


def test_snomed_descendant_bipolar_i_is_recognised_and_current_mania_is_asked(cds):
    """Bipolar I (371596008) is a bipolar history (review); whether an episode is current is a
    question the problem list cannot answer, so it is asked, not assumed."""
    decision = _decision(cds, _with_condition(condition("c9", SCT, "371596008", "Bipolar I disorder")))
    assert "bipolar_disorder" in _rules(decision)
    assert decision["decision"] != "eligible" and "psychiatric_history.current_mania" in decision["missing"]


# --- code systems ---------------------------------------------------------------------------------

def test_icd10cm_under_its_oid_as_epic_sends_it(cds):
    decision = _decision(cds, _with_condition(condition("c9", ICD_OID, "F20.0", "Paranoid schizophrenia")))
    assert "active_psychosis" in _rules(decision)


@pytest.mark.parametrize("code", ["F20.89", "F31.81", "F31", "F2089"])
def test_icd10cm_by_category_and_code_with_or_without_the_dot(code):
    m = default_mapping()
    from service.cdshooks.fhirjson import Node
    concept = Node({"coding": [{"system": ICD, "code": code}]})
    hits = [name for name, codes, _, _ in m.conditions if codes.matches(concept)]
    assert hits and ("psychotic disorder" in hits or "bipolar disorder" in hits)


def test_icd10cm_category_broader_than_a_concept_is_not_read_as_absence(cds):
    """I67 (other cerebrovascular diseases) holds I67.1 (aneurysm) and much else: neither
    'aneurysm' nor 'no aneurysm' can be read from it, so nothing is assumed absent."""
    decision = _decision(cds, _with_condition(condition("c9", ICD, "I67", "Other cerebrovascular disease")))
    assert decision["decision"] == "incomplete"
    assert "medical_history.aneurysmal_vascular_disease" in decision["missing"]


def test_icd9cm_for_legacy_records(cds):
    decision = _decision(cds, _with_condition(condition("c9", "http://hl7.org/fhir/sid/icd-9-cm", "295.30",
                                                        "Paranoid type schizophrenia, unspecified")))
    assert "active_psychosis" in _rules(decision)


def test_a_condition_coded_only_in_a_local_system_stops_every_absence_assumption(cds):
    local = condition("c9", "urn:oid:1.2.840.114350.1.13.0.1.7.2.696871", "12345", "Schizo-something (local)")
    local["code"].pop("text")
    local["code"]["coding"][0].pop("display")
    [card] = _post(cds, _with_condition(local))
    decision = card["extension"][EXTENSION_KEY]
    assert decision["decision"] == "incomplete"
    assert "psychiatric_history.psychosis" in decision["missing"]
    assert "Condition/c9" in card["detail"] and "not assumed absent" in card["detail"]


def test_assumptions_from_silence_are_stated_and_ask_for_confirmation(cds):
    [card] = _post(cds, situation("clean")[0])
    decision = card["extension"][EXTENSION_KEY]
    assert decision["decision"] == "eligible"
    assert card["indicator"] == "warning" and "confirm" in card["summary"]
    assert "Assumed from the record's silence" in card["detail"]
    assert "psychiatric_history.psychosis" in decision["assumed"]
    assert "psychiatric_history.suicidal_ideation" not in decision["assumed"]   # never assumed


def test_current_mania_is_not_assumed_when_bipolar_disorder_is_recorded(cds):
    decision = _decision(cds, _with_condition(condition("c9", SCT, "13746004", "Bipolar disorder", status="remission")))
    assert "psychiatric_history.current_mania" not in decision.get("assumed", [])


# --- vitals -------------------------------------------------------------------------------------

def _single(oid: str, code: str, value: int, when: dt.datetime) -> dict:
    return {"resourceType": "Observation", "id": oid, "status": "final",
            "code": {"coding": [{"system": LOINC, "code": code}]}, "subject": {"reference": f"Patient/{PATIENT_ID}"},
            "effectiveDateTime": iso(when), "valueQuantity": {"value": value, "unit": "mm[Hg]"}}


def test_blood_pressure_as_separate_systolic_and_diastolic_observations(cds):
    prefetch, _ = situation("clean")
    taken = now() - dt.timedelta(days=2)
    prefetch["bloodPressure"] = searchset()
    prefetch["systolicBP"] = searchset(_single("s1", "8480-6", 186, taken))
    prefetch["diastolicBP"] = searchset(_single("d1", "8462-4", 104, taken))
    decision = _decision(cds, prefetch)
    assert decision["decision"] == "ineligible" and "vitals.systolic_bp" not in decision.get("missing", [])


def test_the_latest_of_each_pressure_wins_across_panel_and_single_readings(cds):
    prefetch, _ = situation("clean")   # panel 128/82, 4 days ago
    prefetch["systolicBP"] = searchset(_single("s1", "8480-6", 192, now() - dt.timedelta(hours=2)))
    decision = _decision(cds, prefetch)
    assert decision["decision"] == "ineligible"


def test_prefetch_queries_are_in_the_spec_subset_and_vitals_cannot_crowd_each_other_out():
    for key, template in PREFETCH.items():
        assert "," not in template, key                      # no comma-OR
        if template.startswith("Observation?"):
            # one equality token, or one value set by `code:in` (the spec's prefetch subset)
            assert len(re.findall(r"code(:in)?=", template)) == 1, key
    codes = {k: re.search(r"\|([0-9-]+)&", v).group(1) for k, v in PREFETCH.items() if k != "patient" and "loinc" in v}
    assert codes["bloodPressure"] == "85354-9" and codes["heartRate"] == "8867-4"
    assert codes["systolicBP"] == "8480-6" and codes["diastolicBP"] == "8462-4"


def test_discovery_is_valid_against_the_spec_model(cds):
    validate_discovery(cds.get("/cds-services").get_json())


# --- pregnancy ----------------------------------------------------------------------------------

def test_pregnancy_condition_as_synthea_codes_it(cds):
    decision = _decision(cds, _with_condition(condition("p1", SCT, "72892002", "Normal pregnancy")))
    assert decision["decision"] == "ineligible"


def test_a_stale_not_pregnant_status_counts_as_unknown(cds):
    prefetch, _ = situation("clean")
    prefetch["pregnancyStatus"] = searchset(pregnancy_status(False, now() - dt.timedelta(days=200)))
    [card] = _post(cds, prefetch)
    decision = card["extension"][EXTENSION_KEY]
    # unknown, so the pack (issue 12) asks for it for a woman of 42: incomplete, naming it,
    # never a "not pregnant" read from a 200-day-old observation
    assert decision["decision"] == "incomplete" and "patient.pregnant" in decision["missing"]
    assert "200 days ago" in card["detail"]


# --- orders ---------------------------------------------------------------------------------------

def test_esketamine_order_for_recurrent_major_depression_by_snomed(cds):
    order = ketamine_order(drug="esketamine", reason=("66344007", SCT, "Recurrent major depression"))
    [card] = _post(cds, situation("clean")[0], [order])
    assert card["extension"][EXTENSION_KEY]["decision"] in ("eligible", "incomplete", "ineligible")
    assert "Esketamine" in card["summary"]


def _by_reference(order: dict, medication: dict) -> dict:
    out = copy.deepcopy(order)
    out.pop("medicationCodeableConcept")
    out["medicationReference"] = {"reference": f"Medication/{medication['id']}"}
    return out


def test_order_naming_the_drug_by_reference_to_a_bundle_entry(cds):
    med = {"resourceType": "Medication", "id": "med-ket",
           "code": {"coding": [{"system": RXN, "code": "6130"}]}}
    body = hook_request("order-sign", [_by_reference(ketamine_order(), med)], situation("clean")[0])
    body["context"]["draftOrders"]["entry"].append({"fullUrl": "urn:uuid:" + str(uuid.uuid4()), "resource": med})
    r = cds.post(SIGN, body)
    assert r.status_code == 200 and len(r.get_json()["cards"]) == 1
    assert "IV ketamine" in r.get_json()["cards"][0]["summary"]


def test_order_naming_the_drug_by_a_contained_medication_with_ingredient_codes(cds):
    order = ketamine_order()
    order.pop("medicationCodeableConcept")
    order["contained"] = [{"resourceType": "Medication", "id": "m1", "code": {"coding": [{"system": RXN, "code": "999999"}]},
                           "ingredient": [{"itemCodeableConcept": {"coding": [{"system": RXN, "code": "6130"}]}}]}]
    order["medicationReference"] = {"reference": "#m1"}
    assert len(_post(cds, situation("clean")[0], [order])) == 1


def test_rxnorm_product_code_without_text(cds):
    order = ketamine_order(drug="esketamine")
    order["medicationCodeableConcept"] = {"coding": [{"system": RXN, "code": "2201625"}]}
    order["dosageInstruction"] = [{"route": {"coding": [{"system": SCT, "code": "46713006"}]}}]
    [card] = _post(cds, situation("clean")[0], [order])
    assert "Esketamine" in card["summary"]


def test_a_draft_order_with_no_readable_drug_name_is_reported_not_silently_passed(cds):
    order = ketamine_order()
    order["medicationCodeableConcept"] = {"coding": [{"system": RXN, "code": "1234567"}]}
    [card] = _post(cds, situation("clean")[0], [order])
    assert card["indicator"] == "info" and "not screened" in card["summary"]


# --- tolerant parsing -----------------------------------------------------------------------------

def _spec_request(name: str, hook: str) -> dict:
    body = json.loads((SPEC / name).read_text())
    body.pop("_source")
    return {"hook": hook, "hookInstance": str(uuid.uuid4()), **body}


@pytest.mark.parametrize("name,hook,path", [("order-select-r4.json", "order-select", SELECT),
                                            ("order-sign-r4.json", "order-sign", SIGN)])
def test_the_specs_own_example_requests_are_answered(cds, name, hook, path):
    r = cds.post(path, _spec_request(name, hook))
    assert r.status_code == 200, r.get_json()
    validate_response(r.get_json())
    assert r.get_json() == {"cards": []}


@pytest.mark.parametrize("name,hook,path", [("order-select-r4.json", "order-select", SELECT),
                                            ("order-sign-r4.json", "order-sign", SIGN)])
def test_a_ketamine_order_beside_the_spec_examples_is_screened(cds, name, hook, path):
    body = _spec_request(name, hook)
    order = ketamine_order()
    order["subject"] = {"reference": "Patient/1288992"}
    body["context"]["draftOrders"]["entry"].append({"resource": order})
    body["context"]["draftOrders"]["entry"].append({"resource": {"resourceType": "ServiceRequest"}})  # malformed
    body["context"]["draftOrders"]["entry"].append({"nothing": True})
    if hook == "order-select":
        body["context"]["selections"].append("MedicationRequest/ket-1")
    body["prefetch"] = situation("clean")[0]
    body["prefetch"]["patient"]["id"] = "1288992"
    r = cds.post(path, body)
    assert r.status_code == 200, r.get_json()
    validate_response(r.get_json())
    [card] = r.get_json()["cards"]
    assert card["extension"][EXTENSION_KEY]["decision"] == "eligible"


# --- feedback -------------------------------------------------------------------------------------

def _a_card(cds) -> dict:
    return _post(cds, situation("substance_use")[0])[0]


def test_accepted_feedback_needs_accepted_suggestions(cds):
    card = _a_card(cds)
    r = cds.post(SIGN + "/feedback", {"feedback": [{"card": card["uuid"], "outcome": "accepted",
                                                    "outcomeTimestamp": "2026-11-24T10:05:31Z"}]})
    assert r.status_code == 422
    assert {e["path"] for e in r.get_json()["error"]["errors"]} == {"feedback[0].acceptedSuggestions"}


@pytest.mark.parametrize("stamp", ["2026-11-24T10:05:31+02:00", "2026-11-24T10:05:31", "2026-11-24"])
def test_feedback_timestamps_must_be_utc(cds, stamp):
    card = _a_card(cds)
    r = cds.post(SIGN + "/feedback", {"feedback": [{"card": card["uuid"], "outcome": "overridden",
                                                    "outcomeTimestamp": stamp}]})
    assert r.status_code == 422
    assert {e["path"] for e in r.get_json()["error"]["errors"]} == {"feedback[0].outcomeTimestamp"}


def test_feedback_from_another_issuer_is_not_recorded_on_the_card(cds, cds_app, signer):
    from service.cdshooks.jwt_auth import Issuer
    card = _a_card(cds)
    verifier = cds_app.extensions["cds_hooks"].verifier
    other = "https://other-ehr.example.org/"
    verifier.issuers[other] = Issuer(other, jwks_file=verifier.issuers["https://ehr.example.org/"].jwks_file)
    try:
        r = cds.post(SIGN + "/feedback", {"feedback": [{"card": card["uuid"], "outcome": "overridden",
                                                        "outcomeTimestamp": "2026-11-24T10:05:31Z"}]}, iss=other)
    finally:
        del verifier.issuers[other]
    assert r.status_code == 200 and r.get_json()["unknown_cards"] == [card["uuid"]]
    assert cds_app.extensions["store"].feedback_for(card["uuid"]) == []


def test_no_null_or_empty_element_in_any_card(cds):
    for name in ("clean", "hypertensive", "psychosis", "substance_use", "missing_bp"):
        validate_response({"cards": _post(cds, situation(name)[0])})


# --- the terminology data -------------------------------------------------------------------------

def test_every_value_set_records_its_source_and_version():
    sets = term.load_valuesets()
    assert len(sets) >= 25
    for vs in sets.values():
        assert vs.title and vs.version and vs.expansion and vs.size() > 0, vs.id
        assert vs.source["repository"] and re.fullmatch(r"[0-9a-f]{40}", vs.source["commit"]), vs.id
        assert vs.url or vs.rule, vs.id


def test_every_icd10cm_code_in_the_data_is_a_real_icd10cm_code():
    bad = [(vs.id, c) for vs in term.load_valuesets().values() for c in vs.codes.get(term.ICD10CM, ())
           if not term.icd10cm_valid(c)]
    raw = default_mapping().raw
    local = []
    def walk(node):
        if isinstance(node, dict):
            for k, v in node.items():
                if k == "icd10cm" and isinstance(v, list):
                    local.extend(v)
                else:
                    walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)
    walk(raw)
    bad += [("fhir_mapping.yaml", c) for c in local if not term.icd10cm_valid(str(c))]
    assert local and not bad, bad


def test_mapping_is_keyed_by_intake_field_for_the_field_catalog():
    m = default_mapping()
    assert "2.16.840.1.113883.3.464.1003.105.12.1104" in m.valuesets_for_field("psychiatric_history.psychosis")
    assert m.valuesets_for_field("substance_use")


def test_docs_list_every_value_set_with_its_source():
    from service.cdshooks.doc_table import VS_BEGIN, VS_END, render_valuesets
    doc = (Path(__file__).resolve().parent.parent / "docs" / "cds-hooks.md").read_text()
    assert doc[doc.index(VS_BEGIN): doc.index(VS_END) + len(VS_END)] == render_valuesets(), \
        "docs/cds-hooks.md is stale: run python -m service.cdshooks.doc_table"
    for vid in term.load_valuesets():
        assert vid.startswith("derived") or f"`{vid}`" in doc
    assert "cqframework/ecqm-content-qicore-2024" in doc


@pytest.mark.parametrize("system,code,display,rule", [
    (ICD, "G40.909", "Epilepsy, unspecified", "seizure_disorder"),
    (SCT, "84757009", "Epilepsy", "seizure_disorder"),
    (ICD, "G47.33", "Obstructive sleep apnea", "respiratory_depression_risk"),
    (SCT, "13645005", "Chronic obstructive lung disease", "respiratory_depression_risk"),
    (ICD, "E05.91", "Thyrotoxicosis with thyrotoxic crisis", "uncontrolled_hyperthyroidism_iv"),
    (SCT, "29028009", "Thyrotoxic crisis", "uncontrolled_hyperthyroidism_iv"),
])
def test_issue_12_fields_flow_from_problem_list_codes(cds, system, code, display, rule):
    """The fields issue 12 added to the intake contract (the mapping named them ahead of it) now
    reach the rules from the codes EHRs send, and the card names the record they came from."""
    [card] = _post(cds, _with_condition(condition("c9", system, code, display)))
    decision = card["extension"][EXTENSION_KEY]
    assert rule in _rules(decision), decision
    assert "Condition/c9" in card["detail"]


def test_hyperthyroidism_leaves_whether_it_is_controlled_unknown(cds):
    """A hyperthyroidism diagnosis withholds the "not uncontrolled" assumption: asked, never assumed."""
    decision = _decision(cds, _with_condition(condition("c9", SCT, "34486009", "Hyperthyroidism")))
    assert decision["decision"] == "incomplete"
    assert decision["missing"] == ["medical_history.uncontrolled_hyperthyroidism"]


def test_a_suicide_attempt_on_the_problem_list_asks_when(cds):
    """The problem list says there was an attempt; when the last one was is asked, not guessed
    (the situation's questionnaire says "no attempt": the recorded attempt is the more concerning)."""
    decision = _decision(cds, _with_condition(condition("c9", SCT, "82313006", "Suicide attempt")))
    assert decision["decision"] == "incomplete"
    assert "psychiatric_history.last_suicide_attempt" in decision["missing"]

