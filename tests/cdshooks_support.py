"""Builders for the CDS Hooks tests: signing keys and JWTs, FHIR resources as an EHR sends them,
hook requests, and a FHIR server stand-in on 127.0.0.1."""
from __future__ import annotations

import copy
import datetime as dt
import json
import threading
import time
import uuid
from pathlib import Path
from urllib.parse import urlencode

import jwt
from cryptography.hazmat.primitives.asymmetric import ec
from flask import Flask, jsonify, request
from jwt.algorithms import ECAlgorithm
from werkzeug.serving import make_server

from service.cdshooks import terminology as term
from service.cdshooks.discovery import PREGNANCY_TESTS

ISSUER = "https://ehr.example.org/"
KID = "ehr-key-1"
ICD = "http://hl7.org/fhir/sid/icd-10-cm"
SCT = "http://snomed.info/sct"
RXN = "http://www.nlm.nih.gov/research/umls/rxnorm"
LOINC = "http://loinc.org"
# The two services' URLs, as an EHR calls them (the contract: written out, not derived).
SIGN = "/cds-services/ketamine-screening-sign"
SELECT = "/cds-services/ketamine-screening-select"
PATIENT_ID = "pat-1288992"


# --- keys and tokens --------------------------------------------------------------------------

class Signer:
    def __init__(self, kid: str = KID):
        self.kid = kid
        self.private = ec.generate_private_key(ec.SECP384R1())
        public = json.loads(ECAlgorithm.to_jwk(self.private.public_key()))
        public.update({"kid": kid, "use": "sig", "alg": "ES384"})
        self.jwks = {"keys": [public]}

    def write_jwks(self, directory: Path) -> Path:
        path = directory / f"{self.kid}.jwks.json"
        path.write_text(json.dumps(self.jwks))
        return path

    def token(self, aud: str, *, iss: str = ISSUER, exp_in: int = 300, iat_offset: int = 0,
              jti: str | None = None, headers: dict | None = None, drop: tuple[str, ...] = ()) -> str:
        now = int(time.time())
        claims = {"iss": iss, "aud": aud, "exp": now + exp_in, "iat": now + iat_offset,
                  "jti": jti or str(uuid.uuid4()), "tenant": "clinic-1"}
        for name in drop:
            claims.pop(name)
        return jwt.encode(claims, self.private, algorithm="ES384",
                          headers={"kid": self.kid, "typ": "JWT", **(headers or {})})


def unsigned_token(aud: str) -> str:
    """alg "none", built by hand (PyJWT will not make one for a verifier to refuse)."""
    import base64

    def b64(obj: dict) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()
    now = int(time.time())
    return f"{b64({'alg': 'none', 'typ': 'JWT', 'kid': KID})}." \
           f"{b64({'iss': ISSUER, 'aud': aud, 'exp': now + 300, 'iat': now, 'jti': str(uuid.uuid4())})}."


# --- FHIR resources ---------------------------------------------------------------------------

def now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc).replace(microsecond=0)


def iso(value: dt.datetime) -> str:
    return value.isoformat().replace("+00:00", "Z")


def birth_date_for(age: int) -> str:
    from dateutil.relativedelta import relativedelta
    return (now().date() - relativedelta(years=age, days=30)).isoformat()


def patient(age: int = 42, sex: str = "female") -> dict:
    return {
        "resourceType": "Patient", "id": PATIENT_ID, "gender": sex, "birthDate": birth_date_for(age),
        "extension": [{"url": "http://hl7.org/fhir/us/core/StructureDefinition/us-core-birthsex",
                       "valueCode": {"female": "F", "male": "M"}[sex]}],
    }


