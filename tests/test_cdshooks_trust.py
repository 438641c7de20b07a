"""Where the CDS Hooks service draws its trust lines (issue 18, red-team findings 1, 2 and 6):

- the JWT audience and the card links come from SCREENING_CDS_BASE_URL, never from the Host
  header the caller chooses; without it CDS Hooks answers 503 and says why;
- the EHR's `fhirServer` is fetched only when it is one of the FHIR servers configured for the
  JWT's issuer, so the `fhirAuthorization` token never goes anywhere else, and what a FHIR server
  answers is never echoed in an error;
- feedback on cards the log does not know takes bounded memory.
"""
from __future__ import annotations

import json
import logging
import uuid

import pytest
from flask import Flask, jsonify

from service.app import create_app
from service.cdshooks.blueprint import FEEDBACK_KEPT, CdsHooksState
from service.cdshooks.urls import public_base_url
from service.cdshooks.jwt_auth import Issuer, Verifier, parse_issuers
from service.config import Settings
from tests.cdshooks_support import SIGN, ISSUER, FhirServer, hook_request, ketamine_order, situation



def _app(tmp_path, signer, base_url: str | None, fhir_servers: tuple[str, ...] = ()) -> Flask:
    app = create_app(Settings.from_env(reload_interval=0, state_dir=tmp_path,
                                       database_url=f"sqlite:///{tmp_path}/d.db"))
    jwks = str(signer.write_jwks(tmp_path))
    app.extensions["cds_hooks"] = CdsHooksState(
        verifier=Verifier(issuers={ISSUER: Issuer(ISSUER, jwks_file=jwks, fhir_servers=fhir_servers)}),
        base_url=base_url)
    return app


# --- 1. the audience is configuration, not the Host header -------------------------------------

def test_without_a_configured_base_url_cds_hooks_answers_503_whatever_the_host(tmp_path, signer):
    """Today's code built the expected `aud` from Host: a JWT minted for another service passed
    when the caller sent that service's host name."""
    client = _app(tmp_path, signer, None).test_client()
    for host in ("localhost", "other-service.example.org"):
        token = signer.token(f"http://{host}/cds-services")
        r = client.get("/cds-services", headers={"Authorization": f"Bearer {token}", "Host": host})
        assert r.status_code == 503, r.get_json()
        error = r.get_json()["error"]
        assert error["code"] == "cds_hooks_not_configured"
        assert "SCREENING_CDS_BASE_URL" in error["message"]
        token = signer.token(f"http://{host}{SIGN}")
        body = hook_request("order-sign", [ketamine_order()], situation("clean")[0])
        r = client.post(SIGN, json=body, headers={"Authorization": f"Bearer {token}", "Host": host})
        assert r.status_code == 503


def test_the_missing_base_url_is_logged_at_start(tmp_path, signer, monkeypatch, caplog):
    monkeypatch.delenv("SCREENING_CDS_BASE_URL", raising=False)
    with caplog.at_level(logging.WARNING, logger="service.cdshooks"):
        create_app(Settings.from_env(reload_interval=0, state_dir=tmp_path, database_url=f"sqlite:///{tmp_path}/d.db"))
    assert any("SCREENING_CDS_BASE_URL" in r.getMessage() for r in caplog.records)


def test_a_token_for_another_host_is_refused_and_links_use_the_configured_base(tmp_path, signer):
    client = _app(tmp_path, signer, "https://cds.example.org").test_client()
    # minted for another service, sent with that service's host name
    foreign = signer.token("https://other-service.example.org/cds-services")
    r = client.get("/cds-services", headers={"Authorization": f"Bearer {foreign}", "Host": "other-service.example.org",
                                             "X-Forwarded-Proto": "https"})
    assert r.status_code == 401 and "https://cds.example.org/cds-services" in r.get_json()["error"]["message"]
    # signed for the configured URL, whatever Host says: accepted, and the card links there
    prefetch, _ = situation("hypertensive")
    token = signer.token(f"https://cds.example.org{SIGN}")
    r = client.post(SIGN, json=hook_request("order-sign", [ketamine_order()], prefetch),
                    headers={"Authorization": f"Bearer {token}", "Host": "evil.example.com"})
    assert r.status_code == 200, r.get_json()
    [card] = r.get_json()["cards"]
    assert card["links"][0]["url"] == f"https://cds.example.org/decisions/{card['uuid']}"


@pytest.mark.parametrize("raw", ["cds.example.org", "ftp://cds.example.org", "https://", "https://u:p@cds.example.org",
                                 "https://cds.example.org/?x=1", "https://cds.example.org/#f", "https://cds .example.org"])
def test_a_malformed_base_url_stops_start_up(raw):
    with pytest.raises(SystemExit, match="SCREENING_CDS_BASE_URL"):
        public_base_url(raw)


def test_base_url_forms():
    assert public_base_url(None) is None and public_base_url("  ") is None
    assert public_base_url("https://cds.example.org/") == "https://cds.example.org"
    assert public_base_url("https://example.org/screening/") == "https://example.org/screening"


# --- 2. fhirServer: only the servers configured for the issuer --------------------------------

