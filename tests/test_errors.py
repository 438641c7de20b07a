"""One error model (service.errors), one reader (service.intake_reader) and one map to HTTP
responses (service.http_io): every channel refuses the same document the same way, and a decision
log that is down is the same 503 (Retry-After, failure metric) whichever blueprint met it."""
from __future__ import annotations

import json

import pytest
from prometheus_client import REGISTRY

from service.batch import LineScreener, Summary
from service.cdshooks.blueprint import CdsHooksState
from service.cdshooks.jwt_auth import Issuer, Verifier
from service.config import Settings
from service.errors import RETRY_AFTER_S, ServiceError
from service.intake_reader import Limits, read_intake
from service.store.base import StoreUnavailable
from tests.cdshooks_support import ISSUER, Signer
from tests.conftest import example

LIMITS = Limits(256 * 1024, 32)
BAD = [
    b"",
    b"{\"a\": 1, \"a\": 2}",
    b"[1, 2]",
    b"{\"x\": NaN}",
    b"\xff\xfe",
    b"[" * 40 + b"]" * 40,
    json.dumps({**example("eligible-iv"), "weight_kg": -3}).encode(),
]


def _failures(operation: str) -> float:
    return REGISTRY.get_sample_value("screening_store_failures_total", {"operation": operation}) or 0.0


@pytest.mark.parametrize("data", BAD)
def test_http_and_batch_refuse_a_document_with_the_same_error(client, ruleset, data):
    with pytest.raises(ServiceError) as refused:
        read_intake(data, LIMITS)
    response = client.post("/v1/screenings", data=data, content_type="application/json")
    http = response.get_json()["error"]
    http.pop("request_id", None)
    line = json.loads(LineScreener(ruleset, None, Settings())(1, data, Summary()))
    assert response.status_code == refused.value.status
    assert http == line["error"] == refused.value.to_dict()


def test_a_valid_intake_reads_the_same_as_the_schema_loads_it(clean_intake):
    from schemas.intake import IntakeSchema
    assert read_intake(json.dumps(clean_intake).encode(), LIMITS) == IntakeSchema().load(clean_intake)


@pytest.fixture
def cds_down(new_app, tmp_path, monkeypatch):
    """A CDS Hooks client of an app whose decision log cannot be read or written."""
    app = new_app()
    signer = Signer()
    app.extensions["cds_hooks"] = CdsHooksState(
        verifier=Verifier(issuers={ISSUER: Issuer(ISSUER, jwks_file=str(signer.write_jwks(tmp_path)))}),
        base_url="http://localhost")  # the JWT audience is configuration, never the Host header
    store = app.extensions["store"]

    def down(*_args, **_kwargs):
        raise StoreUnavailable("reading a decision: OperationalError")

    monkeypatch.setattr(store, "get_decision", down)
    client = app.test_client()
    return lambda path, body: client.post(
        path, json=body, headers={"Authorization": f"Bearer {signer.token(f'http://localhost{path}')}"})


def test_cds_hooks_store_down_is_the_apps_503_with_its_metric(cds_down):
    path = "/cds-services/ketamine-screening-sign/feedback"
    before = _failures("cds_hooks.feedback")
    response = cds_down(path, {"feedback": [{"card": "c1", "outcome": "accepted",   # CDS Hooks 2.0: names what it accepted
                                             "acceptedSuggestions": [{"id": "s1"}],
                                             "outcomeTimestamp": "2026-11-24T10:05:31Z"}]})
    assert response.status_code == 503
    assert response.headers["Retry-After"] == str(RETRY_AFTER_S)
    body = response.get_json()["error"]
    assert body["code"] == "unavailable" and "decision log is unavailable" in body["message"]
    assert _failures("cds_hooks.feedback") == before + 1


def test_retry_after_is_defined_once():
    """Retry-After for a store that is down: service.errors.RETRY_AFTER_S, nowhere else."""
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent / "service"
    literal = re.compile(r"""["']Retry-After["']\s*:\s*["']?\d""")
    assert [str(p) for p in root.rglob("*.py") if literal.search(p.read_text(encoding="utf-8"))] == []
