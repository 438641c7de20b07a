"""Writes the conformance corpus (patients/*.json): one clinical situation written the way each
EHR family sends it, beside the same facts as intake JSON.

    python tests/cdshooks_corpus/make_corpus.py

The corpus files are the test data (tests/test_cdshooks_corpus.py reads only them); this script
is how they were made, kept so a reviewer can see that the FHIR and the intake state the same
facts. Times are relative placeholders resolved when a test loads a file: "@ago:4d" (a dateTime
4 days before now), "@day:-200" (the date 200 days before today), "@birth:42" (a birth date for
that age).

Pregnancy tests (hCG, the published Pregnancy Test set) answer pregnancy for four situations,
under the one key the discovery document asks for them (`pregnancyTests`, `code:in` the set; every
other patient has it empty, as an EHR prefetching everything sends it); the intake twin states the
answer the test gives (a recent negative: not pregnant; a positive: pregnant; an old
negative: nothing).

What the problem list's silence is taken to prove on the CDS Hooks side (fhir_mapping.yaml
`absence`) is stated outright on the intake side (INTAKE_FIELDS); what silence never proves
(suicidal ideation, a prior suicide attempt, breastfeeding, the setting and the arrangements
after the dose, earlier ketamine treatment) comes from the intake questionnaire on both sides.

House styles (what the issue's integrator saw):
- epic:    problem list coded ICD-10-CM under its OID plus SNOMED CT plus a local (IMO-like) code;
           BP as an 85354-9 panel; medications as MedicationRequests whose medicationReference
           names a Medication resource (an _include in prefetch, an entry in draftOrders); the
           order's reason as ICD-10-CM under its OID.
- cerner:  diagnoses coded ICD-10-CM (URI) only; BP as separate 8480-6 / 8462-4 observations;
           heart rate in a busy stream; medications as MedicationStatements with an RxNorm product
           code and text; the order's reason as SNOMED CT; the drug sometimes by text only.
- synthea: SNOMED CT only (72892002 for pregnancy, as Synthea codes it), BP panel, RxNorm
           products with display and no text, no order reason.
"""
from __future__ import annotations

import copy
import json
from pathlib import Path

OUT = Path(__file__).resolve().parent / "patients"
PID = "corpus-patient"
ICD_OID = "urn:oid:2.16.840.1.113883.6.90"
ICD = "http://hl7.org/fhir/sid/icd-10-cm"
SCT = "http://snomed.info/sct"
RXN = "http://www.nlm.nih.gov/research/umls/rxnorm"
LOINC = "http://loinc.org"
LOCAL = "urn:oid:1.2.840.114350.1.13.0.1.7.2.696871"   # an EHR-local problem-list code system

