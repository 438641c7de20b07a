"""The decision log over HTTP, on SQLite and on a real PostgreSQL server: read by id, filter and
page, the review queue and sign-off, append-only, and 503 while the database is down."""
from __future__ import annotations

import copy
import logging
import sqlite3

import pytest

from service.app import create_app
from service.auth import create_key
from tests.conftest import app_settings, bearer, example
from tests.dbfixtures import PostgresCluster

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::UserWarning")

# Values that must never reach a log line or an error message.
MARKER_SUBJECT = "pt-marker-q7z9"
MARKER_MEDICATION = "marker-medication-x4k"


def _intake(name: str, subject: str | None = None) -> dict:
    raw = copy.deepcopy(example(name))
    if subject:
        raw["subject_id"] = subject
    return raw


def _screen(client, name: str, subject: str | None = None) -> dict:
    response = client.post("/v1/screenings", json=_intake(name, subject))
    assert response.status_code == 200, response.get_json()
    return response.get_json()


def _marked_intake() -> dict:
    raw = _intake("ineligible-several", MARKER_SUBJECT)
    raw["medications"][0]["name"] = MARKER_MEDICATION
    return raw


def test_a_screened_decision_is_readable_by_id(db_client):
    made = _screen(db_client, "ineligible-several")
    got = db_client.get(f"/v1/decisions/{made['decision_id']}")
    assert got.status_code == 200
    body = got.get_json()
    assert {k: body[k] for k in made} == made  # exactly what the screening returned
    assert body["source"] == "http" and body["client"].isalnum() and len(body["client"]) == 16
    assert body["review_status"] == "pending" and body["reviews"] == []
    assert body["intake"]["vitals"]["systolic_bp"] == 192
    assert body["intake"]["vitals"]["measured_at"] == "2026-11-20T09:30:00Z"
    assert body["recorded_at"].endswith("Z")


def test_an_unknown_decision_is_404_json(db_client):
    response = db_client.get("/v1/decisions/does-not-exist")
    assert response.status_code == 404
    assert response.get_json()["error"]["code"] == "not_found"


def test_list_filters_over_http(db_client):
    clean = _screen(db_client, "eligible-iv", "pt-f1")
    review = _screen(db_client, "review-substance-history", "pt-f1")
    ineligible = _screen(db_client, "ineligible-several", "pt-f2")

    def ids(query: str) -> list[str]:
        response = db_client.get(f"/v1/decisions?{query}")
        assert response.status_code == 200, response.get_json()
        items = response.get_json()["items"]
        assert all("intake" not in item for item in items)  # the list stays light
        return [item["decision_id"] for item in items]

    assert ids("") == [ineligible["decision_id"], review["decision_id"], clean["decision_id"]]
    assert ids("subject_id=pt-f1") == [review["decision_id"], clean["decision_id"]]
    assert ids("decision=ineligible") == [ineligible["decision_id"]]
    assert ids("review_status=pending") == [ineligible["decision_id"], review["decision_id"]]
    assert ids("review_status=not_required") == [clean["decision_id"]]
    assert ids("ruleset_digest=" + clean["ruleset"]["digest"].replace(":", "%3A")) == ids("")
    recorded = db_client.get(f"/v1/decisions/{review['decision_id']}").get_json()["recorded_at"]
    assert ids(f"since={recorded}") == [ineligible["decision_id"], review["decision_id"]]
    assert ids(f"until={recorded}") == [clean["decision_id"]]
    assert ids("since=2999-01-01T00:00:00") == []  # no zone: UTC


@pytest.mark.parametrize("query, path", [
    ("decision=maybe", "decision"), ("review_status=later", "review_status"), ("limit=0", "limit"),
    ("limit=201", "limit"), ("since=yesterday", "since"), ("cursor=not-a-cursor", "cursor"),
    ("subjectid=pt-1", "subjectid"),
])
def test_bad_list_parameters_are_422_naming_the_parameter(db_client, query, path):
    response = db_client.get(f"/v1/decisions?{query}")
    assert response.status_code == 422
    paths = [e["path"] for e in response.get_json()["error"]["errors"]]
    assert any(p.endswith(path) for p in paths), paths


