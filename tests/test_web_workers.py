"""Sign-in across real gunicorn workers (issue 14): two workers, no SCREENING_SECRET_KEY, the
users file edited while serving. Every request opens a new connection, so the workers take turns;
the request log's pids show that both served a signed-in page."""
from __future__ import annotations

import re

import pytest
import requests
from werkzeug.security import generate_password_hash

from service.web.users import write_user
from tests.servers import Gunicorn
from tests.web_support import PASSWORDS

CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')
CLOSE = {"Connection": "close"}


@pytest.fixture(scope="module")
def two_workers(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("web-workers")
    users_file = workdir / "users.json"
    write_user(users_file, "dr.ada", "physician", generate_password_hash(PASSWORDS["dr.ada"]))
    env = {"SCREENING_USERS": str(users_file), "SCREENING_COOKIE_SECURE": "0", "SCREENING_SECRET_KEY": ""}
    with Gunicorn(workdir, workers=2, env=env) as running:
        running.users_file = users_file
        yield running


def sign_in(two_workers, username: str, password: str) -> requests.Session:
    session = requests.Session()
    page = session.get(two_workers.url + "/login", headers=CLOSE, timeout=10)
    response = session.post(two_workers.url + "/login", headers=CLOSE, timeout=10, allow_redirects=False, data={
        "username": username, "password": password, "csrf_token": CSRF.search(page.text).group(1)})
    assert response.status_code == 302, response.text[-500:]
    return session


def signed_in_pids(two_workers, session: requests.Session, count: int = 24) -> set[int]:
    """Every response must be the signed-in page; returns the pids that served them."""
    for _ in range(count):
        response = session.get(two_workers.url + "/reviews", headers=CLOSE, timeout=10, allow_redirects=False)
        assert response.status_code == 200, "a worker did not know the session"
    return {r["pid"] for r in two_workers.log_records() if r.get("route") == "/reviews" and r.get("status") == 200}


def test_a_sign_in_holds_on_every_worker_without_a_configured_key(two_workers):
    session = sign_in(two_workers, "dr.ada", PASSWORDS["dr.ada"])
    assert len(signed_in_pids(two_workers, session)) == 2, "the test needs both workers to answer"


def test_sign_out_ends_the_session_on_every_worker(two_workers):
    session = sign_in(two_workers, "dr.ada", PASSWORDS["dr.ada"])
    stolen = dict(session.cookies)
    page = session.get(two_workers.url + "/", headers=CLOSE, timeout=10)
    out = session.post(two_workers.url + "/logout", headers=CLOSE, timeout=10, allow_redirects=False,
                       data={"csrf_token": CSRF.search(page.text).group(1)})
    assert out.status_code == 302
    for _ in range(12):
        replay = requests.get(two_workers.url + "/reviews", cookies=stolen, headers=CLOSE, timeout=10,
                              allow_redirects=False)
        assert replay.status_code == 302 and "/login" in replay.headers["Location"]


def test_a_person_added_while_serving_signs_in_on_every_worker(two_workers):
    write_user(two_workers.users_file, "dr.new", "physician", generate_password_hash("a new physician's password"))
    session = sign_in(two_workers, "dr.new", "a new physician's password")
    signed_in_pids(two_workers, session, 12)
