"""Contract safety and a `rules diff` an editor can trust (issue 15)."""
from __future__ import annotations

import copy
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner

from schemas.catalog import parse
from schemas.intake import SHIPPED
from service.cli import main
from service.policy.contract import ADDITIVE, BREAKING, WORDING, classify
from service.policy.impact import corpus_from_tests
from service.ruleset import default_rules_path
from service.screening import screen
from tests.test_field_catalog import add_new_fact

PACK = default_rules_path()
GIT = ["git", "-c", "user.email=t@example.org", "-c", "user.name=t"]


def edited(change) -> object:
    raw = copy.deepcopy(SHIPPED.raw)
    change(raw["fields"])
    return parse(raw)


def kinds(changes) -> set[tuple[str, str]]:
    return {(c.kind, c.path) for c in changes}


@pytest.mark.parametrize("change, expected, fragment", [
    (lambda f: f["vitals"]["fields"].pop("heart_rate"), (BREAKING, "vitals.heart_rate"), "removed"),
    (lambda f: f["vitals"]["fields"].update(pulse=f["vitals"]["fields"].pop("heart_rate")),
     (BREAKING, "vitals.heart_rate"), "renamed to 'vitals.pulse'"),
    (lambda f: f["patient"]["fields"]["sex_at_birth"].update(values=["female", "male", "unknown"]),
     (BREAKING, "patient.sex_at_birth"), "values narrowed: intersex"),
    (lambda f: f["vitals"]["fields"]["systolic_bp"].update(max=250), (BREAKING, "vitals.systolic_bp"), "max narrowed"),
    (lambda f: f["medications"]["item"]["fields"]["class"]["values"].remove("other"),
     (BREAKING, "medications.class"), "values narrowed: other"),
    (lambda f: f["patient"]["fields"].update(weight_kg={"type": "integer", "min": 2, "max": 400, "unit": "kg"}),
     (ADDITIVE, "patient.weight_kg"), "added (optional)"),
    (lambda f: f["patient"]["fields"].update(weight_kg={"type": "integer", "required": True}),
     (BREAKING, "patient.weight_kg"), "added as required"),
    (lambda f: f["vitals"]["fields"]["systolic_bp"].update(max=320), (ADDITIVE, "vitals.systolic_bp"), "max widened"),
    (lambda f: f["vitals"]["fields"]["heart_rate"].update(label="Pulse"), (WORDING, "vitals.heart_rate"), "label"),
    (lambda f: f["prior_ketamine"]["fields"]["adverse_events"].pop("empty_when_false"),
     (ADDITIVE, "prior_ketamine.adverse_events"), "no longer refused"),
    (lambda f: f["allergies"]["fields"]["esketamine"].update(empty_when_false="allergies.ketamine"),
     (BREAKING, "allergies.esketamine"), "must be empty when allergies.ketamine is false"),
    (lambda f: f["medical_history"]["fields"]["severe_hepatic_impairment"].pop("agrees_with"),
     (ADDITIVE, "medical_history.severe_hepatic_impairment"), "no longer compared"),
    (lambda f: f["medical_history"]["fields"]["severe_hepatic_impairment"]["agrees_with"].update(true_when="moderate"),
     (BREAKING, "medical_history.severe_hepatic_impairment"), "true exactly when it is moderate"),
])
def test_catalog_changes_are_classified_for_integrators(change, expected, fragment):
    changes = classify(SHIPPED, edited(change))
    assert expected in kinds(changes), changes
    assert any(fragment in c.message for c in changes if (c.kind, c.path) == expected), changes


def test_the_rule_tests_are_a_corpus_covering_every_rules_both_sides(ruleset):
    fired, spared = set(), set()
    as_of = ruleset.pack.test_as_of
    for _ref, raw in corpus_from_tests(ruleset):
        decision = screen(ruleset.intake_schema.load(raw), ruleset, as_of=as_of, explain=True)
        for entry in decision.explanation:
            (fired if entry["status"] == "fired" else spared if entry["status"] == "not_fired" else set()).add(entry["rule_id"])
    ids = {r.id for r in ruleset.pack.rules}
    assert fired == ids and spared == ids