def test_cursor_pagination_over_http(db_client):
    made = [_screen(db_client, "eligible-iv", f"pt-page-{i}")["decision_id"] for i in range(5)]
    seen, cursor, pages = [], None, 0
    while True:
        response = db_client.get("/v1/decisions?limit=2" + (f"&cursor={cursor}" if cursor else ""))
        page = response.get_json()
        seen += [item["decision_id"] for item in page["items"]]
        cursor, pages = page["next_cursor"], pages + 1
        if cursor is None:
            break
    assert pages == 3 and seen == list(reversed(made))


def _physician_key(client, physician: str = "dr.ada", scopes=("review", "read")) -> dict:
    """Headers with a key issued to a named physician (a sign-off is recorded as them)."""
    record = create_key(client.application.extensions["store"].keys, f"{physician}'s key", scopes,
                        physician=physician)
    return {"Authorization": f"Bearer {record.token}"}


def test_review_queue_is_urgent_first_then_oldest(db_client):
    clean = _screen(db_client, "eligible-iv", "pt-q1")
    review = _screen(db_client, "review-substance-history", "pt-q2")
    incomplete = _screen(db_client, "incomplete-no-vitals", "pt-q3")
    raw = _intake("eligible-iv", "pt-q4")
    raw["psychiatric_history"].update(suicidal_ideation="active", suicidal_plan_or_intent=True)
    response = db_client.post("/v1/screenings", json=raw)
    urgent = response.get_json()
    assert urgent["urgent"] and urgent["physician_review_required"]

    def queue(status: str = "pending", **extra) -> list[str]:
        response = db_client.get("/v1/reviews", query_string={"status": status, **extra})
        assert response.status_code == 200, response.get_json()
        return [item["decision_id"] for item in response.get_json()["items"]]

    assert queue() == [urgent["decision_id"], review["decision_id"], incomplete["decision_id"]]
    assert clean["decision_id"] not in queue()
    # Pages follow the same order.
    first = db_client.get("/v1/reviews?limit=1").get_json()
    second = db_client.get(f"/v1/reviews?limit=2&cursor={first['next_cursor']}").get_json()
    assert [i["decision_id"] for i in first["items"] + second["items"]] == queue()
    assert second["next_cursor"] is None
    # A cursor of another listing is refused, not misread.
    other = db_client.get("/v1/decisions?limit=1").get_json()["next_cursor"]
    assert db_client.get(f"/v1/reviews?cursor={other}").status_code == 422


def test_sign_off_is_recorded_as_the_physician_the_key_was_issued_to(db_client):
    review = _screen(db_client, "review-substance-history", "pt-s1")
    path = f"/v1/decisions/{review['decision_id']}/review"
    headers = _physician_key(db_client, "dr.ada")
    signed = db_client.post(path, json={"action": "approve", "note": "remission > 12 months"}, headers=headers)
    assert signed.status_code == 201, signed.get_json()
    got = signed.get_json()
    assert (got["outcome"], got["reviewer"], got["credential"], got["note"]) == (
        "approve", "dr.ada", "api_key", "remission > 12 months")
    assert got["client"] == headers["Authorization"].split("_")[1]  # the key's id
    assert got["meaning"] == "Approved: treatment may go ahead as screened." and got["treatment"] == "may_proceed"
    assert got["decision_id"] == review["decision_id"] and got["created_at"].endswith("Z")
    shown = db_client.get(f"/v1/decisions/{review['decision_id']}").get_json()
    assert shown["review_status"] == "approved" and shown["reviews"] == [got]
    assert shown["decision"] == "eligible" and shown["physician_review_required"] is True  # unchanged
    assert db_client.get("/v1/reviews?status=approved").get_json()["items"][0]["decision_id"] == review["decision_id"]


def test_reviewer_identity_is_never_free_text(db_client):
    """Issue 18 item 3: a `review` key cannot sign in someone else's name."""
    review = _screen(db_client, "review-substance-history")
    path = f"/v1/decisions/{review['decision_id']}/review"
    # A name in the body is refused, whoever sends it.
    forged = db_client.post(path, json={"action": "decline", "note": "no", "reviewer": "Dr Someone Else"},
                            headers=_physician_key(db_client, "dr.ada"))
    assert forged.status_code == 422
    assert [e["path"] for e in forged.get_json()["error"]["errors"]] == ["reviewer"]
    # A key that is not issued to a physician (the all-scopes test key) cannot sign off at all.
    unbound = db_client.post(path, json={"action": "approve"})
    assert unbound.status_code == 403 and "not issued to a physician" in unbound.get_json()["error"]["message"]
    assert db_client.get(f"/v1/decisions/{review['decision_id']}").get_json()["reviews"] == []


