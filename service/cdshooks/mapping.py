"""FHIR R4 resources -> an intake dict, driven by ``fhir_mapping.yaml`` and published value sets.

The code tables are data that policy editors extend (local codes) or rebuild from published
expansions (service/cdshooks/terminology); this module only knows how to read FHIR (clinical
status, verification status, components, answers, references) and how values combine: when two
records speak to one field, the more concerning value wins, so that no source can quietly
cancel a contraindication recorded by another.

Resources are read through ``fhirjson.Node`` (tolerant JSON), never validated against one FHIR
version: what cannot be read becomes a warning on the card, and silence is only taken as
"absent" where the mapping says a problem list can prove it (``absence``), stated on the card.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

from schemas.catalog import Catalog
from service.cdshooks import terminology as term
from service.cdshooks.fhirjson import (
    Node,
    codings,
    day,
    many,
    number,
    ref,
    rtype,
    text,
    when,
)

MAPPING_PATH = Path(__file__).with_name("fhir_mapping.yaml")

_ACTIVE = {"active", "recurrence", "relapse"}
_PAST = {"inactive", "remission", "resolved"}
_NOT_TRUE = {"refuted", "entered-in-error"}
_OBS_OK = {"final", "amended", "corrected", "preliminary"}
# Observation.interpretation codes are read in HL7's code systems (v3, and v2 table 0078 whose
# flags are the same), or with no system given.
_INTERPRETATION_SYSTEMS = {None, "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation",
                           "http://hl7.org/fhir/v2/0078", "http://terminology.hl7.org/CodeSystem/v2-0078"}
_MS_OK = {"active", "intended", "on-hold", "unknown"}
_MR_OK = {"active", "on-hold", "draft"}
# Condition code systems whose silence we can read: a concept coded only in other systems (a
# local code, IMO, free text we do not recognise) is an entry we could not read.
_READABLE_CONDITION_SYSTEMS = (term.SNOMED, term.ICD10CM, term.ICD9CM)


# --- the code tables --------------------------------------------------------------------------

@dataclass(frozen=True)
class Hit:
    """How a concept matched: 'system|code' (or the text that matched) and the value set, if any."""
    what: str
    via: str | None = None

    def __str__(self) -> str:
        return self.what + (f" in {self.via}" if self.via else "")


AMBIGUOUS = Hit("ambiguous")


@dataclass(frozen=True)
class CodeSet:
    """Codes by canonical system: published value sets, local exact codes (SNOMED CT, RxNorm,
    LOINC), local prefixes (ICD-10-CM, ICD-9-CM, ATC categories), and whole-word names."""
    valuesets: tuple[term.ValueSet, ...] = ()
    exact: frozenset[tuple[str, str]] = frozenset()
    prefixes: tuple[tuple[str, str], ...] = ()
    names: re.Pattern | None = None

    def _code_hit(self, system: str, code: str, raw_code: str) -> Hit | None:
        for vs in self.valuesets:
            if vs.contains(system, code):
                return Hit(f"{term.SHORT_NAMES.get(system, system)} {raw_code}", f"value set {vs.title}")
        if (system, code) in self.exact:
            return Hit(f"{term.SHORT_NAMES.get(system, system)} {raw_code}")
        for psystem, prefix in self.prefixes:
            if system == psystem and code.startswith(prefix):
                return Hit(f"{term.SHORT_NAMES.get(system, system)} {raw_code}")
        return None

    def match(self, concept: Any) -> Hit | None:
        """A Hit, AMBIGUOUS (an ICD-10-CM category only partly inside this set), or None."""
        if not isinstance(concept, Node):
            return None
        ambiguous = False
        for coding in codings(concept):
            system = term.canonical_system(coding.system)
            raw_code = coding.code
            if system is None or not isinstance(raw_code, (str, int)) or str(raw_code).strip() == "":
                continue
            raw_code = str(raw_code).strip()
            code = term.normalize(system, raw_code)
            hit = self._code_hit(system, code, raw_code)
            if hit:
                return hit
            if system == term.ICD10CM:
                # A category sent where the set lists its codes (F31 for the F31.x codes): in the
                # set when every billable code under it is; a broader category is ambiguous.
                leaves = term.icd10cm_leaves_under(raw_code)
                inside = [leaf for leaf in leaves if self._code_hit(system, leaf, leaf)]
                if leaves and len(inside) == len(leaves):
                    return Hit(f"ICD-10-CM {raw_code} (category)")
                if inside:
                    ambiguous = True
        if self.names is not None:
            for value in concept_texts(concept):
                if self.names.search(value):
                    return Hit(f"text '{value[:80]}'")
        return AMBIGUOUS if ambiguous else None

    def matches(self, concept: Any) -> str | None:
        hit = self.match(concept)
        return None if hit is None or hit is AMBIGUOUS else str(hit)


def concept_texts(concept: Any) -> list[str]:
    if not isinstance(concept, Node):
        return []
    out = [t for t in [text(concept.text)] if t]
    out.extend(t for t in (text(c.display) for c in codings(concept)) if t)
    return out


def readable_codes(concept: Any) -> list[tuple[str, str]]:
    """(canonical system, raw code) of the codings in systems whose silence we can read; an
    ICD-10-CM code that is not a valid ICD-10-CM code does not count."""
    out = []
    for coding in codings(concept):
        system = term.canonical_system(coding.system)
        code = coding.code
        if system not in _READABLE_CONDITION_SYSTEMS or not isinstance(code, (str, int)) or str(code).strip() == "":
            continue
        if system == term.ICD10CM and not term.icd10cm_valid(str(code).strip()):
            continue
        out.append((system, str(code).strip()))
    return out


@dataclass(frozen=True)
class Mapping:
    raw: dict
    systems: dict[str, str]
    orders: dict[str, tuple[str, CodeSet]]                 # drug -> (route, codes)
    default_indication: str
    indications: list[tuple[str, CodeSet]]
    precedence: dict[str, list]
    assumed: dict[str, Any]
    withheld_when: dict[str, dict[str, Any]]
    conditions: list[tuple[str, CodeSet, dict, dict]]      # name, codes, active, past
    substance_set: CodeSet
    substances: list[tuple[str, CodeSet]]
    remission_suffixes: tuple[str, ...]
    use_only_suffixes: tuple[str, ...]
    medication_classes: list[tuple[str, CodeSet]]
    allergies: dict[str, CodeSet]
    observations: dict
    systolic: CodeSet
    diastolic: CodeSet
    pregnancy_test: CodeSet                                # the hCG test codes (observations.pregnancy_test)
    questionnaire: dict

    def codeset(self, spec: dict) -> CodeSet:
        return _codeset(spec)

    @property
    def condition_defaults(self) -> dict[str, Any]:
        return self.assumed

    def valuesets_for_field(self, path: str) -> list[str]:
        """The value sets (ids) whose codes set an intake field: what a field catalog links to."""
        out: list[str] = []
        for _, codes, active, past in self.conditions:
            if path in active or path in past:
                out.extend(vs.id for vs in codes.valuesets if vs.id not in out)
        if path == "substance_use":
            out.extend(vs.id for vs in self.substance_set.valuesets)
        return out


def _codeset(spec: dict) -> CodeSet:
    sets = term.load_valuesets()
    exact, prefixes = set(), []
    for key in ("snomed", "rxnorm", "loinc"):
        system = term.KEYS[key]
        exact.update((system, str(c)) for c in spec.get(key) or [])
    for key in ("icd10cm", "icd9cm", "atc"):
        system = term.KEYS[key]
        prefixes.extend((system, term.normalize(system, str(c))) for c in spec.get(key) or [])
    names = [str(n) for n in spec.get("names") or []]
    pattern = re.compile(r"\b(" + "|".join(re.escape(n) for n in names) + r")", re.IGNORECASE) if names else None
    valuesets = []
    for vid in spec.get("valuesets") or []:
        if vid not in sets:
            raise ValueError(f"value set {vid!r} is not in service/cdshooks/terminology/vsac/")
        valuesets.append(sets[vid])
    for vid in spec.get("valuesets_by_name") or []:
        # the published set, narrowed to the codes whose published display names one of `names`
        vs = sets[vid]
        keep = {(s, c) for (s, c), d in vs.displays.items() if pattern is not None and pattern.search(d)}
        codes = {s: frozenset(c for (s2, c) in keep if s2 == s) for s in vs.codes}
        valuesets.append(term.ValueSet(vs.id, f"{vs.title} ({', '.join(names[:3])}…)", vs.url, vs.version,
                                       vs.expansion, vs.source, "split by ingredient name", codes,
                                       {k: v for k, v in vs.displays.items() if k in keep}))
    return CodeSet(tuple(valuesets), frozenset(exact), tuple(prefixes), pattern)


def load_mapping(path: Path | str = MAPPING_PATH) -> Mapping:
    raw = yaml.safe_load(Path(path).read_text())
    subst = raw["substance_use"]
    obs = raw["observations"]
    absence = raw.get("absence") or {}
    return Mapping(
        raw=raw,
        systems=raw["systems"],
        orders={drug: (spec["route"], _codeset(spec)) for drug, spec in raw["orders"].items()},
        default_indication=raw["indications"]["default"],
        indications=[(r["indication"], _codeset(r)) for r in raw["indications"]["rules"]],
        precedence={k: list(v) for k, v in (raw.get("precedence") or {}).items()},
        assumed=dict(absence.get("assumed") or {}),
        withheld_when={k: dict(v) for k, v in (absence.get("withheld_when") or {}).items()},
        conditions=[(c["name"], _codeset(c), dict(c.get("active") or {}), dict(c.get("past") or {}))
                    for c in raw["conditions"]],
        substance_set=_codeset({"valuesets": subst.get("valuesets") or []}),
        # each substance also takes the codes of the published sets whose display names it
        substances=[(s["substance"], _codeset({**s, "valuesets_by_name": subst.get("valuesets") or []}))
                    for s in subst["substances"]],
        remission_suffixes=tuple(str(s) for s in subst.get("remission_icd10cm") or ()),
        use_only_suffixes=tuple(str(s) for s in subst.get("use_without_disorder_icd10cm") or ()),
        medication_classes=[(m["class"], _codeset(m)) for m in raw["medication_classes"]],
        allergies={path: _codeset(spec) for path, spec in raw["allergies"].items()},
        observations=obs,
        systolic=_codeset({"loinc": obs["systolic"], "valuesets": obs.get("systolic_valuesets") or []}),
        diastolic=_codeset({"loinc": obs["diastolic"]}),
        pregnancy_test=_codeset({"valuesets": (obs.get("pregnancy_test") or {}).get("valuesets") or [],
                                 "loinc": (obs.get("pregnancy_test") or {}).get("loinc") or []}),
        questionnaire=raw.get("questionnaire") or {},
    )


@lru_cache(maxsize=1)
def default_mapping() -> Mapping:
    return load_mapping()


def pregnancy_test_codes(mapping: Mapping) -> list[str]:
    """The LOINC codes of the pregnancy (hCG) tests the mapping reads: one prefetch query each."""
    codes = set(code for system, code in mapping.pregnancy_test.exact if system == term.LOINC)
    for vs in mapping.pregnancy_test.valuesets:
        codes.update(vs.codes.get(term.LOINC, ()))
    return sorted(codes)


# --- what the record holds --------------------------------------------------------------------

@dataclass
class FhirRecord:
    """The patient's FHIR resources (Nodes). ``None`` for a list means it could not be read;
    an empty list means it was read and holds nothing. ``resolve`` finds a referenced resource
    (a Medication named by medicationReference) among the Bundles the request carried."""
    patient: Any = None
    observations: list = field(default_factory=list)
    conditions: list | None = None
    medications: list | None = None
    allergies: list | None = None
    questionnaire_responses: list = field(default_factory=list)
    other_draft_orders: list = field(default_factory=list)
    index: dict[str, Node] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    def resolve(self, reference: Any, container: Any = None) -> Node | None:
        return resolve_reference(reference, container, self.index)


def resolve_reference(reference: Any, container: Any, index: dict[str, Node]) -> Node | None:
    if not isinstance(reference, str) or not reference:
        return None
    if reference.startswith("#") and isinstance(container, Node):
        for res in many(container.contained):
            if isinstance(res, Node) and res.id == reference[1:]:
                return res
        return None
    if reference in index:
        return index[reference]
    tail = "/".join(reference.rstrip("/").split("/")[-2:])  # an absolute URL -> Type/id
    return index.get(tail)


@dataclass(frozen=True)
class DraftOrder:
    resource: Any          # the MedicationRequest (Node)
    drug: str              # ketamine | esketamine
    route: str             # the intake route
    matched: str           # the coding or text that identified it


@dataclass
class MappedIntake:
    raw: dict
    sources: dict[str, list[str]]      # intake path -> where its value came from
    notes: list[str]                   # what the card must show (default indication...)
    assumptions: list[str] = field(default_factory=list)   # fields taken from silence: confirm them
    warnings: list[str] = field(default_factory=list)      # what in the record could not be read


def medication_concepts(resource: Any, index: dict[str, Node] | None = None) -> list[Node]:
    """The drug of a MedicationRequest / MedicationStatement: its medicationCodeableConcept, or
    the code and ingredient codes of the Medication its medicationReference names (contained,
    or a Bundle entry), or the reference's display. R5's ``medication`` (CodeableReference) too."""
    if not isinstance(resource, Node):
        return []
    concept = resource.medicationCodeableConcept
    reference = resource.medicationReference
    r5 = resource.medication
    if isinstance(r5, Node):
        concept = concept or r5.concept
        reference = reference or r5.reference
    out: list[Node] = [concept] if isinstance(concept, Node) else []
    if isinstance(reference, Node):
        med = resolve_reference(reference.reference, resource, index or {})
        if med is not None and rtype(med) == "Medication":
            if isinstance(med.code, Node):
                out.append(med.code)
            for ing in many(med.ingredient):
                if isinstance(ing, Node):
                    item = ing.itemCodeableConcept or (ing.item.concept if isinstance(ing.item, Node) else None)
                    if isinstance(item, Node):
                        out.append(item)
        if text(reference.display):
            out.append(Node({"text": reference.display}))
    return out


def medication_concept(resource: Any, contained: dict | None = None) -> Any:
    found = medication_concepts(resource, contained)
    return found[0] if found else None


def find_ketamine_orders(draft_orders: Iterable[Any], mapping: Mapping,
                         index: dict[str, Node] | None = None) -> list[DraftOrder]:
    found = []
    for resource in draft_orders:
        if rtype(resource) not in ("MedicationRequest", "MedicationOrder"):
            continue
        concepts = medication_concepts(resource, index)
        # esketamine first, so that a concept coded for both is screened as the nasal spray
        for drug in ("esketamine", "ketamine"):
            route, codes = mapping.orders[drug]
            hit = next((h for h in (codes.matches(c) for c in concepts) if h), None)
            if hit:
                found.append(DraftOrder(resource, drug, route, hit))
                break
    return found


def unnamed_orders(draft_orders: Iterable[Any], index: dict[str, Node] | None = None) -> list[str]:
    """Medication orders whose drug has no name we can read (a code only, not one we know):
    if one is ketamine it cannot be screened, and the clinician is told."""
    out = []
    for resource in draft_orders:
        if rtype(resource) not in ("MedicationRequest", "MedicationOrder"):
            continue
        concepts = medication_concepts(resource, index)
        if not any(concept_texts(c) for c in concepts):
            shown = ", ".join(f"{c.system or '?'}|{c.code or '?'}" for con in concepts for c in codings(con)) or "no code"
            out.append(f"{ref(resource)} ({shown})")
    return out


def subject_reference(issuer: str, patient_id: str) -> str:
    """Opaque and stable per EHR and patient: the decision log can group a patient's screenings
    without holding the EHR's patient id."""
    digest = hashlib.sha256(f"{issuer}\x00{patient_id}".encode()).hexdigest()[:32]
    return f"cds-{digest}"


