"""Rule conditions: the parsed form of a rule's ``when``, and their meaning.

The same tree is compiled for the production engine (``service.engine``) and evaluated here in
plain Python to explain a decision: which leaves held, with which values. The two must agree;
the test suite checks that they do on every shipped example.

Semantics that editors rely on: a comparison on an absent or null field is false (``ne`` and
``not_in`` too), and ``not`` is pushed down to the leaves, so it never turns "unknown" into
"true". Use ``exists`` to speak about unknown values.
"""
from __future__ import annotations

import datetime as dt
import difflib
from dataclasses import dataclass, field
from typing import Any, Iterator, Union

from service.policy import operators as O
from service.policy.operators import DAYS_SUFFIX as DAYS_SUFFIX  # re-exported: the fact builder's names
from service.policy.operators import MONTHS_SUFFIX as MONTHS_SUFFIX
from service.policy.operators import age as age

# The operators and what each means live in one table (service.policy.operators); these names
# are views of it for the code that groups them.
OPERATORS = O.PUBLIC
COMPARISONS = tuple(n for n in OPERATORS if O.TABLE[n].operand == O.VALUE)
MEMBERSHIP = tuple(n for n in OPERATORS if O.TABLE[n].operand == O.VALUES and O.TABLE[n].field == O.SCALAR)
LIST_MEMBERSHIP = tuple(n for n in OPERATORS if O.TABLE[n].field == O.VALUE_LIST)  # on lists of plain values
DATE_OPS = tuple(n for n in OPERATORS if O.TABLE[n].field == O.DATE)
NEGATION = {n: op.negation for n, op in O.TABLE.items()
            if op.negation and op.operand in (O.VALUE, O.VALUES, O.COUNT)}


@dataclass(frozen=True)
class Leaf:
    """``path <op> operand``. For ``any_item``/``all_items`` the operand is a condition over one item."""

    path: str
    op: str
    operand: Any = None
    # Where the leaf stands in its file, for lint messages: (line, column).
    pos: tuple[int, int] | None = field(default=None, compare=False)


@dataclass(frozen=True)
class AllOf:
    items: tuple["Condition", ...]


@dataclass(frozen=True)
class AnyOf:
    items: tuple["Condition", ...]


@dataclass(frozen=True)
class Not:
    item: "Condition"


@dataclass(frozen=True)
class Finding:
    name: str
    negated: bool = False
    pos: tuple[int, int] | None = field(default=None, compare=False)


Condition = Union[Leaf, AllOf, AnyOf, Not, Finding]


class ConditionSyntaxError(ValueError):
    """A ``when`` block that is not a condition. ``where`` is the key path inside the condition."""

    def __init__(self, message: str, where: tuple = ()):
        super().__init__(message)
        self.where = where


def parse_all(raw: Any, positions: dict | None = None, base: tuple = ()) -> tuple[Condition | None, list[ConditionSyntaxError]]:
    """Parse a condition and collect every syntax error in it (not only the first): an editor
    sees all the mistakes of a rule at once. The condition is None when there is any."""
    errors: list[ConditionSyntaxError] = []
    cond = parse(raw, (), positions, base, errors)
    return (None if errors else cond), errors


def parse(raw: Any, where: tuple = (), positions: dict | None = None, base: tuple = (),
          errors: list | None = None) -> Condition:
    """Parse the YAML form of a condition. ``positions`` maps document paths to (line, col).
    With ``errors``, syntax errors are appended there and parsing goes on with the siblings."""
    if errors is not None and not isinstance(errors, _Collect):
        try:
            return parse(raw, where, positions, base, _Collect(errors))
        except ConditionSyntaxError as exc:
            errors.append(exc)
            return AllOf(())
    pos = (positions or {}).get(base + where)
    if not isinstance(raw, dict) or len(raw) != 1:
        raise ConditionSyntaxError(
            "a condition is a mapping with exactly one key: all, any, not, finding, or a field path", where
        )
    (key, value), = raw.items()
    if key in ("all", "any"):
        if not isinstance(value, list) or not value:
            raise ConditionSyntaxError(f"'{key}' takes a non-empty list of conditions", where + (key,))
        items = tuple(parse(v, where + (key, i), positions, base, _child(errors)) for i, v in enumerate(value))
        return AllOf(items) if key == "all" else AnyOf(items)
    if key == "not":
        return Not(parse(value, where + ("not",), positions, base, _child(errors)))
    if key == "finding":
        if not isinstance(value, str) or not value:
            raise ConditionSyntaxError("'finding' takes the name of a finding", where + ("finding",))
        return Finding(value, pos=pos)
    if not isinstance(key, str):
        raise ConditionSyntaxError(f"{key!r} is not a field path", where)
    return _parse_leaf(key, value, where, positions, base, errors)


