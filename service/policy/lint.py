"""Semantic checks of a rule pack against the intake schema.

Structure errors come from the loader; this module answers "does the rule mean what the
editor thinks": paths that exist, values of the right type and enum, templates that name only
what the rule reads, findings that are defined, used and acyclic, rules small enough for the
engine.
"""
from __future__ import annotations

import difflib
import re

from schemas.catalog import FieldInfo
from service.engine.base import layers
from service.policy import citations as citations_
from service.policy import conditions as C
from service.policy import operators as O
from service.policy.model import Location, Rule, RulePack
from service.policy.problems import Problem

# One rule may compile to at most this many engine conditions (see service.engine.durable).
MAX_ALTERNATIVES = O.MAX_ALTERNATIVES
PLACEHOLDER = re.compile(r"\{([^{}]*)\}")
PLACEHOLDER_PATH = re.compile(r"[a-z_][a-z0-9_]*(\.[a-z_][a-z0-9_]*)*")


def lint(pack: RulePack) -> list[Problem]:
    """Every problem of a pack. Level "note" lists what an editor should know but need not
    fix: each declared optional answer (an absence the pack reads on purpose)."""
    fields = pack.catalog.flat
    problems: list[Problem] = []
    seen: dict[str, Rule] = {}
    for rule in pack.rules:
        if rule.id in seen:
            # Reported against the newer file: that is the edit that made the clash; the older
            # file, untouched, is named as where the id already lives.
            first, second = seen[rule.id], rule
            if _modified(pack, first) > _modified(pack, second):
                first, second = second, first
            problems.append(Problem(second.where("id"), f"duplicate rule id; also defined at {first.location}",
                                    rule.id, code="duplicate-id"))
        else:
            seen[rule.id] = rule
        problems.extend(_lint_rule(rule, fields, pack))
    problems.extend(_lint_findings(pack))
    problems.extend(_lint_messages(pack, fields))
    problems.extend(_lint_optional(pack, fields))
    problems.extend(_lint_tests(pack))
    return problems


def _modified(pack: RulePack, rule: Rule) -> float:
    return pack.modified.get(rule.location.file if rule.location else "", 0.0)


def _suggest(path: str, known: list[str]) -> str:
    close = difflib.get_close_matches(path, known, n=1, cutoff=0.6)
    return f"; did you mean '{close[0]}'?" if close else ""


def _lint_rule(rule: Rule, fields: dict[str, FieldInfo], pack: RulePack) -> list[Problem]:
    out: list[Problem] = []

    def err(message: str, *key, code: str, level: str = "error", pos=None) -> None:
        loc = rule.where(*key)
        if pos:
            loc = type(loc)(loc.file, pos[0], pos[1])
        out.append(Problem(loc, message, rule.id, level, code))

    if not rule.citation:
        err("rule has no citation: every rule must name its source (or say 'software default')", "id", code="citation")
    for problem in citations_.problems(rule.citation or "", pack.citations):
        err(problem, "citation", code="citation")
    declared = {o.path for o in pack.optional}
    for path, pos in _absence_tests(C.to_nnf(rule.when)):
        if path not in declared:
            err(f"the rule fires when '{path}' is absent (exists: false): an unasked question would be read as an "
                f"answer. Compare its value instead (absent is then 'undecided' and the decision asks for it), or "
                f"declare it under 'optional' in pack.yaml with what its absence means", "when", code="absence", pos=pos)
    _lint_condition(rule.when, fields, "", err)
    for i, path in enumerate(rule.requires):
        if path not in fields:
            err(f"requires unknown field '{path}'{_suggest(path, list(fields))}", "requires", i, code="unknown-field")
        elif fields[path].kind == "object":
            err(f"requires '{path}', a group: name the fields inside it", "requires", i, code="unknown-field")
    read = C.fields_read(rule.when)
    for i, path in enumerate(rule.requires):
        if path in fields and path not in read:
            err(f"requires '{path}' but the condition never reads it", "requires", i, code="unused-require", level="warning")
    n = C.alternatives(rule.when)
    if n > MAX_ALTERNATIVES:
        err(f"condition expands to {n} alternatives (OR of ANDs, an 'in' list counting one per value); "
            f"the limit is {MAX_ALTERNATIVES}: split the rule or define a finding", "when", code="too-complex")
    return out


