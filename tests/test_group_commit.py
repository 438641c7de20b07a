"""Group commit of the decision log (service/store/groupcommit.py): requests in flight share one
transaction; none returns before its own row is committed; a row's fault fails only that row; a
database that is down fails the batch and writes nothing. Throughput is measured in `python -m
bench`, not here; tests/test_load_faults.py proves nothing returned is lost under load and SIGKILL."""
from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlalchemy import func, select

from service.store.base import StoreUnavailable
from service.store.groupcommit import GroupCommitter
from service.store.models import decisions
from service.store.sql import SqlStore
from service.decision import jsonable
from tests.conftest import save_example


class SlowLog:
    """A write that takes a while (as an fsync does) and records the batches it was given."""

    def __init__(self, seconds: float = 0.05):
        self.seconds = seconds
        self.batches: list[list] = []
        self.committed: set = set()
        self.lock = threading.Lock()

    def __call__(self, items) -> None:
        time.sleep(self.seconds)
        with self.lock:
            self.batches.append(list(items))
            self.committed.update(items)


def test_writers_in_flight_share_one_commit_and_each_returns_only_once_committed():
    log = SlowLog()
    committer = GroupCommitter(log)
    returned_before_commit = []

    def submit(i: int) -> None:
        committer.submit(i)
        with log.lock:
            if i not in log.committed:
                returned_before_commit.append(i)

    with ThreadPoolExecutor(16) as pool:
        list(pool.map(submit, range(64)))
    assert not returned_before_commit
    written = [i for batch in log.batches for i in batch]
    assert sorted(written) == list(range(64))  # every row, exactly once
    # 64 writers, each commit 50 ms: they shared commits (one each would be 64 batches).
    assert len(log.batches) < 32
    assert committer.rows == 64 and committer.batches == len(log.batches)


def test_a_lone_writer_is_committed_at_once_without_waiting_for_company():
    log = SlowLog(0)
    committer = GroupCommitter(log)
    committer.submit("only")
    assert log.batches == [["only"]]


def test_a_writer_blocks_until_the_commit_is_done():
    release = threading.Event()
    written = []

    def write(items):
        release.wait(5)
        written.extend(items)

    committer = GroupCommitter(write)
    thread = threading.Thread(target=committer.submit, args=("x",))
    thread.start()
    thread.join(0.2)
    assert thread.is_alive() and not written  # still waiting for its commit
    release.set()
    thread.join(5)
    assert written == ["x"]


def test_a_row_that_fails_fails_alone_and_the_rest_of_its_batch_is_written():
    committed = []
    gate = threading.Event()

    def write(items):
        gate.wait(5)
        if "bad" in items:
            raise ValueError("constraint")  # the whole transaction rolls back
        committed.extend(items)

    committer = GroupCommitter(write)
    outcomes: dict = {}

    def submit(item):
        try:
            committer.submit(item)
            outcomes[item] = "ok"
        except ValueError:
            outcomes[item] = "error"

    first = threading.Thread(target=submit, args=("first",))
    first.start()
    time.sleep(0.05)  # "first" leads and waits in its write; the rest queue into one batch
    others = [threading.Thread(target=submit, args=(x,)) for x in ("a", "bad", "b")]
    for t in others:
        t.start()
    time.sleep(0.05)
    gate.set()
    for t in [first, *others]:
        t.join(5)
    assert outcomes == {"first": "ok", "a": "ok", "bad": "error", "b": "ok"}
    assert sorted(committed) == ["a", "b", "first"]


def test_a_database_that_is_down_fails_every_row_of_the_batch():
    def write(items):
        raise StoreUnavailable("saving a decision: OperationalError")

    committer = GroupCommitter(write)
    errors = []

    def submit(i):
        try:
            committer.submit(i)
        except StoreUnavailable as exc:
            errors.append(exc)

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(submit, range(8)))
    assert len(errors) == 8


def test_concurrent_saves_land_in_the_log_once_each(db_store: SqlStore, ruleset):
    with ThreadPoolExecutor(8) as pool:
        ids = list(pool.map(lambda i: save_example(db_store, ruleset, "eligible-iv", subject=f"gc-{i}")[0].decision_id,
                            range(40)))
    with db_store.engine.connect() as conn:
        stored = conn.execute(select(decisions.c.decision_id)).scalars().all()
        assert conn.execute(select(func.count()).select_from(decisions)).scalar_one() == 40
    assert sorted(stored) == sorted(ids)
    assert db_store.decision_writer.rows == 40


