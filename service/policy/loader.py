"""Read a rule pack directory: pack.yaml, rule files, fixtures.yaml and *_test.yaml.

Every file is read and every problem collected before giving up, so that an editor sees them
all at once. Semantic checks live in ``lint``; ``load_pack`` runs both and refuses a pack
with errors.
"""
from __future__ import annotations

import copy
import datetime as dt
import difflib
from pathlib import Path
from typing import Any

from marshmallow import Schema, ValidationError, fields

from schemas.catalog import CATALOG_FILE, Catalog, CatalogError
from schemas.catalog import parse as parse_catalog
from schemas.errors import flatten_messages
from schemas.intake import INDICATIONS, ROUTES
from schemas.rulefile import (
    FixturesFileSchema,
    PackSchema,
    RuleFileSchema,
    RuleSchema,
    TestCaseSchema,
    TestFileSchema,
)
from service.policy import conditions, yamlsrc
from service.policy.model import Location, OptionalAnswer, Rule, RulePack, TestCase
from service.policy.problems import Problem, RulePackError

PACK_FILE = "pack.yaml"
FIXTURES_FILE = "fixtures.yaml"
TEST_SUFFIX = "_test.yaml"


class _Collector:
    def __init__(self, root: Path, shown_as: Path | None = None):
        self.root = root
        self.shown_as = shown_as
        self.problems: list[Problem] = []
        # ids and findings of rules that could not be loaded (their references are not errors)
        self.unloaded: set[str] = set()

    def rel(self, path: Path) -> str:
        """A file as the editor names it: under the directory they gave (``rules/…`` stays
        ``rules/…``), relative to the working directory when inside it, else from the pack's
        directory name; a snapshot checked for a reload is shown as the directory it was taken from."""
        if self.shown_as is not None:
            try:
                path = self.shown_as / path.relative_to(self.root)
            except ValueError:
                pass
        if not path.is_absolute():
            return str(path)
        for base in (Path.cwd(), (self.shown_as or self.root).parent):
            try:
                return str(path.relative_to(base))
            except ValueError:
                continue
        return str(path)

    def add(self, path: Path, positions: yamlsrc.Positions | None, key: tuple, message: str,
            rule_id: str | None = None, level: str = "error", code: str = "schema") -> None:
        line, col = yamlsrc.position(positions or {}, key)
        self.problems.append(Problem(Location(self.rel(path), line, col), message, rule_id, level, code))

    def read(self, path: Path) -> tuple[Any, yamlsrc.Positions] | None:
        try:
            return yamlsrc.load(path)
        except yamlsrc.SourceError as exc:
            self.problems.append(Problem(Location(self.rel(path), exc.line, exc.column), str(exc), code="yaml"))
        except OSError as exc:
            self.problems.append(Problem(Location(self.rel(path)), f"cannot read: {exc.strerror}", code="io"))
        return None

    def read_required(self, path: Path, missing: str) -> tuple[Any, yamlsrc.Positions] | None:
        if not path.is_file():
            self.problems.append(Problem(Location(self.rel(path)), missing, code="io"))
            return None
        return self.read(path)

    def schema_errors(self, path: Path, positions: yamlsrc.Positions, base: tuple, messages: Any,
                      rule_id: str | None = None, data: Any = None, schema: Schema | None = None) -> None:
        for key, message in flatten_messages(messages):
            message = _explain(message, key, data, schema)
            self.add(path, positions, base + key, f"{'.'.join(map(str, key)) or 'file'}: {message}", rule_id)


def _explain(message: str, key: tuple, data: Any, schema: Schema | None) -> str:
    """marshmallow's words, with the editor's likely meaning: 'requries' -> 'requires',
    'reveiw' -> 'review'."""
    if schema is None or not key:
        return message
    if message == "Unknown field.":
        owner = _schema_at(schema, key[:-1])
        if owner is not None:
            known = [f.data_key or n for n, f in owner.fields.items()]
            close = difflib.get_close_matches(str(key[-1]), known, n=1, cutoff=0.6)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            return f"unknown key '{key[-1]}'{hint} (keys: {', '.join(known)})"
    if message.startswith("Must be one of: "):
        value = data
        for part in key:
            value = value.get(part) if isinstance(value, dict) else (
                value[part] if isinstance(value, list) and isinstance(part, int) and part < len(value) else None)
        choices = message[len("Must be one of: "):].rstrip(".").split(", ")
        close = difflib.get_close_matches(str(value), choices, n=1, cutoff=0.6)
        if close:
            return f"'{value}' is not allowed; did you mean '{close[0]}'? ({message})"
    return message


def _schema_at(schema: Schema, key: tuple) -> Schema | None:
    for part in key:
        if isinstance(part, int):
            continue
        field = schema.fields.get(part)
        if isinstance(field, fields.List):
            field = field.inner
        if not isinstance(field, fields.Nested):
            return None
        schema = field.schema
    return schema


