"""Terminology as data: published value-set expansions, code-system identities, code matching.

The value sets under ``vsac/`` are VSAC expansions as published in the cqframework eCQM content
repository (each file records its OID, canonical URL, version, expansion and the commit it came
from; ``build.py`` rebuilds them). They are loaded once. Code systems are recognised under their
FHIR URI and their HL7 OID, because EHRs send both (Epic sends ICD-10-CM as
``urn:oid:2.16.840.1.113883.6.90``). ICD-10-CM and ICD-9-CM codes are compared without the dot;
ICD-10-CM structure (is this a category? which codes lie under it?) comes from the
``simple_icd_10_cm`` library rather than from tables of our own.
"""
from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

with warnings.catch_warnings():  # the library imports pkg_resources, which warns on import
    warnings.simplefilter("ignore")
    import simple_icd_10_cm as icd10cm_lib

VSAC_DIR = Path(__file__).with_name("vsac")

SNOMED = "http://snomed.info/sct"
ICD10CM = "http://hl7.org/fhir/sid/icd-10-cm"
ICD9CM = "http://hl7.org/fhir/sid/icd-9-cm"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
LOINC = "http://loinc.org"
ATC = "http://www.whocc.no/atc"

# Every spelling of a system we read -> its canonical URI. WHO ICD-10 shares ICD-10-CM's
# categories for the chapters we read (F, G, I, K, O, Q, R, Z), so it is read as ICD-10-CM.
SYSTEM_ALIASES = {
    SNOMED: SNOMED, "urn:oid:2.16.840.1.113883.6.96": SNOMED, "http://snomed.info/id": SNOMED,
    ICD10CM: ICD10CM, "urn:oid:2.16.840.1.113883.6.90": ICD10CM,
    "http://hl7.org/fhir/sid/icd-10": ICD10CM, "urn:oid:2.16.840.1.113883.6.3": ICD10CM,
    ICD9CM: ICD9CM, "urn:oid:2.16.840.1.113883.6.103": ICD9CM, "urn:oid:2.16.840.1.113883.6.2": ICD9CM,
    "http://hl7.org/fhir/sid/icd-9": ICD9CM,
    RXNORM: RXNORM, "urn:oid:2.16.840.1.113883.6.88": RXNORM,
    LOINC: LOINC, "urn:oid:2.16.840.1.113883.6.1": LOINC,
    ATC: ATC, "urn:oid:2.16.840.1.113883.6.73": ATC,
}
# Systems whose codes are hierarchical by prefix: a listed code also covers the codes under it.
PREFIX_SYSTEMS = (ICD10CM, ICD9CM, ATC)
SHORT_NAMES = {SNOMED: "SNOMED CT", ICD10CM: "ICD-10-CM", ICD9CM: "ICD-9-CM", RXNORM: "RxNorm",
               LOINC: "LOINC", ATC: "ATC"}
KEYS = {"snomed": SNOMED, "icd10cm": ICD10CM, "icd9cm": ICD9CM, "rxnorm": RXNORM, "loinc": LOINC, "atc": ATC}


def canonical_system(system: str | None) -> str | None:
    if not isinstance(system, str):
        return None
    return SYSTEM_ALIASES.get(system.strip().rstrip("/")) or SYSTEM_ALIASES.get(system.strip())


def normalize(system: str, code: str) -> str:
    code = str(code).strip()
    if system in (ICD10CM, ICD9CM, ATC):
        return code.replace(".", "").upper()
    return code


@dataclass(frozen=True)
class ValueSet:
    id: str
    title: str
    url: str | None
    version: str | None
    expansion: str | None
    source: dict
    rule: str | None
    codes: dict[str, frozenset[str]]        # canonical system -> normalized codes
    displays: dict[tuple[str, str], str]    # (canonical system, normalized code) -> published display

    def contains(self, system: str, code: str) -> bool:
        return code in self.codes.get(system, ())

    def size(self) -> int:
        return sum(len(v) for v in self.codes.values())

    def cite(self) -> str:
        ref = self.url or f"derived from {self.rule}"
        return f"{self.title} ({self.id}, version {self.version}, expansion {self.expansion}; {ref})"


def _read(path: Path) -> ValueSet:
    raw = json.loads(path.read_text())
    codes, displays = {}, {}
    for system, entries in raw["codes"].items():
        canon = canonical_system(system) or system
        codes[canon] = frozenset(normalize(canon, c) for c in entries)
        displays.update({(canon, normalize(canon, c)): d for c, d in entries.items()})
    return ValueSet(raw["id"], raw["title"], raw.get("url"), raw.get("version"), raw.get("expansion"),
                    raw["source"], raw.get("rule"), codes, displays)


@lru_cache(maxsize=1)
def load_valuesets() -> dict[str, ValueSet]:
    """Every value set under vsac/, by id (OID, or ``derived.*`` for a subset derived by a rule)."""
    return {vs.id: vs for vs in (_read(p) for p in sorted(VSAC_DIR.glob("*.json")))}


def icd10cm_valid(code: str) -> bool:
    if not isinstance(code, str):
        return False
    try:
        return bool(icd10cm_lib.is_valid_item(code))
    except (ValueError, TypeError, KeyError):  # malformed input: simply not a valid code
        return False


def icd10cm_leaves_under(code: str) -> list[str]:
    """The billable codes under an ICD-10-CM category or subcategory ([] for a leaf or a bad code)."""
    if not icd10cm_valid(code) or icd10cm_lib.is_leaf(code):
        return []
    return [normalize(ICD10CM, c) for c in icd10cm_lib.get_descendants(code) if icd10cm_lib.is_leaf(c)]
