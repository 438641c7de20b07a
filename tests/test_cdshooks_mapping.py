"""The FHIR -> intake mapping: the code tables of fhir_mapping.yaml and how records combine."""
from __future__ import annotations

import datetime as dt

import pytest

from schemas.intake import SHIPPED, IntakeSchema
from service.cdshooks.fhirjson import Node
from service.cdshooks.mapping import (
    MAPPING_PATH,
    FhirRecord,
    default_mapping,
    find_ketamine_orders,
    load_mapping,
    map_to_intake,
)
from service.decision import jsonable
from tests.cdshooks_support import (
    ICD,
    RXN,
    SCT,
    condition,
    ketamine_order,
    medication_statement,
    now,
    questionnaire_response,
)

M = default_mapping()
AS_OF = dt.datetime(2026, 11, 24, 12, 0, tzinfo=dt.timezone.utc)


def _intake(conditions=(), meds=(), allergies=(), qr=None, order=None) -> dict:
    order = Node(order or ketamine_order())
    [draft] = find_ketamine_orders([order], M)
    record = FhirRecord(
        conditions=[Node(c) for c in conditions],
        medications=[Node(m) for m in meds],
        allergies=[Node(a) for a in allergies],
        questionnaire_responses=[Node(qr)] if qr else [],
    )
    mapped = map_to_intake(record, draft, M, as_of=AS_OF, subject_id="cds-x", catalog=SHIPPED)
    IntakeSchema().load(jsonable(mapped.raw))  # every mapping result is a valid intake
    return mapped.raw


@pytest.mark.parametrize("system,code,path,value", [
    (ICD, "F20.0", "psychiatric_history.psychosis", "active"),
    (ICD, "F29", "psychiatric_history.psychosis", "active"),
    (SCT, "69322001", "psychiatric_history.psychosis", "active"),
    (ICD, "F25.1", "psychiatric_history.schizoaffective_disorder", True),
    (ICD, "F31.81", "psychiatric_history.bipolar_disorder", True),
    (SCT, "13746004", "psychiatric_history.bipolar_disorder", True),
    (ICD, "F30.10", "psychiatric_history.current_mania", True),
    (ICD, "I67.1", "medical_history.aneurysmal_vascular_disease", True),
    (SCT, "432119003", "medical_history.aneurysmal_vascular_disease", True),
    (ICD, "Q28.2", "medical_history.arteriovenous_malformation", True),
    (ICD, "I61.9", "medical_history.intracerebral_hemorrhage", True),
    (ICD, "I21.4", "medical_history.recent_cardiac_event", True),
    (ICD, "I16.1", "medical_history.unstable_cardiovascular_disease", True),
    (ICD, "H40.11", "medical_history.elevated_intraocular_pressure", True),
    (ICD, "K72.10", "medical_history.hepatic_impairment", "severe"),
    (ICD, "Z33.1", "patient.pregnant", True),
])
def test_condition_codes_set_intake_fields(system, code, path, value):
    raw = _intake([condition("c1", system, code, "x")])
    section, field = path.split(".")
    assert raw[section][field] == value


def test_silent_problem_list_means_absent_but_only_for_diagnoses():
    raw = _intake([])
    assert raw["psychiatric_history"]["psychosis"] == "none"
    assert raw["medical_history"]["intracerebral_hemorrhage"] is False
    assert "suicidal_ideation" not in raw["psychiatric_history"]   # never assumed
    assert "pregnant" not in raw.get("patient", {})
    assert raw["substance_use"] == [] and raw["medications"] == []


def test_refuted_and_entered_in_error_conditions_are_ignored():
    refuted = condition("c1", ICD, "F20.9", "x")
    refuted["verificationStatus"]["coding"][0]["code"] = "refuted"
    assert _intake([refuted])["psychiatric_history"]["psychosis"] == "none"


def test_resolved_psychosis_is_past_and_history_is_kept():
    raw = _intake([condition("c1", ICD, "F23", "Brief psychotic disorder", status="resolved"),
                   condition("c2", ICD, "I61.0", "ICH", status="resolved")])
    assert raw["psychiatric_history"]["psychosis"] == "past"
    assert raw["medical_history"]["intracerebral_hemorrhage"] is True


def test_most_concerning_value_wins_across_sources():
    qr = questionnaire_response({"psychiatric_history.psychosis": "none", "psychiatric_history.suicidal_ideation": "passive"}, now())
    raw = _intake([condition("c1", ICD, "F20.9", "Schizophrenia"), condition("c2", ICD, "R45.851", "Suicidal ideations")], qr=qr)
    assert raw["psychiatric_history"]["psychosis"] == "active"          # the diagnosis is not cancelled by "none"
    assert raw["psychiatric_history"]["suicidal_ideation"] == "active"  # active beats passive


def test_substance_use_by_substance_with_remission_codes():
    raw = _intake([
        condition("a", ICD, "F10.20", "Alcohol dependence"),
        condition("b", ICD, "F11.21", "Opioid dependence, in remission", abated="2024-02-01"),
        condition("c", ICD, "F12.90", "Cannabis use, unspecified"),
        condition("d", ICD, "F17.210", "Nicotine dependence"),
    ])
    assert raw["substance_use"] == [
        {"substance": "alcohol", "disorder": True, "status": "active"},
        {"substance": "cannabis", "disorder": False, "status": "active"},
        {"substance": "opioids", "disorder": True, "status": "in_remission", "last_use": dt.date(2024, 2, 1)},
    ]


