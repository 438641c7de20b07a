"""Properties of decisions, over intakes generated from the intake contract (tests/strategies.py).

- monotonic: adding a contraindication never makes a decision more permissive;
- a field that an applicable rule requires, when missing, never yields a clean ``eligible``;
- deterministic: same intake and ruleset, same decision byte for byte; and the durable-rules
  backend agrees with the reference backend on every generated intake;
- concurrent: screened at once on many threads and processes, every intake gets exactly the
  decision it gets alone (the durable backend shares one engine per ruleset);
- every entry point (HTTP, CLI, batch) hands out the decision ``screen()`` makes. (CDS Hooks
  maps FHIR to an intake first; tests/test_cdshooks_service.py compares its decisions with the
  intake JSON's.)

"Adding a contraindication" never fills in an unknown: turning medications from unknown into
[an SSRI] legitimately turns ``incomplete`` into ``eligible``, so a change that is not a risk by
itself is applied only where the field is already known.

Example counts are bounded (~30 s of CPU for this file); the ``ci`` profile (CI=true, see
tests/conftest.py) is derandomized so a red build replays. Longer local runs: raise max_examples.
"""
from __future__ import annotations

import concurrent.futures as cf
import copy
import datetime as dt
import json
import multiprocessing
import random
from dataclasses import dataclass
from typing import Callable

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, Phase, given, note, settings
from hypothesis import seed as seed_
from hypothesis import strategies as st

from schemas.intake import (HEPATIC_IMPAIRMENT, KETAMINE_ADVERSE_EVENTS, MEDICATION_CLASSES, PSYCHOSIS,
                            SUBSTANCE_STATUS, SUBSTANCES, SUICIDAL_IDEATION, IntakeSchema, catalogue)
from service.batch import run_batch
from service.cli import exit_code, main
from service.decision import ELIGIBLE, INCOMPLETE, INELIGIBLE, Decision
from service.engine.base import partition_key
from service.policy import conditions as C
from service.ruleset import Ruleset, default_rules_path, load_ruleset
from service.screening import screen
from tests import conftest
from tests.conftest import AS_OF, validated
from tests.strategies import intakes, near_clean_intakes

FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def decide(ruleset: Ruleset, raw: dict, **kw) -> Decision:
    """tests.conftest.decide with a fixed decision id, so two decisions compare equal."""
    return conftest.decide(ruleset, raw, decision_id="fixed", **kw)


def clean_eligible(d: Decision) -> bool:
    return d.decision == ELIGIBLE and not d.physician_review_required


def excludes(d: Decision) -> set[str]:
    return {r.rule_id for r in d.reasons if r.effect == "exclude"}


# --- contraindications, as edits of a raw intake ----------------------------------------------

@dataclass(frozen=True)
class Contraindication:
    """One change that adds risk. ``strict``: no reason can go away (an escalation such as
    psychosis past -> active may replace a review by an exclusion; the others only add)."""

    name: str
    apply: Callable[[dict], None]
    strict: bool = True


def _obj(intake: dict, key: str) -> dict:
    if not isinstance(intake.get(key), dict):
        intake[key] = {}
    return intake[key]


def _set(path: str, value) -> Callable[[dict], None]:
    parent, leaf = path.split(".")
    return lambda intake: _obj(intake, parent).__setitem__(leaf, value)


def _escalate(path: str, scale: tuple[str, ...], to: str, risk_from: str | None) -> Callable[[dict], None]:
    """Move a graded field up its scale. From unknown, only to a value that is a risk by itself
    (``risk_from`` or above): unknown -> "mild" supplies data, it adds no contraindication."""
    parent, leaf = path.split(".")

    def apply(intake: dict) -> None:
        obj = _obj(intake, parent)
        current = obj.get(leaf)
        if leaf == "hepatic_impairment" and current is None and obj.get("severe_hepatic_impairment") is True:
            current = "severe"  # the yes/no answer already says severe
        if current is None:
            if risk_from is not None and scale.index(to) >= scale.index(risk_from):
                obj[leaf] = to
        elif scale.index(to) > scale.index(current):
            obj[leaf] = to
        if leaf == "hepatic_impairment" and obj.get(leaf) is not None and obj.get("severe_hepatic_impairment") is not None:
            obj["severe_hepatic_impairment"] = obj[leaf] == "severe"  # the contract wants the two to agree
    return apply


def _append(key: str, item: dict, create: bool = True) -> Callable[[dict], None]:
    """Add an entry. Turning an unknown list into a known one also *removes* the unknown (an
    intake with medications unknown is incomplete; one whose only medication is an SSRI is
    eligible), so an entry that is not itself a risk is added only to a list already known."""
    def apply(intake: dict) -> None:
        if not isinstance(intake.get(key), list):
            if not create:
                return
            intake[key] = []
        intake[key].append(item)
    return apply


