"""The intake contract: what an intake system sends to be screened.

Derived from the field catalog of the shipped rule pack (``rules/ketamine-screening/fields.yaml``):
this module writes no field by hand. A running service validates with the catalog of the ruleset it serves (``Ruleset.intake_schema``), so a
field an editor adds is taken on reload; what is here is the same contract for code and tests
that have no ruleset at hand.

Integrators build against this shape. Fields may be added (optional), never renamed or made
required (``screening rules diff`` and lint classify catalog changes). Clinical fields are
optional on purpose: a field that a rule needs and the intake lacks makes the decision
``incomplete`` (safety first), it is not a validation error. Impossible values (a systolic
pressure of 900, a date in the future) are validation errors.
"""
from __future__ import annotations

from pathlib import Path

import yaml
from marshmallow import Schema

from schemas.catalog import (
    CATALOG_FILE,
    FUTURE_TOLERANCE,
    MAX_RECORDS,
    Catalog,
    FieldInfo,
    StrictBoolean,
    StrictSchema,
    load,
    parse,
)

__all__ = ["IntakeSchema", "FieldInfo", "StrictBoolean", "StrictSchema", "FUTURE_TOLERANCE", "MAX_LIST_ITEMS",
           "SHIPPED", "catalogue", "shipped_catalog_path"]

MAX_LIST_ITEMS = MAX_RECORDS


def shipped_catalog_path() -> Path:
    """The catalog of the shipped pack. Not $SCREENING_RULES_DIR's: nothing reads the
    environment at import (service.config.Settings is read once, by the app or the command);
    a pack of another directory brings its own ``fields.yaml``, which its ruleset validates with."""
    return Path(__file__).resolve().parent.parent / "rules" / "ketamine-screening" / CATALOG_FILE


def _load_shipped() -> tuple[Catalog, str | None]:
    path = shipped_catalog_path()
    try:
        return load(path), None
    except (ValueError, OSError) as exc:  # CatalogError, an unreadable or not-YAML file
        # The editor's own file is broken. The tools must still start, to say where: `rules lint`
        # reports every problem with its line, and the service refuses the pack (or keeps the
        # last good one). Until it is fixed, only what every intake has is known here.
        return _core_catalog(path), f"{path}: {exc}"


def _core_catalog(path: Path) -> Catalog:
    """subject_id and the treatment's route and indication, read as leniently as possible."""
    def values(name: str) -> list:
        try:
            found = yaml.safe_load(path.read_text(encoding="utf-8"))["fields"]["treatment"]["fields"][name]["values"]
        except Exception:  # noqa: BLE001 - any shape at all: fall back to a placeholder
            found = None
        ok = isinstance(found, list) and found and all(isinstance(v, str) and v for v in found)
        return list(found) if ok else ["unreadable"]
    choice = {"type": "choice", "required": True}
    return parse({"fields": {
        "subject_id": {"type": "text", "required": True, "max_length": 64},
        "treatment": {"type": "group", "required": True, "fields": {
            "route": {**choice, "values": values("route")}, "indication": {**choice, "values": values("indication")}}},
    }})


SHIPPED, SHIPPED_PROBLEM = _load_shipped()

def _values(path: str) -> tuple[str, ...]:
    try:
        return SHIPPED.values(path)
    except KeyError:  # a broken catalog (SHIPPED_PROBLEM): nothing beyond the core is known
        return ()


IntakeSchema: type[Schema] = SHIPPED.intake_schema_class

ROUTES = _values("treatment.route")
INDICATIONS = _values("treatment.indication")
PSYCHOSIS = _values("psychiatric_history.psychosis")
SUICIDAL_IDEATION = _values("psychiatric_history.suicidal_ideation")
SUBSTANCE_STATUS = _values("substance_use.status")
SUBSTANCES = _values("substance_use.substance")
MEDICATION_CLASSES = _values("medications.class")
SEX_AT_BIRTH = _values("patient.sex_at_birth")
HEPATIC_IMPAIRMENT = _values("medical_history.hepatic_impairment")
KETAMINE_ADVERSE_EVENTS = _values("prior_ketamine.adverse_events")


def catalogue(schema: Schema | None = None, prefix: str = "") -> dict[str, FieldInfo]:
    """Every field path of the shipped intake (``vitals.systolic_bp``) with what a rule may do
    with it: the catalog's own view, so the linter can never disagree with validation."""
    if schema is not None or prefix:
        raise TypeError("catalogue() describes the shipped catalog; use Catalog.flat for another")
    return SHIPPED.flat
