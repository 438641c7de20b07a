"""Helpers shared by the clinician-page tests: people who sign in, an app on a real store, and
decisions screened through the real API (POST /v1/screenings with an API key)."""
from __future__ import annotations

import copy
import functools
import json
import re
import uuid

from werkzeug.security import generate_password_hash

from service import auth
from service.app import create_app
from tests.conftest import app_settings

PASSWORDS = {"dr.ada": "physician password 1", "nurse.bo": "clinician password 2"}
ROLES = {"dr.ada": "physician", "nurse.bo": "clinician"}
SECRET = "test-secret-key-for-the-clinician-pages-0123456789"
CSRF_RE = re.compile(r'name="csrf_token" value="([^"]+)"')


@functools.lru_cache(maxsize=1)
def users_json() -> str:
    # Hashed once per run: scrypt is deliberately slow.
    return json.dumps({name: {"password_hash": generate_password_hash(PASSWORDS[name]), "role": ROLES[name]}
                       for name in PASSWORDS})


def make_app(monkeypatch, tmp_path, database_url: str, *, cookie_secure: bool = True):
    monkeypatch.setenv("SCREENING_USERS", users_json())
    monkeypatch.setenv("SCREENING_SECRET_KEY", SECRET)
    monkeypatch.setenv("SCREENING_COOKIE_SECURE", "1" if cookie_secure else "0")
    return create_app(app_settings(tmp_path, database_url=database_url))


def intake_key(app) -> str:
    return auth.create_key(app.extensions["store"].keys, "test intake system", ["screen"]).token


def unique_subject() -> str:
    return f"pt-web-{uuid.uuid4().hex[:10]}"


def with_subject(raw: dict, subject: str) -> dict:
    raw = copy.deepcopy(raw)
    raw["subject_id"] = subject
    return raw


def csrf_token(html: str) -> str:
    match = CSRF_RE.search(html)
    assert match, "the page has no CSRF token"
    return match.group(1)


def https_client(app):
    """A test client on https: Secure cookies only travel over https, as in production."""
    client = app.test_client()
    client.environ_base["wsgi.url_scheme"] = "https"
    return client
