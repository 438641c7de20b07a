"""The clinician pages through Flask's test client, on a real decision log: decisions are
screened through POST /v1/screenings with an API key, then read, filtered and signed off."""
from __future__ import annotations

import html
import logging
import re

import pytest
from click.testing import CliRunner
from werkzeug.security import check_password_hash

from service.cli import main as cli
from service.web.users import UserDirectory, UsersConfigError, parse_users
from tests.conftest import example
from tests.dbfixtures import database_url  # noqa: F401 - the fixture, on SQLite and PostgreSQL
from tests.web_support import PASSWORDS, csrf_token, intake_key, make_app, unique_subject, with_subject


@pytest.fixture
def app(database_url, monkeypatch, tmp_path):
    """The whole app on an empty decision log: SQLite, and PostgreSQL under scripts/test.sh."""
    app = make_app(monkeypatch, tmp_path, database_url)
    yield app
    app.extensions["store"].close()


@pytest.fixture
def https_client(app):
    client = app.test_client()
    # Secure cookies only travel over https, as in production.
    client.environ_base["wsgi.url_scheme"] = "https"
    return client


@pytest.fixture
def screened(app, https_client):
    """Screen an intake through the API; returns (decision JSON, subject)."""
    key = intake_key(app)

    def _screen(name: str = "ineligible-several") -> dict:
        raw = with_subject(example(name), unique_subject())
        response = https_client.post("/v1/screenings", json=raw, headers={"Authorization": f"Bearer {key}"})
        assert response.status_code == 200, response.get_json()
        return response.get_json()

    return _screen


def sign_in(client, username: str) -> None:
    token = csrf_token(client.get("/login").get_data(as_text=True))
    response = client.post("/login", data={"username": username, "password": PASSWORDS[username],
                                           "csrf_token": token})
    assert response.status_code == 302, response.get_data(as_text=True)


def page(client, path: str) -> str:
    response = client.get(path)
    assert response.status_code == 200, (path, response.status_code)
    return html.unescape(response.get_data(as_text=True))


# --- sign-in ----------------------------------------------------------------------------------

def test_every_page_needs_sign_in(https_client, screened):
    decision = screened()
    for path in ("/", "/reviews", f"/decisions/{decision['decision_id']}", "/reviews?status=any"):
        response = https_client.get(path)
        assert response.status_code == 302, path
        assert response.headers["Location"].startswith("/login?next=")
    # The decision is not in the redirect either: nothing of the record before sign-in.
    assert decision["reasons"][0]["message"] not in https_client.get("/login").get_data(as_text=True)


def test_sign_in_sets_a_secure_session_cookie_and_returns_to_the_page(https_client):
    token = csrf_token(https_client.get("/login?next=/reviews").get_data(as_text=True))
    response = https_client.post("/login", data={"username": "dr.ada", "password": PASSWORDS["dr.ada"],
                                                 "csrf_token": token, "next": "/reviews"})
    assert response.status_code == 302
    assert response.headers["Location"] == "/reviews"
    cookie = response.headers["Set-Cookie"]
    assert cookie.startswith("screening_session=")
    assert "Secure" in cookie and "HttpOnly" in cookie and "SameSite=Lax" in cookie
    assert https_client.get("/reviews").status_code == 200


def test_wrong_password_is_refused_without_logging_what_was_typed(https_client, caplog):
    caplog.set_level(logging.INFO)
    token = csrf_token(https_client.get("/login").get_data(as_text=True))
    response = https_client.post("/login", data={"username": "dr.ada", "password": "wrong", "csrf_token": token})
    assert response.status_code == 401
    assert "not correct" in response.get_data(as_text=True)
    response = https_client.post("/login", data={"username": "my secret password", "password": "x",
                                                 "csrf_token": token})
    assert response.status_code == 401
    assert "my secret password" not in caplog.text
    assert https_client.get("/reviews").status_code == 302


def test_sign_in_never_redirects_off_site(https_client):
    token = csrf_token(https_client.get("/login").get_data(as_text=True))
    for target in ("//evil.example/x", "https://evil.example/", "/\\evil.example"):
        https_client.post("/logout", data={"csrf_token": token})
        token = csrf_token(https_client.get("/login").get_data(as_text=True))
        response = https_client.post("/login", data={"username": "nurse.bo", "password": PASSWORDS["nurse.bo"],
                                                     "csrf_token": token, "next": target})
        assert response.headers["Location"] == "/", target
        token = csrf_token(https_client.get("/").get_data(as_text=True))