class _Collector:
    def __init__(self, precedence: dict[str, list]):
        self.values: dict[str, Any] = {}
        self.sources: dict[str, list[str]] = {}
        self.precedence = precedence

    def put(self, path: str, value: Any, source: str) -> None:
        if value is None:
            return
        if path in self.values and not self._worse(path, value, self.values[path]):
            if value == self.values[path]:
                self.sources.setdefault(path, []).append(source)
            return
        self.values[path] = value
        self.sources[path] = [source]

    def default(self, path: str, value: Any, source: str) -> bool:
        if path not in self.values:
            self.values[path] = value
            self.sources[path] = [source]
            return True
        return False

    def _worse(self, path: str, new: Any, old: Any) -> bool:
        if isinstance(new, bool) and isinstance(old, bool):
            return new and not old
        order = self.precedence.get(path)
        if order and new in order and old in order:
            return order.index(new) < order.index(old)
        return False


def _status(concept: Any) -> str | None:
    for coding in codings(concept):
        if isinstance(coding.code, str) and coding.code:
            return coding.code
    # R4 (and STU3's plain code) may carry the status as a string
    return concept if isinstance(concept, str) and concept else None


def _age(birth: dt.date, today: dt.date) -> int:
    return today.year - birth.year - ((today.month, today.day) < (birth.month, birth.day))


