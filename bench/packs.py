"""Generated rule packs of any size, written as YAML and read through the real loader and lint.

The rules are varied on purpose (thresholds, ranges, enums, any_item over records with dates,
date ages, findings consumed by later rules, route-restricted rules) so that a large pack
exercises what the shipped one does. ``HOT_INTAKE`` fires most of them at once: hundreds of
rules in one evaluation, beyond durable-rules' 64-per-assert and 512-per-ruleset limits.
"""
from __future__ import annotations

import copy
import datetime as dt
import json
from pathlib import Path

import yaml

AS_OF = dt.datetime(2026, 11, 24, 12, 0, tzinfo=dt.timezone.utc)
RULES_PER_FILE = 500

_CLASSES = ["maoi", "stimulant", "benzodiazepine", "opioid", "sedative", "theophylline", "ssri", "snri"]
_SUBSTANCES = ["alcohol", "cannabis", "cocaine", "opioids", "stimulants", "sedatives"]
_HISTORY = ["aneurysmal_vascular_disease", "arteriovenous_malformation", "intracerebral_hemorrhage",
            "unstable_cardiovascular_disease", "elevated_intracranial_pressure", "elevated_intraocular_pressure"]


def _rule(i: int) -> dict:
    kind = i % 10
    rule: dict = {"id": f"g{i:05d}", "title": f"Generated rule {i}", "citation": "software default (generated for benchmarks)"}
    # Thresholds lie beyond a healthy adult's values (``FIVE``), so what a complete intake fires
    # does not grow with the pack; ``HOT_INTAKE`` is beyond them all.
    if kind == 0:
        rule["when"] = {"vitals.systolic_bp": {"gt": 140 + i % 100}}
        rule["requires"] = ["vitals.systolic_bp"]
    elif kind == 1:
        rule["when"] = {"vitals.diastolic_bp": {"gt": 90 + i % 60}}
        rule["requires"] = ["vitals.diastolic_bp"]
    elif kind == 2:
        low = 65 + i % 30
        rule["when"] = {"patient.age_years": {"gte": low, "lte": low + 15}}
    elif kind == 3:
        rule["when"] = {"medications": {"any_item": {"class": {"in": [_CLASSES[i % 8], _CLASSES[(i + 3) % 8]]}}}}
        rule["requires"] = ["medications"]
    elif kind == 4:
        rule["when"] = {"substance_use": {"any_item": {"all": [
            {"substance": {"eq": _SUBSTANCES[i % 6]}}, {"disorder": {"eq": True}},
            {"any": [{"status": {"eq": "active"}}, {"last_use": {"within_months": 1 + i % 36}}]}]}}}
    elif kind == 5:
        rule["when"] = {"any": [{f"medical_history.{_HISTORY[i % 6]}": {"eq": True}},
                                {f"medical_history.{_HISTORY[(i + 1) % 6]}": {"eq": True}}]}
    elif kind == 6:
        rule["when"] = {"vitals.measured_at": {"older_than_days": 1 + i % 60}}
    elif kind == 7:
        rule["concludes"] = f"f{i:05d}"
        rule["when"] = {"patient.age_years": {"gte": 65 + i % 30}}
        rule["requires"] = ["patient.age_years"]
        return rule
    elif kind == 8:
        rule["when"] = {"all": [{"finding": f"f{i - 1:05d}"},
                                {"not": {"psychiatric_history.psychosis": {"eq": "none"}}}]}
    else:  # one named medication each, as a formulary of interactions would list them
        rule["when"] = {"medications": {"any_item": {"name": {"eq": f"med-{i:05d}"}}}}
        rule["requires"] = ["medications"]
    rule["effect"] = "exclude" if i % 7 == 0 else "review"
    rule["message"] = f"Generated rule {i} applies."
    rule["severity"] = "relative"
    if i % 5 == 0:
        rule["applies_to"] = {"routes": ["iv_ketamine"]}
    return rule