def pack_files(root: Path) -> tuple[list[Path], list[Path]]:
    """(rule files, test files) in a pack directory, in name order."""
    files = sorted(p for p in root.glob("*.yaml") if p.is_file())
    rule_files = [p for p in files if p.name not in (PACK_FILE, FIXTURES_FILE, CATALOG_FILE) and not p.name.endswith(TEST_SUFFIX)]
    test_files = [p for p in files if p.name.endswith(TEST_SUFFIX)]
    return rule_files, test_files


def read_pack(root: Path | str, shown_as: Path | None = None) -> tuple[RulePack | None, list[Problem]]:
    """Parse a pack and check its structure. Returns the pack (None if unusable) and problems.
    ``shown_as``: the directory to name in problems (a reload checks a snapshot of it)."""
    root = Path(root)
    col = _Collector(root, shown_as)
    if not root.is_dir():
        col.problems.append(Problem(Location(str(root)), "not a rule pack directory", code="io"))
        return None, col.problems
    meta, meta_positions = _read_meta(root / PACK_FILE, col)
    rules: list[Rule] = []
    rule_files, test_files = pack_files(root)
    if not rule_files:
        col.problems.append(Problem(Location(col.rel(root)), "no rule files (*.yaml) in the pack", code="io"))
    for path in rule_files:
        rules.extend(_read_rule_file(path, col))
    catalog = _read_catalog(root, meta, col)
    fixtures = _read_fixtures(root / FIXTURES_FILE, col)
    tests: list[TestCase] = []
    for path in test_files:
        tests.extend(_read_test_file(path, fixtures, col))
    if meta is None or catalog is None:
        return None, col.problems
    pack = RulePack(
        name=meta["name"], version=meta["version"], description=meta.get("description", ""),
        rules=tuple(rules), source=str(root), fixtures=fixtures, tests=tests,
        test_as_of=meta.get("test_defaults", {}).get("as_of"), catalog=catalog,
        unloaded=frozenset(col.unloaded), modified={col.rel(p): _mtime(p) for p in rule_files},
        citations={code: _jsonable(source) for code, source in meta["citations"].items()},
        optional=tuple(
            OptionalAnswer(o["path"], o["means"], o["reason"], o["citation"],
                           Location(col.rel(root / PACK_FILE), *yamlsrc.position(meta_positions, ("optional", i))))
            for i, o in enumerate(meta["optional"])),
    )
    return pack, col.problems


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


def load_pack(root: Path | str, shown_as: Path | None = None) -> RulePack:
    """A pack ready to compile: structure and lint both clean (warnings allowed). The same
    through the rules cache: service.policy.packcache.PackCache.load."""
    return load_pack_checked(root, shown_as)[0]


def load_pack_checked(root: Path | str, shown_as: Path | None = None) -> tuple[RulePack, list[Problem]]:
    """``load_pack`` from the files, with lint's problems below error level (warnings, notes)."""
    from service.policy.lint import lint  # lint imports the loader's helpers

    pack, problems = read_pack(root, shown_as)
    if pack is not None:
        problems = problems + lint(pack)
    if pack is None or any(p.level == "error" for p in problems):
        raise RulePackError(problems)
    return pack, problems


def _read_meta(path: Path, col: _Collector) -> tuple[dict | None, yamlsrc.Positions]:
    loaded = col.read_required(path, "missing pack.yaml (name and version of the pack)")
    if loaded is None:
        return None, {}
    data, positions = loaded
    try:
        return PackSchema().load(data if isinstance(data, dict) else {"_": data}), positions
    except ValidationError as exc:
        col.schema_errors(path, positions, (), exc.messages)
        return None, positions


def _read_rule_file(path: Path, col: _Collector) -> list[Rule]:
    loaded = col.read(path)
    if loaded is None:
        return []
    data, positions = loaded
    try:
        RuleFileSchema().load(data if isinstance(data, dict) else {"rules": data})
    except ValidationError as exc:
        col.schema_errors(path, positions, (), exc.messages, data=data, schema=RuleFileSchema())
        return []
    rules = []
    by_rule = _positions_by_item(positions, "rules")
    rule_schema = RuleSchema()  # one per file, not per rule: building a schema is not free
    for index, raw in enumerate(data["rules"]):
        base = ("rules", index)
        rule_id = raw.get("id") if isinstance(raw.get("id"), str) else None
        try:
            loaded_rule = rule_schema.load(raw)
        except ValidationError as exc:
            col.schema_errors(path, positions, base, exc.messages, rule_id, raw, rule_schema)
            loaded_rule = None
        # The condition is checked even when a key is wrong: every mistake of a rule at once.
        when = None
        if isinstance(raw, dict) and isinstance(raw.get("when"), dict):
            when, errors = conditions.parse_all(raw["when"], positions, base + ("when",))
            for error in errors:
                col.add(path, positions, base + ("when",) + error.where, f"when: {error}", rule_id)
        if loaded_rule is None or when is None:
            # Not loaded: what it names is not reported again as missing elsewhere (no cascade).
            if isinstance(raw, dict):
                col.unloaded.update(str(raw[k]) for k in ("id", "concludes") if isinstance(raw.get(k), str))
            continue
        applies = loaded_rule.get("applies_to", {})
        line, column = yamlsrc.position(positions, base)
        rules.append(Rule(
            id=loaded_rule["id"], title=loaded_rule["title"], when=when,
            routes=tuple(applies.get("routes", ROUTES)), indications=tuple(applies.get("indications", INDICATIONS)),
            requires=tuple(loaded_rule["requires"]), effect=loaded_rule.get("effect"),
            concludes=loaded_rule.get("concludes"), severity=loaded_rule.get("severity"),
            priority=loaded_rule["priority"], message=loaded_rule.get("message"),
            citation=loaded_rule.get("citation"), description=loaded_rule.get("description"),
            location=Location(col.rel(path), line, column), canonical=loaded_rule,
            positions=by_rule.get(index, {}),
        ))
    return rules