def test_a_key_of_a_person_who_is_not_a_physician_cannot_sign_off(tmp_path, monkeypatch):
    from tests.web_support import make_app
    app = make_app(monkeypatch, tmp_path, f"sqlite:///{tmp_path}/log.sqlite3")
    try:
        client = app.test_client()
        screen = create_key(app.extensions["store"].keys, "intake", ["screen"]).token
        decision = client.post("/v1/screenings", json=_intake("review-substance-history"),
                               headers={"Authorization": f"Bearer {screen}"}).get_json()
        path = f"/v1/decisions/{decision['decision_id']}/review"
        for name in ("nurse.bo", "dr.gone"):  # a clinician; nobody in the users file
            response = client.post(path, json={"action": "approve"}, headers=_physician_key(client, name))
            assert response.status_code == 403, name
        assert client.post(path, json={"action": "approve"}, headers=_physician_key(client, "dr.ada")).status_code == 201
    finally:
        app.extensions["store"].close()


@pytest.mark.parametrize("name, body, paths", [
    ("review-substance-history", {}, ["action"]),
    ("review-substance-history", {"action": "maybe"}, ["action"]),
    ("review-substance-history", {"action": "decline"}, ["note"]),  # the page refuses it too
    ("review-substance-history", {"action": "decline", "note": "   "}, ["note"]),
    ("review-substance-history", {"action": "confirm"}, ["action"]),
    ("review-substance-history", {"action": "approve", "note": 5, "extra": 1}, ["extra", "note"]),
    ("review-substance-history", {"action": "approve", "note": "x" * 4001}, ["note"]),
    ("ineligible-several", {"action": "approve", "note": "x"}, ["action"]),
    ("ineligible-several", {"action": "override", "note": "x"}, ["overridden_rules"]),
    ("ineligible-several", {"action": "override", "overridden_rules": ["*"]}, ["note", "overridden_rules"]),
    ("ineligible-several", {"action": "confirm", "answers": {"vitals.systolic_bp": 1}}, ["answers"]),
    ("incomplete-no-vitals", {"action": "approve"}, ["action"]),
    ("incomplete-no-vitals", {"action": "rescreen"}, ["answers"]),
    ("incomplete-no-vitals", {"action": "rescreen", "answers": {"patient.age_years": 30}}, ["answers"]),
    ("incomplete-no-vitals", {"action": "rescreen", "answers": {"vitals.systolic_bp": "high"}},
     ["answers.vitals.systolic_bp"]),
])
def test_an_invalid_sign_off_is_422_by_field(db_client, name, body, paths):
    decision = _screen(db_client, name)
    response = db_client.post(f"/v1/decisions/{decision['decision_id']}/review", json=body,
                              headers=_physician_key(db_client))
    assert response.status_code == 422, response.get_json()
    assert sorted(e["path"] for e in response.get_json()["error"]["errors"]) == paths
    assert db_client.get(f"/v1/decisions/{decision['decision_id']}").get_json()["reviews"] == []


def test_note_limit_is_the_same_in_the_api_and_on_the_page():
    from schemas.store import ReviewRequestSchema
    from service.signoff import MAX_NOTE_CHARS
    from service.web import views

    field = ReviewRequestSchema().fields["note"]
    assert any(getattr(v, "max", None) == MAX_NOTE_CHARS for v in field.validators)
    assert not hasattr(views, "MAX_NOTE_CHARS")


def test_exclusion_is_confirmed_or_overridden_through_the_api(db_client):
    decision = _screen(db_client, "ineligible-several")
    excluding = [r["rule_id"] for r in decision["reasons"] if r["effect"] == "exclude"]
    path = f"/v1/decisions/{decision['decision_id']}/review"
    headers = _physician_key(db_client)
    confirm = db_client.post(path, json={"action": "confirm"}, headers=headers)
    assert confirm.status_code == 201 and confirm.get_json()["treatment"] == "must_not_proceed"
    override = db_client.post(path, json={"action": "override", "overridden_rules": excluding,
                                          "note": "Cardiology cleared; risks discussed."}, headers=headers)
    assert override.status_code == 201
    got = override.get_json()
    assert got["overridden_rules"] == excluding and got["treatment"] == "may_proceed"
    shown = db_client.get(path[: -len("/review")]).get_json()
    assert shown["review_status"] == "overridden" and [r["outcome"] for r in shown["reviews"]] == ["confirm", "override"]