# concept -> SNOMED CT, ICD-10-CM, and the intake facts it states
CONCEPTS = {
    "mdd_recurrent": ("66344007", "Recurrent major depression", "F33.1", "Major depressive disorder, recurrent, moderate", {}),
    "mdd": ("370143000", "Major depressive disorder", "F32.9", "Major depressive disorder, single episode, unspecified", {}),
    "ptsd": ("47505003", "Posttraumatic stress disorder", "F43.10", "Post-traumatic stress disorder, unspecified", {}),
    "paranoid_schizophrenia": ("64905009", "Paranoid schizophrenia", "F20.0", "Paranoid schizophrenia",
                               {"psychiatric_history.psychosis": "active", "psychiatric_history.schizophrenia": True}),
    "bipolar_manic": ("767635003", "Bipolar I disorder, most recent episode manic", "F31.11",
                      "Bipolar disorder, current episode manic without psychotic features, mild",
                      {"psychiatric_history.bipolar_disorder": True, "psychiatric_history.current_mania": True}),
    "bipolar_history": ("13746004", "Bipolar disorder", "F31.9", "Bipolar disorder, unspecified",
                        {"psychiatric_history.bipolar_disorder": True}),
    "pregnancy": ("72892002", "Normal pregnancy", "Z33.1", "Pregnant state, incidental", {"patient.pregnant": True}),
    "acute_mi": ("22298006", "Myocardial infarction", "I21.4", "Non-ST elevation (NSTEMI) myocardial infarction",
                 {"medical_history.recent_cardiac_event": True}),
    "ich": ("274100004", "Cerebral hemorrhage", "I61.9", "Nontraumatic intracerebral hemorrhage, unspecified",
            {"medical_history.intracerebral_hemorrhage": True, "medical_history.cerebrovascular_history": True}),
    "glaucoma": ("23986001", "Glaucoma", "H40.9", "Unspecified glaucoma",
                 {"medical_history.elevated_intraocular_pressure": True}),
    "cirrhosis": ("19943007", "Cirrhosis of liver", "K74.60", "Unspecified cirrhosis of liver",
                  {"medical_history.hepatic_impairment": "moderate"}),
    "hypertension": ("38341003", "Hypertensive disorder", "I10", "Essential (primary) hypertension", {}),
    "alcohol_dependence": ("66590003", "Alcohol dependence", "F10.20", "Alcohol dependence, uncomplicated",
                           {"substance": {"substance": "alcohol", "disorder": True, "status": "active"}}),
    # in remission: the last use is the record's abatement date (ABATED_DAYS_AGO)
    "alcohol_dependence_remission": ("66590003", "Alcohol dependence", "F10.21", "Alcohol dependence, in remission",
                                     {"substance": {"substance": "alcohol", "disorder": True, "status": "in_remission",
                                                    "last_use": "@abated"}}),
    # a hyperthyroidism diagnosis does not say whether it is controlled: that stays unknown
    "hyperthyroidism": ("34486009", "Hyperthyroidism", "E05.90",
                        "Thyrotoxicosis, unspecified without thyrotoxic crisis or storm", {}),
    "thyrotoxic_crisis": ("29028009", "Thyrotoxic crisis", "E05.91",
                          "Thyrotoxicosis, unspecified with thyrotoxic crisis or storm",
                          {"medical_history.uncontrolled_hyperthyroidism": True}),
    "epilepsy": ("84757009", "Epilepsy", "G40.909",
                 "Epilepsy, unspecified, not intractable, without status epilepticus",
                 {"medical_history.seizure_disorder": True}),
    "obstructive_sleep_apnoea": ("78275009", "Obstructive sleep apnea syndrome", "G47.33",
                                 "Obstructive sleep apnea (adult) (pediatric)", {"medical_history.sleep_apnea": True}),
    "copd": ("13645005", "Chronic obstructive lung disease", "J44.9",
             "Chronic obstructive pulmonary disease, unspecified", {"medical_history.chronic_respiratory_disease": True}),
    "suicide_attempt": ("82313006", "Suicide attempt", "T14.91XA", "Suicide attempt, initial encounter",
                        {"psychiatric_history.prior_suicide_attempt": True}),
}
ABATED_DAYS_AGO = {"alcohol_dependence_remission": 800}   # others: 300 days
ONSET_DAYS_AGO = {"suicide_attempt": 45}                   # others: 400 days
MEDS = {
    "sertraline": ("312938", "sertraline 100 MG Oral Tablet", "ssri"),
    "alprazolam": ("308047", "alprazolam 0.25 MG Oral Tablet", "benzodiazepine"),
    "oxycodone": ("1049621", "oxycodone hydrochloride 5 MG Oral Tablet", "opioid"),
    "lisinopril": ("314076", "lisinopril 10 MG Oral Tablet", "other"),
}
INTAKE_FIELDS = {  # what every patient's problem list is silent about, stated by the intake form
    "psychiatric_history.psychosis": "none", "psychiatric_history.schizophrenia": False,
    "psychiatric_history.schizoaffective_disorder": False, "psychiatric_history.bipolar_disorder": False,
    "psychiatric_history.current_mania": False, "medical_history.aneurysmal_vascular_disease": False,
    "medical_history.arteriovenous_malformation": False, "medical_history.intracerebral_hemorrhage": False,
    "medical_history.unstable_cardiovascular_disease": False, "medical_history.severe_hepatic_impairment": False,
    "medical_history.elevated_intracranial_pressure": False, "medical_history.elevated_intraocular_pressure": False,
    "medical_history.recent_cardiac_event": False, "medical_history.cerebrovascular_history": False,
    "medical_history.hepatic_impairment": "none", "medical_history.uncontrolled_hyperthyroidism": False,
    "medical_history.seizure_disorder": False, "medical_history.sleep_apnea": False,
    "medical_history.chronic_respiratory_disease": False,
}
# Withheld, never assumed: a hyperthyroidism diagnosis leaves "is it controlled?" open.
WITHHOLDS = {"hyperthyroidism": ["medical_history.uncontrolled_hyperthyroidism"]}
ALLERGENS = {"ketamine": ("6130", "ketamine")}