def _nest(flat: dict[str, Any]) -> dict:
    out: dict = {}
    for path, value in flat.items():
        node = out
        *parents, leaf = path.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return out


# --- the mapping ------------------------------------------------------------------------------

def map_to_intake(record: FhirRecord, order: DraftOrder, mapping: Mapping, *, as_of: dt.datetime,
                  subject_id: str, catalog: Catalog) -> MappedIntake | None:
    """The intake for one ketamine/esketamine draft order, or None when the order's reason is
    not an indication this service screens for. ``catalog``: the field catalog of the ruleset
    being served (``ruleset.pack.catalog``), which a reload may have changed: only its fields
    are filled, and its questionnaire fields are read."""
    col = _Collector(mapping.precedence)
    notes: list[str] = []
    warnings: list[str] = list(record.warnings)
    assumptions: list[str] = []

    indication = _indication(order.resource, mapping, notes, record.index)
    if indication is None:
        return None
    col.put("treatment.route", order.route, f"{ref(order.resource)} ({order.matched})")
    col.put("treatment.indication", indication[0], indication[1])

    _patient(record.patient, col, as_of)
    _observations(record.observations, mapping, col, as_of, warnings)
    hcg = _pregnancy_test(record.observations, mapping, as_of, warnings)
    if hcg is not None and hcg[0]:
        col.put("patient.pregnant", True, hcg[1])
    conditions_state = None
    if record.conditions is not None:
        conditions_state = _conditions(record.conditions, mapping, col, warnings)
    _questionnaire(record.questionnaire_responses, questionnaire_fields(mapping, catalog), mapping, col)
    medications = _medications(record.medications, record.other_draft_orders, mapping, col, record.index)
    allergies_read = _allergies(record.allergies, mapping, col, warnings)
    # A negative test is an inference, taken only when no record states the answer (a Condition,
    # a pregnancy status, the questionnaire): the card lists it among the assumptions to confirm.
    if hcg is not None and not hcg[0] and col.default("patient.pregnant", False, hcg[1]):
        assumptions.append("patient.pregnant")

    if conditions_state is not None:
        substance_use, all_read = conditions_state
        if all_read:
            for path, value in mapping.assumed.items():
                blockers = mapping.withheld_when.get(path) or {}
                if any(col.values.get(k) == v for k, v in blockers.items()):
                    continue
                if col.default(path, value, "assumed: not on the problem list"):
                    assumptions.append(path)
            if not substance_use:
                assumptions.append("substance_use")
                col.sources["substance_use"] = ["assumed: no substance use disorder on the problem list"]
        elif not substance_use:
            substance_use = None  # silence of a list we could not read fully proves nothing
    else:
        substance_use = None
    if medications == [] and record.medications is not None:
        assumptions.append("medications")
        col.sources["medications"] = ["assumed: no active medication on the medication list"]
    if record.allergies is not None and allergies_read:
        for path in mapping.allergies:
            if col.default(path, False, "assumed: not on the allergy list"):
                assumptions.append(path)

    # Only fields the served contract has: the mapping may name fields ahead of it (a field
    # another change adds), and `_record.*` markers only steer the assumptions above.
    known = catalog.flat
    col.values = {k: v for k, v in col.values.items() if k in known}
    assumptions = [a for a in assumptions if a in known]
    raw = _nest(col.values)
    raw["subject_id"] = subject_id
    if substance_use is not None and "substance_use" in known:
        raw["substance_use"] = substance_use
    if medications is not None and "medications" in known:
        raw["medications"] = medications
    ordered = {"subject_id": raw.pop("subject_id")}
    ordered.update(raw)
    return MappedIntake(ordered, col.sources, notes, assumptions, warnings)


