"""Rule semantics the completeness model rests on, lint checks that keep a pack honest, citations
spelled out in decisions, and the generated clinical basis."""
from __future__ import annotations

import copy
import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner

from service.cli import main
from service.decision import ELIGIBLE, INCOMPLETE
from service.policy.basis import render as render_basis
from service.policy.lint import lint
from service.policy.loader import read_pack
from service.ruleset import default_rules_path, load_ruleset
from service.screening import screen
from tests.conftest import AS_OF, ROOT, example, validated

PACK_YAML = """\
name: tiny
version: "1"
citations:
  SPR:
    reference: "SPRAVATO US label"
    kind: label
    url: "https://example.org/spr"
    checked: 2026-11-30
"""


def tiny_pack(tmp_path: Path, rules: str, pack_yaml: str = PACK_YAML) -> Path:
    root = tmp_path / "tiny"
    root.mkdir(parents=True)
    (root / "pack.yaml").write_text(pack_yaml)
    (root / "10-rules.yaml").write_text(textwrap.dedent(rules))
    return root


def problems(root: Path) -> list:
    pack, found = read_pack(root)
    return found + lint(pack)


def decide(ruleset, raw: dict):
    return screen(validated(copy.deepcopy(raw)), ruleset, as_of=AS_OF, decision_id="x")


# --- three-valued completeness ----------------------------------------------------------------

NEGATED_FINDING = """\
rules:
  - id: high_pressure
    title: High pressure
    concludes: high_pressure
    when: {vitals.systolic_bp: {gt: 140}}
    citation: "software default"
  - id: low_pressure_adult
    title: Normal pressure in an adult
    when:
      all:
        - not: {finding: high_pressure}
        - patient.age_years: {gt: 17}
    effect: review
    severity: caution
    message: "x"
    citation: "software default"
"""


@pytest.mark.parametrize("backend", ["durable", "reference"])
def test_a_negated_finding_that_is_undecided_leaves_its_rule_undecided_not_fired(tmp_path, backend):
    ruleset = load_ruleset(tiny_pack(tmp_path, NEGATED_FINDING), backend)
    raw = {"subject_id": "s", "treatment": {"route": "iv_ketamine", "indication": "chronic_pain"},
           "patient": {"age_years": 40}}
    d = decide(ruleset, raw)
    # The engine reads "not concluded" as "not high": Kleene logic says it is unknown.
    assert (d.decision, d.reason_ids, d.missing) == (INCOMPLETE, [], ["vitals.systolic_bp"])
    raw["vitals"] = {"systolic_bp": 120}
    assert decide(ruleset, raw).reason_ids == ["low_pressure_adult"]
    raw["vitals"] = {"systolic_bp": 150}
    assert decide(ruleset, raw).decision == ELIGIBLE


def test_unasked_hepatic_cardiac_and_cerebrovascular_questions_are_incomplete(ruleset):
    for path in ("hepatic_impairment", "recent_cardiac_event", "cerebrovascular_history"):
        raw = example("eligible-iv")
        del raw["medical_history"][path]
        d = decide(ruleset, raw)
        assert d.decision == INCOMPLETE and f"medical_history.{path}" in d.missing, path


def test_unknown_pregnancy_status_is_asked_and_the_finding_is_not_shown_when_not_pregnant(ruleset):
    raw = example("eligible-iv")
    del raw["patient"]["pregnant"]
    d = decide(ruleset, raw)
    assert (d.decision, d.reason_ids, d.missing) == (INCOMPLETE, [], ["patient.pregnant"])
    assert decide(ruleset, example("eligible-iv")).findings == []


