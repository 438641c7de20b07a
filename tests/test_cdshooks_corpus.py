"""The conformance corpus: patients written the way Epic, Cerner and Synthea payloads look
(tests/cdshooks_corpus/patients, made by make_corpus.py), each sent as a signed order-sign call
with full prefetch. The CDS Hooks decision must equal the decision for the same facts sent as
intake JSON, and every response must satisfy the spec's own model of a response."""
from __future__ import annotations

import datetime as dt
import json
import re
import uuid
from pathlib import Path

import pytest
from dateutil.relativedelta import relativedelta

from schemas.intake import IntakeSchema
from service.cdshooks.cards import EXTENSION_KEY, prune_empty
from service.cdshooks.discovery import PREFETCH
from service.screening import screen
from tests.cdshooks_spec_model import validate_response
from tests.cdshooks_support import SELECT, SIGN

CORPUS = Path(__file__).resolve().parent / "cdshooks_corpus" / "patients"
CASES = sorted(CORPUS.glob("*.json"))
_AGO = re.compile(r"^@ago:(\d+)([dh])$")
_DAY = re.compile(r"^@day:-(\d+)$")


def _resolve(value, now: dt.datetime):
    """Fill the corpus's relative times: the files stay valid whatever day the tests run."""
    if isinstance(value, dict):
        return {k: _resolve(v, now) for k, v in value.items()}
    if isinstance(value, list):
        return [_resolve(v, now) for v in value]
    if isinstance(value, str) and value.startswith("@"):
        m = _AGO.match(value)
        if m:
            delta = dt.timedelta(days=int(m.group(1))) if m.group(2) == "d" else dt.timedelta(hours=int(m.group(1)))
            return (now - delta).isoformat().replace("+00:00", "Z")
        m = _DAY.match(value)
        if m:
            return (now - dt.timedelta(days=int(m.group(1)))).date().isoformat()
        if value.startswith("@birth:"):
            return (now.date() - relativedelta(years=int(value.split(":")[1]), days=30)).isoformat()
    return value


def load(path: Path) -> dict:
    now = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
    return _resolve(json.loads(path.read_text()), now)


def test_the_corpus_has_at_least_30_patients_from_each_ehr_family():
    styles = [json.loads(p.read_text())["style"] for p in CASES]
    assert len(CASES) >= 30
    assert {s: styles.count(s) for s in set(styles)} == {"epic": 25, "cerner": 25, "synthea": 25}


def test_every_patient_is_prefetched_with_exactly_the_discovery_keys():
    """Full prefetch as an EHR configured from the discovery document sends it: every key it asks
    for (the one pregnancy test search included), and no key it no longer asks for."""
    asked = set(PREFETCH)
    for path in CASES:
        assert set(json.loads(path.read_text())["prefetch"]) == asked, path.name


def _request(case: dict, hook: str) -> dict:
    entries = [{"fullUrl": f"urn:uuid:{uuid.uuid4()}", "resource": case["order"]}]
    entries += [{"fullUrl": f"urn:uuid:{uuid.uuid4()}", "resource": r} for r in case["draft_resources"]]
    body = {"hook": hook, "hookInstance": str(uuid.uuid4()),
            "context": {"userId": "Practitioner/example", "patientId": "corpus-patient", "encounterId": "enc-1",
                        "draftOrders": {"resourceType": "Bundle", "type": "collection", "entry": entries}},
            "prefetch": case["prefetch"]}
    if hook == "order-select":
        body["context"]["selections"] = [f"MedicationRequest/{case['order']['id']}"]
    return body


@pytest.mark.parametrize("path", CASES, ids=[p.stem for p in CASES])
def test_cds_hooks_decision_equals_the_intake_json_decision(cds, cds_app, path):
    case = load(path)
    hook, url = ("order-select", SELECT) if case["situation"] in ("clean", "hypertensive") else ("order-sign", SIGN)
    r = cds.post(url, _request(case, hook))
    assert r.status_code == 200, r.get_json()
    validate_response(r.get_json())
    [card] = r.get_json()["cards"]
    got = card["extension"][EXTENSION_KEY]

    intake = IntakeSchema().load({"subject_id": got["subject_id"], **case["intake"]})
    direct = prune_empty(screen(intake, cds_app.extensions["rulesets"].current).to_dict())
    assert got["decision"] == direct["decision"], (card["detail"], direct)
    assert {x["rule_id"] for x in got.get("reasons", [])} == {x["rule_id"] for x in direct.get("reasons", [])}
    assert got.get("missing", []) == direct.get("missing", [])
    assert got["physician_review_required"] == direct["physician_review_required"]


@pytest.mark.parametrize("path", [p for p in CASES if "pregnancy_test" in p.stem or "after_not_pregnant" in p.stem],
                         ids=lambda p: p.stem)
def test_pregnancy_from_a_test_is_evidence_when_positive_and_an_assumption_when_negative(cds, path):
    """The corpus's pregnancy-test patients: a positive test is the pregnancy rule's evidence; a
    recent negative is stated as an assumption to confirm; an old negative is asked for."""
    case = load(path)
    r = cds.post(SIGN, _request(case, "order-sign"))
    [card] = r.get_json()["cards"]
    got = card["extension"][EXTENSION_KEY]
    test_id = f"{case['style']}-hcg"
    if "positive" in case["situation"]:
        row = next(line for line in card["detail"].splitlines() if "`pregnancy`" in line)
        assert f"Observation/{test_id}" in row
    elif "stale" in case["situation"]:
        assert "patient.pregnant" in got["missing"] and "45 days ago" in card["detail"]
    else:
        assert "patient.pregnant" in got["assumed"] and f"Observation/{test_id}" in card["detail"]
