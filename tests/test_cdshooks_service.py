"""CDS Hooks service: discovery, the hook calls of the spec's examples, one FHIR record per
clinical situation decided exactly as the equivalent intake JSON, and cards checked against the
spec's rules."""
from __future__ import annotations

import re
import uuid

import pytest

from schemas.intake import IntakeSchema
from service.cdshooks.cards import EXTENSION_KEY, prune_empty
from service.cdshooks.discovery import PREFETCH
from service.screening import screen
from tests.cdshooks_support import (
    SIGN,
    SELECT,
    ICD,
    amoxicillin_order,
    condition,
    hook_request,
    ketamine_order,
    now,
    nutrition_order,
    questionnaire_response,
    searchset,
    situation,
)

_TOKEN = re.compile(r"\{\{\s*(context\.[A-Za-z]+|userPractitionerId|userPractitionerRoleId|userPatientId|userRelatedPersonId)\s*\}\}")


def assert_spec_card(card: dict) -> None:
    """The spec's card rules (CDS Hooks 2.0 "Card Attributes")."""
    assert isinstance(card["summary"], str) and 0 < len(card["summary"]) < 140
    assert card["indicator"] in ("info", "warning", "critical")
    assert isinstance(card["source"], dict) and card["source"]["label"]
    topic = card["source"].get("topic")
    if topic is not None:
        assert topic["system"] and topic["code"]
    for reason in card.get("overrideReasons", []):
        assert reason["system"] and reason["code"] and reason["display"]
    if card.get("overrideReasons"):
        uuid.UUID(card["uuid"])  # feedback must be able to name the card
    if "suggestions" in card:
        assert card.get("selectionBehavior") in ("at-most-one", "any")
    for link in card.get("links", []):
        assert link["label"] and link["type"] in ("absolute", "smart")
        assert link["url"].startswith(("http://", "https://"))
    assert isinstance(card.get("detail", ""), str)


# --- discovery -------------------------------------------------------------------------------

def test_discovery_lists_both_hooks_with_valid_prefetch_templates(cds):
    r = cds.get("/cds-services")
    assert r.status_code == 200
    services = {s["id"]: s for s in r.get_json()["services"]}
    assert services["ketamine-screening-select"]["hook"] == "order-select"
    assert services["ketamine-screening-sign"]["hook"] == "order-sign"
    for s in services.values():
        assert s["title"] and s["description"]
        assert set(s["prefetch"]) >= {"patient", "bloodPressure", "systolicBP", "diastolicBP", "conditions",
                                      "medicationStatements", "medicationRequests", "allergies", "pregnancyStatus",
                                      "intakeQuestionnaire"}
        for template in s["prefetch"].values():
            # only tokens the spec allows, and every {{ is one of them
            assert template.count("{{") == len(_TOKEN.findall(template))
    assert "85354-9" in PREFETCH["bloodPressure"] and "_sort=-date" in PREFETCH["bloodPressure"]
    assert "82810-3" in PREFETCH["pregnancyStatus"]


def test_discovery_answers_cors_preflight_without_a_token(cds):
    r = cds.raw.options("/cds-services/ketamine-screening-sign", headers={
        "Origin": "https://ehr.example.org", "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization, content-type"})
    assert r.status_code == 200
    assert r.headers["Access-Control-Allow-Origin"] in ("*", "https://ehr.example.org")
    assert "authorization" in r.headers["Access-Control-Allow-Headers"].lower()
    assert "POST" in r.headers["Access-Control-Allow-Methods"]


# --- the spec's hook examples -----------------------------------------------------------------

@pytest.mark.parametrize("path,hook", [(SELECT, "order-select"), (SIGN, "order-sign")])
def test_spec_example_orders_get_no_cards(cds, path, hook):
    """The hook library's R4 example (a pureed diet and amoxicillin) is not ketamine: no cards,
    and no prefetch needed to say so."""
    body = hook_request(hook, [nutrition_order(), amoxicillin_order()], None)
    r = cds.post(path, body)
    assert r.status_code == 200
    assert r.get_json() == {"cards": []}


