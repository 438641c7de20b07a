"""Readable labels for intake field paths and values, for people rather than integrators.

Units come from the intake schema's field catalogue, so a label never disagrees with validation.
"""
from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from typing import Any

from schemas.intake import IntakeSchema, catalogue

SECTIONS: dict[str, str] = {
    "treatment": "Treatment",
    "patient": "Patient",
    "vitals": "Vital signs",
    "psychiatric_history": "Psychiatric history",
    "substance_use": "Substance use",
    "medical_history": "Medical history",
    "medications": "Medications",
    "allergies": "Allergies",
    "prior_ketamine": "Prior ketamine treatment",
}

# Only names that humanising would get wrong or leave unclear; the rest read well as they are.
FIELDS: dict[str, str] = {
    "subject_id": "Subject reference",
    "rems_enrolled": "Enrolled in the esketamine REMS",
    "observation_2h_arranged": "2-hour observation arranged",
    "transport_home_arranged": "Transport home arranged",
    "age_years": "Age",
    "systolic_bp": "Systolic blood pressure",
    "diastolic_bp": "Diastolic blood pressure",
    "measured_at": "Measured at",
    "suicidal_plan_or_intent": "Suicidal plan or intent",
    "last_suicide_attempt": "Last suicide attempt",
    "disorder": "Use disorder",
    "class": "Class",
    "aneurysmal_vascular_disease": "Aneurysmal vascular disease",
    "arteriovenous_malformation": "Arteriovenous malformation",
    "elevated_intracranial_pressure": "Elevated intracranial pressure",
    "elevated_intraocular_pressure": "Elevated intraocular pressure",
    "ketamine": "Ketamine",
    "esketamine": "Esketamine",
}

VALUES: dict[str, str] = {
    "iv_ketamine": "IV ketamine",
    "esketamine_nasal": "Esketamine nasal spray",
    "treatment_resistant_depression": "treatment-resistant depression",
    "major_depression_with_suicidality": "major depression with suicidality",
    "ptsd": "PTSD",
    "ssri": "SSRI",
    "snri": "SNRI",
    "maoi": "MAOI",
    "pcp": "PCP",
}

_CATALOGUE = catalogue()
_INDEX = re.compile(r"\[(\d+)\]")


def humanize(name: str) -> str:
    text = name.replace("_", " ").strip()
    return text[:1].upper() + text[1:]


def field_label(name: str) -> str:
    return FIELDS.get(name) or SECTIONS.get(name) or humanize(name)


def _unit(path: str) -> str | None:
    info = _CATALOGUE.get(path)
    if info is None and "[" in path:
        # substance_use[0].last_use: the item field under its list.
        head, _, tail = _INDEX.sub("", path).partition(".")
        parent = _CATALOGUE.get(head)
        info = (parent.items or {}).get(tail) if parent else None
    return info.unit if info else None


def path_label(path: str) -> str:
    """``substance_use[0].last_use`` -> ``Substance use 1 › Last use``."""
    parts = []
    for part in path.split("."):
        match = re.fullmatch(r"([^\[]+)((?:\[\d+\])*)", part)
        name, indexes = (match.group(1), match.group(2)) if match else (part, "")
        label = field_label(name)
        for index in _INDEX.findall(indexes):
            label += f" {int(index) + 1}"
        parts.append(label)
    return " › ".join(parts)


def format_value(value: Any, path: str | None = None) -> str:
    if value is None:
        return "not recorded"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (int, float)):
        unit = _unit(path) if path else None
        return f"{value} {unit}" if unit else str(value)
    if isinstance(value, (list, tuple)):
        return ", ".join(format_value(v) for v in value) if value else "none"
    if isinstance(value, dict):
        return "; ".join(f"{field_label(k)}: {format_value(v)}" for k, v in value.items())
    if isinstance(value, str):
        when = _parse_time(value)
        if when is not None:
            return when
        return VALUES.get(value) or value.replace("_", " ")
    return str(value)


def _parse_time(text: str) -> str | None:
    if re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
        return text
    if re.fullmatch(r"\d{4}-\d{2}-\d{2}T[\d:.]+(Z|[+-]\d{2}:\d{2})", text):
        try:
            return format_time(dt.datetime.fromisoformat(text.replace("Z", "+00:00")))
        except ValueError:
            return None
    return None


