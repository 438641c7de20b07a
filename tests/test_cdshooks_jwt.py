"""CDS client authentication: the JWT checks of the spec's "Trusting CDS Clients"."""
from __future__ import annotations

import json
import threading
import time
import uuid

import jwt
import pytest
from flask import Flask, jsonify
from werkzeug.serving import make_server

from service.cdshooks.jwt_auth import AuthError, Issuer, Verifier, parse_issuers
from tests.conftest import app_settings
from tests.cdshooks_support import ISSUER, KID, Signer, unsigned_token

AUD = "https://cds.example.org/cds-services/ketamine-screening-sign"


@pytest.fixture(scope="module")
def verifier(tmp_path_factory, signer):
    path = signer.write_jwks(tmp_path_factory.mktemp("jwks"))
    return Verifier(issuers={ISSUER: Issuer(ISSUER, jwks_file=str(path))})


def bearer(token: str) -> str:
    return f"Bearer {token}"


def test_valid_es384_token_is_accepted(verifier, signer):
    claims = verifier.verify(bearer(signer.token(AUD)), AUD)
    assert claims["iss"] == ISSUER and claims["tenant"] == "clinic-1"


def test_audience_may_be_an_array_holding_the_endpoint(verifier, signer):
    token = jwt.encode({"iss": ISSUER, "aud": [AUD], "exp": int(time.time()) + 60, "iat": int(time.time()),
                        "jti": str(uuid.uuid4())}, signer.private, algorithm="ES384", headers={"kid": KID})
    assert verifier.verify(bearer(token), AUD)["aud"] == [AUD]


@pytest.mark.parametrize("make,message", [
    (lambda s: s.token(AUD, exp_in=-120), "expired"),
    (lambda s: s.token(AUD + "-other"), "audience"),
    (lambda s: s.token("https://cds.example.org/cds-services"), "audience"),
    (lambda s: s.token(AUD, iss="https://intruder.example.com/"), "issuer is not trusted"),
    (lambda s: s.token(AUD, iat_offset=600, exp_in=900), "not valid yet"),
    (lambda s: s.token(AUD, drop=("jti",)), "jti"),
    (lambda s: s.token(AUD, drop=("iat",)), "iat"),
    (lambda s: s.token(AUD, exp_in=86400 * 30), "longer than"),
    (lambda s: Signer(kid=KID).token(AUD), "not valid"),             # same kid, another key: bad signature
    (lambda s: Signer(kid="unknown").token(AUD), "kid"),
    (lambda s: s.token(AUD, headers={"jku": "https://evil.example.com/jwks"}), "jku"),
])
def test_bad_tokens_are_refused(verifier, signer, make, message):
    with pytest.raises(AuthError, match=message):
        verifier.verify(bearer(make(signer)), AUD)


def test_hmac_is_refused(verifier, signer):
    # A shared secret is what HMAC needs, and what the spec forbids (SHALL NOT use symmetric algorithms).
    secret = b"a-shared-secret-the-ehr-and-service-both-know-xx"
    for alg in ("HS256", "HS384"):
        token = jwt.encode({"iss": ISSUER, "aud": AUD, "exp": int(time.time()) + 60, "iat": int(time.time()),
                            "jti": str(uuid.uuid4())}, secret, algorithm=alg, headers={"kid": KID})
        with pytest.raises(AuthError, match=alg):
            verifier.verify(bearer(token), AUD)


def test_alg_none_is_refused(verifier):
    with pytest.raises(AuthError, match="'none'"):
        verifier.verify(bearer(unsigned_token(AUD)), AUD)


def test_replayed_jti_is_refused(verifier, signer):
    token = signer.token(AUD)
    verifier.verify(bearer(token), AUD)
    with pytest.raises(AuthError, match="replay"):
        verifier.verify(bearer(token), AUD)
    # a new token with the same jti is a replay too
    jti = str(uuid.uuid4())
    verifier.verify(bearer(signer.token(AUD, jti=jti)), AUD)
    with pytest.raises(AuthError, match="replay"):
        verifier.verify(bearer(signer.token(AUD, jti=jti)), AUD)


def test_missing_or_garbled_authorization(verifier):
    for header in (None, "", "Basic dXNlcjpwYXNz", "Bearer not-a-jwt"):
        with pytest.raises(AuthError):
            verifier.verify(header, AUD)


def test_rs384_keys_from_an_allow_listed_jku_on_loopback():
    from cryptography.hazmat.primitives.asymmetric import rsa
    from jwt.algorithms import RSAAlgorithm

    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public = json.loads(RSAAlgorithm.to_jwk(private.public_key()))
    public.update({"kid": "rsa-1", "alg": "RS384", "use": "sig"})
    app = Flask("jwks")
    app.add_url_rule("/jwks", "jwks", lambda: jsonify({"keys": [public]}))
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        jku = f"http://127.0.0.1:{server.server_port}/jwks"
        verifier = Verifier(issuers={ISSUER: Issuer(ISSUER, jku=(jku,))})
        now = int(time.time())
        claims = {"iss": ISSUER, "aud": AUD, "exp": now + 60, "iat": now, "jti": str(uuid.uuid4())}
        token = jwt.encode(claims, private, algorithm="RS384", headers={"kid": "rsa-1", "jku": jku})
        assert verifier.verify(bearer(token), AUD)["iss"] == ISSUER
        # without a jku header this issuer has no keys configured
        claims["jti"] = str(uuid.uuid4())
        token = jwt.encode(claims, private, algorithm="RS384", headers={"kid": "rsa-1"})
        with pytest.raises(AuthError, match="no JWK Set"):
            verifier.verify(bearer(token), AUD)
    finally:
        server.shutdown()
        thread.join(5)


