"""Decision semantics through screen(), on the shipped pack."""
from __future__ import annotations

import copy

from service.screening import screen
from tests.conftest import AS_OF, decide, example, validated


def test_clean_contract_intake_is_eligible_without_review(ruleset):
    d = decide(ruleset, example("eligible-iv"))
    assert (d.decision, d.physician_review_required, d.reasons, d.missing) == ("eligible", False, [], [])


def test_several_contraindications_are_all_reported_exclusions_first(ruleset):
    d = decide(ruleset, example("ineligible-several"))
    assert d.decision == "ineligible"
    assert d.physician_review_required is True
    ids = d.reason_ids
    assert {"severe_hypertension", "active_psychosis", "elevated_blood_pressure", "active_substance_use_disorder"} <= set(ids)
    effects = [r.effect for r in d.reasons]
    assert effects == sorted(effects, key=lambda e: e != "exclude")
    psychosis = next(r for r in d.reasons if r.rule_id == "active_psychosis")
    assert psychosis.evidence == {"psychiatric_history.psychosis": "active"}
    assert psychosis.citation


def test_missing_vitals_is_incomplete_never_eligible(ruleset):
    d = decide(ruleset, example("incomplete-no-vitals"))
    assert d.decision == "incomplete"
    assert d.physician_review_required
    assert "vitals.systolic_bp" in d.missing and "vitals.diastolic_bp" in d.missing


def test_exclusion_wins_over_missing_data(ruleset):
    raw = example("incomplete-no-vitals")
    raw["psychiatric_history"]["psychosis"] = "active"
    d = decide(ruleset, raw)
    assert d.decision == "ineligible"
    assert d.missing  # still reported, so the clinician sees what else is unknown


def test_review_rule_keeps_eligible_but_flags_review(ruleset):
    d = decide(ruleset, example("review-substance-history"))
    assert d.decision == "eligible"
    assert d.physician_review_required
    assert d.reason_ids == ["substance_use_history"]
    assert "alcohol" in d.reasons[0].message


def test_same_intake_same_bytes_apart_from_id_and_time(ruleset):
    raw = example("ineligible-several")
    a = decide(ruleset, raw, decision_id="same").to_dict()
    b = decide(ruleset, copy.deepcopy(raw), decision_id="same").to_dict()
    assert a == b


def test_routes_differ_iv_excludes_what_esketamine_reviews(ruleset):
    """Unstable cardiovascular disease: the Ketalar label's blood-pressure clause excludes IV
    ketamine; the esketamine label asks for assessment (review). An AVM excludes both."""
    raw = example("eligible-iv")
    raw["medical_history"]["unstable_cardiovascular_disease"] = True
    iv = decide(ruleset, raw)
    raw["treatment"]["route"] = "esketamine_nasal"
    raw["treatment"].update(rems_enrolled=True, observation_2h_arranged=True, transport_home_arranged=True)
    es = decide(ruleset, raw)
    assert iv.decision == "ineligible"
    assert es.decision == "eligible" and es.physician_review_required
    raw["medical_history"]["arteriovenous_malformation"] = True
    assert decide(ruleset, raw).decision == "ineligible"
    raw["treatment"]["route"] = "iv_ketamine"
    assert decide(ruleset, raw).decision == "ineligible"


def test_explain_reports_every_rule(ruleset):
    d = decide(ruleset, example("incomplete-no-vitals"), explain=True)
    statuses = {e["rule_id"]: e for e in d.explanation}
    assert set(statuses) == {r.id for r in ruleset.pack.rules}
    assert statuses["severe_hypertension"]["status"] == "undecided"
    assert "vitals.systolic_bp" in statuses["severe_hypertension"]["missing"]
    assert statuses["active_psychosis"]["status"] == "not_fired"
    assert any(c["path"] == "psychiatric_history.psychosis" and c["held"] is False
               for c in statuses["active_psychosis"]["comparisons"])


def test_any_text_the_schema_accepts_reaches_the_engine_safely(ruleset, reference_ruleset):
    # JSON may carry escapes that are not valid Unicode (a lone surrogate); the C engine
    # must never see raw invalid UTF-8, whatever the entry point.
    import pytest
    from marshmallow import ValidationError

    raw = example("eligible-iv")
    raw["medications"] = [{"name": "\ud800 sertraline", "class": "maoi"}]
    with pytest.raises(ValidationError):
        validated(raw)
    raw["medications"] = [{"name": "sertraline é 漢字 \"\\ \u2028", "class": "maoi"}]
    intake = validated(raw)
    intake["medications"][0]["name"] += "\ud800"  # past the schema too: the engine still copes
    d = screen(intake, ruleset, as_of=AS_OF)
    assert d.reason_ids == screen(intake, reference_ruleset, as_of=AS_OF).reason_ids == ["bp_raising_medication"]
