"""The CDS Services this server publishes, with the prefetch templates the rules need."""
from __future__ import annotations

from dataclasses import dataclass

LOINC = "http://loinc.org"

# Each template is also what the service runs itself against `fhirServer` when the client did
# not prefetch it, so they stay inside the spec's recommended query subset (token equality,
# _sort, _count).
PREFETCH: dict[str, str] = {
    "patient": "Patient/{{context.patientId}}",
    "bloodPressure": (f"Observation?patient={{{{context.patientId}}}}&code={LOINC}|85354-9,{LOINC}|8867-4"
                      "&_sort=-date&_count=10"),
    "conditions": "Condition?patient={{context.patientId}}",
    "medicationStatements": "MedicationStatement?patient={{context.patientId}}&status=active",
    "medicationRequests": "MedicationRequest?patient={{context.patientId}}&status=active",
    "allergies": "AllergyIntolerance?patient={{context.patientId}}",
    "reproductiveStatus": (f"Observation?patient={{{{context.patientId}}}}&code={LOINC}|82810-3,{LOINC}|63895-7"
                           "&_sort=-date&_count=10"),
    "intakeQuestionnaire": "QuestionnaireResponse?patient={{context.patientId}}&status=completed&_sort=-authored&_count=1",
}

# Without these the rules cannot be applied: when neither prefetch nor the FHIR server gives
# them, the answer is 412. The questionnaire is optional (not every clinic uses one): without it
# the fields only it answers stay missing and the decision says so.
REQUIRED_KEYS = ("patient", "bloodPressure", "conditions", "medicationStatements",
                 "medicationRequests", "allergies", "reproductiveStatus")


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