def bp(systolic: int, diastolic: int, when: dt.datetime, oid: str = "bp-1") -> dict:
    def comp(code: str, display: str, value: int) -> dict:
        return {"code": {"coding": [{"system": LOINC, "code": code, "display": display}]},
                "valueQuantity": {"value": value, "unit": "mmHg", "system": "http://unitsofmeasure.org", "code": "mm[Hg]"}}
    return {
        "resourceType": "Observation", "id": oid, "status": "final",
        "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": "vital-signs"}]}],
        "code": {"coding": [{"system": LOINC, "code": "85354-9", "display": "Blood pressure panel"}]},
        "subject": {"reference": f"Patient/{PATIENT_ID}"}, "effectiveDateTime": iso(when),
        "component": [comp("8480-6", "Systolic blood pressure", systolic), comp("8462-4", "Diastolic blood pressure", diastolic)],
    }


def heart_rate(value: int, when: dt.datetime) -> dict:
    return {"resourceType": "Observation", "id": "hr-1", "status": "final",
            "code": {"coding": [{"system": LOINC, "code": "8867-4", "display": "Heart rate"}]},
            "subject": {"reference": f"Patient/{PATIENT_ID}"}, "effectiveDateTime": iso(when),
            "valueQuantity": {"value": value, "unit": "/min"}}


def pregnancy_status(pregnant: bool, when: dt.datetime) -> dict:
    code, display = ("77386006", "Pregnant") if pregnant else ("60001007", "Not pregnant")
    return {"resourceType": "Observation", "id": "preg-1", "status": "final",
            "code": {"coding": [{"system": LOINC, "code": "82810-3", "display": "Pregnancy status"}]},
            "subject": {"reference": f"Patient/{PATIENT_ID}"}, "effectiveDateTime": iso(when),
            "valueCodeableConcept": {"coding": [{"system": SCT, "code": code, "display": display}]}}


def condition(cid: str, system: str, code: str, display: str, status: str = "active",
              abated: str | None = None) -> dict:
    out = {
        "resourceType": "Condition", "id": cid,
        "clinicalStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-clinical", "code": status}]},
        "verificationStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-ver-status", "code": "confirmed"}]},
        "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-category", "code": "problem-list-item"}]}],
        "code": {"coding": [{"system": system, "code": code, "display": display}], "text": display},
        "subject": {"reference": f"Patient/{PATIENT_ID}"},
    }
    if abated:
        out["abatementDateTime"] = abated
    return out


def medication_statement(mid: str, rxcui: str, display: str) -> dict:
    return {"resourceType": "MedicationStatement", "id": mid, "status": "active",
            "medicationCodeableConcept": {"coding": [{"system": RXN, "code": rxcui, "display": display}], "text": display},
            "subject": {"reference": f"Patient/{PATIENT_ID}"}}


def questionnaire_response(answers: dict, authored: dt.datetime) -> dict:
    def answer(value):
        if isinstance(value, bool):
            return {"valueBoolean": value}
        if isinstance(value, int):
            return {"valueInteger": value}
        return {"valueCoding": {"system": "urn:ketamine-screening:intake", "code": value}}
    return {"resourceType": "QuestionnaireResponse", "id": "qr-1", "status": "completed",
            "questionnaire": "https://clinic.example.org/Questionnaire/ketamine-intake",
            "subject": {"reference": f"Patient/{PATIENT_ID}"}, "authored": iso(authored),
            "item": [{"linkId": "psychiatric", "text": "Psychiatric history",
                      "item": [{"linkId": k, "answer": [answer(v)]} for k, v in answers.items()]}]}


def searchset(*resources: dict) -> dict:
    return {"resourceType": "Bundle", "type": "searchset", "total": len(resources),
            "entry": [{"fullUrl": f"https://ehr.example.org/fhir/{r['resourceType']}/{r['id']}",
                       "resource": r, "search": {"mode": "match"}} for r in resources]}