def test_contradicting_answers_are_refused_by_the_contract_not_guessed():
    from marshmallow import ValidationError

    from schemas.intake import IntakeSchema
    raw = example("eligible-iv")
    raw["psychiatric_history"]["last_suicide_attempt"] = "2026-10-01"  # with prior_suicide_attempt: false
    with pytest.raises(ValidationError) as exc:
        IntakeSchema().load(raw)
    assert "last_suicide_attempt" in exc.value.messages["psychiatric_history"]
    raw = example("eligible-iv")
    raw["prior_ketamine"]["adverse_events"] = ["psychosis"]  # with previously_treated: false
    with pytest.raises(ValidationError) as exc:
        IntakeSchema().load(raw)
    assert "adverse_events" in exc.value.messages["prior_ketamine"]
    raw["prior_ketamine"]["adverse_events"] = []
    IntakeSchema().load(raw)
    raw = example("eligible-iv")
    raw["medical_history"]["severe_hepatic_impairment"] = True  # with a Child-Pugh grade of "none"
    with pytest.raises(ValidationError) as exc:
        IntakeSchema().load(raw)
    assert "severe_hepatic_impairment" in exc.value.messages["medical_history"]


# --- messages that render -----------------------------------------------------------------------

def test_messages_name_the_substance_and_list_the_adverse_events(ruleset):
    raw = example("eligible-iv")
    raw["substance_use"] = [{"substance": "cocaine", "disorder": True, "status": "active"}]
    raw["prior_ketamine"] = {"previously_treated": True, "adverse_events": ["cystitis", "severe_blood_pressure_rise"]}
    d = decide(ruleset, raw)
    messages = {r.rule_id: r.message for r in d.reasons}
    assert "(cocaine)" in messages["active_substance_use_disorder"]
    assert "caused: cystitis, severe blood pressure rise." in messages["prior_ketamine_adverse_event"]
    assert not any("unknown" in m or "not recorded" in m for m in messages.values())


BAD_PLACEHOLDERS = """\
rules:
  - id: list_of_records
    title: Shows a list of records
    when: {substance_use: {any_item: {substance: {eq: cocaine}}}}
    effect: review
    severity: caution
    message: "Uses {substance_use}"
    citation: "software default"
  - id: maybe_absent
    title: Shows a value that may be absent
    when:
      any:
        - allergies.ketamine: {eq: true}
        - allergies.esketamine: {eq: true}
    effect: exclude
    severity: absolute
    message: "ketamine: {allergies.ketamine}"
    citation: "software default"
  - id: fine
    title: Shows a list of plain values and an item field
    when:
      all:
        - prior_ketamine.adverse_events: {contains_any: [cystitis]}
        - substance_use: {any_item: {substance: {eq: cocaine}}}
    effect: review
    severity: caution
    message: "{prior_ketamine.adverse_events} {substance_use.substance}"
    citation: "software default"
"""


def test_lint_rejects_placeholders_that_cannot_render(tmp_path):
    found = [p for p in problems(tiny_pack(tmp_path, BAD_PLACEHOLDERS)) if p.code == "template"]
    by_rule = {p.rule_id: p.message for p in found}
    assert "a list of records" in by_rule["list_of_records"]
    assert "may be absent when the rule fires" in by_rule["maybe_absent"]
    assert "fine" not in by_rule


# --- absence read as an answer, and declared optional answers --------------------------------------

ABSENCE = """\
rules:
  - id: no_status_means_pregnant
    title: Pregnancy not recorded
    when: {patient.pregnant: {exists: false}}
    effect: exclude
    severity: relative
    message: "x"
    citation: "SPR Pregnancy"
"""

DECLARED = PACK_YAML + """\
optional:
  - path: patient.pregnant
    means: "not pregnant"
    reason: "a test"
    citation: "software default (a test)"
  - path: patient.breastfeeding
    means: "nobody reads this"
    reason: "a test"
    citation: "software default"
"""


def test_lint_refuses_absence_read_as_an_answer_unless_declared(tmp_path):
    found = problems(tiny_pack(tmp_path / "a", ABSENCE))
    assert [p.code for p in found if p.level == "error"] == ["absence"]
    assert "'patient.pregnant' is absent" in found[0].message