# name -> facts. Defaults: woman of 42, MDD recurrent, BP 124/78 4 days ago, HR 72, not pregnant
# 5 days ago, sertraline, no allergies, an intake questionnaire answering what a record's silence
# cannot (no suicidal ideation, no suicide attempt ever, not breastfeeding, outpatient, 2-hour
# observation and transport home arranged, never treated with ketamine or esketamine).
SITUATIONS = {
    "clean": {},
    "hypertensive": {"bp": (186, 104, 2)},
    "paranoid_schizophrenia": {"conditions": [("paranoid_schizophrenia", "active")]},
    "bipolar_current_mania": {"conditions": [("bipolar_manic", "active")]},
    "alcohol_dependence": {"conditions": [("alcohol_dependence", "active")]},
    "pregnant_by_condition": {"conditions": [("pregnancy", "active")], "pregnancy_status": None},
    "recent_mi": {"conditions": [("acute_mi", "active")]},
    "ich_history": {"conditions": [("ich", "resolved")]},
    "glaucoma_and_hypertension": {"conditions": [("glaucoma", "active"), ("hypertension", "active")]},
    "benzo_and_opioid": {"meds": ["sertraline", "alprazolam", "oxycodone", "lisinopril"]},
    "stale_pregnancy_status": {"pregnancy_status": (False, 200)},
    "older_man_borderline_bp": {"age": 70, "sex": "male", "bp": (152, 88, 3), "pregnancy_status": None},
    "esketamine_with_rems": {"drug": "esketamine", "rems": True},
    "no_questionnaire": {"questionnaire": False},
    # issue 12's questions, answered from the problem list, the allergy list and the questionnaire
    "hyperthyroidism_control_unknown": {"conditions": [("hyperthyroidism", "active")]},
    "thyrotoxic_crisis": {"conditions": [("thyrotoxic_crisis", "active")]},
    "epilepsy": {"conditions": [("epilepsy", "active")]},
    "sleep_apnoea_and_copd": {"conditions": [("obstructive_sleep_apnoea", "active"), ("copd", "active")]},
    "alcohol_in_sustained_remission": {"conditions": [("alcohol_dependence_remission", "remission")]},
    "recent_suicide_attempt": {"conditions": [("suicide_attempt", "active")], "last_suicide_attempt": 45},
    "ketamine_allergy": {"allergies": ["ketamine"]},
    # pregnancy answered by an hCG test (the published Pregnancy Test set), no pregnancy status
    "negative_pregnancy_test": {"pregnancy_status": None, "pregnancy_test": (False, 3, "qualitative")},
    "positive_pregnancy_test": {"pregnancy_status": None, "pregnancy_test": (True, 2, "qualitative")},
    "stale_negative_pregnancy_test": {"pregnancy_status": None, "pregnancy_test": (False, 45, "qualitative")},
    # a positive quantitative test newer than a "not pregnant" status wins
    "positive_test_after_not_pregnant_status": {"pregnancy_status": (False, 6),
                                                "pregnancy_test": (True, 1, "quantitative")},
}


def _coding(style: str, concept: str) -> dict:
    sct, sct_display, icd, icd_display, _ = CONCEPTS[concept]
    if style == "epic":
        return {"coding": [{"system": LOCAL, "code": f"IMO-{sct}", "display": icd_display},
                           {"system": ICD_OID, "code": icd, "display": icd_display},
                           {"system": SCT, "code": sct, "display": sct_display}], "text": icd_display}
    if style == "cerner":
        return {"coding": [{"system": ICD, "code": icd, "display": icd_display}], "text": icd_display}
    return {"coding": [{"system": SCT, "code": sct, "display": sct_display}], "text": sct_display}


