"""What a change of the field catalog means for integrators: additive or breaking.

Intake systems build against the intake contract (schemas/json/intake.schema.json). A change that
an intake valid today may fail is **breaking**: a field removed or renamed, a field made required,
a type changed, values or a range narrowed, a new cross-field check. A change that accepts all it
accepted before is **additive** (a new optional field, a new value, a wider range). Labels,
questions, help and FHIR references are **wording**: no intake changes its validity. A breaking
change needs a new pack version (lint and ``rules diff`` say so; reload refuses any change under
an unchanged version).
"""
from __future__ import annotations

import difflib
import json
from dataclasses import dataclass

from schemas.catalog import Catalog, FieldDef

BREAKING, ADDITIVE, WORDING = "breaking", "additive", "wording"
_WORDS = ("label", "question", "help", "description", "fhir", "value_labels", "pattern_error", "component")


@dataclass(frozen=True)
class ContractChange:
    kind: str  # breaking | additive | wording
    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.kind}: {self.path}: {self.message}"


def _defs(catalog: Catalog) -> dict[str, FieldDef]:
    """Every field by path; a list's record fields as ``list.field``."""
    out: dict[str, FieldDef] = {}
    for path, info in catalog.flat.items():
        out[path] = info.definition
        for sub, item in (info.items or {}).items():
            out[f"{path}.{sub}"] = item.definition
    return out


def classify(old: Catalog, new: Catalog) -> list[ContractChange]:
    """Every difference between two catalogs that an integrator or a clinician would notice."""
    before, after = _defs(old), _defs(new)
    out: list[ContractChange] = []
    removed = [p for p in before if p not in after]
    added = [p for p in after if p not in before]
    renamed: dict[str, str] = {}
    for gone in removed:
        parent = gone.rpartition(".")[0]
        for new_path in added:
            if new_path.rpartition(".")[0] == parent and new_path not in renamed.values() and \
                    _shape(before[gone]) == _shape(after[new_path]):
                renamed[gone] = new_path
                break
    for gone in removed:
        if gone in renamed:
            out.append(ContractChange(BREAKING, gone, f"renamed to '{renamed[gone]}': intakes that send "
                                      f"'{gone}' are refused"))
        elif not any(gone.startswith(r + ".") for r in removed):
            out.append(ContractChange(BREAKING, gone, "removed: intakes that send it are refused"))
    for path in added:
        if path in renamed.values() or any(path.startswith(a + ".") for a in added):
            continue
        if after[path].required:
            out.append(ContractChange(BREAKING, path, "added as required: intakes without it are refused"))
        else:
            out.append(ContractChange(ADDITIVE, path, "added (optional)"))
    for path in before:
        if path in after:
            out.extend(_compare(path, before[path], after[path]))
    return out


def _shape(d: FieldDef) -> dict:
    return {k: v for k, v in d.spec.items() if k not in _WORDS}


