"""The rule language's operators, one table entry each (OPA's ``RegisterBuiltinFunc`` habit).

An entry says everything the service knows about an operator: how a rule file writes its
operand, what it means in Python (the reference semantics and the explanations), its negation,
its durable-rules form, which fields lint lets it test, and its line in docs/rules.md.
service.policy.conditions, service.engine.durable, service.policy.lint, bench/zen_pack.py and
the docs read this table; adding an operator is adding an entry here (and its tests).

Structural operators (``any_item``/``all_items``: a condition over each item of a list) carry
their forms here too; the walk into the items stays with the code that walks conditions.
"""
from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Callable

from dateutil.relativedelta import relativedelta

# The most engine conditions (OR-of-AND alternatives) one rule may compile to: durable-rules
# fails an assert that fires more than 64 conditions (error 303), and every shard keeps one for
# its catch-all. Lint refuses a larger rule; the durable backend packs shards of this size.
MAX_ALTERNATIVES = 63

# Derived properties the fact builder adds beside each date field, and beside each list.
DAYS_SUFFIX = "__days_ago"
MONTHS_SUFFIX = "__months_ago"
COUNT_SUFFIX = "__count"

# What an operand is in a rule file: one plain value, a non-empty list of plain values,
# true/false, a whole number of days or months, or a condition over one item of a list.
VALUE, VALUES, BOOL, COUNT, CONDITION = "value", "values", "bool", "count", "condition"
# Which fields lint lets an operator test: a plain (non-date) value, a number, a list of plain
# values, a date, a list of records, or any field.
SCALAR, NUMBER, VALUE_LIST, DATE, RECORDS, ANY = "scalar", "number", "value list", "date", "records", "any"

# Durable-rules form: (path, operand, compile a nested condition under a prefix) -> literal.
DurableForm = Callable[[str, Any, Callable[[Any, str], dict]], dict]
# ZEN expression form (bench): (path, operand, compile a nested condition under a scope) -> text.
ZenForm = Callable[[str, Any, Callable[[Any, str], str]], str]


@dataclass(frozen=True)
class Operator:
    name: str
    operand: str                      # VALUE | VALUES | BOOL | COUNT | CONDITION
    field: str                        # SCALAR | NUMBER | VALUE_LIST | DATE | RECORDS | ANY (lint typing)
    # Python meaning on a present value: (value, operand, as_of) -> held. None: structural
    # (any_item/all_items walk the items) or an engine-only form.
    evaluate: Callable[[Any, Any, dt.datetime], bool] | None
    negation: str | None              # the operator that holds exactly when this one does not (on a present value)
    durable: DurableForm | None       # None: rewritten before compiling (see conditions.to_dnf)
    zen: ZenForm | None = None
    public: bool = True               # False: produced by the compiler, never written in a rule file
    on: str = ""                      # docs/rules.md: what it applies to
    example: str = ""                 # docs/rules.md: an example (the first operator of a row gives it)


# --- Python meaning -----------------------------------------------------------------------------

def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def equal(value: Any, operand: Any) -> bool:
    """Equal and of the same type (True is not 1), numbers compared as numbers."""
    return value == operand and type(value) is type(operand) or (
        _number(value) and _number(operand) and value == operand)


def _ordered(compare: Callable[[Any, Any], bool]) -> Callable[[Any, Any, dt.datetime], bool]:
    def evaluate(value: Any, operand: Any, _as_of: dt.datetime) -> bool:
        try:
            return compare(value, operand)
        except TypeError:
            return False
    return evaluate


def _contains_any(value: Any, operand: Any, _as_of: dt.datetime) -> bool:
    return isinstance(value, list) and any(equal(item, v) for item in value for v in operand)


def _contains_none(value: Any, operand: Any, _as_of: dt.datetime) -> bool:
    return isinstance(value, list) and not any(equal(item, v) for item in value for v in operand)


