"""FHIR R4 resources -> an intake dict, driven by the code tables in ``fhir_mapping.yaml``.

The code tables are data that policy editors extend; this module only knows how to read FHIR
(clinical status, verification status, components, answers) and how values combine: when two
records speak to one field, the more concerning value wins, so that no source can quietly
cancel a contraindication recorded by another.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterable

import yaml

MAPPING_PATH = Path(__file__).with_name("fhir_mapping.yaml")

_ACTIVE = {"active", "recurrence", "relapse"}
_PAST = {"inactive", "remission", "resolved"}
_NOT_TRUE = {"refuted", "entered-in-error"}
_OBS_OK = {"final", "amended", "corrected", "preliminary"}
_MS_OK = {"active", "intended", "on-hold", "unknown"}
_MR_OK = {"active", "on-hold", "draft"}


# --- the code tables --------------------------------------------------------------------------

@dataclass(frozen=True)
class CodeSet:
    """Codes by system: exact for SNOMED CT / RxNorm / LOINC, prefixes for ICD-10-CM and ATC,
    and whole-word names for text."""
    exact: frozenset[tuple[str, str]] = frozenset()
    prefixes: tuple[tuple[str, str], ...] = ()
    names: re.Pattern | None = None

    def matches(self, concept: Any) -> str | None:
        """The matching coding as 'system|code' (or the text that matched), else None."""
        if concept is None:
            return None
        for coding in concept.coding or []:
            system, code = coding.system or "", (coding.code or "").strip()
            if (system, code) in self.exact:
                return f"{system}|{code}"
            norm = _norm(code)
            for psystem, prefix in self.prefixes:
                if system == psystem and norm.startswith(prefix):
                    return f"{system}|{code}"
        if self.names is not None:
            for text in _texts(concept):
                if self.names.search(text):
                    return f"text '{text[:80]}'"
        return None


def _norm(code: str) -> str:
    return code.replace(".", "").upper()


def _texts(concept: Any) -> list[str]:
    out = [concept.text] if getattr(concept, "text", None) else []
    out.extend(c.display for c in (concept.coding or []) if c.display)
    return out


@dataclass(frozen=True)
class Mapping:
    raw: dict
    systems: dict[str, str]
    orders: dict[str, tuple[str, CodeSet]]                 # drug -> (route, codes)
    default_indication: str
    indications: list[tuple[str, CodeSet]]
    precedence: dict[str, list]
    condition_defaults: dict[str, Any]
    conditions: list[tuple[str, CodeSet, dict, dict]]      # name, codes, active, past
    substances: list[tuple[str, CodeSet]]
    remission_suffixes: tuple[str, ...]
    use_only_suffixes: tuple[str, ...]
    medication_classes: list[tuple[str, CodeSet]]
    allergies: dict[str, CodeSet]
    observations: dict
    questionnaire: dict

    def codeset(self, spec: dict) -> CodeSet:
        return _codeset(spec, self.systems)


def _codeset(spec: dict, systems: dict[str, str]) -> CodeSet:
    exact, prefixes = set(), []
    for key in ("snomed", "rxnorm", "loinc"):
        exact.update((systems[key], str(c)) for c in spec.get(key) or [])
    for key in ("icd10cm", "atc"):
        prefixes.extend((systems[key], _norm(str(c))) for c in spec.get(key) or [])
    names = spec.get("names") or []
    pattern = re.compile(r"\b(" + "|".join(re.escape(n) for n in names) + r")\b", re.I) if names else None
    return CodeSet(frozenset(exact), tuple(prefixes), pattern)


def load_mapping(path: Path | str = MAPPING_PATH) -> Mapping:
    raw = yaml.safe_load(Path(path).read_text())
    systems = raw["systems"]
    cs = lambda spec: _codeset(spec, systems)  # noqa: E731 - a one-line shorthand for the table below
    subst = raw["substance_use"]
    return Mapping(
        raw=raw,
        systems=systems,
        orders={drug: (spec["route"], cs(spec)) for drug, spec in raw["orders"].items()},
        default_indication=raw["indications"]["default"],
        indications=[(r["indication"], cs(r)) for r in raw["indications"]["rules"]],
        precedence={k: list(v) for k, v in (raw.get("precedence") or {}).items()},
        condition_defaults=dict(raw.get("condition_defaults") or {}),
        conditions=[(c["name"], cs(c), dict(c.get("active") or {}), dict(c.get("past") or {}))
                    for c in raw["conditions"]],
        substances=[(s["substance"], cs(s)) for s in subst["substances"]],
        remission_suffixes=tuple(str(s) for s in subst.get("remission_icd10cm") or ()),
        use_only_suffixes=tuple(str(s) for s in subst.get("use_without_disorder_icd10cm") or ()),
        medication_classes=[(m["class"], cs(m)) for m in raw["medication_classes"]],
        allergies={path: cs(spec) for path, spec in raw["allergies"].items()},
        observations=raw["observations"],
        questionnaire=raw.get("questionnaire") or {},
    )


@lru_cache(maxsize=1)
def default_mapping() -> Mapping:
    return load_mapping()


# --- what the record holds --------------------------------------------------------------------

@dataclass
class FhirRecord:
    """Parsed FHIR resources for one patient. ``None`` for a list means it could not be read;
    an empty list means it was read and holds nothing."""
    patient: Any = None
    observations: list = field(default_factory=list)
    conditions: list | None = None
    medications: list | None = None
    allergies: list | None = None
    questionnaire_responses: list = field(default_factory=list)
    other_draft_orders: list = field(default_factory=list)


@dataclass(frozen=True)
class DraftOrder:
    resource: Any          # the MedicationRequest
    drug: str              # ketamine | esketamine
    route: str             # the intake route
    matched: str           # the coding or text that identified it


@dataclass
class MappedIntake:
    raw: dict
    sources: dict[str, list[str]]      # intake path -> where its value came from
    notes: list[str]                   # assumptions the card must show (e.g. default indication)


def find_ketamine_orders(draft_orders: Iterable[Any], mapping: Mapping) -> list[DraftOrder]:
    found = []
    for resource in draft_orders:
        if getattr(resource, "__resource_type__", None) != "MedicationRequest":
            continue
        concept = medication_concept(resource)
        # esketamine first, so that a concept coded for both is screened as the nasal spray
        for drug in ("esketamine", "ketamine"):
            route, codes = mapping.orders[drug]
            hit = codes.matches(concept)
            if hit:
                found.append(DraftOrder(resource, drug, route, hit))
                break
    return found


def medication_concept(resource: Any, contained: dict | None = None) -> Any:
    """The CodeableConcept of a MedicationRequest / MedicationStatement, following a reference
    to a contained Medication."""
    concept = getattr(resource, "medicationCodeableConcept", None)
    if concept is not None:
        return concept
    ref = getattr(resource, "medicationReference", None)
    if ref is None:
        return None
    for med in getattr(resource, "contained", None) or []:
        if ref.reference and ref.reference.lstrip("#") == med.id and getattr(med, "code", None) is not None:
            return med.code
    if contained and ref.reference in contained:
        return contained[ref.reference].code
    if ref.display:
        from fhir.resources.R4B.codeableconcept import CodeableConcept
        return CodeableConcept(text=ref.display)
    return None


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

    def default(self, path: str, value: Any, source: str) -> None:
        if path not in self.values:
            self.values[path] = value
            self.sources[path] = [source]

    def _worse(self, path: str, new: Any, old: Any) -> bool:
        if isinstance(new, bool) and isinstance(old, bool):
            return new and not old
        order = self.precedence.get(path)
        if order and new in order and old in order:
            return order.index(new) < order.index(old)
        return False


def _status(concept: Any) -> str | None:
    for coding in (concept.coding if concept is not None else None) or []:
        if coding.code:
            return coding.code
    return None


def _ref(resource: Any) -> str:
    return f"{resource.__resource_type__}/{resource.id or '?'}"


def _as_date(value: Any) -> dt.date | None:
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    return None


def _as_aware(value: Any) -> dt.datetime | None:
    """A FHIR dateTime as an aware datetime. A bare date is taken as the start of that day in
    UTC: the oldest reading of it, so a freshness rule errs on the side of 'stale'."""
    if isinstance(value, dt.datetime):
        return value if value.tzinfo else value.replace(tzinfo=dt.timezone.utc)
    if isinstance(value, dt.date):
        return dt.datetime(value.year, value.month, value.day, tzinfo=dt.timezone.utc)
    return None


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
                  subject_id: str) -> MappedIntake | None:
    """The intake for one ketamine/esketamine draft order, or None when the order's reason is
    not an indication this service screens for."""
    col = _Collector(mapping.precedence)
    notes: list[str] = []

    indication = _indication(order.resource, mapping, notes)
    if indication is None:
        return None
    col.put("treatment.route", order.route, f"{_ref(order.resource)} ({order.matched})")
    col.put("treatment.indication", indication[0], indication[1])

    _patient(record.patient, col, as_of)
    _observations(record.observations, mapping, col)
    substance_use = _conditions(record.conditions, mapping, col) if record.conditions is not None else None
    _questionnaire(record.questionnaire_responses, mapping, col)
    medications = _medications(record.medications, record.other_draft_orders, mapping, col)
    _allergies(record.allergies, mapping, col)

    raw = _nest(col.values)
    raw["subject_id"] = subject_id
    if substance_use is not None:
        raw["substance_use"] = substance_use
    if medications is not None:
        raw["medications"] = medications
    ordered = {"subject_id": raw.pop("subject_id")}
    ordered.update(raw)
    return MappedIntake(ordered, col.sources, notes)


def _indication(order: Any, mapping: Mapping, notes: list[str]) -> tuple[str, str] | None:
    reasons = list(order.reasonCode or [])
    if not reasons:
        notes.append(f"The order gives no reason; screened for the default indication "
                     f"'{mapping.default_indication}'.")
        return mapping.default_indication, "default (no reasonCode on the order)"
    for indication, codes in mapping.indications:
        for concept in reasons:
            hit = codes.matches(concept)
            if hit:
                return indication, f"{_ref(order)} reasonCode ({hit})"
    return None


def _patient(patient: Any, col: _Collector, as_of: dt.datetime) -> None:
    if patient is None:
        return
    source = _ref(patient)
    birth = patient.birthDate
    if isinstance(birth, dt.date):
        col.put("patient.age_years", _age(birth, as_of.date()), f"{source} birthDate")
    sex = None
    for ext in patient.extension or []:
        if ext.url == "http://hl7.org/fhir/us/core/StructureDefinition/us-core-birthsex":
            sex = {"F": "female", "M": "male", "UNK": "unknown"}.get(ext.valueCode or "")
            if sex:
                col.put("patient.sex_at_birth", sex, f"{source} us-core-birthsex")
    if sex is None and patient.gender in ("female", "male", "unknown"):
        # Administrative gender stands in for sex at birth only when nothing better is recorded;
        # "other" says nothing about it and leaves the field missing.
        col.put("patient.sex_at_birth", patient.gender, f"{source} gender")


def _code_in(concept: Any, system: str, code: str) -> bool:
    return any(c.system == system and c.code == code for c in (concept.coding if concept else None) or [])


def _observations(observations: list, mapping: Mapping, col: _Collector) -> None:
    loinc = mapping.systems["loinc"]
    spec = mapping.observations
    usable = [o for o in observations if o.status in _OBS_OK and _as_aware(_when(o)) is not None]
    usable.sort(key=lambda o: _as_aware(_when(o)), reverse=True)

    for obs in usable:  # the latest reading that has both pressures
        sbp = dbp = None
        for comp in obs.component or []:
            if _code_in(comp.code, loinc, spec["systolic"]) and comp.valueQuantity is not None:
                sbp = comp.valueQuantity.value
            if _code_in(comp.code, loinc, spec["diastolic"]) and comp.valueQuantity is not None:
                dbp = comp.valueQuantity.value
        if sbp is not None and dbp is not None:
            source = f"{_ref(obs)} (LOINC {spec['blood_pressure_panel']})"
            col.put("vitals.systolic_bp", int(round(sbp)), source)
            col.put("vitals.diastolic_bp", int(round(dbp)), source)
            col.put("vitals.measured_at", _as_aware(_when(obs)), source)
            break
    for obs in usable:
        if _code_in(obs.code, loinc, spec["heart_rate"]) and obs.valueQuantity is not None:
            col.put("vitals.heart_rate", int(round(obs.valueQuantity.value)), f"{_ref(obs)} (LOINC {spec['heart_rate']})")
            break
    for path, key in (("patient.pregnant", "pregnancy_status"), ("patient.breastfeeding", "breastfeeding_status")):
        status = spec[key]
        for obs in usable:
            if not _code_in(obs.code, loinc, status["code"]):
                continue
            value = _observed_flag(obs, status)
            if value is not None:
                col.put(path, value, f"{_ref(obs)} (LOINC {status['code']})")
            break  # only the latest status counts, even when it says "unknown"


def _when(obs: Any) -> Any:
    if obs.effectiveDateTime is not None:
        return obs.effectiveDateTime
    if obs.effectivePeriod is not None and obs.effectivePeriod.start is not None:
        return obs.effectivePeriod.start
    if obs.effectiveInstant is not None:
        return obs.effectiveInstant
    return obs.issued


def _observed_flag(obs: Any, status: dict) -> bool | None:
    if obs.valueBoolean is not None:
        return obs.valueBoolean
    codes = {c.code for c in (obs.valueCodeableConcept.coding if obs.valueCodeableConcept else None) or []}
    if codes & set(status.get("positive") or []):
        return True
    if codes & set(status.get("negative") or []):
        return False
    return None


def _usable_condition(cond: Any) -> str | None:
    """'active' | 'past' | None (refuted, entered in error, or no status at all)."""
    if _status(cond.verificationStatus) in _NOT_TRUE:
        return None
    clinical = _status(cond.clinicalStatus)
    if clinical in _ACTIVE:
        return "active"
    if clinical in _PAST:
        return "past"
    # A Condition without clinicalStatus is a diagnosis with no stated end: treat it as active.
    return "active" if clinical is None else None


def _conditions(conditions: list, mapping: Mapping, col: _Collector) -> list[dict]:
    substance_items: dict[str, dict] = {}
    substance_sources: dict[str, list[str]] = {}
    for cond in conditions:
        state = _usable_condition(cond)
        if state is None:
            continue
        source = _ref(cond)
        for name, codes, active, past in mapping.conditions:
            hit = codes.matches(cond.code)
            if not hit:
                continue
            for path, value in (active if state == "active" else past).items():
                col.put(path, value, f"{source} {name} ({hit}, {state})")
        for substance, codes in mapping.substances:
            hit = codes.matches(cond.code)
            if hit:
                _substance(substance_items, substance, cond, state, hit, mapping)
                substance_sources.setdefault(substance, []).append(f"{source} ({hit}, {state})")
    for path, value in mapping.condition_defaults.items():
        col.default(path, value, "not on the condition list")
    order = sorted(substance_items)
    if order:  # one entry per item, in item order, so a reason's substance_use[i] finds its records
        col.sources["substance_use"] = [", ".join(substance_sources[k]) for k in order]
    return [substance_items[k] for k in order]


def _substance(items: dict, substance: str, cond: Any, state: str, hit: str, mapping: Mapping) -> None:
    icd = mapping.systems["icd10cm"]
    code = next((_norm(c.code or "") for c in cond.code.coding or [] if c.system == icd), "")
    detail = code[3:]  # F10.21 -> "21"
    status = "active" if state == "active" else "in_remission"
    if detail and any(detail.startswith(s) for s in mapping.remission_suffixes):
        status = "in_remission"
    disorder = not (detail and any(detail.startswith(s) for s in mapping.use_only_suffixes))
    last_use = _as_date(cond.abatementDateTime) if status == "in_remission" else None
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


def _medications(statements: list | None, drafts: list, mapping: Mapping, col: _Collector) -> list[dict] | None:
    if statements is None:
        return None
    out: list[dict] = []
    seen: set[tuple[str, str]] = set()
    for resource in list(statements) + list(drafts):
        ok = _MS_OK if resource.__resource_type__ == "MedicationStatement" else _MR_OK
        if resource.status not in ok:
            continue
        concept = medication_concept(resource)
        if concept is None:
            continue
        names = _texts(concept)
        name = (names[0] if names else next((c.code for c in concept.coding or [] if c.code), "unnamed medication"))[:200]
        klass = next((k for k, codes in mapping.medication_classes if codes.matches(concept)), "other")
        if (name.lower(), klass) not in seen:
            seen.add((name.lower(), klass))
            out.append({"name": name, "class": klass})
            col.sources.setdefault("medications", []).append(_ref(resource))
    return out


def _allergies(allergies: list | None, mapping: Mapping, col: _Collector) -> None:
    if allergies is None:
        return
    for allergy in allergies:
        if _status(allergy.verificationStatus) in _NOT_TRUE:
            continue
        if _status(allergy.clinicalStatus) in ("inactive", "resolved"):
            continue
        for path, codes in mapping.allergies.items():
            hit = codes.matches(allergy.code)
            if hit:
                col.put(path, True, f"{_ref(allergy)} ({hit})")
    for path in mapping.allergies:
        col.default(path, False, "not on the allergy list")


def _questionnaire(responses: list, mapping: Mapping, col: _Collector) -> None:
    spec = mapping.questionnaire
    wanted_url = spec.get("url")
    candidates = [r for r in responses if r.status == "completed"
                  and (not wanted_url or (r.questionnaire or "").split("|")[0] == wanted_url)]
    if not candidates:
        return
    latest = max(candidates, key=lambda r: _as_aware(r.authored) or dt.datetime.min.replace(tzinfo=dt.timezone.utc))
    allowed = set(spec.get("fields") or [])
    link_ids = spec.get("link_ids") or {}
    source = _ref(latest)
    for item in _items(latest.item or []):
        path = link_ids.get(item.linkId, item.linkId)
        if path not in allowed or not item.answer:
            continue
        value = _answer(item.answer[0])
        if value is not None:
            col.put(path, value, f"{source} item {item.linkId}")


def _items(items: list) -> Iterable[Any]:
    for item in items:
        yield item
        yield from _items(item.item or [])
        for answer in item.answer or []:
            yield from _items(answer.item or [])


def _answer(answer: Any) -> Any:
    for attr in ("valueBoolean", "valueInteger", "valueDate", "valueString"):
        value = getattr(answer, attr, None)
        if value is not None:
            return value
    if answer.valueCoding is not None:
        return answer.valueCoding.code
    return None