class _Collect(list):
    """The caller's error list, marking a parse that collects rather than stops."""

    def __init__(self, target: list):
        super().__init__()
        self.target = target


def _child(errors: list | None) -> list | None:
    return errors.target if isinstance(errors, _Collect) else None


def _parse_leaf(path: str, ops: Any, where: tuple, positions: dict | None, base: tuple,
                errors: list | None = None) -> Condition:
    if not isinstance(ops, dict) or not ops:
        raise ConditionSyntaxError(
            f"field '{path}' takes a mapping of operators, e.g. {{gt: 140}}; operators: {', '.join(OPERATORS)}",
            where + (path,),
        )
    leaves = []
    for op, operand in ops.items():
        at = where + (path, op)
        pos = (positions or {}).get(base + at)
        if op not in OPERATORS:
            close = difflib.get_close_matches(str(op), OPERATORS, n=1, cutoff=0.6)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            raise ConditionSyntaxError(f"unknown operator '{op}'{hint}; operators: {', '.join(OPERATORS)}", at)
        kind = O.TABLE[op].operand
        if kind == O.CONDITION:
            operand = parse(operand, at, positions, base, _child(errors))
        elif kind == O.VALUES:
            if not isinstance(operand, list) or not operand:
                raise ConditionSyntaxError(f"'{op}' takes a non-empty list", at)
            if any(isinstance(v, (dict, list)) or v is None for v in operand):
                raise ConditionSyntaxError(f"'{op}' takes a list of plain values", at)
            operand = tuple(operand)
        elif kind == O.BOOL:
            if not isinstance(operand, bool):
                raise ConditionSyntaxError(f"'{op}' takes true or false", at)
        elif kind == O.COUNT:
            if isinstance(operand, bool) or not isinstance(operand, int) or operand < 0:
                raise ConditionSyntaxError(f"'{op}' takes a whole number of days or months, 0 or more", at)
        elif isinstance(operand, (dict, list)) or operand is None:
            raise ConditionSyntaxError(f"'{op}' takes a plain value (number, text, true/false)", at)
        leaves.append(Leaf(path, op, operand, pos))
    return leaves[0] if len(leaves) == 1 else AllOf(tuple(leaves))


# --- structure -------------------------------------------------------------------------------

def walk(cond: Condition) -> Iterator[Condition]:
    """Every node of the tree, depth first; ``any_item`` bodies included."""
    yield cond
    if isinstance(cond, (AllOf, AnyOf)):
        for item in cond.items:
            yield from walk(item)
    elif isinstance(cond, Not):
        yield from walk(cond.item)
    elif isinstance(cond, Leaf) and cond.op == "any_item":
        yield from walk(cond.operand)


def fields_read(cond: Condition, prefix: str = "") -> list[str]:
    """Intake paths a condition reads, in order of appearance; item fields as ``array.field``."""
    out: list[str] = []

    def visit(c: Condition, pre: str) -> None:
        if isinstance(c, (AllOf, AnyOf)):
            for i in c.items:
                visit(i, pre)
        elif isinstance(c, Not):
            visit(c.item, pre)
        elif isinstance(c, Leaf):
            path = pre + c.path
            if path not in out:
                out.append(path)
            if c.op == "any_item":
                visit(c.operand, path + ".")

    visit(cond, prefix)
    return out


def findings_used(cond: Condition) -> list[str]:
    return [c.name for c in walk(cond) if isinstance(c, Finding)]