def age(value: Any, as_of: dt.datetime) -> tuple[float, float]:
    """(days, months) elapsed from a date/datetime to ``as_of``. Months are calendar months
    plus the remaining days as a fraction below one, so ``within_months: 12`` is exact."""
    if isinstance(value, str):
        value = dt.datetime.fromisoformat(value) if "T" in value else dt.date.fromisoformat(value)
    return _age(value, as_of)


@lru_cache(maxsize=4096)
def _age(value: dt.date, as_of: dt.datetime) -> tuple[float, float]:
    # Cached: the fact builder and every rule's explanation ask the same few dates of one
    # screening, and calendar arithmetic is the dearest part of a date comparison.
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=dt.timezone.utc)
        days = (as_of - value).total_seconds() / 86400.0
        start = value.astimezone(dt.timezone.utc).date()
    else:
        days = float((as_of.date() - value).days)
        start = value
    delta = relativedelta(as_of.date(), start)
    months = delta.years * 12 + delta.months + (delta.days / 32.0 if delta.days else 0.0)
    if days < 0:
        months = -months if months > 0 else months
    return days, months


def _elapsed(unit: str, within: bool) -> Callable[[Any, Any, dt.datetime], bool]:
    def evaluate(value: Any, operand: Any, as_of: dt.datetime) -> bool:
        days, months = age(value, as_of)
        amount = days if unit == "days" else months
        return amount <= operand if within else amount > operand
    return evaluate


# --- durable-rules and ZEN forms --------------------------------------------------------------

def _zen_value(v: Any) -> str:
    return json.dumps(v)  # numbers, true/false and "quoted" text read the same in ZEN


def _zen_list(values: Any) -> str:
    return "[" + ", ".join(map(_zen_value, values)) + "]"


def _durable_order(engine_op: str) -> DurableForm:
    return lambda path, v, _sub: {engine_op: {path: v}}


def _zen_compare(symbol: str) -> ZenForm:
    return lambda path, v, _sub: f"({path} != null and {path} {symbol} {_zen_value(v)})"


def _date_forms(unit: str, within: bool) -> tuple[DurableForm, ZenForm]:
    suffix = DAYS_SUFFIX if unit == "days" else MONTHS_SUFFIX
    engine_op, symbol = ("$lte", "<=") if within else ("$gt", ">")
    return (lambda path, v, _sub: {engine_op: {path + suffix: v}},
            lambda path, v, _sub: f"({path + suffix} != null and {path + suffix} {symbol} {v})")


def _zen_contains(found: bool) -> ZenForm:
    def form(path: str, v: Any, _sub) -> str:
        test = f"some({path}, # in {_zen_list(v)})"
        return f"({path} != null and {test})" if found else f"({path} != null and not {test})"
    return form


# --- the table --------------------------------------------------------------------------------