def _raise_pressure(systolic: int, diastolic: int) -> Callable[[dict], None]:
    def apply(intake: dict) -> None:
        vitals = _obj(intake, "vitals")
        sbp, dbp = vitals.get("systolic_bp"), vitals.get("diastolic_bp")
        if isinstance(sbp, int):
            vitals["systolic_bp"] = min(300, sbp + systolic)
        if isinstance(dbp, int):
            now = vitals.get("systolic_bp")
            ceiling = min(200, now - 1) if isinstance(now, int) else 200
            vitals["diastolic_bp"] = max(dbp, min(ceiling, dbp + diastolic))
    return apply


def _severe_hepatic(intake: dict) -> None:
    history = _obj(intake, "medical_history")
    history["severe_hepatic_impairment"] = True
    if history.get("hepatic_impairment") is not None:
        history["hepatic_impairment"] = "severe"


def _recent_attempt(days_ago: int) -> Callable[[dict], None]:
    def apply(intake: dict) -> None:
        psych = _obj(intake, "psychiatric_history")
        new = AS_OF.date() - dt.timedelta(days=days_ago)
        old = psych.get("last_suicide_attempt")
        if old is None and psych.get("prior_suicide_attempt") is not False:
            return  # the attempt or its date is unknown: a date would fill in an unknown, not add a risk
        if old is None or dt.date.fromisoformat(old) < new:
            psych["last_suicide_attempt"] = new.isoformat()
            psych["prior_suicide_attempt"] = True  # the contract refuses a date with "never attempted"
    return apply


def _adverse_event(event: str) -> Callable[[dict], None]:
    def apply(intake: dict) -> None:
        prior = _obj(intake, "prior_ketamine")
        events = prior.get("adverse_events") if isinstance(prior.get("adverse_events"), list) else []
        # Duplicates say nothing more; dropping them keeps the list within the contract's length.
        prior["adverse_events"] = list(dict.fromkeys(events + [event]))
        prior["previously_treated"] = True  # the contract refuses events with "never treated"
    return apply


def _risk_booleans() -> list[str]:
    """Boolean fields where true is the risk: every clinical boolean of the contract except the
    arrangements in ``treatment``, where false is the risk."""
    return [path for path, info in catalogue().items()
            if info.kind == "bool" and "." in path and not path.startswith("treatment.")]


def contraindication_families() -> dict[str, st.SearchStrategy[Contraindication]]:
    """One strategy per kind of added risk: each risk boolean on its own, the arrangements,
    escalations of graded fields, list entries, blood pressure and a recent suicide attempt."""
    dates = st.dates(AS_OF.date() - dt.timedelta(days=3000), AS_OF.date())
    substance = st.builds(
        lambda s, status, last, disorder: {k: v for k, v in {
            "substance": s, "disorder": disorder, "status": status,
            "last_use": last.isoformat() if last else None}.items() if v is not None or k == "disorder"},
        st.sampled_from(SUBSTANCES), st.sampled_from(SUBSTANCE_STATUS + (None,)),
        st.one_of(st.none(), dates), st.sampled_from((True, False, None)),
    )
    disorder = substance.map(lambda item: {**item, "disorder": True})
    medication = st.builds(lambda name, cls: {"name": name, "class": cls},
                           st.sampled_from(("drug-a", "phenelzine", "Adderall")), st.sampled_from(MEDICATION_CLASSES))
    families: dict[str, st.SearchStrategy[Contraindication]] = {
        f"{p} = true": st.just(Contraindication(f"{p} = true", _set(p, True))) for p in _risk_booleans()
    }
    # "Severe" as a yes/no must agree with the Child-Pugh grade when both are given.
    # An escalation when a grade is given (moderate -> severe replaces the review by an exclusion).
    families["medical_history.severe_hepatic_impairment = true"] = st.just(Contraindication(
        "severe hepatic impairment", _severe_hepatic, strict=False))
    for p in ("treatment.rems_enrolled", "treatment.observation_2h_arranged", "treatment.transport_home_arranged"):
        families[f"{p} = false"] = st.just(Contraindication(f"{p} = false", _set(p, False)))
    # Active ideation is a risk with a plan, or with the plan unknown: not by itself.
    for path, scale, risk_from in (("psychiatric_history.psychosis", PSYCHOSIS, "past"),
                                   ("psychiatric_history.suicidal_ideation", SUICIDAL_IDEATION, None),
                                   ("medical_history.hepatic_impairment", HEPATIC_IMPAIRMENT, "moderate")):
        families[f"{path} up"] = st.sampled_from(scale[1:]).map(
            lambda v, path=path, scale=scale, risk_from=risk_from: Contraindication(
                f"{path} -> {v}", _escalate(path, scale, v, risk_from), strict=False))
    families.update({
        "substance use entry": substance.map(lambda i: Contraindication(f"substance use {i}", _append("substance_use", i))),
        "substance use disorder": disorder.map(lambda i: Contraindication(f"disorder {i}", _append("substance_use", i))),
        "medication": medication.map(lambda i: Contraindication(f"medication {i}", _append("medications", i, create=False))),
        "risky medication": st.sampled_from(("maoi", "stimulant", "benzodiazepine", "opioid", "sedative")).map(
            lambda c: Contraindication(f"medication {c}", _append("medications", {"name": "x", "class": c}))),
        "MAOI": st.just(Contraindication("MAOI", _append("medications", {"name": "phenelzine", "class": "maoi"}))),
        "blood pressure up": st.tuples(st.integers(1, 150), st.integers(0, 100)).map(
            lambda t: Contraindication(f"blood pressure +{t[0]}/+{t[1]}", _raise_pressure(*t))),
        "suicide attempt": st.integers(0, 400).map(
            lambda n: Contraindication(f"suicide attempt {n} days ago", _recent_attempt(n))),
        "prior ketamine adverse event": st.sampled_from(KETAMINE_ADVERSE_EVENTS).map(
            lambda e: Contraindication(f"prior ketamine {e}", _adverse_event(e))),
    })
    return families