def ketamine_order(oid: str = "ket-1", drug: str = "ketamine", reason: tuple[str, str, str] | None = ("F33.1", ICD, "Major depressive disorder, recurrent, moderate")) -> dict:
    if drug == "ketamine":
        coding = {"system": RXN, "code": "6130", "display": "ketamine"}
        route = {"coding": [{"system": SCT, "code": "47625008", "display": "Intravenous route"}]}
        text = "ketamine 0.5 MG/KG IV infusion over 40 minutes"
    else:
        coding = {"system": RXN, "code": "2201625", "display": "esketamine Nasal Spray [Spravato]"}
        route = {"coding": [{"system": SCT, "code": "46713006", "display": "Nasal route"}]}
        text = "esketamine 56 MG nasal spray"
    out = {
        "resourceType": "MedicationRequest", "id": oid, "status": "draft", "intent": "order",
        "medicationCodeableConcept": {"coding": [coding], "text": text},
        "subject": {"reference": f"Patient/{PATIENT_ID}"},
        "dosageInstruction": [{"text": text, "route": route}],
    }
    if reason:
        code, system, display = reason
        out["reasonCode"] = [{"coding": [{"system": system, "code": code, "display": display}]}]
    return out


def amoxicillin_order() -> dict:
    """The R4 draft order of the order-select / order-sign hook examples (amoxicillin suspension)."""
    return {"resourceType": "MedicationRequest", "id": "smart-MedicationRequest-103", "status": "draft", "intent": "order",
            "medicationCodeableConcept": {"coding": [{"system": RXN, "code": "617993",
                                                      "display": "Amoxicillin 120 MG/ML / clavulanate potassium 8.58 MG/ML Oral Suspension"}],
                                          "text": "Amoxicillin 120 MG/ML / clavulanate potassium 8.58 MG/ML Oral Suspension"},
            "subject": {"reference": "Patient/1288992"},
            "dosageInstruction": [{"text": "5 mL bid x 10 days",
                                   "timing": {"repeat": {"boundsPeriod": {"start": "2018-04-30"}, "frequency": 2, "period": 1, "periodUnit": "d"}},
                                   "doseAndRate": [{"doseQuantity": {"value": 5, "unit": "mL", "system": "http://unitsofmeasure.org", "code": "mL"}}]}]}


def nutrition_order() -> dict:
    return {"resourceType": "NutritionOrder", "id": "pureeddiet-simple", "status": "draft", "intent": "order",
            "patient": {"reference": "Patient/1288992"}, "dateTime": "2014-09-17",
            "oralDiet": {"type": [{"coding": [{"system": SCT, "code": "226211001", "display": "Pureed diet"}], "text": "Pureed diet"}]}}


def hook_request(hook: str, orders: list[dict], prefetch: dict | None, *, selections: list[str] | None = None,
                 fhir_server: str | None = None, token: str | None = "opaque-fhir-token") -> dict:
    body = {
        "hook": hook,
        "hookInstance": str(uuid.uuid4()),
        "context": {
            "userId": "PractitionerRole/123",
            "patientId": PATIENT_ID,
            "encounterId": "89284",
            "draftOrders": {"resourceType": "Bundle", "type": "collection", "entry": [{"resource": o} for o in orders]},
        },
    }
    if hook == "order-select":
        body["context"]["selections"] = selections if selections is not None else [f"{o['resourceType']}/{o['id']}" for o in orders]
    if prefetch is not None:
        body["prefetch"] = prefetch
    if fhir_server:
        body["fhirServer"] = fhir_server
        if token:
            body["fhirAuthorization"] = {"access_token": token, "token_type": "Bearer", "expires_in": 300,
                                         "scope": "user/Patient.read user/Observation.read user/Condition.read",
                                         "subject": "ketamine-screening"}
    return body


# --- clinical situations: (FHIR record, the intake an intake system would send) ---------------