# --- what the mapping can answer ----------------------------------------------------------------

# The intake fields that the sections read by code (not by tables of fhir_mapping.yaml) fill.
# The tables' own fields (conditions, absence, allergies, questionnaire) are read from them.
FILLED_BY_CODE: dict[str, tuple[str, ...]] = {
    "orders": ("treatment.route",),
    "indications": ("treatment.indication",),
    "patient": ("patient.age_years", "patient.sex_at_birth"),
    "observations": ("vitals.systolic_bp", "vitals.diastolic_bp", "vitals.measured_at", "vitals.heart_rate",
                     "patient.pregnant", "patient.breastfeeding"),
    "substance_use": ("substance_use",),
    "medication_classes": ("medications",),
}


def fhir_reference(catalog: Catalog, path: str) -> dict:
    """A catalog field's ``fhir`` reference ({resource, mapping, ...}), or {}."""
    definition = catalog.definition(path)
    found = definition.spec.get("fhir") if definition is not None else None
    return found if isinstance(found, dict) else {}


def questionnaire_fields(mapping: Mapping, catalog: Catalog) -> frozenset[str]:
    """The fields a completed intake questionnaire may answer: those fhir_mapping.yaml lists, and
    every scalar field of the served catalog whose ``fhir`` reference names the questionnaire
    section (a field an editor adds that way is read without a code or mapping change). A
    questionnaire answer is an explicit answer, never an assumption."""
    listed = set(mapping.questionnaire.get("fields") or [])
    for path, info in catalog.flat.items():
        if info.kind not in ("object", "list") and fhir_reference(catalog, path).get("mapping") == "questionnaire":
            listed.add(path)
    return frozenset(listed)


