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
from tests.conftest import app_settings, example
from tests import web_support
from tests.web_support import PASSWORDS, csrf_token, intake_key, make_app, unique_subject, with_subject


@pytest.fixture
def app(database_url, monkeypatch, tmp_path):
    """The whole app on an empty decision log: SQLite, and PostgreSQL under scripts/test.sh."""
    app = make_app(monkeypatch, tmp_path, database_url)
    yield app
    app.extensions["store"].close()


@pytest.fixture
def https_client(app):
    return web_support.https_client(app)


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
    assert "Too many failed sign-ins" in response.get_data(as_text=True)
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
        assert reason["rule_id"] in text
        # Citations spelled out: the full reference, linked, with the section it rests on.
        for source in reason["sources"]:
            if source["reference"] and source["kind"] != "software default":
                assert source["reference"] in text and f'href="{source["url"]}"' in text
            if source["section"]:
                assert source["section"] in text
    assert "CIII. Full Prescribing Information" in text and "Software default" in text
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
    assert 'name="action"' not in text


def test_decision_page_states_the_assumptions_a_clinician_confirms(app, https_client):
    raw = with_subject(example("eligible-iv"), unique_subject())
    del raw["medical_history"]["hepatic_impairment"]  # pack.yaml declares this absence (optional)
    raw["medical_history"]["severe_hepatic_impairment"] = True
    response = https_client.post("/v1/screenings", json=raw, headers={"Authorization": f"Bearer {intake_key(app)}"})
    decision = response.get_json()
    assert decision["decision"] == "ineligible" and decision["physician_review_required"]
    assert [a["path"] for a in decision["assumptions"]] == ["medical_history.hepatic_impairment"]
    sign_in(https_client, "nurse.bo")
    text = page(https_client, f"/decisions/{decision['decision_id']}")
    assert "Assumptions to confirm" in text
    assert '<code class="path">medical_history.hepatic_impairment</code> was not given' in text
    assert decision["assumptions"][0]["means"] in text


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

def test_queue_lists_pending_decisions_and_filters(https_client, screened):
    first = screened("ineligible-several")
    second = screened("review-substance-history")
    clean = screened("eligible-iv")
    sign_in(https_client, "nurse.bo")
    text = page(https_client, "/reviews")
    assert first["decision_id"] in text and second["decision_id"] in text
    assert clean["decision_id"] not in text  # no review needed: not in the queue
    assert text.index(first["decision_id"]) < text.index(second["decision_id"])  # oldest first
    only = page(https_client, f"/reviews?subject={first['subject_id']}")
    assert first["decision_id"] in only and second["decision_id"] not in only
    by_outcome = page(https_client, f"/reviews?decision=eligible&subject={second['subject_id']}")
    assert second["decision_id"] in by_outcome
    assert first["decision_id"] not in page(https_client, f"/reviews?decision=eligible&subject={first['subject_id']}")
    assert clean["decision_id"] in page(https_client, f"/reviews?status=not_required&subject={clean['subject_id']}")
    bad = https_client.get("/reviews?subject=<script>")
    assert bad.status_code == 422
    assert "A subject reference is" in bad.get_data(as_text=True)


def post_sign_off(client, decision_id: str, **data):
    token = csrf_token(page(client, f"/decisions/{decision_id}"))
    return client.post(f"/decisions/{decision_id}/review", data={**data, "csrf_token": token})


