"""The field catalog (fields.yaml) is the one definition of the intake vocabulary: validation,
contracts, lint and labels derive from it, and a new field is a catalog edit taken on reload."""
from __future__ import annotations

import copy
import json
import logging
import re
import shutil
from pathlib import Path

import pytest
import yaml
from marshmallow import ValidationError

from schemas.intake import SHIPPED, IntakeSchema
from service.app import create_app
from service.policy.loader import read_pack
from service.ruleset import default_rules_path, load_ruleset
from tests.conftest import EXAMPLES, app_settings, bearer

PACK = default_rules_path()
ROOT = Path(__file__).resolve().parent.parent

NEW_FIELD = """
      pheochromocytoma:
        type: boolean
        label: Pheochromocytoma
        question: Does the patient have a pheochromocytoma (untreated)?
        fhir: {resource: Condition, mapping: conditions}
"""
NEW_RULE = """rules:
  - id: pheochromocytoma
    title: Untreated pheochromocytoma
    when:
      medical_history.pheochromocytoma: {eq: true}
    effect: exclude
    severity: absolute
    message: "Untreated pheochromocytoma: ketamine's sympathomimetic effect can provoke a hypertensive crisis."
    citation: "software default (sympathomimetic effect)"
"""
NEW_TESTS = """cases:
  - name: pheochromocytoma excludes
    base: clean_iv
    intake: {medical_history: {pheochromocytoma: true}}
    expect: {decision: ineligible, reasons: [pheochromocytoma]}
  - name: no pheochromocytoma does not exclude
    base: clean_iv
    intake: {medical_history: {pheochromocytoma: false}}
    expect: {decision: eligible, reasons: []}
"""


FIXTURE_GROUP = "    medical_history:\n"
EVERY_MEDICAL_QUESTION = "        - medical_history.unstable_cardiovascular_disease\n"  # the last of such a list


def copy_pack(tmp_path: Path) -> Path:
    target = tmp_path / "ketamine-screening"
    shutil.copytree(PACK, target)
    return target


def add_new_fact(pack_dir: Path, version: str = "9999.1.0-pheochromocytoma") -> None:
    """What docs/rules.md tells an editor to do: a catalog entry, a rule, its tests, a version."""
    fields = pack_dir / "fields.yaml"
    text = fields.read_text()
    anchor = "      # Optional additions used by the default pack.\n"
    assert anchor in text
    fields.write_text(text.replace(anchor, NEW_FIELD.lstrip("\n") + anchor))
    (pack_dir / "92-pheochromocytoma.yaml").write_text(NEW_RULE)
    (pack_dir / "92-pheochromocytoma_test.yaml").write_text(NEW_TESTS)
    # A rule reads the new answer, so an intake without it is asked for it (unknown is never
    # assumed): every clean fixture answers it, as every fixture answers every question.
    fixtures = pack_dir / "fixtures.yaml"
    text = fixtures.read_text()
    assert text.count(FIXTURE_GROUP) >= 5
    fixtures.write_text(text.replace(FIXTURE_GROUP, FIXTURE_GROUP + "      pheochromocytoma: false\n"))
    # ... and the cases that list every medical_history question ask it too.
    for test_file in sorted(pack_dir.glob("*_test.yaml")):
        text = test_file.read_text()
        if EVERY_MEDICAL_QUESTION in text:
            test_file.write_text(text.replace(EVERY_MEDICAL_QUESTION, EVERY_MEDICAL_QUESTION
                                              + "        - medical_history.pheochromocytoma\n"))
    pack = pack_dir / "pack.yaml"
    pack.write_text(re.sub(r"^version: .*$", f'version: "{version}"', pack.read_text(), flags=re.M))


# --- one definition ---------------------------------------------------------------------------

def test_the_contract_is_derived_from_the_shipped_catalog():
    schema = IntakeSchema()
    assert list(schema.fields) == list(SHIPPED.fields)
    vitals = schema.fields["vitals"].schema.fields
    spec = SHIPPED.definition("vitals.systolic_bp").spec
    assert vitals["systolic_bp"].metadata["x-unit"] == spec["unit"] == "mmHg"
    assert load_ruleset(PACK).pack.catalog.digest == SHIPPED.digest