def sections_filling(mapping: Mapping, catalog: Catalog) -> dict[str, frozenset[str]]:
    """Section of the mapping (as a catalog ``fhir.mapping`` reference names it) -> the served
    catalog's fields it can fill: by code (the order, the patient, the vital signs, substance
    use, medications) or by its tables (conditions with ``absence``, allergies, the questionnaire)."""
    out = {section: set(paths) for section, paths in FILLED_BY_CODE.items()}
    conditions = out.setdefault("conditions", set())
    for _, _, active, past in mapping.conditions:
        conditions.update(active)
        conditions.update(past)
    conditions.update(mapping.assumed)
    out["allergies"] = set(mapping.allergies)
    out["questionnaire"] = set(questionnaire_fields(mapping, catalog))
    return {section: frozenset(p for p in paths if p in catalog.flat) for section, paths in out.items()}


def answerable_paths(mapping: Mapping, catalog: Catalog) -> frozenset[str]:
    """The served catalog's fields this mapping can fill from an EHR record, by any section. A
    field outside this set is never answered by a CDS request: when a rule needs it, the card
    asks for it as "not available from the EHR"."""
    return frozenset().union(*sections_filling(mapping, catalog).values())


def reference_mismatches(mapping: Mapping, catalog: Catalog) -> list[str]:
    """Catalog fields whose ``fhir`` reference names a section of the mapping that does not fill
    them (or no section at all), with the sections that do: what an editor should correct."""
    filling = sections_filling(mapping, catalog)
    out = []
    for path in catalog.flat:
        named = str(fhir_reference(catalog, path).get("mapping") or "")
        if not named:
            continue
        section = named.split(".", 1)[0]
        if section not in filling:
            out.append(f"{path}: its fhir reference names '{named}', which is not a section of the mapping")
        elif path not in filling[section]:
            others = sorted(s for s, paths in filling.items() if path in paths)
            out.append(f"{path}: its fhir reference names '{named}', which does not fill it"
                       + (f" (answered by: {', '.join(others)})" if others else " (no section answers it)"))
    return out


def not_from_ehr(missing: Iterable[str], answerable: frozenset[str]) -> list[str]:
    """The missing paths (``substance_use[0].status`` as its list) no EHR record can answer here."""
    out = []
    for path in missing:
        plain = re.sub(r"\[\d+\]", "", path)
        if plain not in answerable and plain.split(".", 1)[0] not in answerable:
            out.append(path)
    return out


def _reasons(order: Any, index: dict[str, Node]) -> list[Node]:
    out = [c for c in many(order.reasonCode) if isinstance(c, Node)]
    for item in many(order.reason):          # R5: CodeableReference
        if isinstance(item, Node) and isinstance(item.concept, Node):
            out.append(item.concept)
    for reference in many(order.reasonReference) + [r.reference for r in many(order.reason) if isinstance(r, Node)]:
        if isinstance(reference, Node):
            target = resolve_reference(reference.reference, order, index)
            if target is not None and isinstance(target.code, Node):
                out.append(target.code)
            elif text(reference.display):
                out.append(Node({"text": reference.display}))
    return out


def _indication(order: Any, mapping: Mapping, notes: list[str], index: dict[str, Node]) -> tuple[str, str] | None:
    reasons = _reasons(order, index)
    if not reasons:
        notes.append(f"The order gives no reason; screened for the default indication "
                     f"'{mapping.default_indication}'.")
        return mapping.default_indication, "default (no reason on the order)"
    for indication, codes in mapping.indications:
        for concept in reasons:
            hit = codes.matches(concept)
            if hit:
                return indication, f"{ref(order)} reason ({hit})"
    return None


def _patient(patient: Any, col: _Collector, as_of: dt.datetime) -> None:
    if not isinstance(patient, Node):
        return
    source = ref(patient)
    birth = day(patient.birthDate)
    if birth is not None:
        col.put("patient.age_years", _age(birth, as_of.date()), f"{source} birthDate")
    sex = None
    for ext in many(patient.extension):
        if isinstance(ext, Node) and ext.url == "http://hl7.org/fhir/us/core/StructureDefinition/us-core-birthsex":
            sex = {"F": "female", "M": "male", "UNK": "unknown"}.get(ext.valueCode or "")
            if sex:
                col.put("patient.sex_at_birth", sex, f"{source} us-core-birthsex")
    if sex is None and patient.gender in ("female", "male", "unknown"):
        # Administrative gender stands in for sex at birth only when nothing better is recorded;
        # "other" says nothing about it and leaves the field missing.
        col.put("patient.sex_at_birth", patient.gender, f"{source} gender")


def _code_in(concept: Any, codes: Iterable[str]) -> bool:
    wanted = set(codes)
    return any(term.canonical_system(c.system) == term.LOINC and c.code in wanted for c in codings(concept))


def _when(obs: Any) -> dt.datetime | None:
    for value in (obs.effectiveDateTime, obs.effectiveInstant,
                  obs.effectivePeriod.start if isinstance(obs.effectivePeriod, Node) else None, obs.issued):
        parsed = when(value)
        if parsed is not None:
            return parsed
    return None


def _quantity(value: Any) -> float | None:
    return number(value.value) if isinstance(value, Node) else None


