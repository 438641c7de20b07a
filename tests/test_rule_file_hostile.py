"""Hostile rule files: `screening rules lint` refuses each with a message naming the file, the
line and (where the file parsed far enough to have one) the rule; nothing in a rule file is
ever executed or interpreted beyond ``{dotted.path}`` placeholders in a message.

Each case drops one file into a copy of the shipped pack, so the only problem is that file.
"""
from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from service.cli import main
from service.ruleset import default_rules_path, load_ruleset
from service.screening import screen
from tests.conftest import AS_OF, ROOT, example, validated

FILE = "55-hostile.yaml"

RULE = """\
rules:
  - id: probe_rule
    title: TITLE
    requires: [vitals.systolic_bp]
    when:
      vitals.systolic_bp: {gt: 120}
    effect: review
    severity: caution
    message: "MESSAGE"
    citation: "software default"
"""


def rule(message: str = "Systolic {vitals.systolic_bp}", title: str = "Probe") -> str:
    return RULE.replace("MESSAGE", message).replace("TITLE", title)


def _deep(levels: int) -> str:
    return "rules: " + "[" * levels + "]" * levels + "\n"


def _alias_bomb() -> str:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x]"]
    for i in range(1, 9):
        lines.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]")
    lines.append("rules: [" + ", ".join(["*a8"] * 9) + "]")  # 9**10 values if expanded
    return "\n".join(lines) + "\n"


# (id, file text, line the message must name (None: the file as a whole), rule id or None,
#  a pattern the message must match)
CASES = [
    ("broken YAML", "rules:\n  - id: x\n    title: [unclosed\n", 4, None, r"not valid YAML"),
    ("tab indentation", "rules:\n\t- id: x\n", 2, None, r"not valid YAML"),
    ("not UTF-8", None, None, None, r"not UTF-8"),
    ("empty document is not a rule file", "", None, None, r"rules|file"),
    ("rules is a string", "rules: everything\n", 1, None, r"rules: Not a valid list"),
    ("rule is a list", "rules:\n  - [id, x]\n", 2, None, r"Not a valid mapping"),
    ("id is a number", rule().replace("id: probe_rule", "id: 123"), 2, None, r"id: Not a valid string"),
    ("id with shell characters", rule().replace("id: probe_rule", "id: 'x; rm -rf /'"), 2, None, r"snake_case"),
    ("requires is a string", rule().replace("requires: [vitals.systolic_bp]", "requires: vitals.systolic_bp"), 4,
     "probe_rule", r"requires: Not a valid list"),
    ("when is a string", rule().replace("when:\n      vitals.systolic_bp: {gt: 120}", "when: 'vitals.systolic_bp > 120'"), 5,
     "probe_rule", r"when: Not a valid mapping"),
    ("threshold is a string", rule().replace("{gt: 120}", "{gt: '120'}"), 6, "probe_rule", r"orders numbers|number"),
    ("effect is a number", rule().replace("effect: review", "effect: 5"), 7, "probe_rule", r"effect"),
    ("unknown top-level field", rule() + "rulez: []\n", 11, None, r"rulez: unknown key .rulez.; did you mean .rules."),
    ("unknown rule field", rule().replace("effect: review", "effect: review\n    effects: exclude"), 8, "probe_rule",
     r"effects: unknown key .effects.; did you mean .effect."),
    ("unknown applies_to field", rule().replace("    requires:", "    applies_to: {route: [iv_ketamine]}\n    requires:"), 4,
     "probe_rule", r"route: unknown key .route.; did you mean .routes."),
    ("unknown operator", rule().replace("{gt: 120}", "{greater: 120}"), 6, "probe_rule", r"unknown operator 'greater'"),
    ("unknown field path", rule().replace("vitals.systolic_bp: {gt", "vitals.systolic: {gt"), 6, "probe_rule",
     r"unknown field 'vitals.systolic'"),
    ("duplicate key", rule().replace("effect: review", "effect: review\n    effect: exclude"), 8, None, r"duplicate key 'effect'"),
    ("python object tag", rule(title="!!python/object/apply:os.system ['touch {marker}']"), 3, None,
     r"tag '!!python/object/apply:os.system' is not allowed"),
    ("python name tag", rule(title="!!python/name:os.system"), 3, None, r"tag '!!python/name:os.system' is not allowed"),
    ("python tag on a key", "rules:\n  - id: x\n    !!python/name:os.system : 1\n", 3, None, r"tag '!!python/name:os.system'"),
    ("local tag", rule(title="!evil Probe"), 3, None, r"tag '!evil' is not allowed"),
    ("binary tag", rule(title="!!binary aGVsbG8="), 3, None, r"tag '!!binary' is not allowed"),
    ("set tag", "rules: !!set {a, b}\n", 1, None, r"tag '!!set' is not allowed"),
    ("merge key", "base: &b {title: t}\nrules:\n  - <<: *b\n    id: x\n", 3, None, r"merge keys"),
    ("alias bomb", _alias_bomb(), None, None, r"document too large"),
    ("10,000 nested lists", _deep(10_000), 1, None, r"nested too deeply"),
    ("150 nested conditions", rule().replace("vitals.systolic_bp: {gt: 120}", "{not: " * 150 + "{vitals.systolic_bp: {gt: 120}}" + "}" * 150), 6,
     None, r"nested too deeply"),
    ("over 2 MiB", "# " + "x" * (2 * 1024 * 1024) + "\n" + rule(), None, None, r"larger than"),
    # Template injection in a message: only {dotted.path} naming a field the rule reads is allowed.
    ("attribute placeholder", rule("{__class__}"), 9, "probe_rule", r"names '__class__', which the rule does not read"),
    ("dunder chain", rule("{vitals.systolic_bp.__class__.__mro__}"), 9, "probe_rule", r"does not read"),
    ("positional placeholder", rule("{0}"), 9, "probe_rule", r"'\{0\}' is not a field path"),
    ("jinja expression", rule("{{7*7}}"), 9, "probe_rule", r"'\{7\*7\}' is not a field path"),
    ("jinja statement", rule("{% import os %}"), 9, "probe_rule", r"is not a field path"),
    ("shell-style expression", rule("${__import__('os').system('id')}"), 9, "probe_rule", r"is not a field path"),
    ("format spec", rule("{vitals.systolic_bp:>100000000}"), 9, "probe_rule", r"is not a field path"),
    ("conversion", rule("{vitals.systolic_bp!r}"), 9, "probe_rule", r"is not a field path"),
    ("indexing", rule("{vitals[systolic_bp]}"), 9, "probe_rule", r"is not a field path"),
]


