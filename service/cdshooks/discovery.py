"""The CDS Services this server publishes, with the prefetch templates the rules need."""
from __future__ import annotations

from dataclasses import dataclass

from service.cdshooks.mapping import Mapping, default_mapping, pregnancy_test_codes

LOINC = "http://loinc.org"

# Each template is also what the service runs itself against `fhirServer` when the client did
# not prefetch it, so they stay inside the spec's prefetch query subset: one token per code
# parameter (no comma-OR) or `code:in` a value set, `_sort` and `_count`. One key per vital sign,
# so that ten newer heart-rate readings cannot push the blood pressure out of a shared `_count`
# window; a few readings per key so that an entered-in-error latest one does not hide the one
# before.
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
    """The prefetch key of the pregnancy (hCG) test with this LOINC code: the per-code keys of the
    previous release, still read when a client prefetches them (see LEGACY_PREFETCH)."""
    return f"pregnancyTest-{code}"


def pregnancy_test_valueset_url(mapping: Mapping) -> str:
    """The canonical URL of the one published set the mapping reads pregnancy tests through.
    ValueError when the mapping names anything else: one `code:in` search could not ask for it."""
    spec = mapping.pregnancy_test
    urls = [vs.url for vs in spec.valuesets if vs.url]
    if len(urls) != 1 or len(spec.valuesets) != 1 or spec.exact or spec.prefixes:
        raise ValueError("observations.pregnancy_test must name exactly one published value set (with its "
                         "canonical URL) and no loose codes: one prefetch query asks for it with code:in")
    return urls[0]


# Pregnancy (hCG) tests: ONE query for the whole published Pregnancy Test set (27 LOINC codes),
# `code:in` its canonical URL, as the spec's prefetch subset allows ("equality and optionally the
# :in modifier"); an EHR administrator configures one template, not 27. Unlike the vital signs
# (one key each, so ten heart rates cannot crowd the blood pressure out of `_count`), one window
# is right here: the newest test of the set decides whatever its code, so a newer test never
# crowds out anything that matters. `_count=10`: the newest test with room for the ones a lab
# posts beside or ahead of it (an entered-in-error or cancelled one, a urine and a serum test of
# the same visit, an unreadable newer one before an older positive), still one small Bundle.
PREGNANCY_TESTS = "pregnancyTests"
PREGNANCY_TEST_COUNT = 10
PREGNANCY_TEST_VALUESET_URL = pregnancy_test_valueset_url(default_mapping())
PREGNANCY_TEST_CODES: tuple[str, ...] = tuple(pregnancy_test_codes(default_mapping()))
PREFETCH[PREGNANCY_TESTS] = (f"Observation?patient={{{{context.patientId}}}}&code:in={PREGNANCY_TEST_VALUESET_URL}"
                             f"&_sort=-date&_count={PREGNANCY_TEST_COUNT}")


def pregnancy_tests_by_code_list() -> str:
    """The same search with the set's LOINC codes as one token list (standard FHIR OR): what the
    service sends its FHIR server when the server refuses `code:in` (a 4xx) or ignores it."""
    codes = ",".join(f"{LOINC}|{c}" for c in PREGNANCY_TEST_CODES)
    return f"Observation?patient={{{{context.patientId}}}}&code={codes}&_sort=-date&_count={PREGNANCY_TEST_COUNT}"


# The previous release's per-code keys (`pregnancyTest-<LOINC>`), no longer in discovery: read for
# this release when a client still prefetches them, never fetched. Remove in the next release.
LEGACY_PREFETCH: dict[str, str] = {pregnancy_test_key(c): _latest(c) for c in PREGNANCY_TEST_CODES}

# Without these the rules cannot be applied: when neither prefetch nor the FHIR server gives
# them, the answer is 412. Blood pressure as separate systolic / diastolic observations, heart
# rate, breastfeeding status, pregnancy tests and the questionnaire are read when present: without
# them the fields only they answer stay missing and the decision says so.
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
