"""Lint and coverage as a new policy editor meets them (issue 15): every mistake once, in the file
the editor touched, with the word they meant; coverage that a failing or combined case cannot fake."""
from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

from click.testing import CliRunner

from service.cli import main
from service.policy.lint import lint
from service.policy.loader import read_pack
from service.policy.testing import run_tests
from service.ruleset import default_rules_path, load_ruleset

PACK = default_rules_path()


def copy_pack(tmp_path: Path) -> Path:
    target = tmp_path / "rules" / "ketamine-screening"
    shutil.copytree(PACK, target)
    return target


def problems_of(pack_dir: Path):
    pack, problems = read_pack(pack_dir)
    return problems + (lint(pack) if pack is not None else [])


def test_a_duplicate_id_is_reported_against_the_newer_file(tmp_path):
    pack_dir = copy_pack(tmp_path)
    old = time.time() - 3600
    for path in pack_dir.glob("*.yaml"):
        os.utime(path, (old, old))
    # A new file, sorted before the one that already holds the id.
    (pack_dir / "05-new.yaml").write_text("""rules:
  - id: severe_hypertension
    title: Copied
    when: {vitals.systolic_bp: {gt: 200}}
    effect: review
    severity: caution
    message: m
    citation: software default
""")
    [dup] = [p for p in problems_of(pack_dir) if p.code == "duplicate-id"]
    assert dup.location.file.endswith("05-new.yaml"), str(dup)
    assert "30-blood-pressure.yaml" in dup.message


def test_did_you_mean_for_keys_effects_and_operators(tmp_path):
    pack_dir = copy_pack(tmp_path)
    (pack_dir / "99-typos.yaml").write_text("""rules:
  - id: typo_rule
    title: Typos
    requries: [vitals.systolic_bp]
    when: {vitals.systolic_bp: {gtt: 200}}
    effect: reveiw
    severity: caution
    message: m
    citation: software default
""")
    text = "\n".join(str(p) for p in problems_of(pack_dir))
    assert "unknown key 'requries'; did you mean 'requires'?" in text
    assert "'reveiw' is not allowed; did you mean 'review'?" in text
    # the condition's mistake is reported too, not hidden behind the first one of the rule
    assert "unknown operator 'gtt'; did you mean 'gt'?" in text


def test_every_error_of_one_rule_is_reported(tmp_path):
    pack_dir = copy_pack(tmp_path)
    (pack_dir / "99-many.yaml").write_text("""rules:
  - id: many_mistakes
    title: Many
    when:
      any:
        - vitals.systolic_bp: {gtt: 200}
        - vitals.diastolic_bp: {in: 5}
    effect: review
    severity: caution
    message: m
    citation: software default
""")
    errors = [p for p in problems_of(pack_dir) if p.rule_id == "many_mistakes"]
    assert len(errors) == 2, "\n".join(map(str, errors))
    assert {p.location.line for p in errors} == {6, 7}


def test_a_rule_that_fails_to_load_causes_no_cascade(tmp_path):
    pack_dir = copy_pack(tmp_path)
    path = pack_dir / "50-pregnancy.yaml"
    # A bad id on the finding rule: one error, not also "finding not concluded" in every user of it.
    path.write_text(path.read_text().replace("  - id: could_be_pregnant\n", "  - id: Could-Be-Pregnant\n", 1))
    errors = [p for p in problems_of(pack_dir) if p.level == "error"]
    assert len(errors) == 1, "\n".join(map(str, errors))
    assert "snake_case" in errors[0].message


def test_a_boolean_compared_with_gt_is_one_error(tmp_path):
    pack_dir = copy_pack(tmp_path)
    (pack_dir / "99-bool.yaml").write_text("""rules:
  - id: bool_gt
    title: Bool
    when: {patient.pregnant: {gt: 1}}
    effect: review
    severity: caution
    message: m
    citation: software default
""")
    errors = [p for p in problems_of(pack_dir) if p.rule_id == "bool_gt"]
    assert len(errors) == 1 and "orders numbers" in errors[0].message, "\n".join(map(str, errors))


def test_test_intakes_are_checked_by_lint(tmp_path):
    pack_dir = copy_pack(tmp_path)
    (pack_dir / "30-blood-pressure_test.yaml").write_text(
        (pack_dir / "30-blood-pressure_test.yaml").read_text() + """
  - name: an impossible pressure
    base: clean_iv
    intake: {vitals: {systolic_bp: 900}}
    expect: {decision: ineligible, missing: [vitals.systolc_bp]}
""")
    text = "\n".join(str(p) for p in problems_of(pack_dir))
    assert "its intake is not valid: vitals.systolic_bp: must be between 50 and 300 mmHg" in text
    assert "expects missing 'vitals.systolc_bp', which is not a field; did you mean 'vitals.systolic_bp'?" in text


def test_paths_keep_the_directory_the_editor_named(tmp_path, monkeypatch):
    pack_dir = copy_pack(tmp_path)
    (pack_dir / "99-bad.yaml").write_text("rules:\n  - id: x\n    title: x\n    when: {vitals.systolc_bp: {gt: 1}}\n"
                                         "    effect: review\n    severity: caution\n    message: m\n    citation: c\n")
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main, ["rules", "lint", "rules/ketamine-screening"])
    assert result.exit_code == 1
    assert "rules/ketamine-screening/99-bad.yaml:4:" in result.output, result.output


def test_coverage_counts_only_passing_cases_of_the_rules_own_file(tmp_path):
    pack_dir = copy_pack(tmp_path)
    # the hypertension rule loses its own tests; the combined case that fires it now fails
    (pack_dir / "30-blood-pressure_test.yaml").unlink()
    combined = pack_dir / "99-combined_test.yaml"
    text = combined.read_text()
    assert "      decision: ineligible\n" in text
    combined.write_text(text.replace("      decision: ineligible\n", "      decision: eligible\n", 1))
    report = run_tests(load_ruleset(pack_dir))
    assert report.failed
    assert "severe_hypertension" in report.never_triggered
    assert "severe_hypertension" in report.never_untriggered
    assert report.coverage < 100