def _entries() -> list[Operator]:
    ordered = [(name, NUMBER, _ordered(fn), neg, eng, sym) for name, fn, neg, eng, sym in (
        ("gt", lambda a, b: a > b, "lte", "$gt", ">"), ("gte", lambda a, b: a >= b, "lt", "$gte", ">="),
        ("lt", lambda a, b: a < b, "gte", "$lt", "<"), ("lte", lambda a, b: a <= b, "gt", "$lte", "<="))]
    dates = []
    for name, unit, within, neg in (("within_days", "days", True, "older_than_days"),
                                    ("within_months", "months", True, "older_than_months"),
                                    ("older_than_days", "days", False, "within_days"),
                                    ("older_than_months", "months", False, "within_months")):
        durable, zen = _date_forms(unit, within)
        dates.append(Operator(name, COUNT, DATE, _elapsed(unit, within), neg, durable, zen,
                              on="dates, against the day of the screening",
                              example="`vitals.measured_at: {older_than_days: 30}`" if name == "within_days" else ""))
    return [
        Operator("eq", VALUE, SCALAR, lambda v, o, _: equal(v, o), "ne",
                 lambda path, v, _sub: {path: v}, _zen_compare("=="),
                 on="any value", example="`psychiatric_history.psychosis: {eq: active}`"),
        Operator("ne", VALUE, SCALAR, lambda v, o, _: not equal(v, o), "eq",
                 lambda path, v, _sub: {"$neq": {path: v}}, _zen_compare("!="), on="any value"),
        *[Operator(name, VALUE, field, fn, neg, _durable_order(eng), _zen_compare(sym), on="numbers",
                   example="`vitals.diastolic_bp: {gt: 100}`" if name == "gt" else "")
          for name, field, fn, neg, eng, sym in ordered],
        Operator("in", VALUES, SCALAR, lambda v, o, _: any(equal(v, x) for x in o), "not_in",
                 lambda path, v, _sub: {"$or": [{path: x} for x in v]},
                 lambda path, v, _sub: f"({path} != null and {path} in {_zen_list(v)})",
                 on="a list of values", example="`medications: {any_item: {class: {in: [maoi, stimulant]}}}`"),
        Operator("not_in", VALUES, SCALAR, lambda v, o, _: not any(equal(v, x) for x in o), "in",
                 lambda path, v, _sub: {"$and": [{"$neq": {path: x}} for x in v]},
                 lambda path, v, _sub: f"({path} != null and not ({path} in {_zen_list(v)}))", on="a list of values"),
        # exists is the one operator that speaks about absence: the Evaluator and the engine ask
        # it of the field itself, present or not; its negation flips the operand.
        Operator("exists", BOOL, ANY, None, "exists",
                 lambda path, v, _sub: {"$ex" if v else "$nex": {path: 1}},
                 lambda path, v, _sub: f"({path} {'!=' if v else '=='} null)",
                 on="`true`/`false`: present and not null", example="`patient.pregnant: {exists: false}`"),
        *dates,
        Operator("any_item", CONDITION, RECORDS, None, "all_items",
                 lambda path, v, sub: {"$iany": {path: sub(v, "$i.")}},
                 lambda path, v, sub: f"({path} != null and some({path}, {sub(v, '#.')}))",
                 on="lists of records; paths inside are relative to one item",
                 example="`substance_use: {any_item: {all: [{disorder: {eq: true}}, {status: {eq: active}}]}}`"),
        Operator("contains_any", VALUES, VALUE_LIST, _contains_any, "contains_none", None, _zen_contains(True),
                 on="lists of plain values",
                 example="`prior_ketamine.adverse_events: {contains_any: [psychosis, cystitis]}`"),
        Operator("contains_none", VALUES, VALUE_LIST, _contains_none, "contains_any",
                 lambda path, v, _sub: {"$iall": {path: {"$and": [{"$neq": {"$i": x}} for x in v]}}},
                 _zen_contains(False), on="lists of plain values"),
        # Produced by the compiler (conditions.to_nnf / to_dnf), never written in a rule file.
        Operator("all_items", CONDITION, RECORDS, None, "any_item",
                 lambda path, v, sub: {"$iall": {path: sub(v, "$i.")}},
                 lambda path, v, sub: f"({path} != null and all({path}, {sub(v, '#.')}))", public=False),
        Operator("contains", VALUE, VALUE_LIST, None, None,
                 lambda path, v, _sub: {"$iany": {path: {"$i": v}}}, public=False),
        Operator("empty", VALUE, ANY, None, None,
                 lambda path, _v, _sub: {path + COUNT_SUFFIX: 0}, public=False),
    ]


TABLE: dict[str, Operator] = {op.name: op for op in _entries()}
# The operators a rule file may use, in the order the docs and error messages list them.
PUBLIC: tuple[str, ...] = tuple(name for name, op in TABLE.items() if op.public)


def get(name: str) -> Operator:
    return TABLE[name]


def docs_table() -> str:
    """The operator table of docs/rules.md: one row per run of operators that apply to the same thing."""
    rows: list[tuple[list[str], Operator]] = []
    for name in PUBLIC:
        op = TABLE[name]
        if rows and rows[-1][1].on == op.on:
            rows[-1][0].append(name)
        else:
            rows.append(([name], op))
    lines = ["| operator | on | example |", "|---|---|---|"]
    lines += [f"| {', '.join(f'`{n}`' for n in names)} | {first.on} | {first.example} |" for names, first in rows]
    return "\n".join(lines)
