"""The field catalog: the intake vocabulary as data (``fields.yaml`` beside a rule pack).

Policy editors own it. Everything that knows what an intake field is comes from here: the
marshmallow schema that validates every intake (``intake_schema``), hence the OpenAPI and JSON
Schema contracts, what rules may name (``flat``, the linter's knowledge), the words a person
reads (labels, questions, help) and, by reference, how FHIR answers a field.

The strict behaviour of the contract is built in, not left to each file: unknown fields are
refused with their path, booleans are JSON true/false only, integers are whole and ranged with
their unit, dates and times are ISO (times with a zone) and not in the future, text is Unicode
with a bounded length, lists are bounded.
"""
from __future__ import annotations

import datetime as dt
import difflib
import hashlib
import json
import re
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from marshmallow import (
    RAISE,
    Schema,
    ValidationError,
    fields,
    validate,
    validates_schema,
)

from schemas.patterns import FullMatch

CATALOG_FILE = "fields.yaml"
TYPES = ("boolean", "integer", "text", "choice", "date", "datetime", "group", "list")
ITEM_TYPES = ("choice", "record")
# Clock skew tolerated between the intake system and this service.
FUTURE_TOLERANCE = dt.timedelta(minutes=5)
MAX_RECORDS = 100
# What each key means is in fields.yaml's header; which keys each type takes:
_COMMON = ("type", "required", "label", "question", "help", "description", "fhir", "empty_when_false")
AGREES_KEYS = ("field", "true_when")
_KEYS = {
    "boolean": _COMMON + ("agrees_with",),
    "integer": _COMMON + ("min", "max", "unit", "less_than"),
    "text": _COMMON + ("max_length", "pattern", "pattern_error"),
    "choice": _COMMON + ("values", "value_labels"),
    "date": _COMMON + ("future",),
    "datetime": _COMMON + ("future",),
    "group": _COMMON + ("fields", "component"),
    "list": _COMMON + ("item", "max_items"),
    "record": ("type", "fields", "component"),
}
FHIR_KEYS = ("resource", "mapping", "loinc", "snomed", "valueset")
NAME_CHARS = set("abcdefghijklmnopqrstuvwxyz0123456789_")
# lint's kinds (what a rule may do with a value) by catalog type
KINDS = {"boolean": "bool", "integer": "int", "text": "str", "choice": "str", "date": "date",
         "datetime": "datetime", "group": "object", "list": "list"}


class CatalogError(ValueError):
    """A catalog that cannot be used: ``problems`` is a list of (key path, message)."""

    def __init__(self, problems: list[tuple[tuple, str]]):
        self.problems = problems
        super().__init__("; ".join(f"{'.'.join(map(str, k)) or 'file'}: {m}" for k, m in problems[:5]))


@dataclass(frozen=True)
class FieldDef:
    """One field as the catalog defines it. ``path`` is dotted; inside a list's records it is
    relative to one record (``class``), as rules name it inside ``any_item``."""

    path: str
    name: str
    type: str
    spec: dict = field(compare=False, repr=False)
    children: dict[str, "FieldDef"] | None = field(default=None, compare=False, repr=False)
    item: "FieldDef | None" = field(default=None, compare=False, repr=False)

    @property
    def required(self) -> bool:
        return bool(self.spec.get("required"))

    @property
    def label(self) -> str:
        return self.spec.get("label") or humanize(self.name)

    @property
    def question(self) -> str | None:
        return self.spec.get("question")

    @property
    def values(self) -> tuple[str, ...] | None:
        if self.type == "choice":
            return tuple(self.spec["values"])
        if self.type == "list" and self.item is not None and self.item.type == "choice":
            return self.item.values
        return None

    @property
    def unit(self) -> str | None:
        return self.spec.get("unit")