def _absence_tests(cond: C.Condition, prefix: str = "") -> list[tuple[str, tuple | None]]:
    """Every ``exists: false`` of an NNF condition (item fields as ``list.field``)."""
    out: list[tuple[str, tuple | None]] = []
    if isinstance(cond, (C.AllOf, C.AnyOf)):
        for item in cond.items:
            out.extend(_absence_tests(item, prefix))
    elif isinstance(cond, C.Leaf):
        if cond.op == "exists" and cond.operand is False:
            out.append((prefix + cond.path, cond.pos))
        elif cond.op in ("any_item", "all_items"):
            out.extend(_absence_tests(cond.operand, prefix + cond.path + "."))
    return out


def _known(cond: C.Condition, finding_known: dict[str, frozenset[str]]) -> list[frozenset[str]]:
    """For each alternative (DNF conjunction) of an NNF condition: the paths whose values are
    certainly present when that alternative holds. A message may show only those."""
    out = []
    for conj in C.to_dnf(cond):
        known: set[str] = set()
        for lit in conj:
            if isinstance(lit, C.Finding):
                if not lit.negated:
                    known |= finding_known.get(lit.name, frozenset())
            elif isinstance(lit, C.Leaf):
                if lit.op == "exists":
                    if lit.operand:
                        known.add(lit.path)
                elif lit.op == "any_item":
                    known.add(lit.path)
                    for alt in _known(lit.operand, finding_known):
                        known |= {f"{lit.path}.{p}" for p in alt}
                elif lit.op not in ("all_items", "empty", "contains_none"):
                    known.add(lit.path)
        out.append(frozenset(known))
    return out


def _lint_messages(pack: RulePack, fields: dict[str, FieldInfo]) -> list[Problem]:
    """Message placeholders that render: a field path (or a list's item field), of a kind that
    prints (not a group, not a list of records), and certainly present whenever the rule fires
    (else the message would print a value that is not there)."""
    out: list[Problem] = []
    finding_known: dict[str, frozenset[str]] = {}
    finding_reads: dict[str, set[str]] = {}
    try:
        ordered = [r for layer in layers(pack.rules) for r in layer]
    except Exception:  # cycles are reported by _lint_findings; check messages in file order
        ordered = list(pack.rules)
    for rule in ordered:
        nnf = C.to_nnf(rule.when)
        alts = _known(nnf, finding_known)
        read = set(C.fields_read(rule.when))
        for name in C.findings_used(rule.when):
            read |= finding_reads.get(name, set())
        if rule.concludes:
            finding_known[rule.concludes] = frozenset.intersection(*alts) if alts else frozenset()
            finding_reads[rule.concludes] = read
        for text in (rule.message or "", rule.title):
            for match in PLACEHOLDER.finditer(text):
                placeholder = match.group(1).strip()
                loc = rule.where("message")
                if not PLACEHOLDER_PATH.fullmatch(placeholder):
                    out.append(Problem(loc, f"message placeholder '{{{placeholder}}}' is not a field path: only {{dotted.path}} is allowed", rule.id, code="template"))
                    continue
                if placeholder not in read:
                    out.append(Problem(loc, f"message names '{placeholder}', which the rule does not read; it reads: {', '.join(sorted(read)) or 'nothing'}", rule.id, code="template"))
                    continue
                info = _field(fields, placeholder)
                if info is not None and (info.kind == "object" or (info.kind == "list" and info.items)):
                    kind = "a group of fields" if info.kind == "object" else "a list of records"
                    out.append(Problem(loc, f"message placeholder '{{{placeholder}}}' is {kind} and cannot be shown: name a field inside it", rule.id, code="template"))
                    continue
                if not all(placeholder in alt for alt in alts):
                    out.append(Problem(loc, f"message placeholder '{{{placeholder}}}' may be absent when the rule fires "
                                            f"(an alternative of the condition holds without it): the message would show a value "
                                            f"that is not there. Word the message without it, or read it in every alternative", rule.id, code="template"))
    return out


def _field(fields: dict[str, FieldInfo], path: str) -> FieldInfo | None:
    if path in fields:
        return fields[path]
    head, _, rest = path.partition(".")
    info = fields.get(head)
    if info is not None and info.kind == "list" and info.items:
        return info.items.get(rest)
    return None