def _observations(observations: list, mapping: Mapping, col: _Collector, as_of: dt.datetime,
                  warnings: list[str]) -> None:
    spec = mapping.observations
    usable = [(o, _when(o)) for o in observations if isinstance(o, Node) and o.status in _OBS_OK]
    usable = sorted(((o, t) for o, t in usable if t is not None), key=lambda p: p[1], reverse=True)

    # blood pressure: the latest systolic and the latest diastolic, panel component or single
    latest: dict[str, tuple[float, dt.datetime, str]] = {}
    for obs, taken in usable:
        readings = []
        for comp in many(obs.component):
            if isinstance(comp, Node):
                readings.append((comp.code, _quantity(comp.valueQuantity), "component"))
        readings.append((obs.code, _quantity(obs.valueQuantity), "value"))
        for concept, value, how in readings:
            if value is None:
                continue
            for name, codes in (("systolic", mapping.systolic), ("diastolic", mapping.diastolic)):
                if name not in latest and codes.matches(concept):
                    latest[name] = (value, taken, f"{ref(obs)} ({codes.matches(concept)}, {how})")
    if "systolic" in latest and "diastolic" in latest:
        (sbp, t1, s1), (dbp, t2, s2) = latest["systolic"], latest["diastolic"]
        col.put("vitals.systolic_bp", int(round(sbp)), s1)
        col.put("vitals.diastolic_bp", int(round(dbp)), s2)
        col.put("vitals.measured_at", min(t1, t2), s1 if t1 <= t2 else s2)
    elif latest:
        warnings.append("Only one of the two blood pressures was found in the record "
                        f"({', '.join(latest)}): blood pressure is not screened from it.")
    for obs, _ in usable:
        value = _quantity(obs.valueQuantity)
        if _code_in(obs.code, [spec["heart_rate"]]) and value is not None:
            col.put("vitals.heart_rate", int(round(value)), f"{ref(obs)} (LOINC {spec['heart_rate']})")
            break
    for path, key in (("patient.pregnant", "pregnancy_status"), ("patient.breastfeeding", "breastfeeding_status")):
        status = spec[key]
        for obs, taken in usable:
            if not _code_in(obs.code, [status["code"]]):
                continue
            value = _observed_flag(obs, status)
            age_days = (as_of - taken).days
            limit = status.get("negative_valid_days") if value is False else status.get("positive_valid_days")
            if value is not None and limit is not None and age_days > int(limit):
                warnings.append(f"{ref(obs)} ({'not ' if value is False else ''}{key.split('_')[0]}) was recorded "
                                f"{age_days} days ago, more than {limit}: not taken as today's status.")
            elif value is not None:
                col.put(path, value, f"{ref(obs)} (LOINC {status['code']}, {taken.date().isoformat()})")
            break  # only the latest status counts, even when it says "unknown" or is stale


def _pregnancy_test(observations: list, mapping: Mapping, as_of: dt.datetime,
                    warnings: list[str]) -> tuple[bool, str] | None:
    """What the newest pregnancy (hCG) test says today: (True, source) for a positive within
    ``positive_valid_days``, (False, source) for a negative within ``negative_valid_days`` (the
    pregnancy status's windows), None otherwise. A result that cannot be read is a warning; one
    newer than a negative leaves the negative unused, since it is no longer the latest word."""
    spec = mapping.observations.get("pregnancy_test")
    if not spec:
        return None
    status = mapping.observations["pregnancy_status"]
    tests = [(o, _when(o)) for o in observations
             if isinstance(o, Node) and o.status in _OBS_OK and mapping.pregnancy_test.matches(o.code)]
    unreadable = None
    for obs, taken in sorted(((o, t) for o, t in tests if t is not None), key=lambda p: p[1], reverse=True):
        code = next((c.code for c in codings(obs.code) if term.canonical_system(c.system) == term.LOINC), "?")
        result, reading = _hcg_result(obs, spec)
        if result is None:
            warnings.append(f"{ref(obs)} (pregnancy test, LOINC {code}, {taken.date().isoformat()}) {reading}: "
                            "nothing is assumed from it.")
            unreadable = unreadable or ref(obs)
            continue
        age_days = (as_of - taken).days
        limit = int(status["positive_valid_days"] if result else status["negative_valid_days"])
        word = "positive" if result else "negative"
        if age_days > limit:
            warnings.append(f"{ref(obs)} ({word} pregnancy test) was taken {age_days} days ago, more than "
                            f"{limit}: not taken as today's status.")
            return None
        if not result and unreadable:
            warnings.append(f"{ref(obs)} (negative pregnancy test) is not used: a newer test, {unreadable}, "
                            "could not be read.")
            return None
        detail = f"LOINC {code}: {reading}, {taken.date().isoformat()}"
        if result:
            return True, f"{ref(obs)} (positive pregnancy test, {detail})"
        return False, f"inferred: not pregnant from a negative pregnancy test, {ref(obs)} ({detail})"
    return None


