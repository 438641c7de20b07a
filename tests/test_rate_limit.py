"""Rate limiting per API key (service/ratelimit.py): a token bucket shared through the decision
log's database, so the limit holds across gunicorn workers and instances; 429 with Retry-After
past it, RateLimit-* headers on every counted response, 503 (not 500, not a free pass) when the
database is down. Workers take tokens in batches (no database write per request) within the
stated tolerance; API keys are cached with revocation honoured within the stated bound."""
from __future__ import annotations

import pytest
from sqlalchemy import func, select

from service.app import create_app
from service.auth import create_key
from service.ratelimit import Rate, RateLimiter, parse_rate
from service.store.models import rate_buckets
from service.store.ratelimits import RateLimitStore
from service.store.sql import SqlStore, make_engine
from tests.conftest import app_settings, bearer

URL = "/v1/rulesets/current"
# Seconds before a minute's edge: where a fixed window let twice the limit through.
T0 = 1_800_000_000.0 - 1


class Clock:
    def __init__(self, now: float = T0):
        self.now = now

    def __call__(self) -> float:
        return self.now


def _app(database_url, tmp_path, rate="5/minute", clock=None, **settings):
    app = create_app(app_settings(tmp_path, database_url=database_url, rate_limit=rate, **settings))
    if clock is not None:
        app.extensions["limiter"].clock = clock
        app.extensions["limiter"].monotonic = clock
    return app


@pytest.fixture
def limited(database_url, tmp_path):
    clock = Clock()
    app = _app(database_url, tmp_path, clock=clock)
    yield app, clock
    app.extensions["store"].close()


def test_the_sixth_request_in_a_burst_gets_429_with_retry_after(limited):
    app, clock = limited
    client, key = app.test_client(), bearer(app)
    for i in range(5):
        response = client.get(URL, headers=key)
        assert response.status_code == 200
        assert response.headers["RateLimit-Limit"] == "5"
        assert response.headers["RateLimit-Remaining"] == str(4 - i)
        # 5 per minute refills one token every 12 s: full again 12 s per token spent.
        assert response.headers["RateLimit-Reset"] == str(12 * (i + 1))
        assert response.headers["RateLimit-Policy"] == "5;w=60"
        assert "Retry-After" not in response.headers
    response = client.get(URL, headers=key)
    assert response.status_code == 429
    assert response.headers["Retry-After"] == "12"
    assert response.headers["RateLimit-Remaining"] == "0"
    error = response.get_json()["error"]
    assert error["status"] == 429 and error["code"] == "too_many_requests"
    assert "5 requests per 60 seconds" in error["message"]


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


def test_no_double_burst_across_a_window_edge(limited):
    """Issue 18 item 7: a fixed window let 5 through just before a minute's edge and 5 more just
    after it. A token bucket lets through at most limit + rate × t in any span of t seconds."""
    app, clock = limited
    client, key = app.test_client(), bearer(app)
    statuses = [client.get(URL, headers=key).status_code for _ in range(5)]  # at :59
    clock.now += 2  # the next minute has begun
    statuses += [client.get(URL, headers=key).status_code for _ in range(5)]
    assert statuses.count(200) == 5


def test_tokens_come_back_at_the_rate(limited):
    app, clock = limited
    client, key = app.test_client(), bearer(app)
    for _ in range(6):
        client.get(URL, headers=key)
    clock.now += 11
    assert client.get(URL, headers=key).status_code == 429
    clock.now += 1  # 12 s: one token
    assert client.get(URL, headers=key).status_code == 200
    assert client.get(URL, headers=key).status_code == 429
    clock.now += 60  # a full bucket, never more
    assert [client.get(URL, headers=key).status_code for _ in range(6)] == [200] * 5 + [429]


def test_full_buckets_are_deleted_so_the_table_does_not_grow(limited):
    app, clock = limited
    client, first, second = app.test_client(), bearer(app), bearer(app)
    client.get(URL, headers=first)
    clock.now += 61  # the first key's bucket is full again
    app.extensions["limiter"].counters._next_prune = 0
    client.get(URL, headers=second)
    with app.extensions["store"].engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(rate_buckets)).scalar_one() == 1


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


class CountingStore(RateLimitStore):
    def __init__(self, *args):
        super().__init__(*args)
        self.takes = 0

    def take(self, *args, **kwargs):
        self.takes += 1
        return super().take(*args, **kwargs)