def test_lint_lists_declared_optional_answers_and_refuses_one_no_rule_reads(tmp_path):
    found = problems(tiny_pack(tmp_path, ABSENCE, DECLARED))
    notes = [p for p in found if p.level == "note"]
    errors = [p for p in found if p.level == "error"]
    assert len(notes) == 1 and "patient.pregnant" in notes[0].message and "no_status_means_pregnant" in notes[0].message
    assert [(p.code, "patient.breastfeeding" in p.message) for p in errors] == [("optional", True)]


def test_a_decision_relying_on_a_declared_absence_states_it_and_requires_review(tmp_path):
    root = tiny_pack(tmp_path, ABSENCE.replace("effect: exclude", "effect: review"),
                     DECLARED.split("  - path: patient.breastfeeding")[0])
    ruleset = load_ruleset(root)
    raw = {"subject_id": "s", "treatment": {"route": "iv_ketamine", "indication": "chronic_pain"}, "patient": {}}
    d = decide(ruleset, raw)
    assert [a.path for a in d.assumptions] == ["patient.pregnant"] and d.physician_review_required
    body = d.to_dict()
    assert body["assumptions"][0]["means"] == "not pregnant"
    assert body["assumptions"][0]["sources"][0]["kind"] == "software default"
    raw["patient"] = {"pregnant": False}
    assert decide(ruleset, raw).assumptions == []


def test_lint_refuses_unknown_citation_codes_and_a_clinic_page(tmp_path):
    rules = ABSENCE.replace('citation: "SPR Pregnancy"', 'citation: "SEED (a clinic page); SPR Pregnancy; COH"')
    found = [p for p in problems(tiny_pack(tmp_path, rules.replace("exists: false", "eq: true"))) if p.code == "citation"]
    assert len(found) == 2 and "unknown source 'SEED'" in found[0].message and "'COH'" in found[1].message


def test_the_shipped_pack_cites_only_registered_sources_and_never_the_seed_page():
    pack, found = read_pack(default_rules_path())
    assert not [p for p in found + lint(pack) if p.level == "error"]
    assert "SEED" not in pack.citations
    for rule in pack.rules:
        assert "SEED" not in (rule.citation or ""), rule.id


# --- citations spelled out ---------------------------------------------------------------------------

def test_decisions_carry_the_expanded_source(ruleset, client):
    raw = example("eligible-iv")
    raw["medical_history"]["arteriovenous_malformation"] = True
    reason = decide(ruleset, raw).to_dict()["reasons"][0]
    spr = next(s for s in reason["sources"] if s["code"] == "SPR")
    assert spr["kind"] == "label" and spr["section"].startswith("Contraindications")
    assert spr["url"].startswith("https://") and spr["checked"] == "2026-11-30" and "SPRAVATO" in spr["reference"]
    assert any(s["kind"] == "software default" for s in reason["sources"])
    body = client.post("/v1/screenings", json=raw).get_json()
    assert body["reasons"][0]["sources"] == reason["sources"]


# --- the generated clinical basis ----------------------------------------------------------------------

def test_clinical_basis_document_is_up_to_date():
    pack, _ = read_pack(default_rules_path())
    current = (ROOT / "docs" / "clinical-basis.md").read_text(encoding="utf-8")
    assert current == render_basis(pack), "run: screening rules basis -o docs/clinical-basis.md"
    result = CliRunner().invoke(main, ["rules", "basis", "-o", str(ROOT / "docs" / "clinical-basis.md"), "--check"])
    assert result.exit_code == 0, result.output


def test_clinical_basis_names_every_rule_and_marks_software_defaults():
    pack, _ = read_pack(default_rules_path())
    text = render_basis(pack)
    for rule in pack.rules:
        assert f"`{rule.id}`" in text
    assert "**software default**" in text and "| label |" in text and "| guideline |" in text