def test_physician_confirms_an_exclusion_and_the_decision_leaves_the_queue(app, https_client, screened):
    decision = screened("ineligible-several")
    decision_id = decision["decision_id"]
    sign_in(https_client, "dr.ada")
    text = page(https_client, f"/decisions/{decision_id}")
    # An exclusion is confirmed or overridden, never "approved".
    assert 'name="action" value="confirm"' in text and 'name="action" value="override"' in text
    assert 'value="approve"' not in text and 'value="decline"' not in text
    assert "Confirm the exclusion: treatment must not go ahead" in text
    response = post_sign_off(https_client, decision_id, action="confirm", note="Psychosis is active.")
    assert response.status_code == 302
    location = response.headers["Location"]
    assert location.startswith(f"/decisions/{decision_id}?signed=") and location.endswith("#confirmation")
    stored = app.extensions["store"].get_decision(decision_id)
    [review] = stored.reviews
    assert (review.reviewer, review.outcome, review.note, review.credential) == (
        "dr.ada", "confirm", "Psychosis is active.", "session")
    assert review.meaning == "Exclusion confirmed: treatment must not go ahead."
    assert review.client.startswith("s-")
    assert stored.body == decision  # the decision itself never changes
    assert stored.review_status == "confirmed"
    text = page(https_client, location.split("#")[0])
    assert "Your sign-off was recorded:" in text and 'id="confirmation"' in text and "autofocus" in text
    assert "Exclusion confirmed: treatment must not go ahead." in text
    assert "signed in to the clinician pages" in text  # who, and through what
    assert "Approved" not in text and "Declined" not in text
    assert decision_id not in page(https_client, f"/reviews?subject={decision['subject_id']}")
    assert decision_id in page(https_client, f"/reviews?status=confirmed&subject={decision['subject_id']}")


def test_override_names_every_excluding_rule_and_needs_a_reason(app, https_client, screened):
    decision = screened("ineligible-several")
    decision_id = decision["decision_id"]
    excluding = [r["rule_id"] for r in decision["reasons"] if r["effect"] == "exclude"]
    assert len(excluding) >= 2
    sign_in(https_client, "dr.ada")
    cases = [({"action": "override", "note": "BP treated."}, "Name every rule you override"),
             ({"action": "override", "note": "", "overridden_rules": excluding}, "A note is required to override"),
             ({"action": "override", "note": "x", "overridden_rules": excluding + ["not-a-rule"]},
              "Not a rule that excludes this decision: not-a-rule"),
             ({"action": "approve", "note": "x"}, "Choose confirm"),
             ({"action": "confirm", "note": "x" * 4001}, "the limit is 4000")]
    for data, message in cases:
        response = post_sign_off(https_client, decision_id, **data)
        assert response.status_code == 422, data
        body = html.unescape(response.get_data(as_text=True))
        assert message in body, (data, message)
        assert 'role="alert"' in body and 'id="form-errors"' in body and "autofocus" in body
    assert app.extensions["store"].get_decision(decision_id).reviews == ()
    response = post_sign_off(https_client, decision_id, action="override", overridden_rules=excluding,
                             note="Reviewed with cardiology; risks accepted.")
    assert response.status_code == 302
    [review] = app.extensions["store"].get_decision(decision_id).reviews
    assert review.outcome == "override" and list(review.overridden_rules) == excluding
    text = page(https_client, f"/decisions/{decision_id}")
    assert "Exclusion overridden: treatment may go ahead despite the rule(s) named" in text
    assert all(rule in text for rule in excluding)


def test_incomplete_is_rescreened_with_the_missing_answers_into_a_linked_decision(app, https_client, screened):
    first = screened("incomplete-no-vitals")
    assert first["decision"] == "incomplete"
    sign_in(https_client, "dr.ada")
    text = page(https_client, f"/decisions/{first['decision_id']}")
    assert 'value="rescreen"' in text and 'value="decline"' in text and 'value="approve"' not in text
    answers = {"answer.vitals.systolic_bp": "128", "answer.vitals.diastolic_bp": "82",
               "answer.vitals.measured_at": "2026-11-29T09:00:00Z"}
    answers = {k: v for k, v in answers.items() if k[len("answer."):] in first["missing"]}
    assert answers, first["missing"]
    bad = post_sign_off(https_client, first["decision_id"], action="rescreen",
                        **{**answers, "answer.vitals.systolic_bp": "high"})
    assert bad.status_code == 422 and "enter a number" in bad.get_data(as_text=True)
    response = post_sign_off(https_client, first["decision_id"], action="rescreen", **answers)
    assert response.status_code == 302, response.get_data(as_text=True)
    store = app.extensions["store"]
    [review] = store.get_decision(first["decision_id"]).reviews
    assert review.outcome == "rescreen" and review.rescreen_decision_id
    second = store.get_decision(review.rescreen_decision_id)
    assert second.rescreen_of == first["decision_id"] and second.source == "rescreen"
    assert second.intake["vitals"]["systolic_bp"] == 128
    assert second.body["missing"] != first["missing"]
    text = page(https_client, f"/decisions/{second.decision_id}")
    assert "A re-screen of" in text and first["decision_id"] in text
    assert store.get_decision(first["decision_id"]).review_status == "rescreened"