def situation(name: str) -> tuple[dict, dict]:
    """A patient's prefetch as an EHR would send it, and the equivalent intake JSON."""
    taken = now() - dt.timedelta(days=4)
    qr_answers = {"psychiatric_history.suicidal_ideation": "none", "patient.breastfeeding": False,
                  "psychiatric_history.prior_suicide_attempt": False, "prior_ketamine.previously_treated": False,
                  "treatment.observation_2h_arranged": True, "treatment.transport_home_arranged": True}
    conditions = [condition("dep-1", ICD, "F33.1", "Major depressive disorder, recurrent, moderate")]
    observations = [bp(128, 82, taken), heart_rate(72, taken)]
    intake = {
        "treatment": {"route": "iv_ketamine", "indication": "treatment_resistant_depression",
                      "observation_2h_arranged": True, "transport_home_arranged": True},
        "patient": {"age_years": 42, "sex_at_birth": "female", "pregnant": False, "breastfeeding": False},
        "vitals": {"systolic_bp": 128, "diastolic_bp": 82, "heart_rate": 72, "measured_at": iso(taken)},
        "psychiatric_history": {"psychosis": "none", "schizophrenia": False, "schizoaffective_disorder": False,
                                "bipolar_disorder": False, "current_mania": False, "suicidal_ideation": "none",
                                "prior_suicide_attempt": False},
        "substance_use": [],
        "medical_history": {"aneurysmal_vascular_disease": False, "arteriovenous_malformation": False,
                            "intracerebral_hemorrhage": False, "unstable_cardiovascular_disease": False,
                            "severe_hepatic_impairment": False, "elevated_intracranial_pressure": False,
                            "elevated_intraocular_pressure": False, "recent_cardiac_event": False,
                            "cerebrovascular_history": False, "hepatic_impairment": "none",
                            "uncontrolled_hyperthyroidism": False, "seizure_disorder": False,
                            "sleep_apnea": False, "chronic_respiratory_disease": False},
        "medications": [{"name": "sertraline 50 MG Oral Tablet", "class": "ssri"}],
        "allergies": {"ketamine": False, "esketamine": False},
        "prior_ketamine": {"previously_treated": False},
    }
    if name == "hypertensive":
        observations[0] = bp(192, 104, taken)
        intake["vitals"].update(systolic_bp=192, diastolic_bp=104)
    elif name == "psychosis":
        conditions.append(condition("scz-1", ICD, "F20.9", "Schizophrenia, unspecified"))
        intake["psychiatric_history"].update(psychosis="active", schizophrenia=True)
    elif name == "substance_use":
        conditions.append(condition("aud-1", ICD, "F10.20", "Alcohol dependence, uncomplicated"))
        conditions.append(condition("cud-1", SCT, "85005007", "Cannabis dependence", status="remission", abated="2023-03-01"))
        intake["substance_use"] = [
            {"substance": "alcohol", "disorder": True, "status": "active"},
            {"substance": "cannabis", "disorder": True, "status": "in_remission", "last_use": "2023-03-01"},
        ]
    elif name == "missing_bp":
        observations = [heart_rate(72, taken)]
        intake["vitals"] = {"heart_rate": 72}
    elif name != "clean":
        raise KeyError(name)
    prefetch = {
        "patient": patient(42, "female"),
        "bloodPressure": searchset(*[o for o in observations if o["code"]["coding"][0]["code"] == "85354-9"]),
        "heartRate": searchset(*[o for o in observations if o["code"]["coding"][0]["code"] == "8867-4"]),
        "conditions": searchset(*conditions),
        "medicationStatements": searchset(medication_statement("ms-1", "312940", "sertraline 50 MG Oral Tablet")),
        "medicationRequests": None,
        "allergies": None,
        "systolicBP": searchset(),
        "diastolicBP": searchset(),
        "pregnancyStatus": searchset(pregnancy_status(False, taken)),
        "breastfeedingStatus": searchset(),
        "intakeQuestionnaire": searchset(questionnaire_response(qr_answers, taken)),
        # the pregnancy (hCG) test search answered, with no test in the record
        PREGNANCY_TESTS: searchset(),
    }
    return prefetch, intake