def test_medication_classes_by_rxnorm_atc_and_name():
    atc = medication_statement("m3", "x", "x")
    atc["medicationCodeableConcept"] = {"coding": [{"system": "http://www.whocc.no/atc", "code": "N06AF03", "display": "phenelzine"}]}
    raw = _intake(meds=[
        medication_statement("m1", "6470", "lorazepam"),
        medication_statement("m2", "1049621", "oxycodone hydrochloride 5 MG Oral Tablet"),
        atc,
        medication_statement("m4", "197361", "amlodipine 5 MG Oral Tablet"),
        medication_statement("m5", "10438", "theophylline"),
        medication_statement("m6", "725", "amphetamine"),
    ])
    assert [m["class"] for m in raw["medications"]] == ["benzodiazepine", "opioid", "maoi", "other", "theophylline", "stimulant"]


def test_other_draft_orders_count_as_medications():
    mr = Node({**medication_statement("d2", "596", "alprazolam 0.5 MG"),
                                           "resourceType": "MedicationRequest", "status": "draft", "intent": "order"})
    order = Node(ketamine_order())
    [draft] = find_ketamine_orders([order, mr], M)
    record = FhirRecord(conditions=[], medications=[], allergies=[], other_draft_orders=[mr])
    raw = map_to_intake(record, draft, M, as_of=AS_OF, subject_id="cds-x", catalog=SHIPPED).raw
    assert raw["medications"] == [{"name": "alprazolam 0.5 MG", "class": "benzodiazepine"}]


def test_ketamine_allergy_by_code_and_esketamine_by_text():
    allergy = {"resourceType": "AllergyIntolerance", "id": "a1", "patient": {"reference": "Patient/p"},
               "clinicalStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/allergyintolerance-clinical", "code": "active"}]},
               "code": {"coding": [{"system": RXN, "code": "6130", "display": "ketamine"}]}}
    assert _intake(allergies=[allergy])["allergies"] == {"ketamine": True, "esketamine": False}
    allergy["code"] = {"text": "Spravato (esketamine)"}
    assert _intake(allergies=[allergy])["allergies"] == {"ketamine": False, "esketamine": True}


def test_an_allergy_coded_without_a_name_leaves_both_allergy_answers_unknown():
    """Every ketamine and esketamine product's RxNorm name carries the ingredient's name; a bare
    code the table does not list could be either drug, so the list's silence proves nothing."""
    allergy = {"resourceType": "AllergyIntolerance", "id": "a1", "patient": {"reference": "Patient/p"},
               "code": {"coding": [{"system": RXN, "code": "2201621"}]}}
    assert "allergies" not in _intake(allergies=[allergy])
    allergy["code"]["coding"][0]["display"] = "penicillin V"      # named, and not either drug
    assert _intake(allergies=[allergy])["allergies"] == {"ketamine": False, "esketamine": False}


def test_order_identification_and_route():
    esk = Node(ketamine_order(drug="esketamine"))
    ket = Node(ketamine_order())
    text_only = Node({"resourceType": "MedicationRequest", "id": "t", "status": "draft",
                                                  "intent": "order", "subject": {"reference": "Patient/p"},
                                                  "medicationCodeableConcept": {"text": "Ketamine HCl 50 mg/mL injection"}})
    found = find_ketamine_orders([esk, ket, text_only], M)
    assert [(o.drug, o.route) for o in found] == [("esketamine", "esketamine_nasal"), ("ketamine", "iv_ketamine"),
                                                 ("ketamine", "iv_ketamine")]


def test_indication_from_reason_code():
    def indication(code, system=ICD):
        return _intake(order=ketamine_order(reason=(code, system, "x")))["treatment"]["indication"]
    assert indication("F43.10") == "ptsd"
    assert indication("G89.29") == "chronic_pain"
    assert indication("R45.851") == "major_depression_with_suicidality"
    assert indication("370143000", SCT) == "treatment_resistant_depression"


def test_the_table_is_data_a_policy_editor_can_extend(tmp_path):
    text = MAPPING_PATH.read_text()
    extended = text.replace('icd10cm: [F20, F22, F23', 'icd10cm: [X99, F20, F22, F23')
    path = tmp_path / "mapping.yaml"
    path.write_text(extended)
    mapping = load_mapping(path)
    [(name, codes, active, _)] = [c for c in mapping.conditions if c[0] == "psychotic disorder"]
    concept = Node(condition("c", ICD, "X99.1", "local code")).code
    assert codes.matches(concept) and active == {"psychiatric_history.psychosis": "active"}


def test_docs_mapping_table_is_generated_from_the_yaml():
    from pathlib import Path

    from service.cdshooks.doc_table import BEGIN, END, render
    doc = (Path(__file__).resolve().parent.parent / "docs" / "cds-hooks.md").read_text()
    assert doc[doc.index(BEGIN): doc.index(END) + len(END)] == render(), \
        "docs/cds-hooks.md is stale: run python -m service.cdshooks.doc_table"