@pytest.fixture
def repo(tmp_path) -> Path:
    """A clone as an editor has it: the pack committed, edits in the working tree."""
    repo = tmp_path / "repo"
    pack_dir = repo / "rules" / "ketamine-screening"
    shutil.copytree(PACK, pack_dir)
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    subprocess.run(GIT + ["-C", str(repo), "add", "."], check=True)
    subprocess.run(GIT + ["-C", str(repo), "commit", "-qm", "pack"], check=True)
    return pack_dir


def test_diff_reads_the_working_tree_and_lists_every_changed_case(repo):
    # An uncommitted edit: the diff of the documented form must see it.
    bp = repo / "30-blood-pressure.yaml"
    bp.write_text(bp.read_text().replace("gt: 180", "gt: 175", 1))
    result = CliRunner().invoke(main, ["rules", "diff", str(repo)])
    assert result.exit_code == 0, result.output
    out = result.output
    assert "No decision changes." not in out
    decisions = re.search(r"(\d+) decisions change, (\d+) keep their decision with different reasons", out)
    assert decisions and int(decisions.group(1)) + int(decisions.group(2)) > 0, out
    if int(decisions.group(2)):
        assert "Cases that keep their decision with different reasons:" in out
        listed = out.split("Cases that keep their decision with different reasons:")[1]
        assert listed.count("(same decision)") == int(decisions.group(2))
    # same version, changed digest: a warning
    assert "bump `version`" in out


def test_diff_lists_reason_only_changes(repo):
    # A review rule that fires only where an exclusion already does: reasons change, decisions do not.
    (repo / "31-very-high.yaml").write_text("""rules:
  - id: very_high_systolic
    title: Very high systolic pressure
    when: {vitals.systolic_bp: {gt: 185}}
    effect: review
    severity: caution
    message: "Systolic {vitals.systolic_bp} mmHg."
    citation: software default
""")
    result = CliRunner().invoke(main, ["rules", "diff", str(repo)])
    assert result.exit_code == 0, result.output
    out = result.output
    counted = re.search(r"(\d+) decisions change, (\d+) keep their decision with different reasons", out)
    assert counted and counted.group(1) == "0" and int(counted.group(2)) >= 1, out
    listed = [line for line in out.split("Cases that keep their decision with different reasons:")[1].splitlines()
              if line.startswith("  ")]
    assert len(listed) == int(counted.group(2))
    assert all("ineligible (same decision)  +very_high_systolic" in line for line in listed), listed


def test_diff_shows_a_new_fact_and_its_contract_change(repo):
    add_new_fact(repo)
    result = CliRunner().invoke(main, ["rules", "diff", str(repo)])
    assert result.exit_code == 0, result.output
    out = result.output
    assert "pheochromocytoma excludes" in out  # the new rule's own case, from the candidate's tests
    assert "additive: medical_history.pheochromocytoma: added (optional)" in out
    assert re.search(r'\n\+\s+"pheochromocytoma": \{', out)  # the JSON Schema difference
    assert "bump `version`" not in out  # add_new_fact bumps it


def test_lint_requires_a_version_for_a_change_and_for_a_breaking_contract(repo):
    fields = repo / "fields.yaml"
    text = fields.read_text()
    assert "        max: 250\n" in text
    fields.write_text(text.replace("        max: 250\n", "        max: 240\n"))
    result = CliRunner().invoke(main, ["rules", "lint", str(repo)])
    assert result.exit_code == 1, result.output
    assert re.search(r"fields\.yaml:\d+:\d+: error: breaking change of the intake contract: vitals.heart_rate: "
                     r"max narrowed from 250 to 240", result.output), result.output
    assert "warning: the pack changed since the last commit but its version is still" in result.output
    pack = repo / "pack.yaml"
    pack.write_text(re.sub(r"^version: .*$", 'version: "2027.1.0"', pack.read_text(), flags=re.M))
    result = CliRunner().invoke(main, ["rules", "lint", str(repo)])
    assert result.exit_code == 0, result.output
    assert re.search(r"breaking change of the intake contract \(version [0-9.]+ -> 2027.1.0\)", result.output), result.output