def test_incomplete_is_rescreened_through_the_api(db_client):
    first = _screen(db_client, "incomplete-no-vitals")
    answers = {p: v for p, v in {"vitals.systolic_bp": 128, "vitals.diastolic_bp": 82,
                                 "vitals.measured_at": "2026-11-29T09:00:00Z"}.items() if p in first["missing"]}
    response = db_client.post(f"/v1/decisions/{first['decision_id']}/review",
                              json={"action": "rescreen", "answers": answers}, headers=_physician_key(db_client))
    assert response.status_code == 201, response.get_json()
    got = response.get_json()
    assert got["treatment"] == "rescreened" and got["rescreen_decision_id"]
    second = db_client.get(f"/v1/decisions/{got['rescreen_decision_id']}").get_json()
    assert second["rescreen_of"] == first["decision_id"] and second["source"] == "rescreen"
    assert second["intake"]["vitals"]["systolic_bp"] == 128
    assert db_client.get(f"/v1/decisions/{first['decision_id']}").get_json()["review_status"] == "rescreened"


def test_old_approve_and_decline_records_still_read(db_client):
    """Reviews recorded before sign-off actions (approve on an exclusion, a free-text reviewer)
    stay readable, and say what they were."""
    from sqlalchemy import insert
    from service.store.models import reviews
    import datetime as dt
    decision = _screen(db_client, "ineligible-several")
    store = db_client.application.extensions["store"]
    with store.engine.begin() as conn:
        conn.execute(insert(reviews), {"review_id": "old-1", "decision_id": decision["decision_id"],
                                       "created_at": dt.datetime(2026, 11, 1, tzinfo=dt.timezone.utc),
                                       "reviewer": "Dr Free Text", "outcome": "approve", "note": "",
                                       "client": "0123456789abcdef"})
    shown = db_client.get(f"/v1/decisions/{decision['decision_id']}").get_json()
    [old] = shown["reviews"]
    assert shown["review_status"] == "approved"
    assert old["credential"] is None and old["overridden_rules"] == []
    assert old["meaning"].startswith("Approved (recorded before sign-off actions were matched to the decision)")


def test_sign_off_errors(db_client):
    clean = _screen(db_client, "eligible-iv")
    body = {"action": "approve"}
    headers = _physician_key(db_client)
    assert db_client.post("/v1/decisions/nope/review", json=body, headers=headers).status_code == 404
    conflict = db_client.post(f"/v1/decisions/{clean['decision_id']}/review", json=body, headers=headers)
    assert conflict.status_code == 409 and conflict.get_json()["error"]["code"] == "conflict"
    review = _screen(db_client, "review-substance-history")
    not_json = db_client.post(f"/v1/decisions/{review['decision_id']}/review", data="action=approve",
                              content_type="application/x-www-form-urlencoded", headers=headers)
    assert not_json.status_code == 415


def test_nothing_updates_or_deletes_a_decision_or_a_review(db_client):
    decision = _screen(db_client, "review-substance-history")
    path = f"/v1/decisions/{decision['decision_id']}"
    for method in ("put", "patch", "delete"):
        response = getattr(db_client, method)(path, json={"decision": "eligible"})
        assert response.status_code == 405, method
        assert "GET" in response.headers["Allow"]
        assert getattr(db_client, method)(path + "/review", json={}).status_code == 405
        assert getattr(db_client, method)("/v1/decisions", json={}).status_code == 405
        assert getattr(db_client, method)("/v1/reviews", json={}).status_code == 405
    assert db_client.get(path).get_json()["decision"] == decision["decision"]


def _count(app) -> int:
    return app.extensions["store"].count_decisions()


