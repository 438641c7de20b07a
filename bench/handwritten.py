"""The shipped pack (rules/ketamine-screening) written by hand as one Python function: the floor.

It implements the same decision semantics as ``service.screening.screen`` (exclusions win, then
missing data, reasons exclusions first in pack order, findings and their undecided inputs) but
produces only the outcome, not messages or evidence. ``bench.handwritten_check`` holds it to
``screen()`` on every test case of the pack; when the YAML changes and this does not, the bench
says so instead of reporting a number for different rules.
"""
from __future__ import annotations

import datetime as dt
from typing import Any, NamedTuple

from service.policy.conditions import age

IV, ESK = "iv_ketamine", "esketamine_nasal"


class Outcome(NamedTuple):
    decision: str
    reasons: tuple[str, ...]
    findings: tuple[str, ...]
    missing: tuple[str, ...]
    review: bool


def _get(section: Any, key: str) -> Any:
    return section.get(key) if isinstance(section, dict) else None


def decide(intake: dict, as_of: dt.datetime) -> Outcome:
    route = intake["treatment"]["route"]
    treatment = intake["treatment"]
    patient = intake.get("patient") or {}
    vitals = intake.get("vitals") or {}
    psych = intake.get("psychiatric_history") or {}
    history = intake.get("medical_history") or {}
    allergies = intake.get("allergies") or {}
    substances = intake.get("substance_use")
    medications = intake.get("medications")

    excludes: list[str] = []
    reviews: list[str] = []
    findings: list[str] = []
    missing: list[str] = []

    def need(*paths_values: tuple[str, Any]) -> None:
        for path, value in paths_values:
            if value is None and path not in missing:
                missing.append(path)

    def rule(rule_id: str, effect: str, fired: bool, *required: tuple[str, Any]) -> None:
        if fired:
            (excludes if effect == "exclude" else reviews).append(rule_id)
        else:
            need(*required)

    # 10 hypersensitivity
    k, e = allergies.get("ketamine"), allergies.get("esketamine")
    if route == IV:
        rule("hypersensitivity_iv_ketamine", "exclude", k is True or e is True, ("allergies.ketamine", k))
    else:
        rule("hypersensitivity_esketamine", "exclude", e is True or k is True,
             ("allergies.ketamine", k), ("allergies.esketamine", e))

    # 20 vascular: exclusions for esketamine, reviews for IV
    for name in ("aneurysmal_vascular_disease", "arteriovenous_malformation", "intracerebral_hemorrhage"):
        value = history.get(name)
        if route == ESK:
            rule(f"{name}_esketamine", "exclude", value is True, (f"medical_history.{name}", value))
        else:
            rule(f"{name}_iv", "review", value is True, (f"medical_history.{name}", value))

    # 30 blood pressure
    sbp, dbp, years = vitals.get("systolic_bp"), vitals.get("diastolic_bp"), patient.get("age_years")
    bp_high = ((sbp is not None and sbp > 150) or (sbp is not None and sbp > 140 and years is not None and years <= 65)
               or (dbp is not None and dbp > 90))
    bp_unknown: list[tuple[str, Any]] = []
    if bp_high:
        findings.append("bp_above_dosing_threshold")
    else:
        bp_unknown = [(p, v) for p, v in (("vitals.systolic_bp", sbp), ("vitals.diastolic_bp", dbp),
                                          ("patient.age_years", years)) if v is None]
    rule("severe_hypertension", "exclude", (sbp is not None and sbp > 180) or (dbp is not None and dbp > 100),
         ("vitals.systolic_bp", sbp), ("vitals.diastolic_bp", dbp))
    rule("elevated_blood_pressure", "review", bp_high, *bp_unknown)
    measured = vitals.get("measured_at")
    rule("stale_vitals", "review", measured is not None and age(measured, as_of)[0] > 30,
         ("vitals.measured_at", measured))

    # 40 cardiac
    # (recent_cardiac_event and cerebrovascular_history are optional: they never hold a decision up)
    rule("recent_cardiac_event", "review", history.get("recent_cardiac_event") is True)
    unstable = history.get("unstable_cardiovascular_disease")
    rule("unstable_cardiovascular_disease", "review", unstable is True,
         ("medical_history.unstable_cardiovascular_disease", unstable))
    rule("cerebrovascular_history", "review", history.get("cerebrovascular_history") is True)

    # 45 intracranial / intraocular pressure
    icp, iop = history.get("elevated_intracranial_pressure"), history.get("elevated_intraocular_pressure")
    rule("elevated_icp_or_iop", "review", icp is True or iop is True,
         ("medical_history.elevated_intracranial_pressure", icp), ("medical_history.elevated_intraocular_pressure", iop))

    # 50 pregnancy
    sex = patient.get("sex_at_birth")
    fertile = sex in ("female", "intersex", "unknown") and years is not None and 12 <= years <= 55
    fertile_unknown: list[tuple[str, Any]] = []
    if fertile:
        findings.append("could_be_pregnant")
    else:
        fertile_unknown = [(p, v) for p, v in (("patient.sex_at_birth", sex), ("patient.age_years", years)) if v is None]
    pregnant, feeding = patient.get("pregnant"), patient.get("breastfeeding")
    rule("pregnancy", "exclude", pregnant is True or (fertile and pregnant is None), *fertile_unknown)
    rule("breastfeeding", "review", feeding is True or (fertile and feeding is None), *fertile_unknown)

    # 60 psychiatric
    psychosis = psych.get("psychosis")
    rule("active_psychosis", "exclude", psychosis == "active", ("psychiatric_history.psychosis", psychosis))
    rule("psychosis_history", "review",
         psychosis == "past" or psych.get("schizophrenia") is True or psych.get("schizoaffective_disorder") is True,
         ("psychiatric_history.psychosis", psychosis))
    mania, bipolar = psych.get("current_mania"), psych.get("bipolar_disorder")
    rule("current_mania", "exclude", mania is True, ("psychiatric_history.current_mania", mania))
    rule("bipolar_disorder", "review", bipolar is True, ("psychiatric_history.bipolar_disorder", bipolar))

    # 65 suicidality
    ideation, plan = psych.get("suicidal_ideation"), psych.get("suicidal_plan_or_intent")
    attempt = psych.get("last_suicide_attempt")
    rule("active_suicidality", "review",
         (ideation == "active" and plan is not False) or (attempt is not None and age(attempt, as_of)[0] <= 30),
         ("psychiatric_history.suicidal_ideation", ideation))

    # 70 substance use
    recent = history_sud = dissociative = misuse = False
    for item in substances or ():
        substance, disorder, status, last = item.get("substance"), item.get("disorder"), item.get("status"), item.get("last_use")
        months = age(last, as_of)[1] if last is not None else None
        if substance is not None and disorder is True:
            if status == "active" or (months is not None and months <= 12):
                recent = True
            if status in ("in_remission", None) and (months is None or months > 12):
                history_sud = True
        if substance in ("ketamine", "pcp"):
            dissociative = True
        elif substance is not None and disorder is not True:
            misuse = True
    sud_unknown = [("substance_use", substances)]
    if recent:
        findings.append("recent_substance_use_disorder")
    rule("active_substance_use_disorder", "review", recent, *([] if recent else sud_unknown))
    rule("substance_use_history", "review", history_sud, *sud_unknown)
    rule("dissociative_misuse", "review", dissociative, *sud_unknown)
    rule("reported_substance_misuse", "review", misuse, *sud_unknown)

    # 80 medications
    classes = {m.get("class") for m in medications or () if m.get("name") is not None}
    meds = ("medications", medications)
    rule("bp_raising_medication", "review", bool(classes & {"maoi", "stimulant"}), meds)
    rule("cns_depressants", "review", bool(classes & {"benzodiazepine", "opioid", "sedative"}), meds)
    if route == IV:
        rule("theophylline", "review", "theophylline" in classes, meds)

    # 90 hepatic
    grade = history.get("hepatic_impairment")
    rule("hepatic_impairment_severe", "exclude", history.get("severe_hepatic_impairment") is True or grade == "severe")
    rule("hepatic_impairment_moderate", "review", grade == "moderate")

    # 95 age
    minor = years is not None and years < 18
    if minor:
        findings.append("under_18")
    minor_unknown = [("patient.age_years", years)]
    if route == ESK:
        rule("minor_esketamine", "exclude", minor, *minor_unknown)
    else:
        rule("minor_iv", "review", minor, *minor_unknown)

    # 97 esketamine REMS, 98 IV monitoring
    rems, observed, transport = (treatment.get("rems_enrolled"), treatment.get("observation_2h_arranged"),
                                 treatment.get("transport_home_arranged"))
    if route == ESK:
        rule("esketamine_rems", "review", rems is False or observed is False or transport is False,
             ("treatment.rems_enrolled", rems), ("treatment.observation_2h_arranged", observed),
             ("treatment.transport_home_arranged", transport))
    else:
        rule("iv_post_infusion_monitoring", "review", observed is False or transport is False)

    # 99 prior ketamine
    events = _get(intake.get("prior_ketamine"), "adverse_events") or ()
    rule("prior_ketamine_adverse_event", "review",
         any(e in ("severe_blood_pressure_rise", "psychosis", "cystitis", "liver_injury") for e in events))

    if excludes:
        decision = "ineligible"
    elif missing:
        decision = "incomplete"
    else:
        decision = "eligible"
    review = decision != "eligible" or bool(reviews)
    return Outcome(decision, tuple(excludes + reviews), tuple(findings), tuple(missing), review)