def _condition(style: str, i: int, concept: str, status: str) -> dict:
    out = {"resourceType": "Condition", "id": f"{style}-cond-{i}",
           "clinicalStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-clinical", "code": status}]},
           "verificationStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-ver-status", "code": "confirmed"}]},
           "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-category",
                                     "code": "encounter-diagnosis" if style == "cerner" else "problem-list-item"}]}],
           "code": _coding(style, concept), "subject": {"reference": f"Patient/{PID}"},
           "onsetDateTime": f"@ago:{ONSET_DAYS_AGO.get(concept, 400)}d"}
    if status in ("resolved", "inactive", "remission"):
        out["abatementDateTime"] = f"@ago:{ABATED_DAYS_AGO.get(concept, 300)}d"
    return out


def _allergy(style: str, allergen: str) -> dict:
    rxcui, name = ALLERGENS[allergen]
    code = ({"text": name.capitalize()} if style == "cerner"          # a free-text allergen
            else {"coding": [{"system": RXN, "code": rxcui, "display": name}], "text": name} if style == "epic"
            else {"coding": [{"system": RXN, "code": rxcui, "display": name}]})
    return {"resourceType": "AllergyIntolerance", "id": f"{style}-allergy-{allergen}",
            "clinicalStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/allergyintolerance-clinical",
                                           "code": "active"}]},
            "verificationStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/allergyintolerance-verification",
                                               "code": "confirmed"}]},
            "type": "allergy", "category": ["medication"], "criticality": "high",
            "code": code, "patient": {"reference": f"Patient/{PID}"}, "recordedDate": "@ago:900d"}


def _obs(oid: str, code: str, display: str, when: str, **value) -> dict:
    return {"resourceType": "Observation", "id": oid, "status": "final",
            "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": "vital-signs"}]}],
            "code": {"coding": [{"system": LOINC, "code": code, "display": display}], "text": display},
            "subject": {"reference": f"Patient/{PID}"}, "effectiveDateTime": when, **value}


def _mmhg(v: int) -> dict:
    return {"value": v, "unit": "mmHg", "system": "http://unitsofmeasure.org", "code": "mm[Hg]"}


def _searchset(*resources: dict, includes: tuple = ()) -> dict:
    entries = [{"fullUrl": f"https://fhir.example.org/{r['resourceType']}/{r['id']}", "resource": r,
                "search": {"mode": "match"}} for r in resources]
    entries += [{"fullUrl": f"https://fhir.example.org/{r['resourceType']}/{r['id']}", "resource": r,
                 "search": {"mode": "include"}} for r in includes]
    return {"resourceType": "Bundle", "type": "searchset", "total": len(resources), "entry": entries}


def _vitals(style: str, facts: dict) -> dict[str, dict]:
    sbp, dbp, days = facts["bp"]
    when = f"@ago:{days}d"
    hr = [_obs(f"{style}-hr-{i}", "8867-4", "Heart rate", f"@ago:{i}h", valueQuantity={"value": 70 + i, "unit": "/min"})
          for i in range(1, 13 if style == "cerner" else 2)]
    if style == "cerner":
        return {"bloodPressure": _searchset(),
                "systolicBP": _searchset(_obs(f"{style}-sbp", "8480-6", "Systolic blood pressure", when, valueQuantity=_mmhg(sbp))),
                "diastolicBP": _searchset(_obs(f"{style}-dbp", "8462-4", "Diastolic blood pressure", when, valueQuantity=_mmhg(dbp))),
                "heartRate": _searchset(*hr)}
    panel = _obs(f"{style}-bp", "85354-9", "Blood pressure panel with all children optional", when, component=[
        {"code": {"coding": [{"system": LOINC, "code": "8480-6", "display": "Systolic blood pressure"}]}, "valueQuantity": _mmhg(sbp)},
        {"code": {"coding": [{"system": LOINC, "code": "8462-4", "display": "Diastolic blood pressure"}]}, "valueQuantity": _mmhg(dbp)}])
    if style == "epic":
        panel["code"]["coding"].append({"system": "urn:oid:1.2.840.114350.1.13.0.1.7.2.707679", "code": "5", "display": "BP"})
    return {"bloodPressure": _searchset(panel), "systolicBP": _searchset(), "diastolicBP": _searchset(),
            "heartRate": _searchset(*hr)}


