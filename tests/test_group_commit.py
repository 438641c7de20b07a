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