def test_order_select_only_screens_the_selected_orders(cds):
    prefetch, _ = situation("clean")
    body = hook_request("order-select", [ketamine_order(), amoxicillin_order()], prefetch,
                        selections=["MedicationRequest/smart-MedicationRequest-103"])
    assert cds.post(SELECT, body).get_json() == {"cards": []}
    body["context"]["selections"] = ["MedicationRequest/ket-1"]
    cards = cds.post(SELECT, body).get_json()["cards"]
    assert len(cards) == 1


def test_hook_must_match_the_service(cds):
    prefetch, _ = situation("clean")
    r = cds.post(SIGN, hook_request("order-select", [ketamine_order()], prefetch))
    assert r.status_code == 400
    assert {"path": "hook", "message": "must be 'order-sign' for this service"} in r.get_json()["error"]["errors"]


def test_unknown_service_is_404(cds):
    assert cds.post("/cds-services/nope", hook_request("order-sign", [], None)).status_code == 404


def test_malformed_prefetch_is_a_warning_and_the_reading_is_not_used(cds):
    """A malformed resource in prefetch does not refuse the call: what it would have said is not
    used (here: the blood pressure, so the decision is incomplete), and the card says why."""
    prefetch, _ = situation("clean")
    prefetch["bloodPressure"]["entry"][0]["resource"]["status"] = 42
    prefetch["conditions"]["entry"].append({"resource": "not a resource"})
    r = cds.post(SIGN, hook_request("order-sign", [ketamine_order()], prefetch))
    assert r.status_code == 200
    [card] = r.get_json()["cards"]
    decision = card["extension"][EXTENSION_KEY]
    assert decision["decision"] == "incomplete" and "vitals.systolic_bp" in decision["missing"]
    assert "prefetch.conditions.entry[1] holds no FHIR resource" in card["detail"]


def test_an_unreadable_ketamine_order_is_the_only_fhir_error_and_names_its_path(cds):
    prefetch, _ = situation("clean")
    order = ketamine_order()
    order["subject"] = {"reference": "Patient/someone-else"}
    r = cds.post(SIGN, hook_request("order-sign", [amoxicillin_order(), order], prefetch))
    assert r.status_code == 400
    assert r.get_json()["error"]["errors"][0]["path"] == "context.draftOrders.entry.1.resource.subject.reference"


# --- same decision as the intake JSON ---------------------------------------------------------

def _decision_of(card: dict) -> dict:
    return card["extension"][EXTENSION_KEY]


@pytest.mark.parametrize("name,expected,indicator", [
    ("clean", "eligible", "warning"),   # eligible, with the diagnoses assumed absent to confirm
    ("hypertensive", "ineligible", "critical"),
    ("psychosis", "ineligible", "critical"),
    ("substance_use", "eligible", "warning"),
    ("missing_bp", "incomplete", "warning"),
])
def test_situation_gets_the_same_decision_as_the_intake_json(cds, cds_app, name, expected, indicator):
    prefetch, intake_json = situation(name)
    r = cds.post(SIGN, hook_request("order-sign", [ketamine_order()], prefetch))
    assert r.status_code == 200, r.get_json()
    [card] = r.get_json()["cards"]
    assert_spec_card(card)
    got = _decision_of(card)

    intake_json = {"subject_id": got["subject_id"], **intake_json}
    direct = prune_empty(screen(IntakeSchema().load(intake_json), cds_app.extensions["rulesets"].current).to_dict())
    for key in ("decision", "physician_review_required", "urgent", "missing", "reasons", "findings", "ruleset"):
        assert got.get(key) == direct.get(key), key
    assert got["decision"] == expected
    assert card["indicator"] == indicator
    # the intake stored in the decision log is the equivalent intake
    stored = cds_app.extensions["store"].get_decision(got["decision_id"])
    assert stored is not None and stored.source == "cds-hooks"
    assert stored.client == "cds-hooks:https://ehr.example.org/"
    assert stored.intake == intake_json
    assert card["links"][0]["url"] == f"http://localhost/decisions/{got['decision_id']}"