def test_password_guessing_is_stopped_per_user_name_across_instances(app, https_client, database_url, monkeypatch, tmp_path):
    """Ten attempts per user name in 15 minutes, counted in the shared database: an 11th guess
    gets 429 without its password being checked, even on another worker or instance, and the
    right password does not get through either; another user name is unaffected."""
    other_instance = make_app(monkeypatch, tmp_path / "second", database_url).test_client()
    other_instance.environ_base["wsgi.url_scheme"] = "https"
    for attempt in range(10):
        client = https_client if attempt % 2 else other_instance
        token = csrf_token(client.get("/login").get_data(as_text=True))
        response = client.post("/login", data={"username": "dr.ada", "password": "wrong", "csrf_token": token})
        assert response.status_code == 401, attempt
    token = csrf_token(https_client.get("/login").get_data(as_text=True))
    response = https_client.post("/login", data={"username": "dr.ada", "password": PASSWORDS["dr.ada"],
                                                 "csrf_token": token})
    assert response.status_code == 429 and int(response.headers["Retry-After"]) > 0
    assert "Too many sign-in attempts" in response.get_data(as_text=True)
    sign_in(https_client, "nurse.bo")


def test_sign_out_ends_the_session(https_client):
    sign_in(https_client, "nurse.bo")
    token = csrf_token(https_client.get("/").get_data(as_text=True))
    assert https_client.post("/logout", data={"csrf_token": token}).status_code == 302
    assert https_client.get("/reviews").status_code == 302


def test_forms_without_a_valid_csrf_token_are_refused(app, https_client, screened):
    decision = screened()
    # Sign-in itself is protected (login CSRF).
    response = https_client.post("/login", data={"username": "dr.ada", "password": PASSWORDS["dr.ada"]})
    assert response.status_code == 400
    assert "did not come from this site" in response.get_data(as_text=True)
    sign_in(https_client, "dr.ada")
    path = f"/decisions/{decision['decision_id']}/review"
    for data in ({"outcome": "approve", "note": "no token"},
                 {"outcome": "approve", "note": "forged", "csrf_token": "forged-token"}):
        assert https_client.post(path, data=data).status_code == 400
    assert https_client.post("/logout").status_code == 400
    assert app.extensions["store"].get_decision(decision["decision_id"]).reviews == ()


# --- what a clinician sees --------------------------------------------------------------------

def test_decision_page_shows_outcome_reasons_evidence_and_citations(https_client, screened):
    decision = screened("ineligible-several")
    sign_in(https_client, "nurse.bo")
    text = page(https_client, f"/decisions/{decision['decision_id']}")
    assert "Ineligible" in text and "Review pending" in text
    assert len(decision["reasons"]) >= 3
    for reason in decision["reasons"]:
        assert reason["message"] in text
        assert reason["citation"] in text
        assert reason["rule_id"] in text
    # Evidence as readable labels and values with units, next to the path.
    assert "Vital signs › Systolic blood pressure" in text and "192 mmHg" in text
    assert "Psychiatric history › Psychosis" in text
    assert "Substance use 1 › Status" in text
    ruleset = decision["ruleset"]
    assert ruleset["version"] in text and ruleset["digest"] in text and ruleset["name"] in text
    # The intake in readable form: sections, booleans as yes/no, enums in words.
    for heading in ("Treatment", "Vital signs", "Psychiatric history", "Medications", "Allergies"):
        assert f">{heading}</h3>" in text
    assert "IV ketamine" in text and "treatment-resistant depression" in text
    assert re.search(r"<th scope=\"row\">Pregnant</th>\s*<td>no", text)
    assert "sertraline" in text
    # A clinician reads; only physicians get the form.
    assert "Only a physician can sign off" in text
    assert 'name="outcome"' not in text


def test_incomplete_decision_lists_the_missing_data(https_client, screened):
    decision = screened("incomplete-no-vitals")
    assert decision["decision"] == "incomplete" and decision["missing"]
    sign_in(https_client, "nurse.bo")
    text = page(https_client, f"/decisions/{decision['decision_id']}")
    assert "Incomplete" in text
    for path in decision["missing"]:
        assert f'<code class="path">{path}</code>' in text
    # The catalog's question for each missing fact: what to ask, not only which field.
    from schemas.intake import SHIPPED
    question = SHIPPED.definition("vitals.systolic_bp").question
    assert "vitals.systolic_bp" in decision["missing"] and f"Ask: {question}" in text


def test_unknown_decision_is_a_page_not_json(https_client):
    sign_in(https_client, "nurse.bo")
    response = https_client.get("/decisions/00000000-0000-0000-0000-000000000000")
    assert response.status_code == 404
    assert response.mimetype == "text/html"
    assert "no decision with this id" in response.get_data(as_text=True)


def test_pages_carry_secure_headers(https_client):
    response = https_client.get("/login")
    headers = response.headers
    assert "default-src 'self'" in headers["Content-Security-Policy"]
    assert "frame-ancestors 'none'" in headers["Content-Security-Policy"]
    assert headers["X-Frame-Options"] == "DENY"
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert headers["Referrer-Policy"] == "same-origin"
    assert headers["Strict-Transport-Security"].startswith("max-age=")
    assert headers["Cache-Control"] == "no-store"
    # Everything the page loads is on this site (no CDN) and ships with the package.
    body = response.get_data(as_text=True)
    assert "http://" not in body and "https://" not in body
    assert https_client.get("/static/web/screening.css").status_code == 200


