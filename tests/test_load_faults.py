"""Load and faults against the production server (gunicorn with service/gunicorn_conf.py, two
workers) on loopback: 32 concurrent clients, bounded in count and in time.

Every request carries its own subject_id, so each answer can be matched to the decision-log rows
it left behind: a 200 must be in the log exactly once under the id it was handed out with, a 503
must have left nothing. The decision log is a fresh schema on the throwaway PostgreSQL server
(scripts/test.d/20-postgres.sh); without that server the plain load test runs on SQLite.

The bounded load runs on every CI run; the full soak (SCREENING_LOAD_N, 20,000 by default) is
marked slow and runs with ``-m slow`` or SCREENING_SOAK=1. Latencies are printed, never asserted.
"""
from __future__ import annotations

import os
import shutil
import signal
import statistics
import subprocess
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
from sqlalchemy import select

from service.ruleset import default_rules_path
from service.store.models import decisions
from service.store.sql import SqlStore
from tests.conftest import example
from tests.dbfixtures import (POSTGRES_URL, REQUIRE_POSTGRES, PostgresCluster, _admin_engine, _postgres_or_skip,
                              postgres_schema_url)
from tests.servers import Gunicorn, make_api_key
from tests.test_observability import change_rule_message
from tests.test_scale_out import served_digests

CLIENTS = 32
# Bounded so this file stays well under two minutes on two shared cores.
CI_LOAD_N = int(os.environ.get("SCREENING_LOAD_CI_N", "3000"))
SOAK_N = int(os.environ.get("SCREENING_LOAD_N", "20000"))
SOAK = os.environ.get("SCREENING_SOAK") == "1"
# Intakes that reach different outcomes and rules, so the load is not one cached path.
EXAMPLE_NAMES = ("eligible-iv", "ineligible-several", "eligible-iv", "ineligible-several")


@dataclass
class Answer:
    index: int
    subject_id: str
    status: int | None  # None: no HTTP answer (connection refused or reset)
    decision_id: str | None
    digest: str | None
    retry_after: str | None
    seconds: float
    error: str | None = None


class Load:
    """CLIENTS threads, each with its own keep-alive session, posting until ``limit`` requests
    were sent, ``stop()`` is called, or ``max_seconds`` have passed."""

    def __init__(self, server: Gunicorn, headers: dict, *, limit: int, max_seconds: float, tag: str,
                 keep_alive: bool = True):
        self.url = server.url + "/v1/screenings"
        # Without keep-alive every request is a new connection, which either worker may accept;
        # with it, a client stays on the worker that accepted its first connection.
        self.headers = headers if keep_alive else {**headers, "Connection": "close"}
        self.limit = limit
        self.deadline = time.monotonic() + max_seconds
        self.tag = tag
        self.bodies = [example(name) for name in EXAMPLE_NAMES]
        self.answers: list[Answer] = []
        self._lock = threading.Lock()
        self._next = 0
        self._stop = threading.Event()
        self._pool = ThreadPoolExecutor(CLIENTS, thread_name_prefix="load-client")
        self._futures = []

    def start(self) -> "Load":
        self._futures = [self._pool.submit(self._client) for _ in range(CLIENTS)]
        return self

    def stop(self) -> None:
        self._stop.set()

    def join(self) -> list[Answer]:
        for future in self._futures:
            future.result(timeout=max(1.0, self.deadline - time.monotonic() + 60))
        self._pool.shutdown()
        return sorted(self.answers, key=lambda a: a.index)

    def run(self) -> list[Answer]:
        return self.start().join()

    def count(self) -> int:
        with self._lock:
            return len(self.answers)

    def _take(self) -> int | None:
        with self._lock:
            if self._next >= self.limit or self._stop.is_set() or time.monotonic() > self.deadline:
                return None
            self._next += 1
            return self._next - 1

    def _client(self) -> None:
        session = requests.Session()
        try:
            while (index := self._take()) is not None:
                answer = self._post(session, index)
                with self._lock:
                    self.answers.append(answer)
        finally:
            session.close()

    def _post(self, session: requests.Session, index: int) -> Answer:
        subject_id = f"{self.tag}-{index}"
        body = {**self.bodies[index % len(self.bodies)], "subject_id": subject_id}
        started = time.perf_counter()
        try:
            response = session.post(self.url, json=body, headers=self.headers, timeout=30)
        except requests.RequestException as exc:
            return Answer(index, subject_id, None, None, None, None, time.perf_counter() - started,
                          type(exc).__name__)
        seconds = time.perf_counter() - started
        decision_id = digest = None
        if response.status_code == 200:
            decided = response.json()
            decision_id, digest = decided.get("decision_id"), decided.get("ruleset", {}).get("digest")
        return Answer(index, subject_id, response.status_code, decision_id, digest,
                      response.headers.get("Retry-After"), seconds,
                      None if response.status_code == 200 else response.text[:300])


