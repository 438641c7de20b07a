"""The intake contract: what an intake system sends to be screened.

Integrators build against this shape. Fields may be added (optional), never renamed or made
required. Clinical fields are optional on purpose: a field that a rule needs and the intake
lacks makes the decision ``incomplete`` (safety first), it is not a validation error.
Impossible values (a systolic pressure of 900, a date in the future) are validation errors.
"""
from __future__ import annotations

import datetime as dt

from marshmallow import RAISE, Schema, ValidationError, fields, validate, validates, validates_schema

from schemas.patterns import FullMatch

ROUTES = ("iv_ketamine", "esketamine_nasal")
INDICATIONS = (
    "treatment_resistant_depression",
    "major_depression_with_suicidality",
    "ptsd",
    "chronic_pain",
)
PSYCHOSIS = ("none", "past", "active")
SUICIDAL_IDEATION = ("none", "passive", "active")
SUBSTANCE_STATUS = ("active", "in_remission")
SUBSTANCES = (
    "alcohol", "cannabis", "cocaine", "opioids", "stimulants", "sedatives",
    "ketamine", "pcp", "hallucinogens", "other",
)
MEDICATION_CLASSES = (
    "ssri", "snri", "tricyclic", "maoi", "antipsychotic", "mood_stabilizer",
    "benzodiazepine", "opioid", "stimulant", "theophylline", "sedative", "other",
    # an oral antidepressant of no class above (bupropion, mirtazapine, vortioxetine, trazodone)
    "other_antidepressant",
)
SETTINGS = ("inpatient", "outpatient")
SEX_AT_BIRTH = ("female", "male", "intersex", "unknown")
HEPATIC_IMPAIRMENT = ("none", "mild", "moderate", "severe")
KETAMINE_ADVERSE_EVENTS = ("severe_blood_pressure_rise", "psychosis", "cystitis", "liver_injury")

# Clock skew tolerated between the intake system and this service.
FUTURE_TOLERANCE = dt.timedelta(minutes=5)
MAX_LIST_ITEMS = 100


class StrictBoolean(fields.Boolean):
    """JSON true/false only: "yes", 1 and "true" are not booleans in a clinical record."""

    default_error_messages = {"invalid": "Not a valid boolean: use true or false."}

    def _deserialize(self, value, attr, data, **kwargs):
        if not isinstance(value, bool):
            raise self.make_error("invalid")
        return value


def _opt_bool() -> fields.Boolean:
    return StrictBoolean(allow_none=True)


def _opt_enum(choices: tuple[str, ...]) -> fields.String:
    return fields.String(validate=validate.OneOf(choices), allow_none=True)


def _opt_int(low: int, high: int, unit: str) -> fields.Integer:
    return fields.Integer(
        strict=True,
        allow_none=True,
        validate=validate.Range(low, high, error=f"must be between {{min}} and {{max}} {unit}"),
        metadata={"x-unit": unit},
    )


class StrictSchema(Schema):
    class Meta:
        unknown = RAISE
        ordered = True


class TreatmentSchema(StrictSchema):
    route = fields.String(required=True, validate=validate.OneOf(ROUTES))
    indication = fields.String(required=True, validate=validate.OneOf(INDICATIONS))
    # Esketamine REMS and administration logistics (Spravato label, REMS and Dosage).
    rems_enrolled = _opt_bool()
    observation_2h_arranged = _opt_bool()
    transport_home_arranged = _opt_bool()
    # Where the dose is given: the esketamine REMS enrols patients of outpatient settings only.
    setting = _opt_enum(SETTINGS)


class PatientSchema(StrictSchema):
    age_years = _opt_int(0, 120, "years")
    sex_at_birth = _opt_enum(SEX_AT_BIRTH)
    pregnant = _opt_bool()
    breastfeeding = _opt_bool()


class NotInFutureMixin:
    @staticmethod
    def _check_not_future(value: dt.date | dt.datetime | None) -> None:
        if value is None:
            return
        now = dt.datetime.now(dt.timezone.utc)
        if isinstance(value, dt.datetime):
            if value > now + FUTURE_TOLERANCE:
                raise ValidationError("must not be in the future")
        elif value > (now + FUTURE_TOLERANCE).date():
            raise ValidationError("must not be in the future")