def test_a_duplicate_decision_fails_alone_on_a_real_database(db_store: SqlStore, ruleset):
    decision, raw = save_example(db_store, ruleset, "eligible-iv", subject="dup")
    with pytest.raises(Exception) as caught:
        db_store.save_decision(decision, raw, client="k", source="http")
    assert not isinstance(caught.value, StoreUnavailable)
    assert db_store.get_decision(decision.decision_id) is not None
    assert db_store.count_decisions() == 1


def test_the_stored_body_is_the_text_the_response_carried(db_store: SqlStore, ruleset):
    decision, raw = save_example(db_store, ruleset, "eligible-iv", subject="first")
    decision.decision_id = "body-as-sent"
    text = '{"decision_id":"body-as-sent","note":"as sent"}'
    db_store.save_decision(decision, jsonable(raw), client="k", source="http", body=text)
    assert db_store.get_decision("body-as-sent").body == {"decision_id": "body-as-sent", "note": "as sent"}


def test_the_response_is_the_body_the_log_holds(db_app):
    from tests.conftest import bearer
    from tests.conftest import example
    client = db_app.test_client()
    response = client.post("/v1/screenings", json=example("ineligible-several"), headers=bearer(db_app, ["screen"]))
    assert response.status_code == 200
    stored = db_app.extensions["store"].get_decision(response.get_json()["decision_id"])
    assert stored.body == response.get_json()


def _raw_rows(store: SqlStore, subjects: list[str]) -> dict[str, tuple]:
    """Each row as the database holds it (JSON columns as their stored text), keyed by subject,
    without the columns that differ by construction (seq, decision id, time of writing)."""
    from sqlalchemy import Text, cast

    columns = [cast(c, Text) if c.name in ("body", "intake") else c
               for c in decisions.c if c.name not in ("seq", "decision_id", "created_at", "subject_id")]
    with store.engine.connect() as conn:
        rows = conn.execute(select(decisions.c.subject_id, *columns).where(decisions.c.subject_id.in_(subjects))).all()
    return {row[0]: tuple(row[1:]) for row in rows}


def test_the_prepared_insert_writes_what_sqlalchemys_own_insert_writes(db_store: SqlStore, ruleset):
    """service.store.sql.MultiRowInsert sends the driver prepared rows in one statement per batch;
    a row it writes reads back exactly as one written by ``conn.execute(insert(decisions), row)``."""
    from sqlalchemy import insert

    from tests.conftest import example, validated
    from service.screening import screen

    intake = validated(example("review-substance-history"))
    decision = screen(intake, ruleset)
    db_store.save_decision(decision, jsonable(intake), client="k", source="http")
    ours = db_store.get_decision(decision.decision_id)
    with db_store.engine.begin() as conn:
        conn.execute(insert(decisions), {
            "decision_id": "written-by-sqlalchemy", "created_at": ours.created_at, "client": "k", "source": "http",
            "subject_id": "by-sqlalchemy", "decision": decision.decision,
            "physician_review_required": decision.physician_review_required, "urgent": decision.urgent,
            "ruleset_name": decision.ruleset["name"], "ruleset_version": decision.ruleset["version"],
            "ruleset_digest": decision.ruleset["digest"], "body": jsonable(decision.to_dict()),
            "intake": jsonable(intake)})
    theirs = db_store.get_decision("written-by-sqlalchemy")
    assert (ours.created_at, ours.body, ours.intake, ours.physician_review_required, ours.urgent) == (
        theirs.created_at, theirs.body, theirs.intake, theirs.physician_review_required, theirs.urgent)
    raw = _raw_rows(db_store, [decision.subject_id, "by-sqlalchemy"])
    assert raw[decision.subject_id] == raw["by-sqlalchemy"]
    with db_store.engine.connect() as conn:  # the stored time, as the database holds it
        stamps = conn.execute(select(decisions.c.created_at).where(
            decisions.c.decision_id.in_([decision.decision_id, "written-by-sqlalchemy"]))).scalars().all()
    assert stamps[0] == stamps[1]