def test_eligible_with_review_is_approved_or_declined_with_a_note(app, https_client, screened):
    decision = screened("review-substance-history")
    assert decision["decision"] == "eligible" and decision["physician_review_required"]
    sign_in(https_client, "dr.ada")
    response = post_sign_off(https_client, decision["decision_id"], action="decline", note="")
    assert response.status_code == 422 and "A note is required to decline" in html.unescape(response.get_data(as_text=True))
    assert post_sign_off(https_client, decision["decision_id"], action="approve", note="").status_code == 302
    assert [r.outcome for r in app.extensions["store"].get_decision(decision["decision_id"]).reviews] == ["approve"]


def test_old_review_records_still_read_sensibly(app, https_client, screened):
    """Reviews from before sign-off actions: "approve" on an exclusion with a name the caller
    typed, and a page sign-off without a credential. They show what they were, flagged."""
    import datetime as dt
    from sqlalchemy import insert
    from service.store.models import reviews
    decision = screened("ineligible-several")
    with app.extensions["store"].engine.begin() as conn:
        for i, (reviewer, outcome, client) in enumerate((("dr.ada", "decline", ""),
                                                         ("Dr Free Text", "approve", "0123456789abcdef"))):
            conn.execute(insert(reviews), {
                "review_id": f"old-{i}-{decision['decision_id']}", "decision_id": decision["decision_id"],
                "created_at": dt.datetime(2026, 11, 1, 9, i, tzinfo=dt.timezone.utc), "reviewer": reviewer,
                "outcome": outcome, "note": "", "client": client})
    sign_in(https_client, "nurse.bo")
    text = re.sub(r"<[^>]+>", "", page(https_client, f"/decisions/{decision['decision_id']}"))
    assert "Declined: treatment must not go ahead." in text
    assert "recorded before credentials were kept" in text
    assert "Approved (recorded before sign-off actions were matched to the decision)" in text
    assert "name sent by API key 0123456789abcdef: not verified" in text


def test_reviewer_is_the_signed_in_physician_not_the_form(app, https_client, screened):
    decision = screened("review-substance-history")
    sign_in(https_client, "dr.ada")
    post_sign_off(https_client, decision["decision_id"], action="approve", note="", reviewer="someone.else")
    reviews = app.extensions["store"].get_decision(decision["decision_id"]).reviews
    assert [r.reviewer for r in reviews] == ["dr.ada"]


def test_clinicians_cannot_sign_off(app, https_client, screened):
    decision = screened()
    sign_in(https_client, "nurse.bo")
    response = post_sign_off(https_client, decision["decision_id"], action="confirm", note="")
    assert response.status_code == 403
    assert "Only physicians may sign off" in response.get_data(as_text=True)
    assert app.extensions["store"].get_decision(decision["decision_id"]).reviews == ()


def test_decisions_without_review_have_no_sign_off(app, https_client, screened):
    decision = screened("eligible-iv")
    assert not decision["physician_review_required"]
    sign_in(https_client, "dr.ada")
    text = page(https_client, f"/decisions/{decision['decision_id']}")
    assert "No review required" in text and 'name="action"' not in text
    response = post_sign_off(https_client, decision["decision_id"], action="approve", note="")
    assert response.status_code == 422
    assert "does not require a physician&#39;s sign-off" in response.get_data(as_text=True)
    assert app.extensions["store"].get_decision(decision["decision_id"]).reviews == ()


def test_logs_never_hold_intake_values(https_client, screened, caplog):
    caplog.set_level(logging.DEBUG)
    decision = screened("ineligible-several")
    sign_in(https_client, "dr.ada")
    post_sign_off(https_client, decision["decision_id"], action="confirm", note="ok")
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


def test_short_secret_key_stops_start_up(monkeypatch, tmp_path):
    monkeypatch.setenv("SCREENING_SECRET_KEY", "short")
    with pytest.raises(SystemExit, match="at least 32"):
        make_app_raw(monkeypatch, tmp_path)


def make_app_raw(monkeypatch, tmp_path):
    from service.app import create_app

    tmp_path.mkdir(parents=True, exist_ok=True)
    return create_app(app_settings(tmp_path))


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