class VitalsSchema(StrictSchema, NotInFutureMixin):
    systolic_bp = _opt_int(50, 300, "mmHg")
    diastolic_bp = _opt_int(20, 200, "mmHg")
    heart_rate = _opt_int(20, 250, "beats/min")
    # Aware timestamps only: a naive time cannot be placed against the 30-day freshness rule.
    measured_at = fields.AwareDateTime(format="iso", allow_none=True)

    @validates("measured_at")
    def _measured_at(self, value, **_):
        self._check_not_future(value)

    @validates_schema
    def _pressures(self, data, **_):
        sbp, dbp = data.get("systolic_bp"), data.get("diastolic_bp")
        if sbp is not None and dbp is not None and dbp >= sbp:
            raise ValidationError("must be lower than systolic_bp", field_name="diastolic_bp")


class PsychiatricHistorySchema(StrictSchema, NotInFutureMixin):
    psychosis = _opt_enum(PSYCHOSIS)
    schizophrenia = _opt_bool()
    schizoaffective_disorder = _opt_bool()
    bipolar_disorder = _opt_bool()
    current_mania = _opt_bool()
    suicidal_ideation = _opt_enum(SUICIDAL_IDEATION)
    suicidal_plan_or_intent = _opt_bool()
    # Ever attempted suicide: false answers "when was the last attempt" (there was none).
    prior_suicide_attempt = _opt_bool()
    last_suicide_attempt = fields.Date(allow_none=True)

    @validates("last_suicide_attempt")
    def _attempt(self, value, **_):
        self._check_not_future(value)

    @validates_schema
    def _attempt_answers(self, data, **_):
        # "Never attempted" with a date of the last attempt is a contradiction, not a risk to guess.
        if data.get("prior_suicide_attempt") is False and data.get("last_suicide_attempt") is not None:
            raise ValidationError("must be null when prior_suicide_attempt is false", field_name="last_suicide_attempt")


class SubstanceUseSchema(StrictSchema, NotInFutureMixin):
    substance = fields.String(required=True, validate=validate.OneOf(SUBSTANCES))
    disorder = _opt_bool()
    status = _opt_enum(SUBSTANCE_STATUS)
    last_use = fields.Date(allow_none=True)

    @validates("last_use")
    def _last_use(self, value, **_):
        self._check_not_future(value)


class MedicalHistorySchema(StrictSchema):
    aneurysmal_vascular_disease = _opt_bool()
    arteriovenous_malformation = _opt_bool()
    intracerebral_hemorrhage = _opt_bool()
    unstable_cardiovascular_disease = _opt_bool()
    severe_hepatic_impairment = _opt_bool()
    elevated_intracranial_pressure = _opt_bool()
    elevated_intraocular_pressure = _opt_bool()
    # Optional additions used by the default pack.
    recent_cardiac_event = _opt_bool()
    cerebrovascular_history = _opt_bool()
    hepatic_impairment = _opt_enum(HEPATIC_IMPAIRMENT)
    uncontrolled_hyperthyroidism = _opt_bool()
    seizure_disorder = _opt_bool()
    sleep_apnea = _opt_bool()
    # COPD or another chronic lung disease that impairs breathing
    chronic_respiratory_disease = _opt_bool()

    @validates_schema
    def _hepatic_answers(self, data, **_):
        # The yes/no "severe" answer and the Child-Pugh grade must agree when both are given.
        flag, grade = data.get("severe_hepatic_impairment"), data.get("hepatic_impairment")
        if flag is not None and grade is not None and flag != (grade == "severe"):
            raise ValidationError("must agree with hepatic_impairment (true exactly when the grade is severe)",
                                  field_name="severe_hepatic_impairment")


def _unicode_text(value: str) -> None:
    # JSON can spell an unpaired surrogate ("\ud800"); it is not text, and no encoder (the rules
    # engine, the decision log, a UTF-8 output) accepts it.
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValidationError("must be Unicode text: it holds an unpaired surrogate escape") from None


class MedicationSchema(StrictSchema):
    name = fields.String(required=True, validate=[validate.Length(1, 200), _unicode_text])
    # "class" is a Python keyword: the attribute is class_, the wire name stays "class".
    class_ = fields.String(
        data_key="class", attribute="class", required=True, validate=validate.OneOf(MEDICATION_CLASSES)
    )


