"""API keys: 401 without a valid key, 403 without the scope, open health and docs, the keys CLI,
and the first admin key `screening serve` prints on an empty log."""
from __future__ import annotations

import json
import time

import pytest
from click.testing import CliRunner

from service.auth import SCOPES, create_key
from service.cli import main
from tests.conftest import example

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::UserWarning")

# Every operation behind a key, with the scope it needs and a request that would otherwise succeed.
PROTECTED = [
    ("post", "/v1/screenings", "screen"),
    ("get", "/v1/decisions", "read"),
    ("get", "/v1/decisions/{id}", "read"),
    ("get", "/v1/reviews?status=pending", "read"),
    ("post", "/v1/decisions/{id}/review", "review"),
    ("get", "/v1/rulesets/current", "read"),
]


@pytest.fixture
def keyed(db_app):
    """A way to call db_app with a key of chosen scopes, and a decision that needs review."""
    store = db_app.extensions["store"]
    client = db_app.test_client()
    admin = create_key(store.keys, "admin", ["admin"]).token
    made = client.post("/v1/screenings", json=example("review-substance-history"),
                       headers={"Authorization": f"Bearer {admin}"})
    decision_id = made.get_json()["decision_id"]

    def call(method: str, path: str, token: str | None = None, headers: dict | None = None):
        headers = dict(headers or {})
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        path = path.replace("{id}", decision_id)
        body = None
        if path == "/v1/screenings":
            body = example("eligible-iv")
        elif path.endswith("/review"):
            body = {"action": "approve"}
        return getattr(client, method)(path, json=body, headers=headers)

    call.store = store
    call.decision_id = decision_id
    # Issued to a physician, so that a review key can record a sign-off (as that physician).
    call.key = lambda *scopes: create_key(store.keys, "k", scopes, physician="dr.test").token
    return call


def test_without_a_key_401_json(keyed):
    before = keyed.store.count_decisions()
    for method, path, _ in PROTECTED:
        response = keyed(method, path)
        assert response.status_code == 401, path
        assert response.get_json()["error"]["code"] == "unauthorized"
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert keyed.store.count_decisions() == before
    assert keyed.store.get_decision(keyed.decision_id).reviews == ()


def test_an_invalid_key_is_401(keyed):
    for token in ("nonsense", "ks_0123456789abcdef_" + "x" * 43, "Bearer", "ks__", "ks_0123456789abcdef_short"):
        assert keyed("get", "/v1/decisions", token).status_code == 401, token


def test_a_right_id_with_a_wrong_secret_is_401(keyed):
    token = keyed.key("read")
    forged = token[:-4] + ("aaaa" if not token.endswith("aaaa") else "bbbb")
    assert keyed("get", "/v1/decisions", token).status_code == 200
    assert keyed("get", "/v1/decisions", forged).status_code == 401


def test_a_revoked_key_is_401(keyed):
    token = keyed.key("read")
    assert keyed("get", "/v1/decisions", token).status_code == 200
    keyed.store.keys.revoke(token.split("_")[1])
    response = keyed("get", "/v1/decisions", token)
    assert response.status_code == 401 and "revoked" in response.get_json()["error"]["message"]


def test_each_operation_needs_its_scope(keyed):
    for method, path, scope in PROTECTED:
        others = [s for s in SCOPES if s not in (scope, "admin")]
        before = keyed.store.count_decisions()
        refused = keyed(method, path, keyed.key(*others))
        assert refused.status_code == 403, path
        error = refused.get_json()["error"]
        assert error["code"] == "forbidden" and f"'{scope}'" in error["message"]
        assert keyed.store.count_decisions() == before
        assert keyed(method, path, keyed.key(scope)).status_code in (200, 201), path


def test_admin_allows_everything(keyed):
    token = keyed.key("admin")
    for method, path, _ in PROTECTED:
        assert keyed(method, path, token).status_code in (200, 201), path


def test_the_key_can_come_as_x_api_key_and_any_case_of_bearer(keyed):
    token = keyed.key("read")
    assert keyed("get", "/v1/decisions", headers={"X-API-Key": token}).status_code == 200
    assert keyed("get", "/v1/decisions", headers={"Authorization": f"bearer {token}"}).status_code == 200
    assert keyed("get", "/v1/decisions", headers={"Authorization": f"Basic {token}"}).status_code == 401


def test_a_screening_is_recorded_under_the_key_that_asked(keyed):
    token = keyed.key("screen", "read")
    decision = keyed("post", "/v1/screenings", token).get_json()
    stored = keyed.store.get_decision(decision["decision_id"])
    assert stored.client == token.split("_")[1]


@pytest.mark.parametrize("path", ["/healthz", "/readyz", "/openapi.json", "/metrics"])
def test_health_metrics_and_the_description_need_no_key(anonymous_client, path):
    assert anonymous_client.get(path).status_code == 200


def test_every_v1_operation_needs_a_scope(app):
    """A new /v1 endpoint without require_scope would be open to anyone: catch it here."""
    open_ops = []
    for rule in app.url_map.iter_rules():
        if rule.rule.startswith("/v1/"):
            view = app.view_functions[rule.endpoint]
            if getattr(view, "required_scope", None) not in SCOPES:
                open_ops.append(rule.rule)
    assert open_ops == []