class FieldInfo:
    """What a rule may do with one intake field: its kind, allowed values, and item fields."""

    __slots__ = ("path", "kind", "choices", "items", "unit", "definition")

    def __init__(self, path: str, kind: str, choices: tuple | None = None,
                 items: dict[str, "FieldInfo"] | None = None, unit: str | None = None,
                 definition: FieldDef | None = None):
        self.path = path
        self.kind = kind  # bool | int | str | date | datetime | list | object
        self.choices = choices
        self.items = items
        self.unit = unit
        self.definition = definition


def humanize(name: str) -> str:
    text = name.replace("_", " ").strip()
    return text[:1].upper() + text[1:]


def _camel(name: str) -> str:
    return "".join(part[:1].upper() + part[1:] for part in name.split("_"))


# --- reading and checking a catalog --------------------------------------------------------

def parse(data: Any) -> "Catalog":
    """A catalog from the YAML document's data; raises CatalogError with every problem."""
    problems: list[tuple[tuple, str]] = []
    if not isinstance(data, dict) or not isinstance(data.get("fields"), dict) or not data["fields"]:
        raise CatalogError([((), "a field catalog is a mapping with `fields:`, a mapping of field names")])
    for key in data:
        if key != "fields":
            problems.append(((key,), f"unknown key '{key}'{_did_you_mean(str(key), ['fields'])}"))
    top = _parse_fields(data["fields"], "", ("fields",), problems)
    catalog = Catalog(top, data)
    if not problems:
        _check_cross_fields(catalog, problems)
    if problems:
        raise CatalogError(problems)
    return catalog


def _did_you_mean(word: str, known) -> str:
    close = difflib.get_close_matches(word, list(known), n=1, cutoff=0.6)
    return f"; did you mean '{close[0]}'?" if close else ""


def _parse_fields(raw: Any, prefix: str, where: tuple, problems: list) -> dict[str, FieldDef]:
    out: dict[str, FieldDef] = {}
    if not isinstance(raw, dict) or not raw:
        problems.append((where, "`fields` takes a mapping of field names to their definitions"))
        return out
    for name, spec in raw.items():
        at = where + (name,)
        if not isinstance(name, str) or not name or name[0].isdigit() or not set(name) <= NAME_CHARS:
            problems.append((at, f"field name {name!r} must be snake_case: a-z, 0-9 and _"))
            continue
        parsed = _parse_field(name, spec, prefix + name, at, problems)
        if parsed is not None:
            out[name] = parsed
    return out