def test_ineligible_card_lists_every_reason_with_evidence_and_citation(cds):
    prefetch, _ = situation("hypertensive")
    prefetch["conditions"]["entry"].append(searchset(
        {"resourceType": "Condition", "id": "scz", "code": {"coding": [{"system": ICD, "code": "F20.0"}]},
         "subject": {"reference": "Patient/x"}})["entry"][0])
    [card] = cds.post(SIGN, hook_request("order-sign", [ketamine_order()], prefetch)).get_json()["cards"]
    decision = _decision_of(card)
    assert card["indicator"] == "critical"
    assert {"severe_hypertension", "active_psychosis"} <= {r["rule_id"] for r in decision["reasons"]}
    for reason in decision["reasons"]:
        assert f"`{reason['rule_id']}`" in card["detail"]
        assert reason["citation"].split(";")[0].replace("|", "\\|") in card["detail"]
    assert "`vitals.systolic_bp` = 192" in card["detail"]
    assert "Observation/bp-1" in card["detail"]          # where the value came from
    assert "Condition/scz" in card["detail"]
    assert card["summary"].startswith("IV ketamine: not eligible")
    assert card["overrideReasons"] and card["uuid"] == decision["decision_id"]


def test_missing_blood_pressure_card_names_exactly_what_is_missing(cds):
    prefetch, _ = situation("missing_bp")
    [card] = cds.post(SIGN, hook_request("order-sign", [ketamine_order()], prefetch)).get_json()["cards"]
    decision = _decision_of(card)
    assert set(decision["missing"]) == {"vitals.systolic_bp", "vitals.diastolic_bp", "vitals.measured_at"}
    for path in decision["missing"]:
        assert f"- `{path}`" in card["detail"]
    assert "missing" in card["summary"] and len(card["summary"]) < 140


def test_without_questionnaire_unasked_fields_are_missing_not_assumed(cds):
    prefetch, _ = situation("clean")
    prefetch["intakeQuestionnaire"] = None
    [card] = cds.post(SIGN, hook_request("order-sign", [ketamine_order()], prefetch)).get_json()["cards"]
    decision = _decision_of(card)
    assert "psychiatric_history.suicidal_ideation" in decision["missing"]
    assert decision["decision"] == "incomplete"


def test_esketamine_order_is_screened_as_the_nasal_spray_with_rems_from_the_questionnaire(cds):
    prefetch, _ = situation("clean")
    qr = questionnaire_response({"psychiatric_history.suicidal_ideation": "none", "patient.breastfeeding": False,
                                 "treatment.rems_enrolled": True, "treatment.observation_2h_arranged": True,
                                 "treatment.transport_home_arranged": False, "treatment.setting": "outpatient"}, now())
    prefetch["intakeQuestionnaire"] = searchset(qr)
    [card] = cds.post(SIGN, hook_request("order-sign", [ketamine_order(drug="esketamine")], prefetch)).get_json()["cards"]
    decision = _decision_of(card)
    assert card["summary"].startswith("Esketamine nasal spray")
    assert "esketamine_rems" in {r["rule_id"] for r in decision["reasons"]}
    assert_spec_card(card)


def test_order_for_a_reason_outside_the_indications_gets_no_cards(cds):
    prefetch, _ = situation("clean")
    order = ketamine_order(reason=("Z01.818", ICD, "Encounter for other preprocedural examination"))
    assert cds.post(SIGN, hook_request("order-sign", [order], prefetch)).get_json() == {"cards": []}


def test_order_without_reason_uses_the_documented_default_and_says_so(cds):
    prefetch, _ = situation("clean")
    [card] = cds.post(SIGN, hook_request("order-sign", [ketamine_order(reason=None)], prefetch)).get_json()["cards"]
    assert "default indication 'treatment_resistant_depression'" in card["detail"]