# --- the queue and sign-off ---------------------------------------------------------------------

def test_queue_lists_pending_decisions_newest_first_and_filters(https_client, screened):
    first = screened("ineligible-several")
    second = screened("review-substance-history")
    clean = screened("eligible-iv")
    sign_in(https_client, "nurse.bo")
    text = page(https_client, "/reviews")
    assert first["decision_id"] in text and second["decision_id"] in text
    assert clean["decision_id"] not in text  # no review needed: not in the queue
    assert text.index(second["decision_id"]) < text.index(first["decision_id"])
    only = page(https_client, f"/reviews?subject={first['subject_id']}")
    assert first["decision_id"] in only and second["decision_id"] not in only
    by_outcome = page(https_client, f"/reviews?decision=eligible&subject={second['subject_id']}")
    assert second["decision_id"] in by_outcome
    assert first["decision_id"] not in page(https_client, f"/reviews?decision=eligible&subject={first['subject_id']}")
    assert clean["decision_id"] in page(https_client, f"/reviews?status=not_required&subject={clean['subject_id']}")
    bad = https_client.get("/reviews?subject=<script>")
    assert bad.status_code == 422
    assert "A subject reference is" in bad.get_data(as_text=True)


def test_physician_signs_off_and_the_decision_leaves_the_queue(app, https_client, screened):
    decision = screened("ineligible-several")
    decision_id = decision["decision_id"]
    sign_in(https_client, "dr.ada")
    text = page(https_client, f"/decisions/{decision_id}")
    assert 'name="outcome" value="approve"' in text and 'name="outcome" value="decline"' in text
    response = https_client.post(f"/decisions/{decision_id}/review", data={
        "outcome": "decline", "note": "Psychosis is active: not a candidate.", "csrf_token": csrf_token(text)})
    assert response.status_code == 302
    assert response.headers["Location"] == f"/decisions/{decision_id}#reviews"
    stored = app.extensions["store"].get_decision(decision_id)
    assert [(r.reviewer, r.outcome, r.note) for r in stored.reviews] == [
        ("dr.ada", "decline", "Psychosis is active: not a candidate.")]
    assert stored.body == decision  # the decision itself never changes
    text = page(https_client, f"/decisions/{decision_id}")
    assert "Psychosis is active: not a candidate." in text and "Declined" in text
    assert "recorded: declined" in text
    assert decision_id not in page(https_client, f"/reviews?subject={decision['subject_id']}")
    assert decision_id in page(https_client, f"/reviews?status=declined&subject={decision['subject_id']}")


def test_reviewer_is_the_signed_in_physician_not_the_form(app, https_client, screened):
    decision = screened("review-substance-history")
    sign_in(https_client, "dr.ada")
    token = csrf_token(page(https_client, f"/decisions/{decision['decision_id']}"))
    https_client.post(f"/decisions/{decision['decision_id']}/review",
                      data={"outcome": "approve", "note": "", "reviewer": "someone.else", "csrf_token": token})
    reviews = app.extensions["store"].get_decision(decision["decision_id"]).reviews
    assert [r.reviewer for r in reviews] == ["dr.ada"]


def test_clinicians_cannot_sign_off(app, https_client, screened):
    decision = screened()
    sign_in(https_client, "nurse.bo")
    token = csrf_token(page(https_client, f"/decisions/{decision['decision_id']}"))
    response = https_client.post(f"/decisions/{decision['decision_id']}/review",
                                 data={"outcome": "approve", "note": "", "csrf_token": token})
    assert response.status_code == 403
    assert "Only physicians may sign off" in response.get_data(as_text=True)
    assert app.extensions["store"].get_decision(decision["decision_id"]).reviews == ()


def test_sign_off_form_errors_are_shown_and_nothing_is_recorded(app, https_client, screened):
    decision = screened()
    path = f"/decisions/{decision['decision_id']}"
    sign_in(https_client, "dr.ada")
    token = csrf_token(page(https_client, path))
    cases = [({"outcome": "decline", "note": ""}, "required when declining"),
             ({"outcome": "maybe", "note": "x"}, "Choose approve or decline"),
             ({"outcome": "approve", "note": "x" * 2001}, "the limit is 2000")]
    for data, message in cases:
        response = https_client.post(path + "/review", data={**data, "csrf_token": token})
        assert response.status_code == 422
        body = response.get_data(as_text=True)
        assert message in body
        assert 'role="alert"' in body  # the error summary is announced
    assert app.extensions["store"].get_decision(decision["decision_id"]).reviews == ()