def _workers(database_url, rate: Rate, n: int, clock: Clock) -> tuple[list[RateLimiter], list[SqlStore]]:
    stores = [SqlStore(database_url) for _ in range(n)]
    limiters = [RateLimiter.for_api(CountingStore(s.engine, s.ensure_schema), rate, clock=clock, monotonic=clock)
                for s in stores]
    return limiters, stores


def test_workers_take_tokens_in_batches_within_the_stated_tolerance(database_url):
    """600/minute: each worker takes 10 tokens (one second of the rate) per database write. Three
    workers on one database, a burst with the clock still: the key gets at least limit - 3 × 9
    (tokens other workers hold unspent) and never more than the bucket holds."""
    clock = Clock()
    rate = Rate(600, 60)
    limiters, stores = _workers(database_url, rate, 3, clock)
    try:
        assert [lim.batch for lim in limiters] == [10, 10, 10]
        allowed = sum(limiters[i % 3].hit("k").allowed for i in range(900))
        assert rate.limit - 3 * 9 <= allowed <= rate.limit
        takes = sum(lim.counters.takes for lim in limiters)
        assert takes < 900 / 5  # not one write per request
    finally:
        for s in stores:
            s.close()


def test_unspent_tokens_are_dropped_after_the_lease_so_the_bound_holds(database_url):
    """Guarantee: in any t seconds at most limit + rate × (t + LEASE_SECONDS) admitted. A worker
    that took 10 tokens may not spend them after the lease, when the bucket has refilled."""
    clock = Clock()
    rate = Rate(600, 60)
    (worker, other), stores = _workers(database_url, rate, 2, clock)
    try:
        assert worker.hit("k").allowed  # took 10, holds 9
        while other.hit("k").allowed:   # the other worker empties the bucket
            pass
        clock.now += 60                 # the bucket is full again; the 9 held are stale
        admitted = 0
        while other.hit("k").allowed or worker.hit("k").allowed:
            admitted += 1
            assert admitted < 1000
        # The stale 9 were dropped: two workers together got no more than the bucket held.
        assert admitted <= rate.limit
        span = 60.0
        assert admitted + 600 <= rate.limit + rate.limit / rate.period * (span + RateLimiter.LEASE_SECONDS)
    finally:
        for s in stores:
            s.close()


def test_a_revoked_key_is_refused_within_the_cache_bound(database_url, tmp_path):
    """Key records are cached per worker for SCREENING_KEY_CACHE_SECONDS (5 here): a key revoked
    in another process (the CLI) keeps working at most that long, and the key table is read
    once per worker and bound, not once per request."""
    app = _app(database_url, tmp_path, rate="off", key_cache_seconds=5)
    clock = Clock(100.0)
    cache = app.extensions["key_cache"]
    cache.clock = clock
    reads = []
    real_get = cache.keys.get
    cache.keys = type("Counting", (), {"get": lambda self, key_id: reads.append(key_id) or real_get(key_id)})()
    cli = SqlStore(database_url)  # `screening keys revoke`, another process
    try:
        new = create_key(app.extensions["store"].keys, "revoked soon", ["read"])
        key = {"Authorization": f"Bearer {new.token}"}
        client = app.test_client()
        for _ in range(20):
            assert client.get(URL, headers=key).status_code == 200
        assert len(reads) == 1
        cli.keys.revoke(new.record.id)
        clock.now += 4.9
        assert client.get(URL, headers=key).status_code == 200  # inside the bound
        clock.now += 0.1
        assert client.get(URL, headers=key).status_code == 401  # at the bound, refused
        # A wrong secret for a cached id is refused: the hash is compared every time.
        wrong = new.token[:-4] + ("aaaa" if not new.token.endswith("aaaa") else "bbbb")
        assert client.get(URL, headers={"Authorization": f"Bearer {wrong}"}).status_code == 401
    finally:
        cli.close()
        app.extensions["store"].close()


def test_a_key_cache_of_zero_reads_the_key_every_time(database_url, tmp_path):
    app = _app(database_url, tmp_path, rate="off", key_cache_seconds=0)
    cli = SqlStore(database_url)
    try:
        new = create_key(app.extensions["store"].keys, "revoked now", ["read"])
        key = {"Authorization": f"Bearer {new.token}"}
        client = app.test_client()
        assert client.get(URL, headers=key).status_code == 200
        cli.keys.revoke(new.record.id)
        assert client.get(URL, headers=key).status_code == 401
    finally:
        cli.close()
        app.extensions["store"].close()


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
