"""Hypothesis strategies for intakes, derived from the intake contract itself.

Every field of ``schemas.intake.IntakeSchema`` is generated from its marshmallow definition
(enums from ``OneOf``, numbers from ``Range``, list lengths from ``Length``, absent / null /
present for optional fields), so a field added to the contract is generated without touching
this module. The two rules that live outside field definitions are honoured here by
construction: diastolic below systolic, and no date after ``AS_OF`` (the tests' "today",
which is in the past). Values are JSON ("wire") form: what an intake system sends.

Numbers are drawn both from the whole range and from around the thresholds the shipped rule
pack compares them with, so that boundaries are crossed far more often than chance would.
"""
from __future__ import annotations

import copy
import datetime as dt
import functools

from hypothesis import strategies as st
from marshmallow import Schema, fields, validate

from schemas.intake import IntakeSchema
from service.policy import conditions as C
from service.policy.loader import load_pack
from service.ruleset import default_rules_path
from tests.conftest import AS_OF

EARLIEST = dt.date(1990, 1, 1)
# Offsets an intake system might send; fixed ones, so no time zone database is needed.
OFFSETS = tuple(dt.timezone(dt.timedelta(minutes=m)) for m in (0, 330, -480, 60, -210, 840))
# Lists are bounded by the contract at 100 items; a handful exercises every any_item rule.
LIST_CAP = 4


@functools.lru_cache(maxsize=1)
def thresholds() -> dict[str, tuple[int, ...]]:
    """Numeric operands per field path in the shipped pack, with their neighbours."""
    found: dict[str, set[int]] = {}

    def walk(cond: C.Condition, prefix: str) -> None:
        if isinstance(cond, (C.AllOf, C.AnyOf)):
            for item in cond.items:
                walk(item, prefix)
        elif isinstance(cond, C.Not):
            walk(cond.item, prefix)
        elif isinstance(cond, C.Leaf):
            if cond.op == "any_item":
                walk(cond.operand, prefix + cond.path + ".")
            elif isinstance(cond.operand, int) and not isinstance(cond.operand, bool):
                found.setdefault(prefix + cond.path, set()).update(
                    cond.operand + d for d in (-1, 0, 1))

    for rule in load_pack(default_rules_path()).rules:
        walk(rule.when, "")
    return {path: tuple(sorted(values)) for path, values in found.items()}


def _range(field: fields.Field) -> tuple[int | None, int | None]:
    for v in field.validators:
        if isinstance(v, validate.Range):
            return v.min, v.max
    return None, None


def _length(field: fields.Field) -> tuple[int, int | None]:
    for v in field.validators:
        if isinstance(v, validate.Length):
            return v.min or 0, v.max
    return 0, None


def _choices(field: fields.Field) -> tuple | None:
    for v in field.validators:
        if isinstance(v, validate.OneOf):
            return tuple(v.choices)
    return None


def _dates() -> st.SearchStrategy[dt.date]:
    # Half the time within the last ~15 months, where the "within N months/days" rules turn.
    today = AS_OF.date()
    return st.one_of(
        st.dates(EARLIEST, today),
        st.dates(today - dt.timedelta(days=460), today),
    )


def _datetimes() -> st.SearchStrategy[str]:
    naive_as_of = AS_OF.replace(tzinfo=None)
    recent = st.datetimes(naive_as_of - dt.timedelta(days=60), naive_as_of - dt.timedelta(days=1))
    anytime = st.datetimes(dt.datetime(EARLIEST.year, 1, 1), naive_as_of - dt.timedelta(days=1))
    # A local wall time a day before AS_OF is in the past in every offset above.
    return st.builds(
        lambda when, tz: when.replace(microsecond=0, tzinfo=tz).isoformat(),
        st.one_of(recent, anytime), st.sampled_from(OFFSETS),
    )


def field_values(field: fields.Field, path: str, complete: bool) -> st.SearchStrategy:
    """Wire values for one field (never None: absence and null are decided by the caller)."""
    if isinstance(field, fields.Nested):
        return schema_values(field.schema, path + ".", complete)
    if isinstance(field, fields.List):
        low, high = _length(field)
        inner = field_values(field.inner, path, complete)
        return st.lists(inner, min_size=low, max_size=min(high or LIST_CAP, LIST_CAP))
    if isinstance(field, fields.Boolean):
        return st.booleans()
    if isinstance(field, fields.Integer):
        low, high = _range(field)
        whole = st.integers(low, high)
        near = [v for v in thresholds().get(path, ()) if (low is None or v >= low) and (high is None or v <= high)]
        return st.one_of(whole, st.sampled_from(near)) if near else whole
    if isinstance(field, fields.DateTime):  # before Date: DateTime is not a Date subclass, but be explicit
        return _datetimes()
    if isinstance(field, fields.Date):
        return _dates().map(dt.date.isoformat)
    if isinstance(field, fields.String):
        choices = _choices(field)
        if choices:
            return st.sampled_from(choices)
        for v in field.validators:
            if isinstance(v, validate.Regexp):
                low, high = _length(field)
                return st.from_regex(v.regex, fullmatch=True).filter(lambda s: low <= len(s) <= (high or 10**6))
        low, high = _length(field)
        return st.text(min_size=max(low, 1), max_size=min(high or 40, 40))
    raise TypeError(f"no strategy for {type(field).__name__} at {path}: add one to tests/strategies.py")