FAMILIES = contraindication_families()


def assert_not_more_permissive(before: Decision, after: Decision, strict: bool) -> None:
    if before.decision == INELIGIBLE:
        assert after.decision == INELIGIBLE, "ineligible became " + after.decision
    if before.physician_review_required:
        assert after.physician_review_required, "review disappeared"
    if not clean_eligible(before):
        assert not clean_eligible(after), "became a clean eligible"
    assert excludes(before) <= excludes(after), f"exclusions {excludes(before) - excludes(after)} disappeared"
    if before.urgent:
        assert after.urgent, "urgency disappeared"
    if strict:
        assert set(before.reason_ids) <= set(after.reason_ids), \
            f"reasons {set(before.reason_ids) - set(after.reason_ids)} disappeared"


ANTIDEPRESSANTS = ("ssri", "snri", "tricyclic", "maoi", "other_antidepressant")


def _starts_a_required_antidepressant(raw: dict, changes: list[Contraindication]) -> bool:
    """Esketamine for MDD with suicidality is labelled only with an oral antidepressant: adding
    one removes that exclusion (an MAOI adds a blood-pressure review instead). It is not a risk
    added, so it is left out of this property."""
    treatment = raw.get("treatment") or {}
    if (treatment.get("route"), treatment.get("indication")) != ("esketamine_nasal", "major_depression_with_suicidality"):
        return False
    return any(c.name.startswith(("medication", "MAOI")) and any(a in c.name.lower() for a in ANTIDEPRESSANTS)
               for c in changes)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(raw=intakes(), each=st.fixed_dictionaries(FAMILIES),
       combined=st.lists(st.sampled_from(sorted(FAMILIES)), min_size=2, max_size=4, unique=True))
def test_adding_a_contraindication_never_makes_a_decision_more_permissive(ruleset, raw, each, combined):
    """Every kind of contraindication on its own, then a few of them together, on one intake."""
    before = decide(ruleset, raw)
    note(f"before: {before.decision} {before.reason_ids} missing={before.missing}")
    for changes in [[c] for c in each.values()] + [[each[k] for k in combined]]:
        if _starts_a_required_antidepressant(raw, changes):
            continue
        after_raw = copy.deepcopy(raw)
        for change in changes:
            change.apply(after_raw)
        after = decide(ruleset, after_raw)  # validated: the changed intake is still a valid one
        try:
            assert_not_more_permissive(before, after, strict=all(c.strict for c in changes))
        except AssertionError as exc:
            raise AssertionError(f"{[c.name for c in changes]}: {exc}; after: {after.decision} "
                                 f"{after.reason_ids} missing={after.missing}") from None


def _required_missing(ruleset: Ruleset, intake: dict) -> dict[str, list[str]]:
    """Applicable rules (not findings) and the required fields the intake lacks."""
    route, indication = partition_key(intake)
    out = {}
    for rule in ruleset.pack.rules:
        if rule.applies(route, indication):
            absent = [p for p in rule.requires if C.lookup(intake, p) is C.MISSING]
            if absent:
                out[rule.id] = absent
    return out