@pytest.mark.postgres
def test_postgres_down_gives_503_then_resumes_without_loss_or_duplicates(tmp_path, caplog, capfd):
    from tests.dbfixtures import _admin_engine, postgres_schema_url

    cluster = PostgresCluster()
    schema = "t_outage"
    admin = _admin_engine()
    with admin.connect() as conn:
        conn.exec_driver_sql(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        conn.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
    admin.dispose()
    app = create_app(app_settings(tmp_path, database_url=postgres_schema_url(schema)))
    client = app.test_client()
    client.environ_base["HTTP_AUTHORIZATION"] = bearer(app)["Authorization"]
    accepted = [_screen(client, "eligible-iv")["decision_id"]]
    caplog.set_level(logging.INFO)
    try:
        cluster.stop()
        for _ in range(3):
            response = client.post("/v1/screenings", json=_marked_intake())
            assert response.status_code == 503
            assert response.headers["Retry-After"].isdigit()
            body = response.get_json()
            assert set(body) == {"error"} and body["error"]["code"] == "unavailable"
        assert client.get("/readyz").status_code == 503
    finally:
        if not cluster.running():
            cluster.start()
    accepted.append(_screen(client, "review-substance-history")["decision_id"])
    stored = [s.decision_id for s in app.extensions["store"].list_decisions()[0]]
    assert stored == list(reversed(accepted))  # nothing refused was stored, nothing accepted lost
    assert client.get("/readyz").status_code == 200
    logged = caplog.text + "".join(capfd.readouterr())
    assert "decision log unavailable" in logged
    assert MARKER_SUBJECT not in logged and MARKER_MEDICATION not in logged
    app.extensions["store"].close()
    admin = _admin_engine()
    with admin.connect() as conn:
        conn.exec_driver_sql(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    admin.dispose()


def test_sqlite_locked_gives_503_and_stores_nothing_then_resumes(tmp_path, caplog, capfd):
    """A writer that holds the database past the busy timeout: the save fails after the screening
    ran, and the client gets 503, not a decision the log does not have."""
    path = tmp_path / "log.sqlite3"
    # Rate limiting off: its counter is a write too and would meet the lock first (503 either way,
    # tests/test_rate_limit.py); this test is about the save after screening.
    app = create_app(app_settings(tmp_path, rate_limit="off", database_url=f"sqlite:///{path}?timeout=0.3"))
    client = app.test_client()
    client.environ_base["HTTP_AUTHORIZATION"] = bearer(app)["Authorization"]
    first = _screen(client, "eligible-iv")["decision_id"]
    caplog.set_level(logging.INFO)
    blocker = sqlite3.connect(path, isolation_level=None)
    try:
        blocker.execute("BEGIN EXCLUSIVE")
        response = client.post("/v1/screenings", json=_marked_intake())
        assert response.status_code == 503 and response.headers["Retry-After"] == "5"
        assert "decision_id" not in response.get_data(as_text=True)
        assert MARKER_SUBJECT not in response.get_data(as_text=True)
    finally:
        blocker.rollback()
        blocker.close()
    second = _screen(client, "eligible-iv")["decision_id"]
    assert [s.decision_id for s in app.extensions["store"].list_decisions()[0]] == [second, first]
    logged = caplog.text + "".join(capfd.readouterr())
    assert "decision log unavailable: saving a decision: OperationalError" in logged
    assert MARKER_SUBJECT not in logged and MARKER_MEDICATION not in logged
    app.extensions["store"].close()


def test_nul_characters_never_reach_the_database_as_errors(db_client):
    """PostgreSQL text cannot hold NUL: it must give 4xx or be stored, never 500."""
    assert db_client.get("/v1/decisions/%00").status_code == 404
    headers = _physician_key(db_client)
    assert db_client.post("/v1/decisions/a%00b/review", json={"action": "approve"}, headers=headers).status_code == 404
    assert db_client.get("/v1/decisions?subject_id=pt%00").status_code == 422
    decision = _screen(db_client, "review-substance-history")
    response = db_client.post(f"/v1/decisions/{decision['decision_id']}/review",
                              json={"action": "approve", "overridden_rules": ["r\u0000"], "note": "a\u0000b"},
                              headers=headers)
    assert response.status_code == 422
    assert sorted(e["path"] for e in response.get_json()["error"]["errors"]) == ["note", "overridden_rules[0]"]
    raw = _intake("ineligible-several")
    raw["medications"][0]["name"] = "sertra\u0000line"
    screened = db_client.post("/v1/screenings", json=raw)
    assert screened.status_code in (200, 422)
    if screened.status_code == 200:
        stored = db_client.get(f"/v1/decisions/{screened.get_json()['decision_id']}").get_json()
        assert stored["intake"]["medications"][0]["name"] == "sertra\u0000line"