def _lint_optional(pack: RulePack, fields: dict[str, FieldInfo]) -> list[Problem]:
    """Declared optional answers: each is listed (a note), and must name a field some rule
    reads with a known source."""
    out: list[Problem] = []
    read_by: dict[str, list[str]] = {}
    for rule in pack.rules:
        for path in C.fields_read(rule.when):
            read_by.setdefault(path, []).append(rule.id)
    for o in pack.optional:
        loc = o.location or Location("pack.yaml")
        if o.path not in fields or fields[o.path].kind == "object":
            out.append(Problem(loc, f"optional answer '{o.path}' is not a field of the intake{_suggest(o.path, list(fields))}", code="optional"))
            continue
        for problem in citations_.problems(o.citation, pack.citations):
            out.append(Problem(loc, f"optional answer '{o.path}': {problem}", code="citation"))
        if o.path not in read_by:
            out.append(Problem(loc, f"optional answer '{o.path}' is read by no rule: remove it", code="optional"))
            continue
        out.append(Problem(loc, f"optional answer '{o.path}': absent means \"{o.means}\"; read by {', '.join(read_by[o.path])}; "
                                f"a decision that relies on it states the assumption and requires physician review",
                           level="note", code="optional"))
    return out


def _lint_condition(cond: C.Condition, fields: dict[str, FieldInfo], prefix: str, err) -> None:
    if isinstance(cond, (C.AllOf, C.AnyOf)):
        for item in cond.items:
            _lint_condition(item, fields, prefix, err)
        return
    if isinstance(cond, C.Not):
        _lint_condition(cond.item, fields, prefix, err)
        return
    if isinstance(cond, C.Finding):
        return
    leaf = cond
    full = prefix + leaf.path
    info = fields.get(leaf.path)
    if info is None:
        known = [prefix + k for k in fields]
        err(f"unknown field '{full}'{_suggest(full, known)}", "when", code="unknown-field", pos=leaf.pos)
        return
    kind = info.kind
    op = leaf.op
    if kind == "object":
        err(f"'{full}' is a group of fields; compare the fields inside it", "when", code="type", pos=leaf.pos)
        return
    # What the operator may test is its table entry's ``field`` (service.policy.operators).
    accepts = O.TABLE[op].field
    if accepts == O.RECORDS:
        if kind != "list" or not info.items:
            err(f"'{op}' needs a list of records; '{full}' is {kind}", "when", code="type", pos=leaf.pos)
        else:
            _lint_condition(leaf.operand, info.items, full + ".", err)
        return
    if kind == "list":
        if accepts == O.VALUE_LIST and not info.items:
            for value in leaf.operand:
                if info.choices and value not in info.choices:
                    err(f"'{value}' is not a value of '{full}'{_suggest(str(value), list(info.choices))} (allowed: {', '.join(info.choices)})",
                        "when", code="enum", pos=leaf.pos)
        elif accepts == O.VALUE_LIST:
            err(f"'{op}' tests a list of plain values; '{full}' is a list of records: use any_item", "when", code="type", pos=leaf.pos)
        elif accepts != O.ANY:
            err(f"'{full}' is a list: use any_item, contains_any/contains_none (or exists)", "when", code="type", pos=leaf.pos)
        return
    if accepts == O.VALUE_LIST:
        err(f"'{op}' needs a list field; '{full}' is {kind}", "when", code="type", pos=leaf.pos)
        return
    if accepts == O.ANY:
        return
    if accepts == O.DATE:
        if kind not in ("date", "datetime"):
            err(f"'{op}' needs a date field; '{full}' is {kind}", "when", code="type", pos=leaf.pos)
        return
    if kind in ("date", "datetime"):
        err(f"compare dates with {', '.join(C.DATE_OPS[:-1])} or {C.DATE_OPS[-1]}, not '{op}'", "when", code="type", pos=leaf.pos)
        return
    if accepts == O.NUMBER and kind not in ("int", "number"):
        # One mistake, one error: the operator is wrong for the field, whatever the operand.
        err(f"'{op}' orders numbers; '{full}' is {_KIND_WORDS.get(kind, kind)}: use eq/ne/in", "when", code="type", pos=leaf.pos)
        return
    values = leaf.operand if O.TABLE[op].operand == O.VALUES else (leaf.operand,)
    for value in values:
        problem = _type_problem(kind, value)
        if problem:
            err(f"'{full}' {op} {value!r}: {problem}", "when", code="type", pos=leaf.pos)
        elif info.choices and value not in info.choices:
            err(f"'{value}' is not a value of '{full}'{_suggest(str(value), list(info.choices))} (allowed: {', '.join(info.choices)})",
                "when", code="enum", pos=leaf.pos)