def report(name: str, answers: list[Answer], wall: float) -> None:
    """p50/p99 of answered requests (printed for the record; timing is never asserted)."""
    times = sorted(a.seconds for a in answers if a.status == 200)
    if len(times) >= 2:
        q = statistics.quantiles(times, n=100, method="inclusive")
        print(f"\n[{name}] {len(answers)} requests, {len(times)} ok, {CLIENTS} clients, {wall:.1f} s wall, "
              f"{len(answers) / wall:.0f} req/s, p50 {q[49] * 1000:.1f} ms, p99 {q[98] * 1000:.1f} ms")


def log_rows(url: str, tag: str) -> dict[str, list[dict]]:
    """The run's decision-log rows by subject_id (decision id, decision and the stored body)."""
    store = SqlStore(url)
    try:
        with store.engine.connect() as conn:
            rows = conn.execute(
                select(decisions.c.subject_id, decisions.c.decision_id, decisions.c.decision, decisions.c.body)
                .where(decisions.c.subject_id.like(f"{tag}-%"))).mappings().all()
    finally:
        store.close()
    by_subject: dict[str, list[dict]] = {}
    for row in rows:
        by_subject.setdefault(row["subject_id"], []).append(dict(row))
    return by_subject


def assert_complete(row: dict) -> None:
    """A stored decision is whole: its body is the full decision it was handed out as."""
    body = row["body"]
    assert body["decision_id"] == row["decision_id"] and body["subject_id"] == row["subject_id"]
    assert body["decision"] == row["decision"]
    assert {"reasons", "ruleset", "physician_review_required"} <= set(body), sorted(body)
    assert body["ruleset"].get("digest"), body["ruleset"]


def assert_answers_match_log(answers: list[Answer], rows: dict[str, list[dict]]) -> None:
    """Every 200 is in the log exactly once under the id it was given; nothing else is."""
    for a in answers:
        stored = rows.get(a.subject_id, [])
        if a.status == 200:
            assert a.decision_id, a
            assert [r["decision_id"] for r in stored] == [a.decision_id], (a, stored)
            assert_complete(stored[0])
        elif a.status is not None:
            assert stored == [], f"answered {a.status} but logged: {a} {stored}"
    assert set(rows) <= {a.subject_id for a in answers}


def _want_postgres() -> bool:
    return bool(POSTGRES_URL) or REQUIRE_POSTGRES