def to_nnf(cond: Condition, negate: bool = False) -> Condition:
    """Push negation down to the leaves (see the module docstring for why)."""
    if isinstance(cond, Not):
        return to_nnf(cond.item, not negate)
    if isinstance(cond, AllOf):
        items = tuple(to_nnf(i, negate) for i in cond.items)
        return AnyOf(items) if negate else AllOf(items)
    if isinstance(cond, AnyOf):
        items = tuple(to_nnf(i, negate) for i in cond.items)
        return AllOf(items) if negate else AnyOf(items)
    if isinstance(cond, Finding):
        return Finding(cond.name, cond.negated != negate, cond.pos)
    # Leaf
    if cond.op == "any_item":
        if negate:
            return Leaf(cond.path, "all_items", to_nnf(cond.operand, True), cond.pos)
        return Leaf(cond.path, "any_item", to_nnf(cond.operand), cond.pos)
    if not negate:
        return cond
    if cond.op == "exists":
        return Leaf(cond.path, "exists", not cond.operand, cond.pos)
    return Leaf(cond.path, NEGATION[cond.op], cond.operand, cond.pos)


def to_dnf(cond: Condition) -> list[list[Condition]]:
    """OR of ANDs over an NNF tree. ``in`` expands to one alternative per value, and an
    ``any_item`` over an OR splits into one ``any_item`` per alternative, so that every
    alternative is a plain conjunction (one engine condition)."""
    if isinstance(cond, AnyOf):
        return [conj for item in cond.items for conj in to_dnf(item)]
    if isinstance(cond, AllOf):
        result: list[list[Condition]] = [[]]
        for item in cond.items:
            result = [left + right for left in result for right in to_dnf(item)]
        return result
    if isinstance(cond, Leaf):
        if cond.op == "in":
            return [[Leaf(cond.path, "eq", v, cond.pos)] for v in cond.operand]
        if cond.op == "not_in":
            return [[Leaf(cond.path, "ne", v, cond.pos) for v in cond.operand]]
        if cond.op == "contains_any":
            return [[Leaf(cond.path, "contains", v, cond.pos)] for v in cond.operand]
        if cond.op == "contains_none":
            # as all_items: an empty list contains none, which the engine must be told apart
            return [[Leaf(cond.path, "empty", None, cond.pos)], [cond]]
        if cond.op == "any_item":
            return [[Leaf(cond.path, "any_item", AllOf(tuple(conj)), cond.pos)] for conj in to_dnf(cond.operand)]
        if cond.op == "all_items":
            # Every item satisfies C: true for an empty list too, which the engine's item
            # operator does not see, so "empty" is its own alternative. C stays whole inside.
            return [[Leaf(cond.path, "empty", None, cond.pos)], [cond]]
    return [[cond]]


def alternatives(cond: Condition) -> int:
    """How many engine conditions a rule compiles to: its DNF size."""
    return len(to_dnf(to_nnf(cond)))


# --- evaluation in Python (explanations, evidence, and the reference semantics) ---------------

MISSING = object()


def lookup(data: Any, path: str) -> Any:
    """Value at a dotted path, or MISSING when absent or null."""
    cur = data
    for part in path.split("."):
        if not isinstance(cur, dict) or cur.get(part) is None:
            return MISSING
        cur = cur[part]
    return cur


@dataclass
class LeafResult:
    path: str
    op: str
    operand: Any
    value: Any
    held: bool


def _compare(op: str, value: Any, operand: Any, as_of: dt.datetime | None = None) -> bool:
    """``value <op> operand`` by the operator's table entry; false on an absent value."""
    if value is MISSING:
        return False
    evaluate = O.TABLE[op].evaluate
    if evaluate is None:
        raise ValueError(f"not a comparison: {op}")
    return evaluate(value, operand, as_of)