def _prepared_rows(store: SqlStore, ruleset, n: int) -> list[tuple]:
    """``n`` decisions as rows ready for the driver (subjects bulk-0 … bulk-<n-1>)."""
    from service.screening import screen
    from tests.conftest import example, validated

    intake = validated(example("eligible-iv"))
    rows = []
    for i in range(n):
        decision = screen(intake, ruleset)
        rows.append(store._decision_insert.row({
            "decision_id": decision.decision_id, "created_at": decision.evaluated_at, "client": "k", "source": "bulk",
            "subject_id": f"bulk-{i}", "decision": decision.decision,
            "physician_review_required": decision.physician_review_required, "urgent": decision.urgent,
            "ruleset_name": "n", "ruleset_version": "v", "ruleset_digest": "d",
            "body": jsonable(decision.to_dict()), "intake": jsonable(intake)}))
    return rows


def test_a_batch_larger_than_one_statement_is_written_whole_in_one_transaction(db_store: SqlStore, ruleset):
    """More rows than one statement takes (SQLite's 999 parameters) are split over statements of
    the same transaction: every row is written, once."""
    n = db_store._decision_insert.rows_per_statement * 2 + 3
    rows = _prepared_rows(db_store, ruleset, n)
    assert len(list(db_store._decision_insert.statements(rows))) == 3
    db_store._write_decisions(rows)
    assert db_store.count_decisions() == n
    assert sorted(_raw_rows(db_store, [f"bulk-{i}" for i in range(n)])) == sorted(f"bulk-{i}" for i in range(n))


def test_a_failing_statement_of_a_split_batch_writes_none_of_it(db_store: SqlStore, ruleset):
    """A batch is one transaction even when it takes several statements: a duplicate id in its
    last statement leaves nothing of the batch in the log."""
    rows = _prepared_rows(db_store, ruleset, db_store._decision_insert.rows_per_statement + 1)
    rows[-1] = (rows[0][0],) + rows[-1][1:]  # the last row repeats the first one's decision id
    with pytest.raises(Exception):
        db_store._write_decisions(rows)
    assert db_store.count_decisions() == 0


def test_the_writers_held_lock_excludes_a_forked_child(tmp_path):
    """service.store.migrate.HeldFileLock keeps the lock file open; a child forked from a process
    that opened it must not share the parent's flock (it reopens the file), or the two
    processes' decision writers would not take turns."""
    import multiprocessing

    from sqlalchemy import create_engine

    from service.store.migrate import HeldFileLock

    lock = HeldFileLock(create_engine(f"sqlite:///{tmp_path}/log.sqlite3"), "decision-writer")
    with lock():
        pass  # opened in this process
    context = multiprocessing.get_context("fork")
    acquired = context.Event()

    def child():
        with lock():
            acquired.set()

    with lock():
        process = context.Process(target=child)
        process.start()
        assert not acquired.wait(0.5)  # the parent holds the turn: the child waits
    assert acquired.wait(10)
    process.join(10)
    assert process.exitcode == 0
    lock.close()


def test_every_commit_is_reported_with_its_size_and_a_failing_observer_fails_no_write():
    log = SlowLog(0.02)
    committer = GroupCommitter(log)
    sizes = []
    committer.on_commit = sizes.append
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(committer.submit, range(32)))
    assert sum(sizes) == 32 and sizes == [len(b) for b in log.batches]

    def broken(rows):
        raise RuntimeError("metrics down")

    committer.on_commit = broken
    committer.submit("still written")
    assert "still written" in log.committed


def test_the_app_counts_decisions_per_commit_in_a_metric(db_app):
    """screening_decision_log_commit_rows: _sum is the decisions written, _count the commits."""
    from prometheus_client import REGISTRY

    from tests.conftest import bearer, example

    def sample(suffix):
        return REGISTRY.get_sample_value(f"screening_decision_log_commit_rows_{suffix}") or 0.0

    before = sample("sum"), sample("count")
    client = db_app.test_client()
    headers = bearer(db_app, ["screen"])
    for _ in range(3):
        assert client.post("/v1/screenings", json=example("eligible-iv"), headers=headers).status_code == 200
    assert (sample("sum") - before[0], sample("count") - before[1]) == (3, 3)  # one at a time: 3 commits of 1