def write_pack(directory: Path, size: int) -> Path:
    """A pack of ``size`` rules in ``directory`` (created), ready for ``load_ruleset``."""
    directory.mkdir(parents=True, exist_ok=True)
    # A version of its own per size: a reload refuses a changed pack under an unchanged version.
    (directory / "pack.yaml").write_text(yaml.safe_dump({"name": f"generated-{size}", "version": f"1.{size}"}))
    rules = [_rule(i) for i in range(size)]
    if rules and "concludes" in rules[-1]:  # a finding nobody uses is fine, but keep packs uniform
        rules[-1] = {**_rule(size - 2), "id": f"g{size - 1:05d}"}
    for start in range(0, size, RULES_PER_FILE):
        chunk = rules[start:start + RULES_PER_FILE]
        (directory / f"{start // RULES_PER_FILE:03d}-generated.yaml").write_text(
            yaml.safe_dump({"rules": chunk}, sort_keys=False))
    return directory


HOT_INTAKE = {
    "subject_id": "hot",
    "treatment": {"route": "iv_ketamine", "indication": "treatment_resistant_depression"},
    "patient": {"age_years": 80, "sex_at_birth": "female", "pregnant": False, "breastfeeding": False},
    "vitals": {"systolic_bp": 260, "diastolic_bp": 190, "heart_rate": 80, "measured_at": "2026-06-01T09:00:00Z"},
    "psychiatric_history": {"psychosis": "active", "bipolar_disorder": False, "current_mania": False,
                            "suicidal_ideation": "none"},
    "substance_use": [{"substance": s, "disorder": True, "status": "in_remission", "last_use": "2026-11-01"}
                      for s in _SUBSTANCES],
    "medical_history": {name: True for name in _HISTORY},
    "medications": [{"name": f"drug-{c}", "class": c} for c in _CLASSES],
    "allergies": {"ketamine": False, "esketamine": False},
}


# Complete (every answer a generated rule reads is given), healthy values, and five medications
# that the formulary rules g00009 … g00049 name: exactly five rules fire at every pack size
# from 50 rules up, whatever else the pack holds.
FIVE = {
    "subject_id": "five",
    "treatment": {"route": "iv_ketamine", "indication": "treatment_resistant_depression"},
    "patient": {"age_years": 40, "sex_at_birth": "male"},
    "vitals": {"systolic_bp": 118, "diastolic_bp": 76, "heart_rate": 70, "measured_at": "2026-11-24T09:00:00Z"},
    "psychiatric_history": {"psychosis": "none", "bipolar_disorder": False, "current_mania": False,
                            "suicidal_ideation": "none"},
    "substance_use": [],
    "medical_history": {name: False for name in _HISTORY},
    "medications": [{"name": f"med-{i:05d}", "class": "other"} for i in (9, 19, 29, 39, 49)],
    "allergies": {"ketamine": False, "esketamine": False},
}


def intakes() -> list[dict]:
    """Raw intakes for growth runs: the hot one, a clean one, an esketamine one, a sparse one."""
    clean = copy.deepcopy(HOT_INTAKE)
    clean.update(subject_id="clean", vitals={"systolic_bp": 118, "diastolic_bp": 76, "measured_at": "2026-11-20T09:00:00Z"},
                 substance_use=[], medications=[], medical_history={name: False for name in _HISTORY},
                 psychiatric_history={"psychosis": "none"})
    nasal = copy.deepcopy(HOT_INTAKE)
    nasal.update(subject_id="nasal", treatment={"route": "esketamine_nasal", "indication": "ptsd"})
    sparse = {"subject_id": "sparse", "treatment": {"route": "iv_ketamine", "indication": "chronic_pain"},
              "patient": {"age_years": 70}}
    return [json.loads(json.dumps(x)) for x in (HOT_INTAKE, clean, nasal, sparse)]