class Evaluator:
    """Evaluates conditions against an intake in Python, recording every leaf it looked at."""

    def __init__(self, intake: dict, as_of: dt.datetime, findings: set[str]):
        self.intake = intake
        self.as_of = as_of
        self.findings = findings

    def holds(self, cond: Condition, scope: Any = None, prefix: str = "", trace: list | None = None) -> bool:
        scope = self.intake if scope is None else scope
        if isinstance(cond, AllOf):
            results = [self.holds(i, scope, prefix, trace) for i in cond.items]
            return all(results)
        if isinstance(cond, AnyOf):
            results = [self.holds(i, scope, prefix, trace) for i in cond.items]
            return any(results)
        if isinstance(cond, Not):
            # Same meaning as the engine: negation pushed down, absent stays false.
            return self.holds(to_nnf(cond.item, True), scope, prefix, trace)
        if isinstance(cond, Finding):
            return (cond.name in self.findings) != cond.negated
        return self._leaf(cond, scope, prefix, trace)

    def _leaf(self, leaf: Leaf, scope: Any, prefix: str, trace: list | None) -> bool:
        value = lookup(scope, leaf.path)
        full = prefix + leaf.path
        if leaf.op == "exists":
            held = (value is not MISSING) == leaf.operand
        elif leaf.op in ("any_item", "all_items"):
            if value is MISSING or not isinstance(value, list):
                held = False
            else:
                matches = [
                    i for i, item in enumerate(value)
                    if self.holds(leaf.operand, item, f"{full}[{i}].", trace)
                ]
                held = bool(matches) if leaf.op == "any_item" else len(matches) == len(value)
        else:
            held = _compare(leaf.op, value, leaf.operand, self.as_of)
        if trace is not None and leaf.op not in ("any_item", "all_items"):
            trace.append(LeafResult(full, leaf.op, leaf.operand, None if value is MISSING else value, held))
        return held

    def witness(self, cond: Condition, scope: Any = None, prefix: str = "") -> list | None:
        """The leaves that make ``cond`` hold (from every branch that holds), or None if it
        does not hold. Findings appear as their name. This is a reason's evidence."""
        scope = self.intake if scope is None else scope
        if isinstance(cond, AllOf):
            parts = [self.witness(i, scope, prefix) for i in cond.items]
            return None if any(p is None for p in parts) else [x for p in parts for x in p]
        if isinstance(cond, AnyOf):
            parts = [p for p in (self.witness(i, scope, prefix) for i in cond.items) if p is not None]
            return [x for p in parts for x in p] if parts else None
        if isinstance(cond, Not):
            return self.witness(to_nnf(cond.item, True), scope, prefix)
        if isinstance(cond, Finding):
            return ([] if cond.negated else [cond.name]) if self.holds(cond) else None
        if cond.op in ("any_item", "all_items"):
            value = lookup(scope, cond.path)
            if value is MISSING or not isinstance(value, list):
                return None
            full = prefix + cond.path
            parts = [self.witness(cond.operand, item, f"{full}[{i}].") for i, item in enumerate(value)]
            held = [p for p in parts if p is not None]
            if cond.op == "any_item" and not held or cond.op == "all_items" and len(held) != len(parts):
                return None
            return [x for p in held for x in p]
        trace: list[LeafResult] = []
        return trace if self._leaf(cond, scope, prefix, trace) else None


# --- three-valued (Kleene) evaluation: is a rule decided on the data at hand? ---------------
#
# The engine reads a leaf on an absent field as false. That is the right answer for "did the
# rule fire" on an NNF tree (a fired rule never depends on an absent value, since no leaf on an
# absent value holds), but it cannot tell "did not fire" from "could not be decided". Kleene
# logic can: a leaf on an absent field is UNKNOWN (``exists`` excepted: whether a field was
# given is always known), an undecided finding is UNKNOWN, and all/any combine as min/max of
# F < U < T. TRUE means fired whatever the absent values are, FALSE means not fired whatever
# they are, UNKNOWN means the answer depends on them: the decision is incomplete, and the
# unknown leaves that the answer hinges on are the questions to ask.

FALSE, UNKNOWN, TRUE = 0, 1, 2


@dataclass
class Kleene:
    """The three-valued outcome of a condition and the absent paths that left it UNKNOWN
    (item fields as ``substance_use[0].status``; findings by name in ``findings``)."""

    value: int
    missing: list[str] = field(default_factory=list)
    findings: list[str] = field(default_factory=list)