_KIND_WORDS = {"bool": "true/false", "str": "text"}


def _type_problem(kind: str, value) -> str | None:
    if kind == "bool" and not isinstance(value, bool):
        return "the field is true/false"
    if kind in ("int", "number") and (isinstance(value, bool) or not isinstance(value, (int, float))):
        return "the field is a number"
    if kind == "str" and not isinstance(value, str):
        return "the field is text"
    return None


def _lint_findings(pack: RulePack) -> list[Problem]:
    out: list[Problem] = []
    defined: dict[str, Rule] = {}
    for rule in pack.rules:
        if rule.concludes:
            if rule.concludes in defined:
                out.append(Problem(rule.where("concludes"), f"finding '{rule.concludes}' is already concluded by rule '{defined[rule.concludes].id}'", rule.id, code="finding"))
            defined.setdefault(rule.concludes, rule)
    used: set[str] = set()
    for rule in pack.rules:
        for node in C.walk(rule.when):
            if isinstance(node, C.Finding):
                used.add(node.name)
                if node.name not in defined and node.name not in pack.unloaded:
                    loc = rule.where("when")
                    if node.pos:
                        loc = type(loc)(loc.file, *node.pos)
                    out.append(Problem(loc, f"finding '{node.name}' is not concluded by any rule{_suggest(node.name, list(defined))}", rule.id, code="finding"))
    for name, rule in defined.items():
        if name not in used:
            out.append(Problem(rule.where("concludes"), f"finding '{name}' is concluded but no rule uses it", rule.id, "warning", "unused-finding"))
    for cycle in find_cycles(pack):
        rule = defined[cycle[0]]
        out.append(Problem(rule.where("concludes"), "findings form a cycle: " + " -> ".join(cycle + [cycle[0]]), rule.id, code="finding-cycle"))
    return out


def finding_graph(pack: RulePack) -> dict[str, set[str]]:
    """finding -> findings its concluding rule uses."""
    return {r.concludes: set(C.findings_used(r.when)) for r in pack.rules if r.concludes}


def find_cycles(pack: RulePack) -> list[list[str]]:
    graph = finding_graph(pack)
    cycles, state = [], {}

    def visit(node: str, stack: list[str]) -> None:
        state[node] = "active"
        for nxt in sorted(graph.get(node, ())):
            if nxt not in graph:
                continue
            if state.get(nxt) == "active":
                cycles.append(stack[stack.index(nxt):] if nxt in stack else [nxt])
            elif nxt not in state:
                visit(nxt, stack + [nxt])
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    return cycles


def _lint_tests(pack: RulePack) -> list[Problem]:
    """Test cases name rules and findings that exist, and their intakes are valid intakes:
    a case that can only fail is caught by lint, not first by ``rules test``."""
    from marshmallow import ValidationError

    from schemas.errors import dotted, flatten_messages

    ids = {r.id for r in pack.rules}
    findings = {r.concludes for r in pack.rules if r.concludes}
    schema = pack.catalog.intake_schema()
    flat = pack.catalog.flat
    out = []
    for case in pack.tests:
        for rid in case.expect.get("reasons", []):
            if rid not in ids and rid not in pack.unloaded:
                out.append(Problem(case.location, f"test '{case.name}' expects unknown rule '{rid}'{_suggest(rid, list(ids))}", code="test"))
        for name in case.expect.get("findings", []):
            if name not in findings and name not in pack.unloaded:
                out.append(Problem(case.location, f"test '{case.name}' expects unknown finding '{name}'{_suggest(name, list(findings))}", code="test"))
        for path in case.expect.get("missing", []):
            # an item's field is named with its index (substance_use[0].last_use)
            if path not in flat and pack.catalog.definition(path) is None:
                out.append(Problem(case.location, f"test '{case.name}' expects missing '{path}', which is not a field"
                                   f"{_suggest(path, list(flat))}", code="test"))
        try:
            schema.load(case.intake)
        except ValidationError as exc:
            for key, message in flatten_messages(exc.messages):
                out.append(Problem(case.location, f"test '{case.name}': its intake is not valid: {dotted(key)}: {message}",
                                   code="test-intake"))
    return out