def _hcg_result(obs: Any, spec: dict) -> tuple[bool | None, str]:
    """(True/False, what was read) for a positive or negative hCG result; (None, why) otherwise.
    Every part of the result that speaks (a coded value, a quantity, an interpretation) must
    agree."""
    votes: list[tuple[bool, str]] = []
    positive, negative = spec.get("positive") or {}, spec.get("negative") or {}

    def coded(concept: Any, what: str) -> bool:
        """A vote from a coded answer; False when it is coded but in nothing we read."""
        spoke = False
        for c in codings(concept):
            system, code = term.canonical_system(c.system), str(c.code or "").strip()
            for flag, side in ((True, positive), (False, negative)):
                key = {term.SNOMED: "snomed", term.LOINC: "loinc"}.get(system or "")
                if key and code in {str(x) for x in side.get(key) or []}:
                    votes.append((flag, f"{what} {term.SHORT_NAMES[system]} {code}"))
                    spoke = True
        return spoke

    concept = obs.valueCodeableConcept
    if isinstance(concept, Node) and not coded(concept, "value"):
        # Only an uncoded answer is read by its words: a code we do not read is not guessed
        # from its display.
        label = text(concept.text) if not codings(concept) else None
        words = (label or "").strip().lower()
        for flag, side in ((True, positive), (False, negative)):
            if words and words in {str(w).lower() for w in side.get("text") or []}:
                votes.append((flag, f"value '{label}'"))
        if not votes:
            return None, "could not be read (a result coded in nothing this service reads)"
    if isinstance(obs.valueString, str):
        words = obs.valueString.strip().lower()
        for flag, side in ((True, positive), (False, negative)):
            if words in {str(w).lower() for w in side.get("text") or []}:
                votes.append((flag, f"value '{obs.valueString.strip()}'"))
    quantity = obs.valueQuantity
    if isinstance(quantity, Node):
        value = number(quantity.value)
        unit = next((u.strip() for u in (quantity.code, quantity.unit) if isinstance(u, str) and u.strip()
                     and u.strip() in (spec.get("units") or {})), None)
        if value is None:
            return None, "could not be read (a quantity without a value)"
        if unit is None:
            return None, f"could not be read (unit {quantity.code or quantity.unit or 'missing'} is not one read)"
        iu_per_l = value * float(spec["units"][unit])
        low, high = float(spec["negative_below"]), float(spec["positive_from"])
        comparator = quantity.comparator if isinstance(quantity.comparator, str) else ""
        shown = f"{comparator}{value:g} {unit}"
        if comparator in ("<", "<=") and iu_per_l <= low:
            votes.append((False, shown))
        elif comparator in (">", ">=") and iu_per_l >= high:
            votes.append((True, shown))
        elif not comparator and iu_per_l < low:
            votes.append((False, shown))
        elif not comparator and iu_per_l >= high:
            votes.append((True, shown))
        else:
            return None, (f"is equivocal ({shown}: between {low:g} and {high:g} IU/L, neither negative nor "
                          "positive)")
    for item in many(obs.interpretation):
        for c in codings(item):
            if not (c.system is None or (isinstance(c.system, str) and c.system in _INTERPRETATION_SYSTEMS)):
                continue   # a local flag "A" need not mean abnormal
            code = str(c.code or "").strip()
            for flag, side in ((True, positive), (False, negative)):
                if code in {str(x) for x in side.get("interpretation") or []}:
                    votes.append((flag, f"interpretation {code}"))
    flags = {flag for flag, _ in votes}
    if not flags:
        return None, "could not be read (no positive or negative result)"
    if len(flags) > 1:
        return None, f"could not be read (its parts disagree: {', '.join(what for _, what in votes)})"
    return flags.pop(), ", ".join(what for _, what in votes)


def _observed_flag(obs: Any, status: dict) -> bool | None:
    if isinstance(obs.valueBoolean, bool):
        return obs.valueBoolean
    codes = {c.code for c in codings(obs.valueCodeableConcept)}
    if codes & set(status.get("positive") or []):
        return True
    if codes & set(status.get("negative") or []):
        return False
    return None


def _usable_condition(cond: Any) -> str | None:
    """'active' | 'past' | None (refuted or entered in error)."""
    if _status(cond.verificationStatus) in _NOT_TRUE:
        return None
    clinical = _status(cond.clinicalStatus)
    if clinical in _PAST:
        return "past"
    # No clinical status, or one we do not know: a diagnosis with no stated end, read as active.
    return "active"


def _conditions(conditions: list, mapping: Mapping, col: _Collector,
                warnings: list[str]) -> tuple[list[dict], bool]:
    """(substance_use items, whether every entry could be read)."""
    substance_items: dict[str, dict] = {}
    substance_sources: dict[str, list[str]] = {}
    unread: list[str] = []
    for cond in conditions:
        if not isinstance(cond, Node):
            continue
        state = _usable_condition(cond)
        if state is None:
            continue
        source = ref(cond)
        matched = False
        for name, codes, active, past in mapping.conditions:
            hit = codes.match(cond.code)
            if hit is AMBIGUOUS:
                unread.append(f"{source} ({_describe(cond.code)}: a category broader than '{name}')")
                continue
            if not hit:
                continue
            matched = True
            for path, value in (active if state == "active" else past).items():
                col.put(path, value, f"{source} {name} ({hit}, {state})")
        substance = _substance_of(cond.code, mapping)
        if substance:
            matched = True
            hit = substance[1]
            _substance(substance_items, substance[0], cond, state, mapping)
            substance_sources.setdefault(substance[0], []).append(f"{source} ({hit}, {state})")
        if not matched and not readable_codes(cond.code):
            unread.append(f"{source} ({_describe(cond.code)})")
    if unread:
        warnings.append("Conditions that could not be read (no SNOMED CT, ICD-10-CM or ICD-9-CM code this "
                        "service can place): " + "; ".join(unread[:5]) + (" …" if len(unread) > 5 else "")
                        + ". Diagnoses are therefore not assumed absent.")
    order = sorted(substance_items)
    if order:  # one entry per item, in item order, so a reason's substance_use[i] finds its records
        col.sources["substance_use"] = [", ".join(substance_sources[k]) for k in order]
    return [substance_items[k] for k in order], not unread


def _describe(concept: Any) -> str:
    shown = [f"{c.system or 'no system'}|{c.code or '?'}" for c in codings(concept)]
    texts = concept_texts(concept)
    return ", ".join(shown[:2]) + (f" '{texts[0][:60]}'" if texts else "") if shown or texts else "no code or text"