# hCG tests as each house sends them: Epic a urine test with a result string, an abnormal flag
# and its own component code beside LOINC; Cerner a serum test coded in SNOMED CT with text;
# Synthea-like a urine beta-hCG coded in SNOMED CT, no text. Quantitative: IU per volume, Epic
# with the unit as text only. (style, kind) -> LOINC code, display
HCG_CODES = {
    ("epic", "qualitative"): ("2106-3", "Choriogonadotropin (pregnancy test) [Presence] in Urine"),
    ("cerner", "qualitative"): ("2118-8", "Choriogonadotropin (pregnancy test) [Presence] in Serum or Plasma"),
    ("synthea", "qualitative"): ("2112-1", "Choriogonadotropin.beta subunit (pregnancy test) [Presence] in Urine"),
    ("epic", "quantitative"): ("19080-1", "Choriogonadotropin [Units/volume] in Serum or Plasma"),
    ("cerner", "quantitative"): ("83086-9", "Choriogonadotropin [Units/volume] in Serum or Plasma by Immunoassay"),
    ("synthea", "quantitative"): ("21198-7", "Choriogonadotropin.beta subunit [Units/volume] in Serum or Plasma"),
}


def _pregnancy_test(style: str, positive: bool, days: int, kind: str) -> tuple[str, dict]:
    """(prefetch key, the test): the one pregnancy test key, as the discovery document asks."""
    code, display = HCG_CODES[(style, kind)]
    obs = _obs(f"{style}-hcg", code, display, f"@ago:{days}d")
    obs["category"] = [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category",
                                    "code": "laboratory"}]}]
    if style == "epic":
        obs["code"]["coding"].insert(0, {"system": "urn:oid:1.2.840.114350.1.13.0.1.7.2.768282", "code": "1557",
                                         "display": "HCG, URINE" if kind == "qualitative" else "HCG, QUANT"})
    if kind == "quantitative":
        value = {"epic": 1850, "cerner": 2400, "synthea": 960}[style] if positive else 2
        obs["valueQuantity"] = ({"value": value, "unit": "mIU/mL"} if style == "epic" else
                                {"value": value, "unit": "mIU/mL", "system": "http://unitsofmeasure.org",
                                 "code": "m[IU]/mL"} if style == "cerner" else
                                {"value": value, "unit": "IU/L", "system": "http://unitsofmeasure.org", "code": "[IU]/L"})
    elif style == "epic":
        obs["valueString"] = "Positive" if positive else "Negative"
    else:
        sct, word = ("10828004", "Positive") if positive else ("260385009", "Negative")
        obs["valueCodeableConcept"] = {"coding": [{"system": SCT, "code": sct, "display": word}]}
        if style == "cerner":
            obs["valueCodeableConcept"]["text"] = word
    if positive and style in ("epic", "cerner"):
        flag = "A" if style == "epic" else "H" if kind == "quantitative" else "POS"
        obs["interpretation"] = [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation",
                                              "code": flag}]}]
    return "pregnancyTests", obs


def _medications(style: str, meds: list[str]) -> dict[str, dict]:
    if style == "epic":
        medications = [{"resourceType": "Medication", "id": f"epic-med-{m}",
                        "code": {"coding": [{"system": RXN, "code": MEDS[m][0], "display": MEDS[m][1]}], "text": MEDS[m][1]}}
                       for m in meds]
        requests = [{"resourceType": "MedicationRequest", "id": f"epic-mr-{m}", "status": "active", "intent": "order",
                     "medicationReference": {"reference": f"Medication/epic-med-{m}"},
                     "subject": {"reference": f"Patient/{PID}"}} for m in meds]
        return {"medicationStatements": _searchset(), "medicationRequests": _searchset(*requests, includes=tuple(medications))}
    statements = []
    for m in meds:
        code, display, _ = MEDS[m]
        concept = {"coding": [{"system": RXN, "code": code, "display": display}]}
        if style == "cerner":
            concept["text"] = display
        statements.append({"resourceType": "MedicationStatement", "id": f"{style}-ms-{m}", "status": "active",
                           "medicationCodeableConcept": concept, "subject": {"reference": f"Patient/{PID}"}})
    return {"medicationStatements": _searchset(*statements), "medicationRequests": _searchset()}