def test_fhir_servers_are_configured_per_issuer():
    issuers = parse_issuers(json.dumps({
        "https://a.example/": {"jwks_url": "https://a.example/jwks", "fhir_servers": ["HTTPS://FHIR.A.example/r4/"]},
        "https://b.example/": "https://b.example/jwks",
    }))
    assert issuers["https://a.example/"].fhir_servers == ("https://fhir.a.example/r4",)
    assert issuers["https://b.example/"].fhir_servers == ()
    for bad in (["fhir.a.example"], "https://fhir.a.example", ["https://u:p@fhir.a.example"], ["https://h/?q"]):
        with pytest.raises(SystemExit, match="fhir_servers"):
            parse_issuers(json.dumps({"https://a.example/": {"jwks_url": "https://a.example/jwks", "fhir_servers": bad}}))


def test_an_unlisted_fhir_server_is_never_contacted_and_the_call_says_why(cds, caplog):
    """Today's code sent eight GETs with the bearer token to whatever URL the client named."""
    prefetch, _ = situation("clean")
    with FhirServer(prefetch) as server, caplog.at_level(logging.INFO, logger="service.cdshooks"):
        r = cds.post(SIGN, hook_request("order-sign", [ketamine_order()], None, fhir_server=server.base,
                                        token="secret-fhir-token"))  # not configured for the issuer
    assert server.requests == []
    assert r.status_code == 412
    error = r.get_json()["error"]
    assert error["errors"][0]["path"] == "fhirServer"
    assert "not configured" in error["errors"][0]["message"]
    assert "secret-fhir-token" not in r.get_data(as_text=True)
    warned = [rec.getMessage() for rec in caplog.records if rec.levelno == logging.WARNING]
    assert any("127.0.0.1" in m and "not configured" in m for m in warned), warned
    assert "secret-fhir-token" not in caplog.text


def test_an_unlisted_fhir_server_does_not_stop_a_call_that_prefetch_answers(cds):
    prefetch, _ = situation("clean")
    with FhirServer(prefetch) as server:
        r = cds.post(SIGN, hook_request("order-sign", [ketamine_order()], prefetch, fhir_server=server.base))
    assert r.status_code == 200 and len(r.get_json()["cards"]) == 1
    assert server.requests == []


@pytest.mark.parametrize("variant", [
    lambda base: base.replace("/fhir", "/fhir-other"),             # a sibling path
    lambda base: base + "/../admin",                                 # dot segments
    lambda base: base.replace("http://", "http://ehr.example.org@"),  # userinfo trick
    lambda base: base + "?x=1",
])
def test_look_alike_fhir_server_urls_are_refused(cds, variant):
    prefetch, _ = situation("clean")
    with FhirServer(prefetch) as server:
        cds.trust_fhir_server(server.base)
        r = cds.post(SIGN, hook_request("order-sign", [ketamine_order()], None, fhir_server=variant(server.base)))
    assert r.status_code == 412 and server.requests == []


def test_a_listed_fhir_server_is_fetched_with_the_token(cds):
    prefetch, _ = situation("clean")
    with FhirServer(prefetch) as server:
        cds.trust_fhir_server(server.base + "/")  # a trailing slash is the same base
        r = cds.post(SIGN, hook_request("order-sign", [ketamine_order()], None, fhir_server=server.base))
    assert r.status_code == 200, r.get_json()
    assert server.requests and {auth for _, auth in server.requests} == {"Bearer opaque-fhir-token"}


def test_what_the_fhir_server_answers_is_never_echoed(cds):
    """The 400 for malformed fetched FHIR used to quote it back to the caller."""
    prefetch, _ = situation("clean")
    marker = "LEAKED-" + uuid.uuid4().hex
    with FhirServer(prefetch) as server:
        app = server.server.app

        @app.before_request
        def _garbage():
            from flask import request
            if request.path.endswith("/Condition"):
                return jsonify({"resourceType": marker, "id": marker})
            return None

        cds.trust_fhir_server(server.base)
        partial = {k: v for k, v in prefetch.items() if k != "conditions"}
        r = cds.post(SIGN, hook_request("order-sign", [ketamine_order()], partial, fhir_server=server.base))
    assert r.status_code == 412, r.get_json()
    assert marker not in r.get_data(as_text=True)
    assert [e["path"] for e in r.get_json()["error"]["errors"]] == ["prefetch.conditions"]


# --- 6. feedback on unknown cards: bounded -----------------------------------------------------

def test_feedback_on_unknown_cards_takes_bounded_memory(cds, cds_app):
    kept = cds_app.extensions["cds_hooks"].feedback
    for _ in range(3):
        # CDS Hooks 2.0: an accepted outcome names the suggestions accepted
        items = [{"card": str(uuid.uuid4()), "outcome": "accepted", "outcomeTimestamp": "2026-11-24T10:05:31Z",
                  "acceptedSuggestions": [{"id": str(uuid.uuid4())}]}
                 for _ in range(FEEDBACK_KEPT // 2 + 7)]
        r = cds.post(SIGN + "/feedback", {"feedback": items})
        assert r.status_code == 200 and len(r.get_json()["unknown_cards"]) == len(items)
    assert len(kept) == FEEDBACK_KEPT