def test_the_description_names_each_operations_scope(anonymous_client):
    doc = anonymous_client.get("/openapi.json").get_json()
    assert doc["paths"]["/v1/decisions/{decision_id}/review"]["post"]["x-required-scope"] == "review"
    assert doc["paths"]["/v1/screenings"]["post"]["security"] == [{"bearerAuth": []}, {"apiKeyHeader": []}]
    assert "401" in doc["paths"]["/v1/decisions"]["get"]["responses"]
    assert doc["paths"]["/healthz"]["get"].get("security") in (None, [])


# --- the CLI ----------------------------------------------------------------------------------

@pytest.fixture
def cli(database_url, monkeypatch):
    monkeypatch.setenv("DATABASE_URL", database_url)
    runner = CliRunner()
    return lambda *args: runner.invoke(main, list(args), catch_exceptions=False)


def test_keys_create_list_revoke(cli, db_app):
    made = cli("keys", "create", "--name", "intake-portal", "--scope", "screen", "--scope", "read")
    assert made.exit_code == 0
    token = made.stdout.strip()
    assert token.startswith("ks_") and "shown only now" in made.stderr
    client = db_app.test_client()
    headers = {"Authorization": f"Bearer {token}"}
    assert client.get("/v1/decisions", headers=headers).status_code == 200
    assert client.post("/v1/decisions/x/review", json={}, headers=headers).status_code == 403

    listed = json.loads(cli("keys", "list", "--json").stdout)
    assert [(k["name"], k["scopes"], k["revoked_at"]) for k in listed] == [("intake-portal", ["screen", "read"], None)]
    assert token not in cli("keys", "list").stdout
    key_id = listed[0]["id"]
    revoked = cli("keys", "revoke", key_id)
    assert revoked.exit_code == 0 and key_id in revoked.stdout
    # Another process revoked it: running workers refuse it within the key cache's bound.
    assert "within 5 s" in revoked.stderr
    cache = db_app.extensions["key_cache"]
    cache.clock = lambda: time.monotonic() + cache.max_age
    assert client.get("/v1/decisions", headers=headers).status_code == 401
    assert json.loads(cli("keys", "list", "--json").stdout)[0]["revoked_at"] is not None
    missing = cli("keys", "revoke", "0000000000000000")
    assert missing.exit_code == 1 and "no API key" in missing.stderr


def test_keys_create_issues_a_key_to_a_physician_who_signs_off_with_it(cli, db_app):
    unbound = cli("keys", "create", "--name", "x", "--scope", "review")
    assert unbound.exit_code == 0 and "cannot record sign-offs" in unbound.stderr
    assert cli("keys", "create", "--name", "x", "--scope", "review", "--physician", "dr ada").exit_code == 2
    made = json.loads(cli("keys", "create", "--name", "Dr Ada's key", "--scope", "review", "--scope", "screen",
                          "--physician", "dr.ada", "--json").stdout)
    assert made["physician"] == "dr.ada"
    client = db_app.test_client()
    headers = {"Authorization": f"Bearer {made['token']}"}
    decision = client.post("/v1/screenings", json=example("review-substance-history"), headers=headers).get_json()
    signed = client.post(f"/v1/decisions/{decision['decision_id']}/review", json={"action": "approve"}, headers=headers)
    assert signed.status_code == 201
    assert (signed.get_json()["reviewer"], signed.get_json()["client"]) == ("dr.ada", made["id"])


def test_keys_create_refuses_unknown_scopes_and_needs_one(cli):
    assert cli("keys", "create", "--name", "x", "--scope", "everything").exit_code == 2
    assert cli("keys", "create", "--name", "x").exit_code == 2
    assert json.loads(cli("keys", "list", "--json").stdout) == []


def test_keys_cli_with_the_database_down_exits_69(monkeypatch):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("DATABASE_URL", f"postgresql+psycopg://nobody@127.0.0.1:{port}/none")
    result = CliRunner().invoke(main, ["keys", "list"])
    assert result.exit_code == 69 and "unavailable" in result.stderr


def test_serve_on_an_empty_log_prints_an_admin_key_once(cli, db_app, monkeypatch):
    launched = []
    monkeypatch.setattr("os.execv", lambda *args: launched.append(args))
    first = cli("serve")
    assert first.exit_code == 0 and len(launched) == 1
    lines = [line for line in first.stderr.splitlines() if "SCREENING_API_KEY=" in line]
    assert len(lines) == 1
    token = lines[0].split("SCREENING_API_KEY=")[1].strip()
    assert token.startswith("ks_")
    client = db_app.test_client()
    headers = {"Authorization": f"Bearer {token}"}
    assert client.post("/v1/screenings", json=example("eligible-iv"), headers=headers).status_code == 200
    # Past the scope check (every scope), but the first key is not issued to a physician.
    assert client.post("/v1/decisions/nope/review", json={"action": "approve"},
                       headers=headers).status_code == 403

    second = cli("serve")
    assert second.exit_code == 0 and "SCREENING_API_KEY" not in second.output
    assert [k["name"] for k in json.loads(cli("keys", "list", "--json").stdout)] == ["first admin key"]