class AllergiesSchema(StrictSchema):
    ketamine = _opt_bool()
    esketamine = _opt_bool()


class PriorKetamineSchema(StrictSchema):
    # Ever treated with ketamine or esketamine: false answers "which adverse events" (none).
    previously_treated = _opt_bool()
    adverse_events = fields.List(
        fields.String(validate=validate.OneOf(KETAMINE_ADVERSE_EVENTS)),
        allow_none=True,
        validate=validate.Length(max=len(KETAMINE_ADVERSE_EVENTS)),
    )

    @validates_schema
    def _treated_answers(self, data, **_):
        # Adverse events on earlier ketamine for a patient never treated with it: a contradiction.
        if data.get("previously_treated") is False and data.get("adverse_events"):
            raise ValidationError("must be empty when previously_treated is false", field_name="adverse_events")


class IntakeSchema(StrictSchema):
    subject_id = fields.String(
        required=True,
        validate=[
            validate.Length(1, 64),
            FullMatch(r"^[A-Za-z0-9][A-Za-z0-9._:-]*$", error="must be an opaque reference of letters, digits, '.', '_', ':' or '-'"),
        ],
        metadata={"description": "Opaque subject reference; never a name or record number that identifies a person."},
    )
    treatment = fields.Nested(TreatmentSchema, required=True)
    patient = fields.Nested(PatientSchema, allow_none=True)
    vitals = fields.Nested(VitalsSchema, allow_none=True)
    psychiatric_history = fields.Nested(PsychiatricHistorySchema, allow_none=True)
    substance_use = fields.List(
        fields.Nested(SubstanceUseSchema), allow_none=True, validate=validate.Length(max=MAX_LIST_ITEMS)
    )
    medical_history = fields.Nested(MedicalHistorySchema, allow_none=True)
    medications = fields.List(
        fields.Nested(MedicationSchema), allow_none=True, validate=validate.Length(max=MAX_LIST_ITEMS)
    )
    allergies = fields.Nested(AllergiesSchema, allow_none=True)
    prior_ketamine = fields.Nested(PriorKetamineSchema, allow_none=True)


# --- the field catalogue: what rule files may name -------------------------------------------

class FieldInfo:
    """What a rule may do with one intake field: its kind, allowed values, and item fields."""

    __slots__ = ("path", "kind", "choices", "items", "unit")

    def __init__(self, path: str, kind: str, choices: tuple | None = None,
                 items: dict[str, "FieldInfo"] | None = None, unit: str | None = None):
        self.path = path
        self.kind = kind  # bool | int | str | date | datetime | list | object
        self.choices = choices
        self.items = items
        self.unit = unit


def _kind_of(field: fields.Field) -> str:
    if isinstance(field, fields.Boolean):
        return "bool"
    if isinstance(field, fields.Integer):
        return "int"
    if isinstance(field, fields.Number):
        return "number"
    if isinstance(field, fields.DateTime):
        return "datetime"
    if isinstance(field, fields.Date):
        return "date"
    if isinstance(field, fields.List):
        return "list"
    if isinstance(field, fields.Nested):
        return "object"
    return "str"


def _choices_of(field: fields.Field) -> tuple | None:
    validators = field.validators if not isinstance(field, fields.List) else field.inner.validators
    for v in validators:
        if isinstance(v, validate.OneOf):
            return tuple(v.choices)
    return None


def catalogue(schema: Schema | None = None, prefix: str = "") -> dict[str, FieldInfo]:
    """Every field path of the intake (``vitals.systolic_bp``), derived from the schema itself
    so that the linter can never disagree with validation."""
    schema = schema or IntakeSchema()
    out: dict[str, FieldInfo] = {}
    for name, field in schema.fields.items():
        wire = field.data_key or name
        path = prefix + wire
        kind = _kind_of(field)
        if kind == "object":
            out[path] = FieldInfo(path, "object")
            out.update(catalogue(field.schema, path + "."))
        elif kind == "list" and isinstance(field.inner, fields.Nested):
            out[path] = FieldInfo(path, "list", items=catalogue(field.inner.schema))
        elif kind == "list":
            out[path] = FieldInfo(path, "list", choices=_choices_of(field), items={})
        else:
            out[path] = FieldInfo(path, kind, _choices_of(field), unit=field.metadata.get("x-unit"))
    return out
