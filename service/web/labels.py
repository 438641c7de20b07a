"""Readable labels for intake field paths and values, for people rather than integrators.

Labels, units and the words for values come from the field catalog of the served rules
(``fields.yaml``), so a label never disagrees with validation and an editor's new field is
labelled without Python.
"""
from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from typing import Any

from flask import current_app, has_app_context

from schemas.catalog import Catalog, humanize

_INDEX = re.compile(r"\[(\d+)\]")


def catalog() -> Catalog:
    """The field catalog of the rules being served (a reload may bring new words), or the
    installation's outside a request."""
    if has_app_context():
        holder = current_app.extensions.get("rulesets")
        pack = getattr(getattr(holder, "current", None), "pack", None)
        if pack is not None and pack.catalog is not None:
            return pack.catalog
    from schemas.intake import SHIPPED
    return SHIPPED


def field_label(name: str, path: str | None = None) -> str:
    """The catalog's label for the field at ``path`` (``vitals.systolic_bp``), else the name as words."""
    definition = catalog().definition(path or name)
    return definition.label if definition is not None else humanize(name)


def question(path: str) -> str | None:
    """The question a clinician asks to fill in a missing field (from the catalog), if any."""
    definition = catalog().definition(path)
    return definition.question if definition is not None else None


def _unit(path: str) -> str | None:
    definition = catalog().definition(path)
    return definition.unit if definition is not None else None


def path_label(path: str) -> str:
    """``substance_use[0].last_use`` -> ``Substance use 1 › Last use``."""
    parts = []
    so_far = ""
    for part in path.split("."):
        match = re.fullmatch(r"([^\[]+)((?:\[\d+\])*)", part)
        name, indexes = (match.group(1), match.group(2)) if match else (part, "")
        so_far = f"{so_far}.{name}" if so_far else name
        label = field_label(name, so_far)
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
        return "; ".join(f"{field_label(k, f'{path}.{k}' if path else k)}: {format_value(v, f'{path}.{k}' if path else None)}"
                         for k, v in value.items())
    if isinstance(value, str):
        when = _parse_time(value)
        if when is not None:
            return when
        return catalog().value_labels.get(value) or value.replace("_", " ")
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
    known = list(catalog().fields)
    # The catalog's order; a field a newer catalog removed still shows (the record is history).
    order = [k for k in known if k in intake] + [k for k in intake if k not in known]
    sections: list[Section] = []
    for key in order:
        if key == "subject_id":
            continue
        value = intake[key]
        title = field_label(key, key)
        if isinstance(value, dict):
            rows = [Row(f"{key}.{k}", field_label(k, f"{key}.{k}"), format_value(v, f"{key}.{k}")) for k, v in value.items()]
            sections.append(Section(key, title, rows))
        elif isinstance(value, list) and all(isinstance(item, dict) for item in value):
            columns: list[str] = []
            for item in value:
                columns += [k for k in item if k not in columns]
            rows = [[Row(f"{key}[{i}].{c}", field_label(c, f"{key}.{c}"), format_value(item.get(c), f"{key}[{i}].{c}"))
                     for c in columns] for i, item in enumerate(value)]
            sections.append(Section(key, title, [], Table([(c, field_label(c, f"{key}.{c}")) for c in columns], rows)))
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
    flat = catalog().flat  # the served rules' catalog: a field added on reload gets its input
    info = flat.get(path)
    if info is None and "[" in path:
        head, _, tail = _INDEX.sub("", path).partition(".")
        parent = flat.get(head)
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