def _parse_field(name: str, spec: Any, path: str, at: tuple, problems: list, item: bool = False) -> FieldDef | None:
    if not isinstance(spec, dict):
        problems.append((at, "a field is a mapping with at least `type`"))
        return None
    kind = spec.get("type")
    allowed_types = ITEM_TYPES if item else TYPES
    if kind not in allowed_types:
        problems.append((at + ("type",), f"type {kind!r} is not one of {', '.join(allowed_types)}"
                         f"{_did_you_mean(str(kind), allowed_types)}"))
        return None
    known = _KEYS[kind] if not (item and kind == "choice") else ("type", "values", "value_labels")
    for key in spec:
        if key not in known:
            problems.append((at + (key,), f"'{key}' is not a key of a {kind} field{_did_you_mean(str(key), known)}"
                             f" (keys: {', '.join(known)})"))
    def want(key: str, check, message: str) -> None:
        if key in spec and not check(spec[key]):
            problems.append((at + (key,), message))

    is_int = lambda v: isinstance(v, int) and not isinstance(v, bool)  # noqa: E731
    is_text = lambda v: isinstance(v, str) and v.strip() != ""  # noqa: E731
    want("required", lambda v: isinstance(v, bool), "`required` is true or false")
    for key in ("label", "question", "help", "description", "unit", "pattern_error", "component"):
        want(key, is_text, f"`{key}` is text")
    want("min", is_int, "`min` is a whole number")
    want("max", is_int, "`max` is a whole number")
    want("max_length", lambda v: is_int(v) and v >= 1, "`max_length` is a whole number, 1 or more")
    want("max_items", lambda v: is_int(v) and v >= 1, "`max_items` is a whole number, 1 or more")
    want("less_than", is_text, "`less_than` names another field by its path")
    want("empty_when_false", is_text, "`empty_when_false` names a yes/no field by its path")
    want("agrees_with", lambda v: isinstance(v, dict) and set(v) == set(AGREES_KEYS) and is_text(v["field"])
         and is_text(v["true_when"]), "`agrees_with` is {field: <path of a choice>, true_when: <one of its values>}")
    want("future", lambda v: v == "allowed", "`future: allowed` is the only setting (dates in the future are refused otherwise)")
    if kind == "integer" and is_int(spec.get("min")) and is_int(spec.get("max")) and spec["min"] > spec["max"]:
        problems.append((at + ("min",), f"min {spec['min']} is above max {spec['max']}"))
    if "pattern" in spec:
        try:
            re.compile(spec["pattern"]) if isinstance(spec["pattern"], str) else None
            if not isinstance(spec["pattern"], str):
                problems.append((at + ("pattern",), "`pattern` is a regular expression (text)"))
        except re.error as exc:
            problems.append((at + ("pattern",), f"`pattern` is not a regular expression: {exc}"))
    if "fhir" in spec:
        fhir = spec["fhir"]
        if not isinstance(fhir, dict):
            problems.append((at + ("fhir",), f"`fhir` is a mapping of {', '.join(FHIR_KEYS)}"))
        else:
            for key in fhir:
                if key not in FHIR_KEYS:
                    problems.append((at + ("fhir", key), f"'{key}' is not a key of `fhir`{_did_you_mean(str(key), FHIR_KEYS)}"
                                     f" (keys: {', '.join(FHIR_KEYS)})"))
    if kind == "choice":
        values = spec.get("values")
        if not isinstance(values, list) or not values or not all(is_text(v) for v in values):
            problems.append((at + ("values",), "a choice needs `values`: a non-empty list of text values"))
            return None
        if len(set(values)) != len(values):
            problems.append((at + ("values",), "`values` lists a value twice"))
        labels = spec.get("value_labels", {})
        if not isinstance(labels, dict):
            problems.append((at + ("value_labels",), "`value_labels` maps values to the words a person reads"))
        else:
            for value in labels:
                if value not in values:
                    problems.append((at + ("value_labels", value), f"'{value}' is not one of the field's values"
                                     f"{_did_you_mean(str(value), values)}"))
    if kind in ("group", "record"):
        prefix = "" if kind == "record" else path + "."
        children = _parse_fields(spec.get("fields"), prefix, at + ("fields",), problems)
        return FieldDef(path, name, kind, spec, children=children)
    if kind == "list":
        if "item" not in spec:
            problems.append((at, "a list needs `item`: a choice (with values) or a record (with fields)"))
            return None
        inner = _parse_field(name, spec["item"], path, at + ("item",), problems, item=True)
        return FieldDef(path, name, kind, spec, item=inner)
    return FieldDef(path, name, kind, spec)