def catalog_path(root: Path, meta: dict | None) -> Path | None:
    """The pack's field catalog: the file pack.yaml names, else fields.yaml if the pack has one.
    None: the pack uses the installation's catalog (schemas.intake.SHIPPED)."""
    named = (meta or {}).get("fields")
    if named:
        return root / named
    default = root / CATALOG_FILE
    return default if default.is_file() else None


def _read_catalog(root: Path, meta: dict | None, col: _Collector) -> Catalog | None:
    path = catalog_path(root, meta)
    if path is None:
        from schemas.intake import SHIPPED
        return SHIPPED
    loaded = col.read_required(path, "pack.yaml names a field catalog that does not exist")
    if loaded is None:
        return None
    data, positions = loaded
    try:
        catalog = parse_catalog(data)
    except CatalogError as exc:
        for key, message in exc.problems:
            col.add(path, positions, key, message, code="catalog")
        return None
    catalog.source = col.rel(path)
    catalog.positions = positions
    return catalog


def _positions_by_item(positions: yamlsrc.Positions, key: str) -> dict[int, yamlsrc.Positions]:
    """Positions under ``key``'s items, per item index and relative to the item: one pass over
    the file's positions (a scan per rule made loading quadratic in the file's size)."""
    out: dict[int, yamlsrc.Positions] = {}
    for path, position in positions.items():
        if len(path) >= 2 and path[0] == key:
            out.setdefault(path[1], {})[path[2:]] = position
    return out


def _read_fixtures(path: Path, col: _Collector) -> dict[str, Any]:
    if not path.exists():
        return {}
    loaded = col.read(path)
    if loaded is None:
        return {}
    data, positions = loaded
    try:
        return FixturesFileSchema().load(data if isinstance(data, dict) else {"fixtures": data})["fixtures"]
    except ValidationError as exc:
        col.schema_errors(path, positions, (), exc.messages)
        return {}


def _read_test_file(path: Path, fixtures: dict, col: _Collector) -> list[TestCase]:
    loaded = col.read(path)
    if loaded is None:
        return []
    data, positions = loaded
    try:
        TestFileSchema().load(data if isinstance(data, dict) else {"cases": data})
    except ValidationError as exc:
        col.schema_errors(path, positions, (), exc.messages)
        return []
    cases = []
    for index, raw in enumerate(data["cases"]):
        base = ("cases", index)
        schema = TestCaseSchema()
        try:
            case = schema.load(raw)
        except ValidationError as exc:
            col.schema_errors(path, positions, base, exc.messages, data=raw, schema=schema)
            continue
        if case.get("base") and case["base"] not in fixtures:
            col.add(path, positions, base + ("base",), f"unknown fixture '{case['base']}'; fixtures: {', '.join(sorted(fixtures)) or 'none'}", code="test")
            continue
        intake = deep_merge(copy.deepcopy(fixtures.get(case.get("base"), {})), case["intake"])
        for dotted in case["remove"]:
            remove_path(intake, dotted)
        line, column = yamlsrc.position(positions, base)
        cases.append(TestCase(case["name"], Location(col.rel(path), line, column), _jsonable(intake),
                              case["expect"], case.get("as_of")))
    return cases


def deep_merge(base: dict, override: dict) -> dict:
    """Mappings merge key by key; lists and scalars replace."""
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            deep_merge(base[key], value)
        else:
            base[key] = copy.deepcopy(value)
    return base


def remove_path(data: dict, dotted: str) -> None:
    parts = dotted.split(".")
    cur = data
    for part in parts[:-1]:
        cur = cur.get(part) if isinstance(cur, dict) else None
        if cur is None:
            return
    if isinstance(cur, dict):
        cur.pop(parts[-1], None)


def _jsonable(value: Any) -> Any:
    """YAML reads 2026-11-20 as a date; intakes arrive as JSON text, so tests use the same."""
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    if isinstance(value, dt.datetime):
        return value.isoformat().replace("+00:00", "Z")
    if isinstance(value, dt.date):
        return value.isoformat()
    return value