@FAST
@given(raw=intakes())
def test_a_missing_required_field_never_yields_a_clean_eligible(ruleset, raw):
    intake = validated(copy.deepcopy(raw))
    d = screen(intake, ruleset, as_of=AS_OF)
    lacking = _required_missing(ruleset, intake)
    if lacking:
        assert not clean_eligible(d), lacking
    fired = set(d.reason_ids)
    for rule_id, paths in lacking.items():
        if rule_id not in fired and not ruleset.pack.rule(rule_id).concludes:
            assert set(paths) <= set(d.missing), (rule_id, paths, d.missing)
    if d.decision == INCOMPLETE:
        assert d.missing and d.physician_review_required


@FAST
@given(raw=near_clean_intakes(), pick=st.randoms(use_true_random=False), how=st.sampled_from(("remove", "null", "parent")))
def test_removing_an_answer_a_rule_reads_from_a_clean_intake_is_asked_or_not_needed(ruleset, raw, pick, how):
    """What a rule needs is derived from its condition (three-valued logic): removing an answer
    an applicable rule reads from a clean eligible intake either makes it incomplete, naming the
    answer, or changes nothing (the answer was not needed: tests/test_completeness.py checks by
    enumeration that no value of it could have changed the decision)."""
    d = decide(ruleset, raw)
    route, indication = partition_key(raw)
    read = sorted({p for r in ruleset.pack.rules if r.applies(route, indication)
                   for p in C.reads(r.when)[0] if not p.startswith("treatment.route") and p != "treatment.indication"
                   and C.lookup(raw, p) is not C.MISSING})
    if not clean_eligible(d) or not read:
        return
    path = pick.choice(read)
    parts = path.split(".")
    holder = raw
    if how == "parent" and len(parts) > 1 and not IntakeSchema().fields[parts[0]].required:
        parts = parts[:1]
    for part in parts[:-1]:
        holder = holder[part]
    if how == "null":
        holder[parts[-1]] = None
    else:
        holder.pop(parts[-1], None)
    after = decide(ruleset, raw)
    note(f"{how} {'.'.join(parts)}: {after.decision} {after.reason_ids} missing={after.missing}")
    if after.decision == ELIGIBLE:
        assert not after.physician_review_required and after.reason_ids == [] and after.missing == []
    else:
        assert after.decision == INCOMPLETE and after.missing, after.decision
        assert any(m == path or m.startswith(".".join(parts) + ".") or m == ".".join(parts) for m in after.missing)


# --- determinism and the two backends ---------------------------------------------------------

@pytest.fixture(scope="module")
def reference(reference_ruleset):
    return reference_ruleset


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(raw=intakes(), explain=st.booleans())
def test_same_intake_same_decision_and_durable_equals_reference(ruleset, reference, raw, explain):
    first = decide(ruleset, raw, explain=explain).to_dict()
    again = decide(ruleset, raw, explain=explain).to_dict()
    assert json.dumps(first) == json.dumps(again)  # same reasons in the same order, byte for byte
    intake = validated(copy.deepcopy(raw))
    assert ruleset.compiled.match(intake, AS_OF) == reference.compiled.match(intake, AS_OF)
    assert decide(reference, raw, explain=explain).to_dict() == first


# --- concurrency -------------------------------------------------------------------------------

def corpus(size: int, seed: int = 8) -> list[dict]:
    """``size`` generated intakes, the same on every run (a fixed seed, no shrinking)."""
    out: list[dict] = []

    @settings(max_examples=size, database=None, phases=[Phase.generate], deadline=None,
              suppress_health_check=list(HealthCheck))
    @given(intakes())
    def collect(raw):
        out.append(raw)

    seed_(seed)(collect)()
    return out


@pytest.fixture(scope="module")
def many() -> list[tuple[dict, dict]]:
    """(raw intake, the decision it gets alone), for a few thousand intakes."""
    rs = load_ruleset(default_rules_path())
    raws = corpus(2000)
    assert len(raws) >= 1900
    return [(raw, _decide_alone(rs, i, raw)) for i, raw in enumerate(raws)]


def _decide_alone(rs: Ruleset, i: int, raw: dict) -> dict:
    return screen(validated(raw), rs, as_of=AS_OF, decision_id=str(i)).to_dict()


