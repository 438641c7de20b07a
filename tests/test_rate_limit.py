"""Rate limiting per API key (service/ratelimit.py): counted in the decision log's database, so
the limit holds across gunicorn workers and instances; 429 with Retry-After past it, RateLimit-*
headers on every counted response, 503 (not 500, not a free pass) when the database is down."""
from __future__ import annotations

import pytest
from sqlalchemy import func, select

from service.app import create_app
from service.ratelimit import Rate, parse_rate
from service.store.models import rate_limits
from service.store.ratelimits import RateLimitStore
from service.store.sql import make_engine
from tests.conftest import app_settings, bearer

URL = "/v1/rulesets/current"
# Inside a minute-long window, far from its end, so a test never straddles two windows.
T0 = 1_800_000_000.0 + 5


class Clock:
    def __init__(self, now: float = T0):
        self.now = now

    def __call__(self) -> float:
        return self.now


def _app(database_url, tmp_path, rate="5/minute", clock=None):
    app = create_app(app_settings(tmp_path, database_url=database_url, rate_limit=rate))
    if clock is not None:
        app.extensions["limiter"].clock = clock
    return app


@pytest.fixture
def limited(database_url, tmp_path):
    clock = Clock()
    app = _app(database_url, tmp_path, clock=clock)
    yield app, clock
    app.extensions["store"].close()


def test_the_sixth_request_in_a_minute_gets_429_with_retry_after(limited):
    app, clock = limited
    client, key = app.test_client(), bearer(app)
    for i in range(5):
        response = client.get(URL, headers=key)
        assert response.status_code == 200
        assert response.headers["RateLimit-Limit"] == "5"
        assert response.headers["RateLimit-Remaining"] == str(4 - i)
        assert response.headers["RateLimit-Reset"] == "55"
        assert response.headers["RateLimit-Policy"] == "5;w=60"
        assert "Retry-After" not in response.headers
    response = client.get(URL, headers=key)
    assert response.status_code == 429
    assert response.headers["Retry-After"] == "55"
    assert response.headers["RateLimit-Remaining"] == "0"
    error = response.get_json()["error"]
    assert error["status"] == 429 and error["code"] == "too_many_requests"
    assert "5 requests in 60 seconds" in error["message"]


def test_another_key_is_unaffected(limited):
    app, _ = limited
    client, busy, other = app.test_client(), bearer(app), bearer(app, ["read"])
    for _ in range(6):
        client.get(URL, headers=busy)
    assert client.get(URL, headers=busy).status_code == 429
    response = client.get(URL, headers=other)
    assert response.status_code == 200
    assert response.headers["RateLimit-Remaining"] == "4"


def test_the_limit_applies_across_operations_and_to_screenings(limited):
    app, _ = limited
    client, key = app.test_client(), bearer(app)
    for _ in range(5):
        assert client.get("/v1/decisions", headers=key).status_code == 200
    response = client.post("/v1/screenings", json={}, headers=key)
    # Refused before the body is even validated (422 otherwise).
    assert response.status_code == 429


def test_the_window_resets(limited):
    app, clock = limited
    client, key = app.test_client(), bearer(app)
    for _ in range(6):
        client.get(URL, headers=key)
    assert client.get(URL, headers=key).status_code == 429
    clock.now += 54
    assert client.get(URL, headers=key).status_code == 429
    clock.now += 1  # the next minute
    response = client.get(URL, headers=key)
    assert response.status_code == 200
    assert response.headers["RateLimit-Remaining"] == "4"
    assert response.headers["RateLimit-Reset"] == "60"
    # A key's past windows are dropped when its next one starts: the table does not grow.
    with app.extensions["store"].engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(rate_limits)).scalar_one() == 1


def test_two_instances_on_one_database_share_the_count(database_url, tmp_path):
    """Two apps (two gunicorn workers, or two instances) on the same database."""
    clock = Clock()
    first = _app(database_url, tmp_path / "a", clock=clock)
    second = _app(database_url, tmp_path / "b", clock=clock)
    try:
        key = bearer(first)
        clients = [first.test_client(), second.test_client()]
        statuses = [clients[i % 2].get(URL, headers=key).status_code for i in range(8)]
        assert statuses == [200] * 5 + [429] * 3
    finally:
        first.extensions["store"].close()
        second.extensions["store"].close()


def test_refused_requests_are_not_counted_and_unkeyed_routes_are_not_limited(limited):
    app, _ = limited
    client, key = app.test_client(), bearer(app)
    for _ in range(10):
        assert client.get(URL, headers={"Authorization": "Bearer ks_0000000000000000_" + "x" * 40}
                          ).status_code == 401
        assert client.get(URL).status_code == 401
    for path in ("/healthz", "/openapi.json"):
        for _ in range(7):
            response = client.get(path, headers=key)
            assert response.status_code == 200, path
            assert "RateLimit-Limit" not in response.headers
    assert client.get(URL, headers=key).headers["RateLimit-Remaining"] == "4"


def test_a_database_down_refuses_with_503_not_500(limited, tmp_path):
    app, _ = limited
    client, key = app.test_client(), bearer(app)
    assert client.get(URL, headers=key).status_code == 200
    # The key is admitted (from the log) and then the counters' database cannot be reached:
    # a PostgreSQL port nobody listens on, or a SQLite file in a directory that does not exist.
    engine = app.extensions["store"].engine
    unreachable = (f"sqlite:///{tmp_path}/missing/log.sqlite3" if engine.dialect.name == "sqlite"
                   else engine.url.set(host="127.0.0.1", port=1).render_as_string(hide_password=False))
    app.extensions["limiter"].counters = RateLimitStore(make_engine(unreachable), lambda: None)
    response = client.get(URL, headers=key)
    assert response.status_code == 503
    assert response.headers["Retry-After"]
    assert response.get_json()["error"]["code"] == "unavailable"
    assert "RateLimit-Limit" not in response.headers


def test_off_disables_limiting_and_429_leaves_the_description(database_url, tmp_path):
    app = _app(database_url, tmp_path, rate="off")
    try:
        assert "limiter" not in app.extensions
        client, key = app.test_client(), bearer(app)
        for _ in range(8):
            response = client.get(URL, headers=key)
            assert response.status_code == 200
            assert "RateLimit-Limit" not in response.headers
        operation = client.get("/openapi.json").get_json()["paths"][URL]["get"]
        assert "429" not in operation["responses"]
    finally:
        app.extensions["store"].close()


def test_the_description_documents_429_on_keyed_operations(client):
    doc = client.get("/openapi.json").get_json()
    assert "429" in doc["paths"]["/v1/screenings"]["post"]["responses"]
    assert "429" in doc["paths"][URL]["get"]["responses"]
    assert "429" not in doc["paths"]["/healthz"]["get"]["responses"]


@pytest.mark.parametrize("text, rate", [
    ("600/minute", Rate(600, 60)), ("10 per second", Rate(10, 1)), ("1000/5minutes", Rate(1000, 300)),
    ("50/hour", Rate(50, 3600)), ("2/Day", Rate(2, 86400)), ("0", None), ("off", None), ("0/minute", None),
])
def test_rates_are_read(text, rate):
    assert parse_rate(text) == rate


@pytest.mark.parametrize("text", ["600", "lots", "5/fortnight", "-1/minute", "5/0minutes"])
def test_a_malformed_rate_stops_start_up_naming_the_variable(text, tmp_path, monkeypatch):
    monkeypatch.setenv("SCREENING_RATE_LIMIT", text)
    with pytest.raises(SystemExit, match="SCREENING_RATE_LIMIT"):
        create_app(app_settings(tmp_path))