def test_impossible_record_values_give_a_could_not_screen_card(cds):
    prefetch, _ = situation("clean")
    comp = prefetch["bloodPressure"]["entry"][0]["resource"]["component"]
    comp[0]["valueQuantity"]["value"] = 320
    [card] = cds.post(SIGN, hook_request("order-sign", [ketamine_order()], prefetch)).get_json()["cards"]
    assert card["indicator"] == "warning" and "could not be screened" in card["summary"]
    assert "`vitals.systolic_bp`" in card["detail"]
    assert "extension" not in card
    assert_spec_card(card)


# --- feedback ---------------------------------------------------------------------------------

def test_feedback_is_recorded_against_the_cards_decision(cds, cds_app):
    prefetch, _ = situation("substance_use")
    [card] = cds.post(SIGN, hook_request("order-sign", [ketamine_order()], prefetch)).get_json()["cards"]
    reason = card["overrideReasons"][0]
    feedback = {"feedback": [{"card": card["uuid"], "outcome": "overridden",
                              "overrideReason": {"reason": {"system": reason["system"], "code": reason["code"]},
                                                 "userComment": "Reviewed with the patient."},
                              "outcomeTimestamp": "2026-11-24T10:05:31Z"}]}
    r = cds.post(SIGN + "/feedback", feedback)
    assert r.status_code == 200
    assert r.get_json() == {"recorded": 1}
    kept = cds_app.extensions["store"].feedback_for(card["uuid"])  # in the decision log, beside the decision
    assert len(kept) == 1 and kept[0]["decision_found"] is True and kept[0]["override_reason"]["code"] == reason["code"]
    assert kept[0]["client"].startswith("cds-hooks:") and kept[0]["outcome"] == "overridden"


def test_feedback_shapes_are_checked(cds):
    r = cds.post(SIGN + "/feedback", {"feedback": [{"card": "x", "outcome": "ignored", "outcomeTimestamp": "yesterday"}]})
    assert r.status_code == 422
    paths = {e["path"] for e in r.get_json()["error"]["errors"]}
    assert paths == {"feedback[0].outcome", "feedback[0].outcomeTimestamp"}


def test_feedback_for_an_unknown_card_is_accepted_and_reported(cds):
    r = cds.post(SIGN + "/feedback", {"feedback": [{"card": str(uuid.uuid4()), "outcome": "accepted",
                                                    "acceptedSuggestions": [{"id": "s-1"}],
                                                    "outcomeTimestamp": "2026-11-24T10:05:31Z"}]})
    assert r.status_code == 200 and len(r.get_json()["unknown_cards"]) == 1


def test_prefetch_larger_than_an_intake_body_is_accepted(cds):
    """A real record's prefetch is far past the screening API's 256 KiB body limit."""
    prefetch, _ = situation("clean")
    filler = [condition(f"old-{i}", ICD, "J06.9", "Acute upper respiratory infection " + "x" * 200, status="resolved")
              for i in range(1500)]
    prefetch["conditions"]["entry"].extend({"resource": c} for c in filler)
    body = hook_request("order-sign", [ketamine_order()], prefetch)
    import json as _json
    assert len(_json.dumps(body)) > 256 * 1024
    r = cds.post(SIGN, body)
    assert r.status_code == 200 and r.get_json()["cards"][0]["extension"][EXTENSION_KEY]["decision"] == "eligible"


def test_list_evidence_names_the_record_of_each_item(cds):
    prefetch, _ = situation("substance_use")
    [card] = cds.post(SIGN, hook_request("order-sign", [ketamine_order()], prefetch)).get_json()["cards"]
    rows = {line.split("`")[1]: line for line in card["detail"].splitlines() if line.startswith("| ") and "`" in line}
    assert "Condition/aud-1" in rows["active_substance_use_disorder"]
    assert "Condition/cud-1" in rows["substance_use_history"]
    assert "Condition/aud-1" not in rows["substance_use_history"]