def test_many_threads_get_the_decisions_they_get_alone(ruleset, many):
    order = list(range(len(many)))
    random.Random(3).shuffle(order)  # neighbours differ from the sequential run
    with cf.ThreadPoolExecutor(max_workers=16) as pool:
        results = dict(zip(order, pool.map(lambda i: _decide_alone(ruleset, i, many[i][0]), order)))
    wrong = [i for i, (_, expected) in enumerate(many) if results[i] != expected]
    assert not wrong, f"{len(wrong)} of {len(many)} decisions differ under 16 threads, e.g. #{wrong[0]}"
    # The corpus is not trivial: every outcome is represented.
    assert {d["decision"] for _, d in many} == {ELIGIBLE, INELIGIBLE, INCOMPLETE}


_worker_ruleset: Ruleset | None = None


def _init_worker() -> None:
    global _worker_ruleset
    _worker_ruleset = load_ruleset(default_rules_path())


def _screen_chunk(chunk: list[tuple[int, dict]]) -> list[tuple[int, dict]]:
    # Threads inside each process too: the engine lock is per process, the engine per ruleset.
    with cf.ThreadPoolExecutor(max_workers=4) as pool:
        return list(pool.map(lambda item: (item[0], _decide_alone(_worker_ruleset, *item)), chunk))


def test_several_processes_get_the_decisions_they_get_alone(many):
    items = list(enumerate(raw for raw, _ in many))
    random.Random(5).shuffle(items)
    chunks = [items[i:i + 125] for i in range(0, len(items), 125)]
    ctx = multiprocessing.get_context("spawn")  # a fresh engine per process, no forked C state
    with cf.ProcessPoolExecutor(max_workers=2, mp_context=ctx, initializer=_init_worker) as pool:
        results = dict(pair for chunk in pool.map(_screen_chunk, chunks) for pair in chunk)
    wrong = [i for i, (_, expected) in enumerate(many) if results[i] != expected]
    assert not wrong, f"{len(wrong)} of {len(many)} decisions differ across processes, e.g. #{wrong[0]}"


# --- every entry point hands out screen()'s decision ------------------------------------------

def _without_identity(body: dict) -> dict:
    return {k: v for k, v in body.items() if k not in ("decision_id", "evaluated_at")}


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(raw=intakes(), explain=st.booleans())
def test_http_decision_equals_screen(app, client, raw, explain):
    response = client.post("/v1/screenings" + ("?explain=true" if explain else ""), json=raw)
    assert response.status_code == 200, response.get_json()
    body = response.get_json()
    when = dt.datetime.fromisoformat(body["evaluated_at"].replace("Z", "+00:00"))
    rs = app.extensions["rulesets"].current
    expected = screen(validated(copy.deepcopy(raw)), rs, as_of=when, explain=explain).to_dict()
    assert _without_identity(body) == _without_identity(expected)
    assert body["evaluated_at"] == expected["evaluated_at"]


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(raw=intakes())
def test_cli_decision_equals_screen(ruleset, raw):
    result = CliRunner().invoke(main, ["evaluate", "--json", "--as-of", "2026-11-24T12:00:00", "-"],
                                input=json.dumps(raw))
    expected = decide(ruleset, raw)
    assert result.exit_code == exit_code(expected), result.output
    body = json.loads(result.stdout)
    assert _without_identity(body) == _without_identity(expected.to_dict())
    assert body["evaluated_at"] == "2026-11-24T12:00:00Z"


def test_batch_decisions_equal_screen(ruleset, many, tmp_path):
    # The batch path parses each line with the HTTP API's strict reader, then screen(): the same
    # decision as alone, line for line, in input order.
    sample = many[:400]
    source = tmp_path / "in.jsonl"
    source.write_text("".join(json.dumps(raw) + "\n" for raw, _ in sample))
    run_batch(source, tmp_path / "out.jsonl", rules_dir=default_rules_path(), as_of=AS_OF, workers=1, ruleset=ruleset)
    # JSON Lines end at "\n" only: str.splitlines() would also split at U+2028 or U+0085 inside
    # a string (the batch writes UTF-8, not \u escapes).
    lines = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text(encoding="utf-8").split("\n") if line]
    assert [line["line"] for line in lines] == list(range(1, len(sample) + 1))
    for (_, expected), line in zip(sample, lines):
        assert _without_identity(line["decision"]) == _without_identity(expected)
        assert line["decision"]["evaluated_at"] == expected["evaluated_at"]


@settings(max_examples=200, deadline=None)
@given(raw=intakes())
def test_generated_intakes_are_valid_json_intakes(raw):
    # The strategy is valid by construction; a contract change that breaks it fails here first.
    intake = IntakeSchema().load(copy.deepcopy(raw))
    assert IntakeSchema().load(json.loads(json.dumps(raw))) == intake