def _pack_with(tmp_path: Path, text: str | None) -> Path:
    """pack.yaml, two good rule files of the shipped pack (90-hepatic reads the optional answer
    pack.yaml declares), and the hostile file."""
    pack = tmp_path / "pack"
    pack.mkdir()
    for name in ("pack.yaml", "30-blood-pressure.yaml", "90-hepatic.yaml"):
        shutil.copy(default_rules_path() / name, pack / name)
    target = pack / FILE
    if text is None:
        target.write_bytes(b"rules:\n  - id: caf\xe9\n")
    else:
        target.write_text(text.replace("{marker}", str(tmp_path / "EXECUTED")), encoding="utf-8")
    return pack


def lint(pack: Path) -> tuple[int, list[str]]:
    result = CliRunner().invoke(main, ["rules", "lint", str(pack)])
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception  # a traceback is not a lint message
    return result.exit_code, [line for line in result.stdout.splitlines() if FILE in line]


@pytest.mark.parametrize("text,line,rule_id,pattern", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_lint_refuses_with_file_line_and_rule(tmp_path, text, line, rule_id, pattern):
    code, problems = lint(_pack_with(tmp_path, text))
    assert code == 1, problems
    assert problems, "no problem names the hostile file"
    matching = [p for p in problems if re.search(pattern, p)]
    assert matching, f"expected /{pattern}/ among {problems}"
    first = matching[0]
    where = re.match(rf"pack/{re.escape(FILE)}(?::(\d+)(?::\d+)?)?: error", first)
    assert where, first
    if line is not None:
        assert where.group(1) == str(line), f"expected line {line}: {first}"
    if rule_id is not None:
        assert f"[{rule_id}]" in first
    assert not (tmp_path / "EXECUTED").exists()


def test_the_base_pack_lints_clean(tmp_path):
    # So that every failure above is the hostile file's, not the base pack's.
    pack = _pack_with(tmp_path, rule())
    assert lint(pack) == (0, [])


def test_a_python_tag_is_never_executed_by_any_entry_point(tmp_path):
    marker = tmp_path / "EXECUTED"
    pack = _pack_with(tmp_path, "rules:\n  - !!python/object/apply:os.system ['touch {marker}']\n")
    for args in (["rules", "lint", str(pack)], ["rules", "test", str(pack)], ["rules", "show", "--rules", str(pack)],
                 ["evaluate", "--rules", str(pack), str(ROOT / "examples" / "eligible-iv.json")]):
        result = CliRunner().invoke(main, args)
        assert isinstance(result.exception, SystemExit) and result.exit_code in (1, 78), (args, result.exception)
        assert f"{FILE}:2" in result.output, (args, result.output)
    # And a real process, as the service starts: refused before anything is served.
    done = subprocess.run([sys.executable, "-m", "service.cli", "evaluate", "--rules", str(pack),
                           str(ROOT / "examples" / "eligible-iv.json")], cwd=ROOT, capture_output=True, text=True,
                          timeout=120, stdin=subprocess.DEVNULL)
    assert done.returncode == 78 and "Traceback" not in done.stderr, done.stderr[-2000:]
    assert f"{FILE}:2" in done.stderr and "is not allowed" in done.stderr
    with pytest.raises(Exception, match="is not allowed"):
        load_ruleset(pack)
    assert not marker.exists()


def test_text_that_looks_like_a_template_is_shown_verbatim(tmp_path):
    # A message (or a title, its fallback) fills {dotted.path} of a field the rule reads, and
    # nothing else; citations are never templates. The rest is text, shown as written.
    text = RULE.replace("TITLE", "'%(x)s <b> $x'").replace(
        "MESSAGE", "SBP {vitals.systolic_bp}; %(x)s %s ${vitals.systolic_bp} <script>1</script> {{").replace(
        '"software default"', '"software default {0} {__init__.__globals__} {{7*7}}"')
    pack = _pack_with(tmp_path, text)
    code, problems = lint(pack)
    assert code == 0, problems
    decision = screen(validated(example("eligible-iv")), load_ruleset(pack), as_of=AS_OF)
    reason = next(r for r in decision.reasons if r.rule_id == "probe_rule")
    assert reason.title == "%(x)s <b> $x"
    assert reason.message == "SBP 128; %(x)s %s $128 <script>1</script> {{"
    assert reason.citation == "software default {0} {__init__.__globals__} {{7*7}}"


def test_libyaml_reads_every_shipped_file_with_the_same_values_and_positions(monkeypatch):
    """Issue 16: rule files are parsed by libyaml (several times faster on large packs) where
    PyYAML has it; values and line/column positions are the pure-Python parser's."""
    import yaml

    from service.policy import yamlsrc

    if not yaml.__with_libyaml__:
        pytest.skip("PyYAML built without libyaml")
    assert yamlsrc._LOADER is yaml.CSafeLoader
    for path in sorted(default_rules_path().glob("*.yaml")):
        fast = yamlsrc.load(path)
        monkeypatch.setattr(yamlsrc, "_LOADER", yaml.SafeLoader)
        slow = yamlsrc.load(path)
        monkeypatch.setattr(yamlsrc, "_LOADER", yaml.CSafeLoader)
        assert fast == slow, path.name


def test_rule_positions_are_each_rules_own(tmp_path):
    """Positions are grouped per rule in one pass over the file (a scan per rule was quadratic)."""
    from service.policy.loader import read_pack

    pack_dir = tmp_path / "pack"
    pack_dir.mkdir()
    (pack_dir / "pack.yaml").write_text("name: p\nversion: '1'\n")
    (pack_dir / "rules.yaml").write_text(
        "rules:\n"
        "  - id: first\n    title: First\n    when: {vitals.systolic_bp: {gt: 180}}\n"
        "    effect: exclude\n    severity: absolute\n    message: m\n    citation: c\n"
        "  - id: second\n    title: Second\n    when: {vitals.diastolic_bp: {gt: 110}}\n"
        "    effect: exclude\n    severity: absolute\n    message: m\n    citation: c\n")
    pack, _ = read_pack(pack_dir)
    first, second = pack.rules
    assert first.positions[()] == (2, 5) and second.positions[()] == (9, 5)
    assert first.positions[("when",)][0] == 4 and second.positions[("when",)][0] == 11
    assert all(key[:1] != ("rules",) for key in second.positions)