@pytest.fixture
def log_url(request, tmp_path):
    """A fresh decision log: a schema of its own on the PostgreSQL test server, or (without that
    server, for the tests that allow it) a SQLite file."""
    needs_postgres = request.node.get_closest_marker("postgres") is not None
    if not _want_postgres() and not needs_postgres:
        yield f"sqlite:///{tmp_path}/decisions.db"
        return
    _postgres_or_skip()  # skips, or fails under SCREENING_REQUIRE_POSTGRES=1, when absent
    schema = f"t_load_{uuid.uuid4().hex[:12]}"
    _admin_sql(f'CREATE SCHEMA "{schema}"')
    try:
        yield postgres_schema_url(schema)
    finally:
        _admin_sql(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def _admin_sql(statement: str) -> None:
    # A new engine each time: the outage test restarts the server, killing pooled connections.
    admin = _admin_engine()
    try:
        with admin.connect() as conn:
            conn.exec_driver_sql(statement)
    finally:
        admin.dispose()


def serve(tmp_path: Path, log_url: str, **env: str) -> tuple[Gunicorn, dict]:
    token = make_api_key(log_url, ("screen", "read"))  # migrates the log first, as an operator would
    # One key sends all the load: a limit far above it keeps the per-key counting (one upsert per
    # request in the same database) under load without refusing anything.
    env = {"DATABASE_URL": log_url, "SCREENING_RATE_LIMIT": "10000000/minute", **env}
    server = Gunicorn(tmp_path, workers=2, env=env).start()
    return server, {"Authorization": f"Bearer {token}"}


def workers_of(server: Gunicorn) -> set[int]:
    """The master's worker processes (its only children)."""
    done = subprocess.run(["pgrep", "-P", str(server.proc.pid)], capture_output=True, text=True, timeout=10)
    return {int(pid) for pid in done.stdout.split()}


def wait_for(predicate, timeout: float, what: str, step: float = 0.2):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(step)
    pytest.fail(f"timed out after {timeout:g}s waiting for {what}")


# -- 1. load ---------------------------------------------------------------------------------

def _load(tmp_path: Path, log_url: str, n: int, max_seconds: float) -> None:
    server, headers = serve(tmp_path, log_url)
    try:
        started = time.monotonic()
        answers = Load(server, headers, limit=n, max_seconds=max_seconds, tag="load").run()
        wall = time.monotonic() - started
    finally:
        server.stop()
    report(f"load on {log_url.split(':')[0]}", answers, wall)
    assert len(answers) == n, f"only {len(answers)} of {n} requests were sent within {max_seconds}s"
    failed = [a for a in answers if a.status != 200]
    assert failed == [], f"{len(failed)} failed, e.g. {failed[:3]}"
    rows = log_rows(log_url, "load")
    assert sum(len(v) for v in rows.values()) == n
    assert_answers_match_log(answers, rows)


def test_load_every_screening_answered_and_logged_once(tmp_path, log_url):
    _load(tmp_path, log_url, CI_LOAD_N, max_seconds=150)


def _slow_selected(config) -> bool:
    expression = config.getoption("markexpr") or ""
    return "slow" in expression and "not slow" not in expression


@pytest.mark.slow
def test_soak_load(tmp_path, log_url, request):
    if not (SOAK or _slow_selected(request.config)):
        pytest.skip("the full soak runs with -m slow or SCREENING_SOAK=1")
    _load(tmp_path, log_url, SOAK_N, max_seconds=1800)


# -- 2. database outage ------------------------------------------------------------------------

@pytest.mark.postgres
def test_database_outage_during_load_answers_503_and_loses_or_duplicates_nothing(tmp_path, log_url):
    cluster = PostgresCluster()
    server, headers = serve(tmp_path, log_url)
    load = Load(server, headers, limit=60_000, max_seconds=90, tag="outage")
    try:
        load.start()
        wait_for(lambda: load.count() >= 300, 30, "load before the outage")
        try:
            cluster.stop()
            down_at = load.count()
            time.sleep(3)  # clients keep posting against a stopped database
            during = load.count() - down_at
        finally:
            cluster.start()
        back_at = load.count()
        wait_for(lambda: any(a.status == 200 for a in load.answers[back_at:]), 30, "a 200 after recovery")
        recovered_at = load.count()
        wait_for(lambda: load.count() >= recovered_at + 300, 30, "load after recovery")
        load.stop()
        answers = load.join()
        after = requests.post(server.url + "/v1/screenings", json={**example("eligible-iv"), "subject_id": "outage-final"},
                              headers=headers, timeout=30)
        ready = requests.get(server.url + "/readyz", timeout=10)
    finally:
        load.stop()
        server.stop()
    assert during > 0, "no request was sent while the database was down"
    assert after.status_code == 200, after.text
    assert ready.status_code == 200, ready.text
    answers.append(Answer(len(answers), "outage-final", 200, after.json()["decision_id"], None, None, 0.0))

    by_status: dict = {}
    for a in answers:
        by_status[a.status] = by_status.get(a.status, 0) + 1
    print(f"\n[outage] answers by status: {by_status}")
    bad = [a for a in answers if a.status not in (200, 503)]
    assert bad == [], f"{len(bad)} answers neither 200 nor 503, e.g. {bad[:3]}"
    assert by_status.get(503, 0) > 0, "the outage was never seen by a client"
    assert all(a.retry_after and a.retry_after.isdigit() for a in answers if a.status == 503)
    rows = log_rows(log_url, "outage")
    assert_answers_match_log(answers, rows)
    assert sum(len(v) for v in rows.values()) == by_status[200]


# -- 3. a worker killed with SIGKILL ------------------------------------------------------------

@pytest.mark.postgres
def test_worker_killed_mid_load_is_replaced_and_leaves_no_partial_record(tmp_path, log_url):
    server, headers = serve(tmp_path, log_url)
    load = Load(server, headers, limit=3000, max_seconds=90, tag="kill", keep_alive=False)
    try:
        before = workers_of(server)
        assert len(before) == 2, before
        load.start()
        wait_for(lambda: load.count() >= 500, 30, "load before the kill")
        victim = min(before)
        os.kill(victim, signal.SIGKILL)
        replaced = wait_for(lambda: (w := workers_of(server)) and len(w) == 2 and victim not in w and w,
                            60, "gunicorn to replace the killed worker")
        answers = load.join()
        after = workers_of(server)
    finally:
        load.stop()
        server.stop()
    assert len(after) == 2 and victim not in after, after
    served = {r["pid"] for r in server.log_records() if r.get("route") == "/v1/screenings"}
    assert victim in served, f"the killed worker never served a screening: {served}"
    print(f"\n[kill] killed {victim}, workers {sorted(before)} -> {sorted(replaced)}")

    no_answer = [a for a in answers if a.status is None]
    bad = [a for a in answers if a.status is not None and a.status != 200]
    ok = [a for a in answers if a.status == 200]
    print(f"[kill] {len(answers)} requests: {len(ok)} ok, {len(no_answer)} without an answer")
    assert bad == [], f"HTTP errors other than lost connections: {bad[:3]}"
    assert all(a.error in ("ConnectionError", "ChunkedEncodingError") for a in no_answer), no_answer[:3]
    # A client holds one request at a time: at most one lost per client on the dead worker.
    assert len(no_answer) <= CLIENTS
    assert len(ok) >= len(answers) - CLIENTS

    rows = log_rows(server.env["DATABASE_URL"], "kill")
    assert_answers_match_log(answers, rows)
    for a in no_answer:  # committed just before the kill, or never written: never half a record
        for row in rows.get(a.subject_id, []):
            assert_complete(row)
        assert len(rows.get(a.subject_id, [])) <= 1
    assert len(ok) <= sum(len(v) for v in rows.values()) <= len(ok) + len(no_answer)


# -- 4. a broken rule file dropped in during load -----------------------------------------------

BROKEN_RULE = """\
rules:
  - id: broken_during_load
    when: {all: [{field: vitals.systolic_bp, op: ">=", value: [unterminated
"""


def _refusals(server: Gunicorn) -> set[int]:
    return {r["pid"] for r in server.log_records() if "rules reload refused" in r.get("message", "")}


def test_broken_rule_file_during_load_keeps_the_last_good_ruleset(tmp_path, log_url):
    rules = tmp_path / "rules"
    shutil.copytree(default_rules_path(), rules)
    server, headers = serve(tmp_path, log_url, SCREENING_RULES_DIR=str(rules), SCREENING_RELOAD_INTERVAL="0.5")
    load = Load(server, headers, limit=60_000, max_seconds=120, tag="rules", keep_alive=False)
    try:
        good = requests.get(server.url + "/v1/rulesets/current", headers=headers, timeout=10).json()["digest"]
        load.start()
        wait_for(lambda: load.count() >= 200, 30, "load before the broken file")
        (rules / "55-broken.yaml").write_text(BROKEN_RULE)
        wait_for(lambda: len(_refusals(server)) == 2, 60, "both workers to refuse the broken pack")
        readyz = [requests.get(server.url + "/readyz", timeout=10) for _ in range(6)]
        during_broken = load.count()

        (rules / "55-broken.yaml").unlink()
        change_rule_message(rules, "2026.11.98")
        # Every live worker swapped: the old digest reads 0 (livemax over workers), a new one 1.
        fixed = wait_for(lambda: (d := served_digests(server)) and d.get(good, 0) == 0
                         and [k for k, v in d.items() if v == 1], 90, "every worker to serve the fixed pack")
        [new] = fixed
        switched_at = load.count()
        wait_for(lambda: load.count() >= switched_at + 200, 30, "load after the fix")
        load.stop()
        answers = load.join()
    finally:
        load.stop()
        server.stop()

    failed = [a for a in answers if a.status != 200]
    assert failed == [], f"{len(failed)} failed, e.g. {failed[:3]}"
    for response in readyz:
        body = response.json()
        assert response.status_code == 200 and body["ruleset"]["digest"] == good, body
        assert "reload refused" in (body["last_reload_error"] or ""), body
    # Until the fix was written, every decision was made under the last good pack.
    assert {a.digest for a in answers[:during_broken]} == {good}
    assert new != good
    # Once every worker reported the new pack, every answer carries it.
    assert {a.digest for a in answers[switched_at + CLIENTS:]} == {new}
    # Both workers answered under the new pack (new connections: either may accept).
    assert len({r["pid"] for r in server.log_records() if r.get("ruleset_digest") == new}) == 2
    print(f"\n[rules] {len(answers)} requests, all 200; {good[:12]} kept while broken, then {new[:12]}")
    rows = log_rows(log_url, "rules")
    assert_answers_match_log(answers, rows)
    assert sum(len(v) for v in rows.values()) == len(answers)