def schema_values(schema: Schema, prefix: str = "", complete: bool = False) -> st.SearchStrategy[dict]:
    """An object of ``schema``: required fields always; optional ones absent, null or present.
    ``complete`` makes every field present and non-null (the intake of a thorough clinic)."""
    required: dict[str, st.SearchStrategy] = {}
    optional: dict[str, st.SearchStrategy] = {}
    for name, field in schema.fields.items():
        wire = field.data_key or name
        values = field_values(field, prefix + wire, complete)
        if field.required or complete:
            required[wire] = values
        else:
            optional[wire] = st.one_of(st.none(), values) if field.allow_none else values
    return st.fixed_dictionaries(required, optional=optional).map(_consistent)


def _consistent(obj: dict) -> dict:
    """The cross-field rules of the contract: diastolic below systolic; no date of a last suicide
    attempt with "never attempted"; no adverse events on ketamine with "never treated"; the
    yes/no severe hepatic impairment agrees with the Child-Pugh grade."""
    sbp, dbp = obj.get("systolic_bp"), obj.get("diastolic_bp")
    if isinstance(sbp, int) and isinstance(dbp, int) and dbp >= sbp:
        obj["diastolic_bp"] = sbp - 1  # systolic >= 50, so this stays within 20..200
    if obj.get("prior_suicide_attempt") is False and obj.get("last_suicide_attempt") is not None:
        obj["last_suicide_attempt"] = None
    if obj.get("previously_treated") is False and obj.get("adverse_events"):
        obj["adverse_events"] = []
    if obj.get("severe_hepatic_impairment") is not None and obj.get("hepatic_impairment") is not None:
        obj["severe_hepatic_impairment"] = obj["hepatic_impairment"] == "severe"
    return obj


@functools.lru_cache(maxsize=1)
def clean_fixtures() -> tuple[dict, ...]:
    """The pack's clean fixtures: every field filled with a value that triggers no rule."""
    return tuple(load_pack(default_rules_path()).fixtures.values())


def _editable(schema: Schema, prefix: str = "") -> dict[str, fields.Field]:
    """Every field path an edit may touch: objects, lists and leaves (not list items)."""
    out: dict[str, fields.Field] = {}
    for name, field in schema.fields.items():
        path = prefix + (field.data_key or name)
        out[path] = field
        if isinstance(field, fields.Nested):
            out.update(_editable(field.schema, path + "."))
    return out


@st.composite
def near_clean_intakes(draw, max_edits: int = 3) -> dict:
    """A clean fixture with a few fields changed, removed or nulled: mostly clean ``eligible``
    and single-reason decisions, the neighbourhood where a rule's boundary shows."""
    intake = copy.deepcopy(draw(st.sampled_from(clean_fixtures())))
    editable = _editable(IntakeSchema())
    for path in draw(st.lists(st.sampled_from(sorted(editable)), max_size=max_edits, unique=True)):
        field = editable[path]
        *parents, leaf = path.split(".")
        holder = intake
        for part in parents:
            if not isinstance(holder.get(part), dict):
                holder[part] = {}  # editing inside an object the fixture or an earlier edit removed
            holder = holder[part]
        choices = ["set", "set"] + ([] if field.required else ["remove"]) + (["null"] if field.allow_none else [])
        action = draw(st.sampled_from(choices))
        if action == "remove":
            holder.pop(leaf, None)
        elif action == "null":
            holder[leaf] = None
        else:
            holder[leaf] = draw(field_values(field, path, complete=False))
        if isinstance(holder, dict):
            _consistent(holder)
    # Editing inside a removed object may have re-created it without its required fields.
    treatment = intake.setdefault("treatment", {})
    treatment.setdefault("route", "iv_ketamine")
    treatment.setdefault("indication", "treatment_resistant_depression")
    return intake


def intakes(kind: str = "any") -> st.SearchStrategy[dict]:
    """Valid raw intakes: ``sparse`` (many fields absent or null: mostly ``incomplete``),
    ``complete`` (every field known), ``near_clean`` (a clean fixture and a few edits), or
    ``any`` of these."""
    if kind == "any":
        return st.one_of(intakes("near_clean"), intakes("sparse"), intakes("complete"))
    if kind == "near_clean":
        return near_clean_intakes()
    return schema_values(IntakeSchema(), "", complete=(kind == "complete"))