def _check_cross_fields(catalog: "Catalog", problems: list) -> None:
    for path, info in catalog.flat.items():
        definition = info.definition
        if definition is None:
            continue
        parent = path.rpartition(".")[0]
        other = definition.spec.get("less_than")
        if other is not None:
            where = catalog.where(path) + ("less_than",)
            target = catalog.flat.get(other)
            if target is None:
                problems.append((where, f"less_than names '{other}', which is not a field{_did_you_mean(other, catalog.flat)}"))
            elif target.kind not in ("int",) or other.rpartition(".")[0] != parent:
                problems.append((where, f"less_than names '{other}': it must be a number in the same group as '{path}'"))
        agrees = definition.spec.get("agrees_with")
        if isinstance(agrees, dict):
            where = catalog.where(path) + ("agrees_with",)
            other, value = agrees.get("field"), agrees.get("true_when")
            target = catalog.flat.get(other)
            if target is None:
                problems.append((where + ("field",), f"agrees_with names '{other}', which is not a field"
                                 f"{_did_you_mean(str(other), catalog.flat)}"))
            elif target.kind != "str" or not target.choices or other.rpartition(".")[0] != parent:
                problems.append((where + ("field",), f"agrees_with names '{other}': it must be a choice in the same "
                                 f"group as '{path}'"))
            elif value not in target.choices:
                problems.append((where + ("true_when",), f"'{value}' is not a value of '{other}'"
                                 f"{_did_you_mean(str(value), target.choices)}"))
        other = definition.spec.get("empty_when_false")
        if other is not None:
            where = catalog.where(path) + ("empty_when_false",)
            target = catalog.flat.get(other)
            if target is None:
                problems.append((where, f"empty_when_false names '{other}', which is not a field"
                                 f"{_did_you_mean(other, catalog.flat)}"))
            elif target.kind != "bool" or other.rpartition(".")[0] != parent or other == path:
                problems.append((where, f"empty_when_false names '{other}': it must be a yes/no field in the same "
                                 f"group as '{path}'"))
    for name in ("subject_id", "treatment"):
        if name not in catalog.fields or not catalog.fields[name].required:
            problems.append((("fields", name), f"'{name}' is part of every intake: it must be defined, with required: true"))
    treatment = catalog.fields.get("treatment")
    for name in ("route", "indication"):
        child = (treatment.children or {}).get(name) if treatment is not None else None
        if child is None or child.type != "choice" or not child.required:
            problems.append((("fields", "treatment", "fields", name),
                             f"'treatment.{name}' is part of every intake: a required choice"))


# --- the catalog --------------------------------------------------------------------------