# --- a FHIR server stand-in -------------------------------------------------------------------

class FhirServer:
    """Answers reads and searches from a prefetch-shaped dict, on 127.0.0.1; records what it was
    asked and with which Authorization header. ``fail`` names resource types to answer 500 for.
    ``page_size``: searches answer that many entries a page, with a ``next`` link to the rest
    (``_page=N``), as servers page long lists. ``code_in``: what it does with ``code:in`` a value
    set: "apply" it (the sets stored in service/cdshooks/terminology), "refuse" it (400, as a
    server without the modifier), or "ignore" it (answers as if no code were asked);
    ``ignore_code`` ignores ``code`` too (both unfiltered: every observation of the patient)."""

    def __init__(self, prefetch: dict, fail: tuple[str, ...] = (), page_size: int | None = None,
                 code_in: str = "apply", ignore_code: bool = False):
        self.prefetch = copy.deepcopy(prefetch)
        self.fail = set(fail)
        self.page_size = page_size
        self.requests: list[tuple[str, str | None]] = []
        app = Flask("fhir-stand-in")

        @app.route("/fhir/<rtype>/<rid>")
        def read(rtype: str, rid: str):
            self.requests.append((request.full_path, request.headers.get("Authorization")))
            if rtype in self.fail:
                return jsonify({"resourceType": "OperationOutcome", "issue": [{"severity": "error", "code": "exception"}]}), 500
            if rtype == "Patient" and self.prefetch.get("patient") and self.prefetch["patient"]["id"] == rid:
                return jsonify(self.prefetch["patient"])
            return jsonify({"resourceType": "OperationOutcome", "issue": [{"severity": "error", "code": "not-found"}]}), 404

        @app.route("/fhir/<rtype>")
        def search(rtype: str):
            self.requests.append((request.full_path, request.headers.get("Authorization")))
            if rtype in self.fail:
                return jsonify({"resourceType": "OperationOutcome", "issue": [{"severity": "error", "code": "exception"}]}), 500
            codes = "" if ignore_code else request.args.get("code", "")
            in_set = request.args.get("code:in")
            if in_set and code_in == "refuse":
                return jsonify({"resourceType": "OperationOutcome", "issue": [
                    {"severity": "error", "code": "not-supported", "diagnostics": "code:in is not supported"}]}), 400
            if in_set and code_in == "apply" and not ignore_code:
                [vs] = [v for v in term.load_valuesets().values() if v.url == in_set]
                codes = ",".join(f"{system}|{code}" for system, found_codes in vs.codes.items() for code in found_codes)
            found = []
            for value in self.prefetch.values():
                if isinstance(value, dict) and value.get("resourceType") == "Bundle":
                    for entry in value.get("entry", []):
                        res = entry["resource"]
                        if res["resourceType"] != rtype:
                            continue
                        if codes and not any(f"{c['system']}|{c['code']}" in codes.split(",")
                                             for c in res.get("code", {}).get("coding", [])):
                            continue
                        if all(r["id"] != res["id"] for r in found):
                            found.append(res)
            if not self.page_size:
                return jsonify(searchset(*found))
            page = int(request.args.get("_page", "0"))
            bundle = dict(searchset(*found[page * self.page_size:(page + 1) * self.page_size]), total=len(found))
            if (page + 1) * self.page_size < len(found):
                args = [(k, v) for k, v in request.args.items(multi=True) if k != "_page"] + [("_page", str(page + 1))]
                bundle["link"] = [{"relation": "next", "url": f"{request.base_url}?{urlencode(args)}"}]
            return jsonify(bundle)

        self.server = make_server("127.0.0.1", 0, app, threaded=True)
        self.base = f"http://127.0.0.1:{self.server.server_port}/fhir"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> "FhirServer":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.thread.join(5)