class KleeneEvaluator:
    """Evaluates NNF conditions in three values. ``unknown_findings`` are findings whose
    concluding rule was itself undecided; every other finding is concluded or not."""

    def __init__(self, intake: dict, as_of: dt.datetime, findings: set[str], unknown_findings: set[str]):
        self.intake = intake
        self.as_of = as_of
        self.findings = findings
        self.unknown_findings = unknown_findings

    def evaluate(self, nnf: Condition) -> Kleene:
        out = Kleene(FALSE)
        out.value = self._eval(nnf, self.intake, "", out)
        if out.value != UNKNOWN:
            out.missing, out.findings = [], []
        return out

    def _eval(self, cond: Condition, scope: Any, prefix: str, out: Kleene) -> int:
        # Collect missing paths only from the branches whose value is UNKNOWN: a FALSE conjunct
        # or a TRUE disjunct decides its node, and then nothing below it needs asking.
        if isinstance(cond, (AllOf, AnyOf)):
            results = []
            for item in cond.items:
                sub = Kleene(FALSE)
                results.append((self._eval(item, scope, prefix, sub), sub))
            values = [v for v, _ in results]
            value = min(values) if isinstance(cond, AllOf) else max(values)
            if value == UNKNOWN:
                for v, sub in results:
                    if v == UNKNOWN:
                        _merge(out, sub)
            return value
        if isinstance(cond, Not):  # never in NNF; kept total for safety
            return self._eval(to_nnf(cond.item, True), scope, prefix, out)
        if isinstance(cond, Finding):
            if cond.name in self.unknown_findings:
                if cond.name not in out.findings:
                    out.findings.append(cond.name)
                return UNKNOWN
            return TRUE if (cond.name in self.findings) != cond.negated else FALSE
        return self._leaf(cond, scope, prefix, out)

    def _leaf(self, leaf: Leaf, scope: Any, prefix: str, out: Kleene) -> int:
        value = lookup(scope, leaf.path)
        full = prefix + leaf.path
        if leaf.op == "exists":
            return TRUE if (value is not MISSING) == leaf.operand else FALSE
        if value is MISSING:
            if full not in out.missing:
                out.missing.append(full)
            return UNKNOWN
        if leaf.op in ("any_item", "all_items"):
            if not isinstance(value, list):
                return FALSE
            results = []
            for i, item in enumerate(value):
                sub = Kleene(FALSE)
                results.append((self._eval(leaf.operand, item, f"{full}[{i}].", sub), sub))
            if leaf.op == "any_item":
                result = max((v for v, _ in results), default=FALSE)
            else:
                result = min((v for v, _ in results), default=TRUE)
            if result == UNKNOWN:
                for v, sub in results:
                    if v == UNKNOWN:
                        _merge(out, sub)
            return result
        if leaf.op in DATE_OPS:
            days, months = age(value, self.as_of)
            amount = days if leaf.op.endswith("_days") else months
            held = amount <= leaf.operand if leaf.op.startswith("within") else amount > leaf.operand
            return TRUE if held else FALSE
        return TRUE if _compare(leaf.op, value, leaf.operand) else FALSE


def _merge(out: Kleene, sub: Kleene) -> None:
    out.missing.extend(p for p in sub.missing if p not in out.missing)
    out.findings.extend(f for f in sub.findings if f not in out.findings)


def reads(cond: Condition) -> tuple[frozenset[str], dict[str, frozenset[str]]]:
    """What a condition reads: intake paths outside lists, and for each list it looks into
    with any_item, the item fields it reads there. Screening uses it to find, cheaply, the
    rules that read something this intake lacks."""
    paths: set[str] = set()
    items: dict[str, set[str]] = {}

    def visit(c: Condition) -> None:
        if isinstance(c, (AllOf, AnyOf)):
            for i in c.items:
                visit(i)
        elif isinstance(c, Not):
            visit(c.item)
        elif isinstance(c, Leaf):
            paths.add(c.path)
            if c.op in ("any_item", "all_items"):
                items.setdefault(c.path, set()).update(p.split(".")[0] for p in fields_read(c.operand))

    visit(cond)
    return frozenset(paths), {k: frozenset(v) for k, v in items.items()}