class Catalog:
    """A checked field catalog. Build with ``parse`` or ``load``."""

    def __init__(self, top: dict[str, FieldDef], raw: dict, source: str = ""):
        self.fields = top
        self.raw = raw
        self.source = source
        # (line, column) of each key in the file, when read from one (for lint messages).
        self.positions: dict = {}

    @cached_property
    def digest(self) -> str:
        body = json.dumps(self.raw, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
        return "sha256:" + hashlib.sha256(body.encode("utf-8")).hexdigest()

    def where(self, path: str) -> tuple:
        """The key path of a field in the YAML document, for problem positions."""
        out: tuple = ("fields",)
        defs = self.fields
        parts = path.split(".")
        for i, part in enumerate(parts):
            out += (part,)
            current = defs.get(part) if defs else None
            if current is None:
                return out
            if current.type == "list" and current.item is not None and i < len(parts) - 1:
                out += ("item", "fields")
                defs = current.item.children or {}
            else:
                out += ("fields",) if i < len(parts) - 1 else ()
                defs = current.children or {}
        return out

    @cached_property
    def flat(self) -> dict[str, FieldInfo]:
        """Every field path (``vitals.systolic_bp``) with what a rule may do with it; a list of
        records carries its item fields relative to one item."""
        return _flatten(self.fields, "")

    def definition(self, path: str) -> FieldDef | None:
        """A field by path, item fields included (``medications.class``); indexes ignored."""
        path = re.sub(r"\[\d+\]", "", path)
        info = self.flat.get(path)
        if info is not None:
            return info.definition
        head = path
        while "." in head:
            head, _, _ = head.rpartition(".")
            parent = self.flat.get(head)
            if parent is not None and parent.items:
                inner = parent.items.get(path[len(head) + 1:])
                return inner.definition if inner else None
        return None

    def values(self, path: str) -> tuple[str, ...]:
        definition = self.definition(path)
        if definition is None or definition.values is None:
            raise KeyError(path)
        return definition.values

    @cached_property
    def value_labels(self) -> dict[str, str]:
        """Every value's words for a person, across the catalog (values are unambiguous)."""
        out: dict[str, str] = {}
        for definition in self._all():
            spec = definition.item.spec if definition.type == "list" and definition.item else definition.spec
            out.update(spec.get("value_labels") or {})
        return out

    def _all(self):
        todo = list(self.fields.values())
        while todo:
            d = todo.pop(0)
            yield d
            if d.children:
                todo.extend(d.children.values())
            if d.item is not None and d.item.children:
                todo.extend(d.item.children.values())

    @cached_property
    def intake_schema_class(self) -> type[Schema]:
        return _schema_class("Intake", self.fields)

    def intake_schema(self) -> Schema:
        return self.intake_schema_class()


def _flatten(defs: dict[str, FieldDef], prefix: str) -> dict[str, FieldInfo]:
    out: dict[str, FieldInfo] = {}
    for name, d in defs.items():
        path = prefix + name
        if d.type == "group":
            out[path] = FieldInfo(path, "object", definition=d)
            out.update(_flatten(d.children or {}, path + "."))
        elif d.type == "list":
            if d.item is not None and d.item.type == "record":
                out[path] = FieldInfo(path, "list", items=_flatten(d.item.children or {}, ""), definition=d)
            else:
                out[path] = FieldInfo(path, "list", choices=d.values, items={}, definition=d)
        else:
            out[path] = FieldInfo(path, KINDS[d.type], d.values, unit=d.unit, definition=d)
    return out


# --- the marshmallow schema -----------------------------------------------------------------

class StrictSchema(Schema):
    class Meta:
        unknown = RAISE
        ordered = True


class StrictBoolean(fields.Boolean):
    """JSON true/false only: "yes", 1 and "true" are not booleans in a clinical record."""

    default_error_messages = {"invalid": "Not a valid boolean: use true or false."}

    def _deserialize(self, value, attr, data, **kwargs):
        if not isinstance(value, bool):
            raise self.make_error("invalid")
        return value


def not_in_future(value: dt.date | dt.datetime | None) -> None:
    if value is None:
        return
    now = dt.datetime.now(dt.timezone.utc)
    if isinstance(value, dt.datetime):
        if value > now + FUTURE_TOLERANCE:
            raise ValidationError("must not be in the future")
    elif value > (now + FUTURE_TOLERANCE).date():
        raise ValidationError("must not be in the future")


def unicode_text(value: str) -> None:
    # JSON can spell an unpaired surrogate ("\ud800"); it is not text, and no encoder (the rules
    # engine, the decision log, a UTF-8 output) accepts it.
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValidationError("must be Unicode text: it holds an unpaired surrogate escape") from None


def _field(d: FieldDef) -> fields.Field:
    spec = d.spec
    required = bool(spec.get("required"))
    common: dict[str, Any] = {"required": True} if required else {"allow_none": True}
    metadata: dict[str, Any] = {}
    if spec.get("description"):
        metadata["description"] = spec["description"]
    if d.type == "boolean":
        return StrictBoolean(**common, metadata=metadata)
    if d.type == "integer":
        unit = spec.get("unit")
        if unit:
            metadata["x-unit"] = unit
        low, high = spec.get("min"), spec.get("max")
        validators = []
        if low is not None or high is not None:
            suffix = f" {unit}" if unit else ""
            if low is not None and high is not None:
                error = f"must be between {{min}} and {{max}}{suffix}"
            elif low is not None:
                error = f"must be at least {{min}}{suffix}"
            else:
                error = f"must be at most {{max}}{suffix}"
            validators.append(validate.Range(low, high, error=error))
        return fields.Integer(strict=True, validate=validators, **common, metadata=metadata)
    if d.type == "text":
        validators: list = [validate.Length(1, spec.get("max_length"))]
        if spec.get("pattern"):
            # A pattern admits only what it matches, the whole value (FullMatch: "pt-1\n" is not
            # "pt-1"), and no surrogate can match a character class.
            validators.append(FullMatch(spec["pattern"], error=spec.get("pattern_error")
                                        or f"must match {spec['pattern']}"))
        else:
            validators.append(unicode_text)
        return fields.String(validate=validators, **common, metadata=metadata)
    if d.type == "choice":
        return fields.String(validate=validate.OneOf(spec["values"]), **common, metadata=metadata)
    if d.type == "date":
        validators = [] if spec.get("future") == "allowed" else [not_in_future]
        return fields.Date(validate=validators, **common, metadata=metadata)
    if d.type == "datetime":
        # Aware times only: a naive time cannot be placed against a freshness rule.
        validators = [] if spec.get("future") == "allowed" else [not_in_future]
        return fields.AwareDateTime(format="iso", validate=validators, **common, metadata=metadata)
    if d.type == "group":
        schema = _schema_class(spec.get("component") or _camel(d.name), d.children or {})
        return fields.Nested(schema, **common, metadata=metadata)
    assert d.type == "list" and d.item is not None  # nosec B101 - parse() guarantees it
    common = {"required": True} if required else {"allow_none": True}
    if d.item.type == "record":
        inner: fields.Field = fields.Nested(_schema_class(d.item.spec.get("component") or _camel(d.name),
                                                          d.item.children or {}))
        limit = spec.get("max_items", MAX_RECORDS)
    else:
        inner = fields.String(validate=validate.OneOf(d.item.spec["values"]))
        limit = spec.get("max_items", len(d.item.spec["values"]))
    return fields.List(inner, validate=validate.Length(max=limit), **common, metadata=metadata)


def _schema_class(component: str, defs: dict[str, FieldDef]) -> type[Schema]:
    attrs: dict[str, Any] = {name: _field(d) for name, d in defs.items()}
    comparisons = [(name, d.spec["less_than"].rpartition(".")[2]) for name, d in defs.items()
                   if d.spec.get("less_than")]
    if comparisons:
        def _less_than(self, data, **_):
            for name, other in comparisons:
                low, high = data.get(name), data.get(other)
                if low is not None and high is not None and low >= high:
                    raise ValidationError(f"must be lower than {other}", field_name=name)
        attrs["_less_than"] = validates_schema(_less_than)
    # "Never attempted" with a date of the last attempt, adverse events on ketamine for a patient
    # never treated with it: contradictions the contract refuses rather than a risk to guess.
    answered_no = [(name, d.spec["empty_when_false"].rpartition(".")[2], d.type == "list")
                   for name, d in defs.items() if d.spec.get("empty_when_false")]
    # An older yes/no answer and the graded answer that replaced it (severe hepatic impairment and
    # the Child-Pugh grade) must agree when both are given.
    agreeing = [(name, d.spec["agrees_with"]["field"].rpartition(".")[2], d.spec["agrees_with"]["true_when"])
                for name, d in defs.items() if d.spec.get("agrees_with")]
    if agreeing:
        def _agrees_with(self, data, **_):
            for name, other, value in agreeing:
                flag, answer = data.get(name), data.get(other)
                if flag is not None and answer is not None and flag != (answer == value):
                    raise ValidationError(f"must agree with {other} (true exactly when it is {value})",
                                          field_name=name)
        attrs["_agrees_with"] = validates_schema(_agrees_with)
    if answered_no:
        def _empty_when_false(self, data, **_):
            for name, flag, is_list in answered_no:
                value = data.get(name)
                if data.get(flag) is False and (bool(value) if is_list else value is not None):
                    raise ValidationError(f"must be {'empty' if is_list else 'null'} when {flag} is false",
                                          field_name=name)
        attrs["_empty_when_false"] = validates_schema(_empty_when_false)
    return type(f"{component}Schema", (StrictSchema,), attrs)


# --- files ------------------------------------------------------------------------------------

def load(path: Path | str) -> Catalog:
    """A catalog file; raises CatalogError (with key paths), or ValueError/OSError when the file
    cannot be read. Positions are not kept: the pack loader reads the file again, with them, to
    report problems by line (this is the fast path for the installation's own catalog)."""
    import yaml

    try:
        data = yaml.load(Path(path).read_text(encoding="utf-8"),  # nosec B506 - a safe loader
                         Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    except yaml.YAMLError as exc:
        raise ValueError(f"not valid YAML: {exc}") from None
    catalog = parse(data)
    catalog.source = str(path)
    return catalog