def _order(style: str, facts: dict) -> tuple[dict, list[dict]]:
    esk = facts["drug"] == "esketamine"
    order = {"resourceType": "MedicationRequest", "id": f"{style}-order", "status": "draft", "intent": "order",
             "subject": {"reference": f"Patient/{PID}"},
             "dosageInstruction": [{"text": "56 mg intranasal" if esk else "0.5 mg/kg IV over 40 minutes"}]}
    extra = []
    rxcui, display = ("2201625", "esketamine Nasal Spray [Spravato]") if esk else ("6130", "ketamine")
    if style == "epic":
        med = {"resourceType": "Medication", "id": "epic-ket",
               "code": {"coding": [{"system": RXN, "code": rxcui, "display": display}], "text": display}}
        order["medicationReference"] = {"reference": "Medication/epic-ket", "display": display}
        extra.append(med)
        order["reasonCode"] = [{"coding": [{"system": ICD_OID, "code": "F33.1",
                                            "display": "Major depressive disorder, recurrent, moderate"}]}]
    elif style == "cerner":
        order["medicationCodeableConcept"] = ({"coding": [{"system": RXN, "code": rxcui}]} if esk
                                              else {"text": "Ketamine HCl 500 mg/10 mL injection"})
        order["reasonCode"] = [{"coding": [{"system": SCT, "code": "66344007", "display": "Recurrent major depression"}]}]
    else:
        order["medicationCodeableConcept"] = {"coding": [{"system": RXN, "code": rxcui, "display": display}]}
    return order, extra


def _questionnaire(style: str, facts: dict) -> dict | None:
    if not facts["questionnaire"]:
        return None
    attempt = facts["last_suicide_attempt"]
    answers = {"psychiatric_history.suicidal_ideation": {"valueCoding": {"code": "none"}},
               "psychiatric_history.prior_suicide_attempt": {"valueBoolean": attempt is not None},
               "patient.breastfeeding": {"valueBoolean": False},
               "treatment.setting": {"valueCoding": {"code": "outpatient"}},
               "treatment.observation_2h_arranged": {"valueBoolean": True},
               "treatment.transport_home_arranged": {"valueBoolean": True},
               "prior_ketamine.previously_treated": {"valueBoolean": False}}
    if attempt is not None:
        answers["psychiatric_history.last_suicide_attempt"] = {"valueDate": f"@day:-{attempt}"}
    if facts["rems"]:
        answers["treatment.rems_enrolled"] = {"valueBoolean": True}
    return {"resourceType": "QuestionnaireResponse", "id": f"{style}-qr", "status": "completed",
            "questionnaire": "https://clinic.example.org/Questionnaire/ketamine-intake",
            "subject": {"reference": f"Patient/{PID}"}, "authored": "@ago:1d",
            "item": [{"linkId": k, "answer": [v]} for k, v in answers.items()]}