def test_decisions_without_review_have_no_sign_off(app, https_client, screened):
    decision = screened("eligible-iv")
    assert not decision["physician_review_required"]
    sign_in(https_client, "dr.ada")
    text = page(https_client, f"/decisions/{decision['decision_id']}")
    assert "No review required" in text and 'name="outcome"' not in text
    response = https_client.post(f"/decisions/{decision['decision_id']}/review",
                                 data={"outcome": "approve", "note": "", "csrf_token": csrf_token(text)})
    assert response.status_code == 422
    assert "does not require a physician&#39;s sign-off" in response.get_data(as_text=True)
    assert app.extensions["store"].get_decision(decision["decision_id"]).reviews == ()


def test_logs_never_hold_intake_values(https_client, screened, caplog):
    caplog.set_level(logging.DEBUG)
    decision = screened("ineligible-several")
    sign_in(https_client, "dr.ada")
    text = page(https_client, f"/decisions/{decision['decision_id']}")
    https_client.post(f"/decisions/{decision['decision_id']}/review",
                      data={"outcome": "approve", "note": "ok", "csrf_token": csrf_token(text)})
    page(https_client, "/reviews")
    assert "sign-off recorded" in caplog.text
    for value in ("sertraline", "alcohol", "192", "psychosis"):
        assert value not in caplog.text


# --- configuration ------------------------------------------------------------------------------

def test_users_configuration_is_checked():
    with pytest.raises(UsersConfigError, match="password_hash must be a werkzeug"):
        parse_users({"dr.x": {"password_hash": "plain text", "role": "physician"}})
    with pytest.raises(UsersConfigError, match="role must be one of"):
        parse_users({"dr.x": {"password_hash": "scrypt:1:2:3$a$b", "role": "admin"}})
    with pytest.raises(UsersConfigError, match="not valid JSON"):
        UserDirectory.from_setting("{not json")
    with pytest.raises(UsersConfigError, match="cannot read"):
        UserDirectory.from_setting("/nonexistent/users.json")


def test_bad_users_setting_stops_start_up(monkeypatch, tmp_path):
    monkeypatch.setenv("SCREENING_USERS", '{"dr.x": {"password_hash": "hunter2", "role": "physician"}}')
    with pytest.raises(SystemExit, match="password_hash"):
        make_app_raw(monkeypatch, tmp_path)


def test_short_secret_key_stops_start_up_and_none_gives_a_random_one(monkeypatch, tmp_path, caplog):
    monkeypatch.setenv("SCREENING_SECRET_KEY", "short")
    with pytest.raises(SystemExit, match="at least 32"):
        make_app_raw(monkeypatch, tmp_path)
    monkeypatch.delenv("SCREENING_SECRET_KEY")
    keys = {make_app_raw(monkeypatch, tmp_path / "a").secret_key, make_app_raw(monkeypatch, tmp_path / "b").secret_key}
    assert len(keys) == 2 and all(len(k) >= 32 for k in keys)
    assert "SCREENING_SECRET_KEY is not set" in caplog.text


def make_app_raw(monkeypatch, tmp_path):
    from service.app import create_app
    from service.config import Settings

    tmp_path.mkdir(parents=True, exist_ok=True)
    return create_app(Settings.from_env(state_dir=tmp_path, database_url=f"sqlite:///{tmp_path}/d.db",
                                        reload_interval=0))


def test_users_cli_hashes_and_adds_people_who_can_then_sign_in(monkeypatch, tmp_path):
    runner = CliRunner()
    result = runner.invoke(cli, ["users", "hash-password", "--password-stdin"], input="a long enough password\n")
    assert result.exit_code == 0, result.output
    assert check_password_hash(result.output.strip(), "a long enough password")
    assert runner.invoke(cli, ["users", "hash-password", "--password-stdin"], input="short\n").exit_code == 2

    users_file = tmp_path / "users.json"
    result = runner.invoke(cli, ["users", "add", "dr.cy", "--role", "physician", "--file", str(users_file),
                                 "--password-stdin"], input="dr cy's password\n")
    assert result.exit_code == 0, result.output
    assert users_file.stat().st_mode & 0o077 == 0  # password hashes: readable by the owner only

    monkeypatch.setenv("SCREENING_USERS", str(users_file))
    monkeypatch.setenv("SCREENING_SECRET_KEY", "x" * 40)
    client = make_app_raw(monkeypatch, tmp_path / "state").test_client()
    client.environ_base["wsgi.url_scheme"] = "https"
    token = csrf_token(client.get("/login").get_data(as_text=True))
    response = client.post("/login", data={"username": "dr.cy", "password": "dr cy's password", "csrf_token": token})
    assert response.status_code == 302
    assert "Signed in as <strong>dr.cy</strong> (physician)" in client.get("/").get_data(as_text=True)
