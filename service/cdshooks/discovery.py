"""The CDS Services this server publishes, with the prefetch templates the rules need."""
from __future__ import annotations

from dataclasses import dataclass

from service.cdshooks.mapping import default_mapping, pregnancy_test_codes

LOINC = "http://loinc.org"

# Each template is also what the service runs itself against `fhirServer` when the client did
# not prefetch it, so they stay inside the spec's prefetch query subset: one token per code
# parameter (no comma-OR), `_sort` and `_count`. One key per vital sign, so that ten newer
# heart-rate readings cannot push the blood pressure out of a shared `_count` window; a few
# readings per key so that an entered-in-error latest one does not hide the one before.
def _latest(code: str, count: int = 3) -> str:
    return f"Observation?patient={{{{context.patientId}}}}&code={LOINC}|{code}&_sort=-date&_count={count}"


PREFETCH: dict[str, str] = {
    "patient": "Patient/{{context.patientId}}",
    "bloodPressure": _latest("85354-9"),
    "systolicBP": _latest("8480-6"),
    "diastolicBP": _latest("8462-4"),
    "heartRate": _latest("8867-4", 1),
    "conditions": "Condition?patient={{context.patientId}}",
    "medicationStatements": "MedicationStatement?patient={{context.patientId}}&status=active",
    "medicationRequests": "MedicationRequest?patient={{context.patientId}}&status=active",
    "allergies": "AllergyIntolerance?patient={{context.patientId}}",
    "pregnancyStatus": _latest("82810-3"),
    "breastfeedingStatus": _latest("63895-7"),
    "intakeQuestionnaire": "QuestionnaireResponse?patient={{context.patientId}}&status=completed&_sort=-authored&_count=1",
}


def pregnancy_test_key(code: str) -> str:
    """The prefetch key of the pregnancy (hCG) test with this LOINC code."""
    return f"pregnancyTest-{code}"


# Pregnancy (hCG) tests: one key per LOINC code of the published Pregnancy Test set the mapping
# names, as for the vital signs (one code token per query), so that a urine test taken every
# visit cannot push a serum result out of a shared `_count` window.
PREGNANCY_TEST_KEYS: tuple[str, ...] = tuple(pregnancy_test_key(c) for c in pregnancy_test_codes(default_mapping()))
PREFETCH.update({pregnancy_test_key(c): _latest(c) for c in pregnancy_test_codes(default_mapping())})

# Without these the rules cannot be applied: when neither prefetch nor the FHIR server gives
# them, the answer is 412. Blood pressure as separate systolic / diastolic observations, heart
# rate, breastfeeding status, pregnancy tests and the questionnaire are read when present: without them the
# fields only they answer stay missing and the decision says so.
REQUIRED_KEYS = ("patient", "bloodPressure", "conditions", "medicationStatements",
                 "medicationRequests", "allergies", "pregnancyStatus")


@dataclass(frozen=True)
class CdsService:
    id: str
    hook: str
    title: str
    description: str

    def describe(self) -> dict:
        return {
            "hook": self.hook,
            "title": self.title,
            "description": self.description,
            "id": self.id,
            "prefetch": dict(PREFETCH),
            "usageRequirements": (
                "Screens draft ketamine (RxNorm 6130) and esketamine nasal spray orders. Needs the "
                "prefetch above or a fhirServer with fhirAuthorization; answers 412 when the patient, "
                "vital signs, conditions, medications, allergies or reproductive status cannot be read."
            ),
        }


SERVICES: dict[str, CdsService] = {
    s.id: s for s in (
        CdsService(
            id="ketamine-screening-select",
            hook="order-select",
            title="Ketamine and esketamine screening (order selected)",
            description=("Early warning while a ketamine or esketamine order is chosen: screens the "
                         "patient against the contraindication rule pack (blood pressure, psychosis, "
                         "substance use, vascular disease, pregnancy, interacting medications) and "
                         "lists every reason with its evidence and citation."),
        ),
        CdsService(
            id="ketamine-screening-sign",
            hook="order-sign",
            title="Ketamine and esketamine screening (order signed)",
            description=("The final gate before a ketamine or esketamine order is signed: the same "
                         "screening decision as the screening API, recorded in the decision log for "
                         "physician review."),
        ),
    )
}


def discovery_document() -> dict:
    return {"services": [s.describe() for s in SERVICES.values()]}
