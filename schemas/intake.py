"""The intake contract: what an intake system sends to be screened.

Derived from the field catalog of the shipped rule pack (``rules/ketamine-screening/fields.yaml``,
or ``fields.yaml`` in ``$SCREENING_RULES_DIR``): this module writes no field by hand. A running
service validates with the catalog of the ruleset it serves (``Ruleset.intake_schema``), so a
field an editor adds is taken on reload; what is here is the same contract for code and tests
that have no ruleset at hand.

Integrators build against this shape. Fields may be added (optional), never renamed or made
required (``screening rules diff`` and lint classify catalog changes). Clinical fields are
optional on purpose: a field that a rule needs and the intake lacks makes the decision
``incomplete`` (safety first), it is not a validation error. Impossible values (a systolic
pressure of 900, a date in the future) are validation errors.
"""
from __future__ import annotations

import os
from pathlib import Path

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
)

__all__ = ["IntakeSchema", "FieldInfo", "StrictBoolean", "StrictSchema", "FUTURE_TOLERANCE", "MAX_LIST_ITEMS",
           "SHIPPED", "catalogue", "shipped_catalog_path"]

MAX_LIST_ITEMS = MAX_RECORDS


def shipped_catalog_path() -> Path:
    """The catalog of the pack this installation serves by default."""
    configured = os.environ.get("SCREENING_RULES_DIR")
    if configured and (Path(configured) / CATALOG_FILE).is_file():
        return Path(configured) / CATALOG_FILE
    return Path(__file__).resolve().parent.parent / "rules" / "ketamine-screening" / CATALOG_FILE


SHIPPED: Catalog = load(shipped_catalog_path())

IntakeSchema: type[Schema] = SHIPPED.intake_schema_class

ROUTES = SHIPPED.values("treatment.route")
INDICATIONS = SHIPPED.values("treatment.indication")
PSYCHOSIS = SHIPPED.values("psychiatric_history.psychosis")
SUICIDAL_IDEATION = SHIPPED.values("psychiatric_history.suicidal_ideation")
SUBSTANCE_STATUS = SHIPPED.values("substance_use.status")
SUBSTANCES = SHIPPED.values("substance_use.substance")
MEDICATION_CLASSES = SHIPPED.values("medications.class")
SEX_AT_BIRTH = SHIPPED.values("patient.sex_at_birth")
HEPATIC_IMPAIRMENT = SHIPPED.values("medical_history.hepatic_impairment")
KETAMINE_ADVERSE_EVENTS = SHIPPED.values("prior_ketamine.adverse_events")


def catalogue(schema: Schema | None = None, prefix: str = "") -> dict[str, FieldInfo]:
    """Every field path of the shipped intake (``vitals.systolic_bp``) with what a rule may do
    with it: the catalog's own view, so the linter can never disagree with validation."""
    if schema is not None or prefix:
        raise TypeError("catalogue() describes the shipped catalog; use Catalog.flat for another")
    return SHIPPED.flat