def _compare(path: str, a: FieldDef, b: FieldDef) -> list[ContractChange]:
    out: list[ContractChange] = []

    def change(kind: str, message: str) -> None:
        out.append(ContractChange(kind, path, message))

    if a.type != b.type:
        change(BREAKING, f"type changed from {a.type} to {b.type}")
        return out
    if a.required != b.required:
        change(BREAKING if b.required else ADDITIVE, "now required" if b.required else "no longer required")
    sa, sb = a.spec, b.spec
    if a.values is not None and b.values is not None:
        lost = [v for v in a.values if v not in b.values]
        gained = [v for v in b.values if v not in a.values]
        if lost:
            change(BREAKING, f"values narrowed: {', '.join(lost)} no longer accepted")
        if gained:
            change(ADDITIVE, f"values added: {', '.join(gained)}")
    for key, tighter in (("min", lambda x, y: y > x), ("max", lambda x, y: y < x),
                         ("max_length", lambda x, y: y < x), ("max_items", lambda x, y: y < x)):
        x, y = sa.get(key), sb.get(key)
        if x == y:
            continue
        if y is not None and (x is None or tighter(x, y)):
            change(BREAKING, f"{key} narrowed from {x if x is not None else 'none'} to {y}")
        else:
            change(ADDITIVE, f"{key} widened from {x} to {y if y is not None else 'none'}")
    if sa.get("unit") != sb.get("unit"):
        change(BREAKING, f"unit changed from {sa.get('unit')} to {sb.get('unit')}: the same number means another thing")
    if sa.get("pattern") != sb.get("pattern"):
        change(BREAKING, "pattern changed: values it accepted may be refused")
    if sa.get("less_than") != sb.get("less_than"):
        change(BREAKING if sb.get("less_than") else ADDITIVE,
               f"must be lower than {sb['less_than']}" if sb.get("less_than") else "no longer compared with another field")
    if sa.get("empty_when_false") != sb.get("empty_when_false"):
        change(BREAKING if sb.get("empty_when_false") else ADDITIVE,
               f"must be empty when {sb['empty_when_false']} is false" if sb.get("empty_when_false")
               else "no longer refused when another answer is false")
    if sa.get("agrees_with") != sb.get("agrees_with"):
        agrees = sb.get("agrees_with")
        change(BREAKING if agrees else ADDITIVE,
               f"must agree with {agrees['field']} (true exactly when it is {agrees['true_when']})" if agrees
               else "no longer compared with another answer")
    if sa.get("future") != sb.get("future"):
        change(ADDITIVE if sb.get("future") == "allowed" else BREAKING,
               "future dates accepted" if sb.get("future") == "allowed" else "future dates refused")
    words = [k for k in _WORDS if sa.get(k) != sb.get(k)]
    if words:
        change(WORDING, f"{', '.join(words)} changed")
    return out


def breaking(changes: list[ContractChange]) -> list[ContractChange]:
    return [c for c in changes if c.kind == BREAKING]


def json_schema_diff(old: Catalog, new: Catalog, context: int = 3) -> str:
    """The difference of the published intake JSON Schema, as a unified diff."""
    from schemas.jsonschema import catalog_document

    a = json.dumps(catalog_document(old), indent=2, ensure_ascii=False).splitlines()
    b = json.dumps(catalog_document(new), indent=2, ensure_ascii=False).splitlines()
    return "\n".join(difflib.unified_diff(a, b, "intake.schema.json (current)", "intake.schema.json (candidate)",
                                          lineterm="", n=context))


def lint_against(old, new) -> list:
    """Problems of a pack compared with its previous state (``old``, e.g. the last commit):
    a changed pack under the same version (warning), and a breaking contract change without a
    new version (error)."""
    from service.policy import yamlsrc
    from service.policy.model import Location
    from service.policy.problems import Problem

    out = []
    pack_file = new.source.rstrip("/") + "/pack.yaml" if new.source else "pack.yaml"
    if old.digest != new.digest and old.version == new.version:
        out.append(Problem(Location(_shown(pack_file)), f"the pack changed since the last commit but its version is still "
                           f"{new.version}: bump `version` (a running service refuses the change until you do)",
                           level="warning", code="version"))
    if old.catalog.digest == new.catalog.digest:
        return out
    for change in breaking(classify(old.catalog, new.catalog)):
        line, column = yamlsrc.position(new.catalog.positions, new.catalog.where(change.path)) \
            if change.path in _defs(new.catalog) else (None, None)
        where = Location(new.catalog.source or "fields.yaml", line, column)
        if old.version == new.version:
            out.append(Problem(where, f"breaking change of the intake contract: {change.path}: {change.message}; "
                               "integrators must be told: bump `version` in pack.yaml", code="contract-breaking"))
        else:
            out.append(Problem(where, f"breaking change of the intake contract (version {old.version} -> "
                               f"{new.version}): {change.path}: {change.message}", level="warning",
                               code="contract-breaking"))
    return out


def _shown(path: str) -> str:
    from pathlib import Path

    p = Path(path)
    try:
        return str(p.resolve().relative_to(Path.cwd()))
    except ValueError:
        return path