def _substance_of(concept: Any, mapping: Mapping) -> tuple[str, str] | None:
    for substance, codes in mapping.substances:
        hit = codes.matches(concept)
        if hit and (hit.startswith(("ICD", "SNOMED")) or mapping.substance_set.matches(concept)
                    or "text" in hit and _looks_like_disorder(concept)):
            return substance, hit
    published = mapping.substance_set.matches(concept)
    if published:  # in the published set, naming no substance we list
        return "other", published
    return None


def _looks_like_disorder(concept: Any) -> bool:
    return any(re.search(r"\b(use|abuse|dependence|disorder|addiction)\b", t, re.IGNORECASE) for t in concept_texts(concept))


def _substance(items: dict, substance: str, cond: Any, state: str, mapping: Mapping) -> None:
    code = next((term.normalize(term.ICD10CM, str(c.code or "")) for c in codings(cond.code)
                 if term.canonical_system(c.system) == term.ICD10CM), "")
    detail = code[3:]  # F10.21 -> "21"
    texts = " ".join(concept_texts(cond.code)).lower()
    status = "active" if state == "active" else "in_remission"
    if (detail and any(detail.startswith(s) for s in mapping.remission_suffixes)) or "remission" in texts:
        status = "in_remission"
    disorder = not (detail and any(detail.startswith(s) for s in mapping.use_only_suffixes))
    last_use = day(cond.abatementDateTime) if status == "in_remission" else None
    item = items.get(substance)
    if item is None:
        item = items[substance] = {"substance": substance, "disorder": disorder, "status": status}
        if last_use:
            item["last_use"] = last_use
        return
    # several records of one substance: the most concerning reading of each field
    item["disorder"] = item["disorder"] or disorder
    if status == "active":
        item["status"] = "active"
        item.pop("last_use", None)
    elif item["status"] != "active" and last_use and (item.get("last_use") is None or last_use > item["last_use"]):
        item["last_use"] = last_use


def _medications(statements: list | None, drafts: list, mapping: Mapping, col: _Collector,
                 index: dict[str, Node]) -> list[dict] | None:
    if statements is None:
        return None
    out: list[dict] = []
    seen: set[tuple[str, str]] = set()
    for resource in list(statements) + list(drafts):
        ok = _MS_OK if rtype(resource) == "MedicationStatement" else _MR_OK
        if resource.status not in ok:
            continue
        concepts = medication_concepts(resource, index)
        if not concepts:
            continue
        names = [t for c in concepts for t in concept_texts(c)]
        first_code = next((str(c.code) for con in concepts for c in codings(con) if c.code), "unnamed medication")
        name = (names[0] if names else first_code)[:200]
        klass = next((k for k, codes in mapping.medication_classes if any(codes.matches(c) for c in concepts)), "other")
        if (name.lower(), klass) not in seen:
            seen.add((name.lower(), klass))
            out.append({"name": name, "class": klass})
            col.sources.setdefault("medications", []).append(ref(resource))
    return out


def _allergies(allergies: list | None, mapping: Mapping, col: _Collector, warnings: list[str]) -> bool:
    """Whether every entry could be read. Every ketamine or esketamine product's RxNorm name
    carries its ingredient's name, which the table matches; an entry with a code and no name or
    text (a code the table does not list) could be either drug, so the list's silence proves nothing."""
    if allergies is None:
        return False
    unread = []
    for allergy in allergies:
        if not isinstance(allergy, Node):
            continue
        if _status(allergy.verificationStatus) in _NOT_TRUE:
            continue
        if _status(allergy.clinicalStatus) in ("inactive", "resolved"):
            continue
        matched = False
        for path, codes in mapping.allergies.items():
            hit = codes.matches(allergy.code)
            if hit:
                matched = True
                col.put(path, True, f"{ref(allergy)} ({hit})")
        if not matched and not concept_texts(allergy.code):
            unread.append(f"{ref(allergy)} ({_describe(allergy.code)})")
    if unread:
        warnings.append("Allergies that could not be read (a code with no name this service can place): "
                        + "; ".join(unread[:5]) + (" …" if len(unread) > 5 else "")
                        + ". Ketamine and esketamine allergies are therefore not assumed absent.")
    return not unread


def _questionnaire(responses: list, allowed: frozenset[str], mapping: Mapping, col: _Collector) -> None:
    spec = mapping.questionnaire
    wanted_url = spec.get("url")
    candidates = [r for r in responses if isinstance(r, Node) and r.status == "completed"
                  and (not wanted_url or str(r.questionnaire or "").split("|")[0] == wanted_url)]
    if not candidates:
        return
    oldest = dt.datetime.min.replace(tzinfo=dt.timezone.utc)
    latest = max(candidates, key=lambda r: when(r.authored) or oldest)
    link_ids = spec.get("link_ids") or {}
    source = ref(latest)
    for item in _items(many(latest.item)):
        path = link_ids.get(item.linkId, item.linkId)
        answers = [a for a in many(item.answer) if isinstance(a, Node)]
        if path not in allowed or not answers:
            continue
        value = _answer(answers[0])
        if value is not None:
            col.put(path, value, f"{source} item {item.linkId}")


def _items(items: list) -> Iterable[Any]:
    for item in items:
        if not isinstance(item, Node):
            continue
        yield item
        yield from _items(many(item.item))
        for answer in many(item.answer):
            if isinstance(answer, Node):
                yield from _items(many(answer.item))


def _answer(answer: Any) -> Any:
    for attr in ("valueBoolean", "valueInteger", "valueDate", "valueString"):
        value = getattr(answer, attr, None)
        if value is not None and not isinstance(value, (Node, list)):
            return value
    if isinstance(answer.valueCoding, Node):
        return answer.valueCoding.code
    return None