def build(name: str, style: str, situation: dict) -> dict:
    facts = {"age": 42, "sex": "female", "bp": (124, 78, 4), "pregnancy_status": (False, 5), "conditions": [],
             "meds": ["sertraline"], "drug": "ketamine", "rems": False, "questionnaire": True, "allergies": [],
             "last_suicide_attempt": None, "pregnancy_test": None, **copy.deepcopy(situation)}
    conditions = [("mdd_recurrent", "active")] + facts["conditions"]
    patient = {"resourceType": "Patient", "id": PID, "gender": facts["sex"], "birthDate": f"@birth:{facts['age']}"}
    if style != "synthea":
        patient["extension"] = [{"url": "http://hl7.org/fhir/us/core/StructureDefinition/us-core-birthsex",
                                 "valueCode": {"female": "F", "male": "M"}[facts["sex"]]}]
    prefetch = {"patient": patient,
                "conditions": _searchset(*[_condition(style, i, c, s) for i, (c, s) in enumerate(conditions)]),
                "allergies": _searchset(*[_allergy(style, a) for a in facts["allergies"]]),
                "breastfeedingStatus": _searchset(),
                **_vitals(style, facts), **_medications(style, facts["meds"])}
    if facts["pregnancy_status"] is not None:
        pregnant, days = facts["pregnancy_status"]
        prefetch["pregnancyStatus"] = _searchset(_obs(
            f"{style}-preg", "82810-3", "Pregnancy status", f"@ago:{days}d",
            valueCodeableConcept={"coding": [{"system": SCT, "code": "77386006" if pregnant else "60001007",
                                              "display": "Pregnant" if pregnant else "Not pregnant"}]}))
    else:
        prefetch["pregnancyStatus"] = _searchset()
    prefetch["pregnancyTests"] = _searchset()
    if facts["pregnancy_test"] is not None:
        key, test = _pregnancy_test(style, *facts["pregnancy_test"])
        prefetch[key] = _searchset(test)
    qr = _questionnaire(style, facts)
    prefetch["intakeQuestionnaire"] = _searchset(qr) if qr else _searchset()
    order, extra = _order(style, facts)

    # the same facts, as an intake system would send them
    flat = dict(INTAKE_FIELDS)
    substances = []
    for concept, status in conditions:
        for path in WITHHOLDS.get(concept, []):
            flat.pop(path, None)   # the diagnosis makes the silent answer unknown, not "no"
        for path, value in CONCEPTS[concept][4].items():
            if path == "substance":
                item = dict(value)
                if item.get("last_use") == "@abated":
                    item["last_use"] = f"@day:-{ABATED_DAYS_AGO[concept]}"
                substances.append(item)
            elif status == "resolved" and path == "medical_history.recent_cardiac_event":
                continue
            else:
                flat[path] = value
    intake: dict = {"treatment": {"route": "esketamine_nasal" if facts["drug"] == "esketamine" else "iv_ketamine",
                                  "indication": "treatment_resistant_depression"},
                    "patient": {"age_years": facts["age"], "sex_at_birth": facts["sex"]},
                    "vitals": {"systolic_bp": facts["bp"][0], "diastolic_bp": facts["bp"][1],
                               "heart_rate": 71,   # the latest of the heart-rate readings
                               "measured_at": f"@ago:{facts['bp'][2]}d"},
                    "substance_use": substances,
                    "medications": [{"name": MEDS[m][1], "class": MEDS[m][2]} for m in facts["meds"]],
                    "allergies": {"ketamine": "ketamine" in facts["allergies"],
                                  "esketamine": "esketamine" in facts["allergies"]}}
    if facts["pregnancy_status"] is not None and facts["pregnancy_status"][1] <= 30:
        intake["patient"]["pregnant"] = facts["pregnancy_status"][0]
    if facts["pregnancy_test"] is not None:
        # a positive test (for 280 days) makes her pregnant, whatever the status said; a
        # negative within 30 days says she is not; an older negative says nothing
        positive, days, _ = facts["pregnancy_test"]
        if positive and days <= 280:
            intake["patient"]["pregnant"] = True
        elif not positive and days <= 30 and "pregnant" not in intake["patient"]:
            intake["patient"]["pregnant"] = False
    if facts["questionnaire"]:
        flat["psychiatric_history.suicidal_ideation"] = "none"
        flat["psychiatric_history.prior_suicide_attempt"] = facts["last_suicide_attempt"] is not None
        if facts["last_suicide_attempt"] is not None:
            flat["psychiatric_history.last_suicide_attempt"] = f"@day:-{facts['last_suicide_attempt']}"
        flat["prior_ketamine.previously_treated"] = False
        intake["patient"]["breastfeeding"] = False
        intake["treatment"].update(setting="outpatient", observation_2h_arranged=True, transport_home_arranged=True)
        if facts["rems"]:
            intake["treatment"]["rems_enrolled"] = True
    for path, value in flat.items():
        section, leaf = path.split(".")
        intake.setdefault(section, {})[leaf] = value
    return {"name": f"{style}-{name}", "style": style, "situation": name,
            "order": order, "draft_resources": extra, "prefetch": prefetch, "intake": intake}


def main() -> None:
    OUT.mkdir(exist_ok=True)
    for style in ("epic", "cerner", "synthea"):
        for name, situation in SITUATIONS.items():
            case = build(name, style, situation)
            (OUT / f"{case['name']}.json").write_text(json.dumps(case, indent=1) + "\n")


if __name__ == "__main__":
    main()