def test_cross_field_checks_are_data():
    raw = json.loads((EXAMPLES / "eligible-iv.json").read_text())
    raw["vitals"].update(systolic_bp=120, diastolic_bp=120)
    with pytest.raises(ValidationError) as exc:
        IntakeSchema().load(raw)
    assert exc.value.messages == {"vitals": {"diastolic_bp": ["must be lower than systolic_bp"]}}
    assert SHIPPED.definition("vitals.diastolic_bp").spec["less_than"] == "vitals.systolic_bp"


def test_contradicting_answers_are_refused_by_catalog_data_on_both_validation_paths(ruleset):
    """Issue 12's contract checks are catalog data (empty_when_false), and the ruleset's fast
    path refuses them with marshmallow's own messages."""
    raw = json.loads((EXAMPLES / "eligible-iv.json").read_text())
    raw["psychiatric_history"].update(prior_suicide_attempt=False, last_suicide_attempt="2026-10-01")
    raw["prior_ketamine"] = {"previously_treated": False, "adverse_events": ["psychosis"]}
    expected = {"psychiatric_history": {"last_suicide_attempt": ["must be null when prior_suicide_attempt is false"]},
                "prior_ketamine": {"adverse_events": ["must be empty when previously_treated is false"]}}
    for loader in (IntakeSchema(), ruleset.intake_loader):
        with pytest.raises(ValidationError) as exc:
            loader.load(raw)
        assert exc.value.messages == expected
    raw["psychiatric_history"]["last_suicide_attempt"] = None
    raw["prior_ketamine"]["adverse_events"] = []
    assert ruleset.intake_loader.load(raw) == IntakeSchema().load(raw)
    assert SHIPPED.definition("prior_ketamine.adverse_events").spec["empty_when_false"] == "prior_ketamine.previously_treated"
    raw["medical_history"].update(severe_hepatic_impairment=True, hepatic_impairment="moderate")
    for loader in (IntakeSchema(), ruleset.intake_loader):
        with pytest.raises(ValidationError) as exc:
            loader.load(raw)
        assert exc.value.messages == {"medical_history": {"severe_hepatic_impairment": [
            "must agree with hepatic_impairment (true exactly when it is severe)"]}}
    raw["medical_history"]["hepatic_impairment"] = "severe"
    assert ruleset.intake_loader.load(raw) == IntakeSchema().load(raw)


@pytest.mark.parametrize("agrees, fragment", [
    ({"field": "medical_history.recent_cardiac_event", "true_when": "severe"}, "must be a choice in the same group"),
    ({"field": "medical_history.hepatic_impairment", "true_when": "sever"}, "did you mean 'severe'?"),
    ({"field": "medical_history.hepatic_impairment"}, "`agrees_with` is {field:"),
])
def test_agrees_with_must_name_a_choice_beside_it_and_one_of_its_values(agrees, fragment):
    from schemas.catalog import CatalogError, parse

    raw = copy.deepcopy(SHIPPED.raw)
    raw["fields"]["medical_history"]["fields"]["severe_hepatic_impairment"]["agrees_with"] = agrees
    with pytest.raises(CatalogError) as exc:
        parse(raw)
    assert any(fragment in message for _, message in exc.value.problems), exc.value.problems


@pytest.mark.parametrize("target, fragment", [
    ("psychiatric_history.suicidal_ideation", "must be a yes/no field in the same group"),
    ("psychiatric_history.prior_suicide_attemp", "did you mean 'psychiatric_history.prior_suicide_attempt'?"),
])
def test_empty_when_false_must_name_a_yes_no_field_beside_it(target, fragment):
    from schemas.catalog import CatalogError, parse

    raw = copy.deepcopy(SHIPPED.raw)
    raw["fields"]["psychiatric_history"]["fields"]["last_suicide_attempt"]["empty_when_false"] = target
    with pytest.raises(CatalogError) as exc:
        parse(raw)
    assert any(fragment in message for _, message in exc.value.problems), exc.value.problems


def test_every_fhir_reference_names_a_mapping_section():
    """The catalog names how FHIR answers a field by reference; the codes live in service/cdshooks."""
    mapping = yaml.safe_load((ROOT / "service" / "cdshooks" / "fhir_mapping.yaml").read_text())
    for definition in SHIPPED._all():
        ref = (definition.spec.get("fhir") or {}).get("mapping")
        if ref is None:
            continue
        node = mapping
        for part in ref.split("."):
            assert isinstance(node, dict) and part in node, f"{definition.path}: fhir mapping '{ref}' is not in fhir_mapping.yaml"
            node = node[part]