def test_issuer_configuration_from_the_environment(tmp_path):
    issuers = parse_issuers(json.dumps({
        "https://a.example/": "https://a.example/jwks.json",
        "https://b.example/": str(tmp_path / "b.jwks.json"),
        "https://c.example/": {"jku": ["https://c.example/keys"]},
    }))
    assert issuers["https://a.example/"].jwks_url == "https://a.example/jwks.json"
    assert issuers["https://b.example/"].jwks_file.endswith("b.jwks.json")
    assert issuers["https://c.example/"].jku == ("https://c.example/keys",)
    assert parse_issuers(None) == {}
    with pytest.raises(SystemExit, match="not JSON"):
        parse_issuers("{nope")
    with pytest.raises(SystemExit, match="names no JWKS"):
        parse_issuers(json.dumps({"https://d.example/": {}}))


# --- over HTTP --------------------------------------------------------------------------------

def test_http_calls_without_a_valid_token_get_401_json(cds, signer):
    r = cds.raw.get("/cds-services")
    assert r.status_code == 401
    assert r.get_json()["error"]["code"] == "unauthorized"
    assert r.headers["WWW-Authenticate"].startswith("Bearer")
    # a token for the discovery endpoint does not open a service endpoint
    token = signer.token("http://localhost/cds-services")
    r = cds.raw.post("/cds-services/ketamine-screening-sign", json={}, headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 401 and "audience" in r.get_json()["error"]["message"]


def test_http_replay_is_refused(cds, signer):
    token = signer.token("http://localhost/cds-services")
    headers = {"Authorization": f"Bearer {token}"}
    assert cds.raw.get("/cds-services", headers=headers).status_code == 200
    r = cds.raw.get("/cds-services", headers=headers)
    assert r.status_code == 401 and "replay" in r.get_json()["error"]["message"]


def test_environment_wiring(monkeypatch, tmp_path, signer):
    """SCREENING_CDS_ISSUERS and SCREENING_CDS_BASE_URL reach the app: aud is the public URL."""
    from service.app import create_app

    path = signer.write_jwks(tmp_path)
    monkeypatch.setenv("SCREENING_CDS_ISSUERS", json.dumps({ISSUER: str(path)}))
    monkeypatch.setenv("SCREENING_CDS_BASE_URL", "https://cds.example.org/")
    app = create_app(app_settings(tmp_path))
    client = app.test_client()
    ok = signer.token("https://cds.example.org/cds-services")
    assert client.get("/cds-services", headers={"Authorization": f"Bearer {ok}"}).status_code == 200
    local = signer.token("http://localhost/cds-services")
    assert client.get("/cds-services", headers={"Authorization": f"Bearer {local}"}).status_code == 401


def test_a_replay_is_refused_by_every_worker_sharing_the_log(tmp_path, signer, database_url):
    """Each gunicorn worker (and instance) has its own Verifier; the used jti lives in the
    shared database, so a token replayed to another worker is refused too."""
    from service.cdshooks.jwt_auth import StoreJtiCache
    from service.store.sql import SqlStore

    jwks = str(signer.write_jwks(tmp_path))
    workers = [Verifier(issuers={ISSUER: Issuer(ISSUER, jwks_file=jwks)}, jtis=StoreJtiCache(SqlStore(database_url)))
               for _ in range(2)]
    token = signer.token(AUD)
    workers[0].verify(bearer(token), AUD)
    with pytest.raises(AuthError, match="replay"):
        workers[1].verify(bearer(token), AUD)
    workers[1].verify(bearer(signer.token(AUD)), AUD)  # a fresh token still passes


# --- red-team findings (issue 18) ---------------------------------------------------------------

def test_a_header_naming_rs384_over_an_ec_key_is_401_not_500(verifier, signer, cds):
    """PyJWT raises TypeError when handed an EC key for RS384: that was a 500."""
    from cryptography.hazmat.primitives.asymmetric import rsa

    rsa_private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    now = int(time.time())
    claims = {"iss": ISSUER, "aud": AUD, "exp": now + 60, "iat": now, "jti": str(uuid.uuid4())}
    # the kid names the issuer's EC key; the header says RS384
    token = jwt.encode(claims, rsa_private, algorithm="RS384", headers={"kid": KID})
    with pytest.raises(AuthError, match="not a key for RS384"):
        verifier.verify(bearer(token), AUD)
    claims["aud"] = "http://localhost/cds-services"
    token = jwt.encode(claims, rsa_private, algorithm="RS384", headers={"kid": KID})
    r = cds.raw.get("/cds-services", headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 401 and r.get_json()["error"]["code"] == "unauthorized"


@pytest.mark.parametrize("claim,value", [
    ("iat", lambda now: str(now)), ("exp", lambda now: str(now + 60)), ("nbf", lambda now: str(now)),
    ("exp", lambda now: True), ("exp", lambda now: 10**400), ("iat", lambda now: -(10**400)),
])
def test_numeric_dates_must_be_numbers(verifier, signer, claim, value):
    """RFC 7519 NumericDate is a JSON number; PyJWT's int() would take "1700000000"."""
    now = int(time.time())
    claims = {"iss": ISSUER, "aud": AUD, "exp": now + 60, "iat": now, "jti": str(uuid.uuid4())}
    claims[claim] = value(now)
    token = jwt.encode(claims, signer.private, algorithm="ES384", headers={"kid": KID})
    with pytest.raises(AuthError):
        verifier.verify(bearer(token), AUD)