def format_time(value: dt.datetime) -> str:
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.timezone.utc)
    return value.astimezone(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


@dataclass(frozen=True)
class Row:
    path: str
    label: str
    value: str


@dataclass(frozen=True)
class Table:
    """A list of objects (substance use, medications) as rows under shared column headings."""
    columns: list[tuple[str, str]]       # (field name, label)
    rows: list[list[Row]]


@dataclass(frozen=True)
class Section:
    key: str
    title: str
    rows: list[Row]
    table: Table | None = None


def intake_sections(intake: dict) -> list[Section]:
    """The intake in the schema's order: one section per group, lists as tables."""
    schema = IntakeSchema()
    sections: list[Section] = []
    for name, field in schema.fields.items():
        key = field.data_key or name
        if key == "subject_id" or key not in intake:
            continue
        value = intake[key]
        title = SECTIONS.get(key, humanize(key))
        if isinstance(value, dict):
            rows = [Row(f"{key}.{k}", field_label(k), format_value(v, f"{key}.{k}")) for k, v in value.items()]
            sections.append(Section(key, title, rows))
        elif isinstance(value, list) and all(isinstance(item, dict) for item in value):
            columns: list[str] = []
            for item in value:
                columns += [k for k in item if k not in columns]
            rows = [[Row(f"{key}[{i}].{c}", field_label(c), format_value(item.get(c), f"{key}[{i}].{c}"))
                     for c in columns] for i, item in enumerate(value)]
            sections.append(Section(key, title, [], Table([(c, field_label(c)) for c in columns], rows)))
        else:
            sections.append(Section(key, title, [Row(key, title, format_value(value, key))]))
    # Lists (full-width tables) after the groups of single values, so that the page reads in the
    # order it is laid out, with no gaps in the grid.
    return [s for s in sections if s.table is None] + [s for s in sections if s.table is not None]


def iso_time(value: dt.datetime | str) -> str:
    """The machine-readable form for <time datetime=…>; stored times without a zone are UTC."""
    if isinstance(value, str):
        return value
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.timezone.utc)
    return value.astimezone(dt.timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


# --- answers to missing data (the re-screen form) -----------------------------------------------

@dataclass(frozen=True)
class AnswerField:
    """One input of the re-screen form: a path the decision reported as missing."""
    path: str
    label: str
    kind: str                    # bool | int | str | date | datetime | ...
    choices: tuple | None
    unit: str | None

    @property
    def input_id(self) -> str:
        return "answer-" + re.sub(r"[^A-Za-z0-9_-]", "-", self.path)

    @property
    def name(self) -> str:
        return "answer." + self.path


def _info(path: str):
    info = _CATALOGUE.get(path)
    if info is None and "[" in path:
        head, _, tail = _INDEX.sub("", path).partition(".")
        parent = _CATALOGUE.get(head)
        info = (parent.items or {}).get(tail) if parent else None
    return info


def answer_fields(missing: list[str]) -> list[AnswerField]:
    out = []
    for path in missing:
        info = _info(path)
        out.append(AnswerField(path, path_label(path), info.kind if info else "str",
                               tuple(info.choices) if info and info.choices else None,
                               info.unit if info else None))
    return out


def read_answers(*, body_missing: list[str], form) -> tuple[dict, dict[str, str]]:
    """The answers typed into the re-screen form, in their JSON types (the same shape the API
    takes), and what could not be read, by ``answers.<path>``. Empty inputs are left out."""
    answers: dict[str, Any] = {}
    errors: dict[str, str] = {}
    for field in answer_fields(body_missing):
        raw = (form.get(field.name) or "").strip()
        if not raw:
            continue
        if field.kind == "bool":
            if raw not in ("yes", "no"):
                errors["answers." + field.path] = f"{field.label}: choose yes or no."
                continue
            answers[field.path] = raw == "yes"
        elif field.kind in ("int", "float", "number"):
            try:
                answers[field.path] = int(raw) if field.kind == "int" else float(raw)
            except ValueError:
                errors["answers." + field.path] = f"{field.label}: enter a number."
        else:
            answers[field.path] = raw
    return answers, errors