@pytest.mark.parametrize("edit, fragment", [
    (lambda d: d["fields"]["patient"]["fields"]["age_years"].update(lable="Age"),
     "'lable' is not a key of a integer field; did you mean 'label'?"),
    (lambda d: d["fields"]["patient"]["fields"]["age_years"].update(type="interger"),
     "type 'interger' is not one of"),
    (lambda d: d["fields"]["vitals"]["fields"]["diastolic_bp"].update(less_than="vitals.systolc_bp"),
     "less_than names 'vitals.systolc_bp', which is not a field; did you mean 'vitals.systolic_bp'?"),
    (lambda d: d["fields"]["patient"]["fields"]["sex_at_birth"].update(values=[]),
     "a choice needs `values`"),
    (lambda d: d["fields"]["treatment"]["fields"]["route"].pop("required"),
     "'treatment.route' is part of every intake"),
])
def test_catalog_mistakes_are_reported_with_file_and_line(tmp_path, edit, fragment):
    pack_dir = copy_pack(tmp_path)
    data = yaml.safe_load((pack_dir / "fields.yaml").read_text())
    edit(data)
    (pack_dir / "fields.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    pack, problems = read_pack(pack_dir)
    assert pack is None
    [problem] = [p for p in problems if fragment in p.message]
    assert problem.location.file.endswith("fields.yaml") and problem.location.line, str(problem)
    assert problem.code == "catalog"


def test_the_digest_covers_the_catalog(tmp_path):
    pack_dir = copy_pack(tmp_path)
    before = load_ruleset(pack_dir).pack.digest
    fields = pack_dir / "fields.yaml"
    fields.write_text(fields.read_text().replace("label: Heart rate", "label: Pulse"))
    assert load_ruleset(pack_dir).pack.digest != before


# --- a new fact, no Python, no restart --------------------------------------------------------

@pytest.fixture
def live(tmp_path, new_app):
    pack_dir = copy_pack(tmp_path)
    app = new_app(rules_dir=pack_dir)
    return app, pack_dir, bearer(app)


def test_a_new_field_is_a_catalog_edit_taken_on_reload(live):
    app, pack_dir, headers = live
    client = app.test_client()
    intake = json.loads((EXAMPLES / "eligible-iv.json").read_text())
    intake["medical_history"]["pheochromocytoma"] = True
    refused = client.post("/v1/screenings", json=intake, headers=headers)
    assert refused.status_code == 422
    assert {"path": "medical_history.pheochromocytoma", "message": "Unknown field."} in refused.get_json()["error"]["errors"]

    add_new_fact(pack_dir)
    outcome = app.extensions["reloader"].reload()
    assert outcome.status == "loaded", outcome.problems

    screened = client.post("/v1/screenings", json=intake, headers=headers)
    assert screened.status_code == 200, screened.get_data(as_text=True)
    # validated on the fast path built for the new ruleset (swapped with it), not the old one's
    assert app.extensions["rulesets"].current.intake_loader.fast_loads >= 1
    body = screened.get_json()
    assert body["decision"] == "ineligible" and [r["rule_id"] for r in body["reasons"]] == ["pheochromocytoma"]
    # An intake system that does not send the new answer yet is asked for it, never taken as "no".
    del intake["medical_history"]["pheochromocytoma"]
    asked = client.post("/v1/screenings", json=intake, headers=headers).get_json()
    assert (asked["decision"], asked["missing"]) == ("incomplete", ["medical_history.pheochromocytoma"])
    # The description integrators read, and the words clinicians read, follow the same catalog.
    spec = client.get("/openapi.json").get_json()
    assert spec["components"]["schemas"]["MedicalHistory"]["properties"]["pheochromocytoma"] == {
        "type": "boolean", "nullable": True}
    with app.test_request_context():
        from service.web.labels import path_label
        assert path_label("medical_history.pheochromocytoma") == "Medical history › Pheochromocytoma"


def test_a_change_the_service_binds_at_start_is_refused_with_the_reason(live):
    app, pack_dir, _ = live
    fields = pack_dir / "fields.yaml"
    fields.write_text(fields.read_text().replace("values: [iv_ketamine, esketamine_nasal]",
                                                 "values: [iv_ketamine, esketamine_nasal, oral_ketamine]"))
    pack = pack_dir / "pack.yaml"
    pack.write_text(re.sub(r"^version: .*$", 'version: "2026.11.2"', pack.read_text(), flags=re.M))
    outcome = app.extensions["reloader"].reload()
    assert outcome.status == "refused"
    assert any("this change needs a restart because" in p and "treatment.route" in p for p in outcome.problems), outcome


def test_a_changed_pack_under_the_same_version_is_refused(live):
    app, pack_dir, _ = live
    before = app.extensions["rulesets"].current.pack.digest
    path = pack_dir / "95-age.yaml"
    path.write_text(path.read_text().replace("needs physician review.", "needs physician review (rev. B)."))
    outcome = app.extensions["reloader"].reload()
    assert outcome.status == "refused"
    assert any("bump `version`" in p for p in outcome.problems), outcome.problems
    assert app.extensions["rulesets"].current.pack.digest == before


# --- reload reporting ---------------------------------------------------------------------------

def test_one_bad_edit_is_counted_once_across_workers_and_its_clearing_is_logged(tmp_path, caplog):
    """Two apps over one directory and one state directory stand for two gunicorn workers."""
    from service.observability.metrics import REGISTRY

    def failures() -> float:
        return REGISTRY.get_sample_value("screening_ruleset_reload_failures_total") or 0.0

    pack_dir = copy_pack(tmp_path)
    apps = [create_app(app_settings(tmp_path / "state", rules_dir=pack_dir,
                                    database_url=f"sqlite:///{tmp_path / f'log{i}.sqlite3'}")) for i in range(2)]
    before = failures()
    (pack_dir / "99-broken.yaml").write_text("rules: [ {id: broken")
    outcomes = [a.extensions["reloader"].reload() for a in apps]
    assert [o.status for o in outcomes] == ["refused", "refused"]
    assert failures() == before + 1
    (pack_dir / "99-broken.yaml").unlink()
    with caplog.at_level(logging.INFO, logger="screening.reload"):
        assert apps[0].extensions["reloader"].reload().status == "unchanged"
    assert any("reload error cleared" in r.getMessage() for r in caplog.records)
    for a in apps:
        a.extensions["store"].close()


def test_metric_help_texts_name_every_cause():
    from service.observability.metrics import RELOAD_FAILURES
    help_text = RELOAD_FAILURES._documentation
    for cause in ("lint", "compile", "failing rule test", "version", "restart", "once per change"):
        assert cause in help_text


def test_schemas_export_prints_no_sign_in_warnings(tmp_path):
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k not in ("SCREENING_USERS", "SCREENING_SECRET_KEY")}
    env.update(SCREENING_STATE_DIR=str(tmp_path), DATABASE_URL=f"sqlite:///{tmp_path / 'x.sqlite3'}")
    done = subprocess.run([sys.executable, "-m", "service.cli", "schemas", "export", "--check"], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "SCREENING_USERS" not in done.stderr + done.stdout
    assert "SCREENING_SECRET_KEY" not in done.stderr + done.stdout


@pytest.mark.parametrize("breakage, fragment", [
    (lambda text: text.replace("        type: integer\n", "        type: interger\n", 1), "did you mean 'integer'?"),
    (lambda text: text + "\n  broken: [unterminated\n", "not valid YAML"),
])
def test_a_broken_catalog_is_reported_by_lint_not_a_traceback(tmp_path, breakage, fragment):
    """The installation's catalog is the editor's file: the tools still start to say what is wrong."""
    import os
    import subprocess
    import sys

    pack_dir = copy_pack(tmp_path)
    (pack_dir / "fields.yaml").write_text(breakage((pack_dir / "fields.yaml").read_text()))
    env = {**os.environ, "SCREENING_RULES_DIR": str(pack_dir)}
    done = subprocess.run([sys.executable, "-m", "service.cli", "rules", "lint"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr
    assert re.search(r"fields\.yaml:\d+:\d+: error: .*" + re.escape(fragment), done.stdout), done.stdout + done.stderr
