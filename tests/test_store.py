"""The decision log (service.store.sql) on SQLite and on a real PostgreSQL server."""
from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
import threading

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import exc as sa_exc
from sqlalchemy import func, select, text

from service.decision import jsonable
from service.screening import screen
from service.store import migrate
from service.store.base import DecisionNotFound, ReviewNotAllowed, StoreUnavailable
from service.store.models import api_keys, decisions, metadata, reviews
from service.store.sql import SqlStore, encode_cursor
from tests.conftest import ROOT, example, save_example, validated

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def test_a_saved_decision_reads_back_exactly(db_store, ruleset):
    decision, raw = save_example(db_store, ruleset, "ineligible-several", client="key-123")
    stored = db_store.get_decision(decision.decision_id)
    assert stored.body == decision.to_dict()
    assert stored.intake == jsonable(validated(raw))
    assert (stored.client, stored.source, stored.subject_id) == ("key-123", "http", raw["subject_id"])
    assert stored.decision == "ineligible" and stored.physician_review_required
    assert stored.ruleset_digest == decision.ruleset["digest"]
    assert stored.ruleset_version == decision.ruleset["version"]
    assert stored.created_at.tzinfo is not None
    assert abs(stored.created_at - dt.datetime.now(dt.timezone.utc)) < dt.timedelta(minutes=1)
    assert stored.review_status == "pending" and stored.reviews == ()
    assert db_store.get_decision("no-such-id") is None


def test_filters(db_store, ruleset):
    clean, _ = save_example(db_store, ruleset, "eligible-iv", subject="pt-a")
    review, _ = save_example(db_store, ruleset, "review-substance-history", subject="pt-a")
    ineligible, _ = save_example(db_store, ruleset, "ineligible-several", subject="pt-b")
    incomplete, _ = save_example(db_store, ruleset, "incomplete-no-vitals", subject="pt-c")
    db_store.add_review(ineligible.decision_id, reviewer="dr-x", outcome="confirm", note="agreed")
    db_store.add_review(review.decision_id, reviewer="dr-x", outcome="decline", note="")
    db_store.add_review(review.decision_id, reviewer="dr-y", outcome="approve", note="second opinion")

    def ids(**filters):
        items, _ = db_store.list_decisions(**filters)
        return [s.decision_id for s in items]

    assert ids() == [incomplete.decision_id, ineligible.decision_id, review.decision_id, clean.decision_id]
    assert ids(subject_id="pt-a") == [review.decision_id, clean.decision_id]
    assert ids(decision="ineligible") == [ineligible.decision_id]
    assert ids(decision="eligible") == [review.decision_id, clean.decision_id]
    assert ids(review_status="pending") == [incomplete.decision_id]
    assert ids(review_status="approved") == [review.decision_id]  # the latest review counts
    assert ids(review_status="confirmed") == [ineligible.decision_id]
    assert ids(review_status="declined") == []
    assert ids(review_status="not_required") == [clean.decision_id]
    assert ids(ruleset_digest=clean.ruleset["digest"]) == ids()
    assert ids(ruleset_digest="sha256:other") == []
    assert ids(subject_id="pt-a", review_status="approved") == [review.decision_id]
    created = {s.decision_id: s.created_at for s in db_store.list_decisions()[0]}
    middle = created[ineligible.decision_id]
    assert ids(since=middle) == [incomplete.decision_id, ineligible.decision_id]
    assert ids(until=middle) == [review.decision_id, clean.decision_id]
    assert ids(since=middle, until=created[incomplete.decision_id]) == [ineligible.decision_id]
    assert ids(since=dt.datetime.now(dt.timezone.utc) + dt.timedelta(hours=1)) == []


def test_cursor_pagination_visits_every_decision_once_newest_first(db_store, ruleset):
    saved = [save_example(db_store, ruleset, "eligible-iv", subject=f"pt-{i}")[0].decision_id for i in range(7)]
    pages, cursor = [], None
    while True:
        items, cursor = db_store.list_decisions(limit=3, cursor=cursor)
        pages.append([s.decision_id for s in items])
        if cursor is None:
            break
    assert [len(p) for p in pages] == [3, 3, 1]
    assert [i for p in pages for i in p] == list(reversed(saved))
    # A decision recorded while paging appears on a first page, never inside a later one.
    first, cursor = db_store.list_decisions(limit=3)
    newer = save_example(db_store, ruleset, "eligible-iv", subject="pt-new")[0].decision_id
    rest, _ = db_store.list_decisions(limit=10, cursor=cursor)
    assert newer not in [s.decision_id for s in first + rest]
    assert len(first) + len(rest) == 7
    # Filters and the cursor together.
    items, cursor = db_store.list_decisions(subject_id="pt-3", limit=1)
    assert [s.decision_id for s in items] == [saved[3]] and cursor is None


@pytest.mark.parametrize("cursor", ["", "garbage!", encode_cursor(5)[:-3], "eyJ2IjoyLCJhZnRlciI6MX0"])
def test_a_cursor_the_service_did_not_issue_is_refused(db_store, cursor):
    if cursor == "":
        assert db_store.list_decisions(cursor=cursor) == ([], None)  # empty means "first page"
        return
    with pytest.raises(ValueError, match="cursor"):
        db_store.list_decisions(cursor=cursor)


def test_reviews_are_appended_and_the_decision_never_changes(db_store, ruleset):
    decision, _ = save_example(db_store, ruleset, "review-substance-history")
    before = db_store.get_decision(decision.decision_id)
    first = db_store.add_review(decision.decision_id, reviewer="dr-a", outcome="approve", note="ok")
    second = db_store.add_review(decision.decision_id, reviewer="dr-b", outcome="decline", note="reconsidered")
    after = db_store.get_decision(decision.decision_id)
    assert after.reviews == (first, second)
    assert after.review_status == "declined"
    assert after.body == before.body and after.created_at == before.created_at
    assert first.created_at <= second.created_at and first.review_id != second.review_id

    with pytest.raises(DecisionNotFound):
        db_store.add_review("no-such-id", reviewer="dr-a", outcome="approve", note="")
    clean, _ = save_example(db_store, ruleset, "eligible-iv")
    with pytest.raises(ReviewNotAllowed):
        db_store.add_review(clean.decision_id, reviewer="dr-a", outcome="approve", note="")
    with pytest.raises(ValueError):
        db_store.add_review(decision.decision_id, reviewer="dr-a", outcome="maybe", note="")
    # An action that does not fit the decision is refused by the store as well (service.signoff).
    for outcome in ("confirm", "override", "rescreen"):
        with pytest.raises(ReviewNotAllowed):
            db_store.add_review(decision.decision_id, reviewer="dr-a", outcome=outcome, note="x")
    assert db_store.get_decision(decision.decision_id).reviews == (first, second)


def test_the_database_itself_refuses_updates_and_deletes(db_store, ruleset):
    decision, _ = save_example(db_store, ruleset, "review-substance-history")
    db_store.add_review(decision.decision_id, reviewer="dr-a", outcome="approve", note="")
    attempts = [
        decisions.update().values(decision="ineligible"),
        decisions.delete(),
        reviews.update().values(outcome="decline"),
        reviews.delete(),
    ]
    for statement in attempts:
        with pytest.raises(sa_exc.DBAPIError, match="append-only"):
            with db_store.engine.begin() as conn:
                conn.execute(statement)
    if db_store.backend == "postgresql":
        with pytest.raises(sa_exc.DBAPIError, match="append-only"):
            with db_store.engine.begin() as conn:
                conn.execute(text("TRUNCATE decisions CASCADE"))
    stored = db_store.get_decision(decision.decision_id)
    assert stored.decision == "eligible" and stored.review_status == "approved"


def test_the_database_refuses_replace_and_upsert_rewrites(db_store, ruleset):
    """Someone with write access to the database, not the service: SQLite's INSERT OR REPLACE
    deletes the conflicting row without firing DELETE triggers; PostgreSQL's upsert is an UPDATE."""
    from sqlalchemy import insert

    from service.store.models import cds_feedback

    decision, _ = save_example(db_store, ruleset, "review-substance-history")
    review = db_store.add_review(decision.decision_id, reviewer="dr-a", outcome="approve", note="ok")
    db_store.save_feedback({"decision_id": decision.decision_id, "service": "s", "client": "c", "outcome": "accepted"})
    with db_store.engine.connect() as conn:
        row = dict(conn.execute(select(decisions).where(decisions.c.decision_id == decision.decision_id)).mappings().one())
        review_row = dict(conn.execute(select(reviews)).mappings().one())
        feedback_row = dict(conn.execute(select(cds_feedback)).mappings().one())
    forged = dict(row, decision="eligible", physician_review_required=False)
    if db_store.backend == "sqlite":
        attempts = [
            insert(decisions).prefix_with("OR REPLACE").values({k: v for k, v in forged.items() if k != "seq"}),
            insert(decisions).prefix_with("OR REPLACE").values(dict(forged, decision_id="another-id")),  # same seq
            insert(reviews).prefix_with("OR REPLACE").values(dict(review_row, outcome="decline")),
            insert(cds_feedback).prefix_with("OR REPLACE").values(dict(feedback_row, outcome="overridden")),
            text("REPLACE INTO reviews (seq, review_id, decision_id, created_at, reviewer, outcome, note, client) "
                 "SELECT seq, review_id, decision_id, created_at, 'dr-x', 'decline', note, client FROM reviews"),
        ]
    else:
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        attempts = [
            pg_insert(decisions).values({k: v for k, v in forged.items() if k != "seq"})
            .on_conflict_do_update(index_elements=["decision_id"], set_={"decision": "eligible"}),
            pg_insert(reviews).values(review_row).on_conflict_do_update(index_elements=["review_id"],
                                                                         set_={"outcome": "decline"}),
            text("TRUNCATE cds_feedback"),
        ]
    for statement in attempts:
        with pytest.raises(sa_exc.DBAPIError, match="append-only"):
            with db_store.engine.begin() as conn:
                conn.execute(statement)
    stored = db_store.get_decision(decision.decision_id)
    assert stored.decision == row["decision"] and stored.physician_review_required is True
    assert stored.reviews == (review,)
    assert db_store.feedback_for(decision.decision_id)[0]["outcome"] == "accepted"
    # the service's own appends still work
    save_example(db_store, ruleset, "eligible-iv")
    db_store.add_review(decision.decision_id, reviewer="dr-b", outcome="decline", note="")


def test_iter_intakes_oldest_first(db_store, ruleset):
    saved = [save_example(db_store, ruleset, name)[0].decision_id
             for name in ("eligible-iv", "ineligible-several", "incomplete-no-vitals")]
    got = list(db_store.iter_intakes())
    assert [i for i, _ in got] == saved
    assert got[1][1]["subject_id"] == example("ineligible-several")["subject_id"]
    assert [i for i, _ in db_store.iter_intakes(limit=2)] == saved[:2]
    later = db_store.get_decision(saved[1]).created_at
    assert [i for i, _ in db_store.iter_intakes(since=later)] == saved[1:]
    assert db_store.count_decisions() == 3


def test_migrations_create_exactly_the_tables_the_code_uses(db_store):
    with db_store.engine.connect() as conn:
        diffs = compare_metadata(MigrationContext.configure(conn), metadata)
    assert diffs == []
    assert migrate.current_revision(db_store.engine) == migrate.head_revision()


def test_migrating_again_is_a_no_op(database_url, ruleset):
    first = SqlStore(database_url)
    save_example(first, ruleset, "eligible-iv")
    second = SqlStore(database_url)
    assert second.count_decisions() == 1
    first.close()
    second.close()


_MIGRATE = """
import sys
from service.store.sql import SqlStore
SqlStore(sys.argv[1]).close()
"""


def test_workers_starting_at_once_migrate_once(database_url):
    """Four processes (as gunicorn workers) open an empty log together: all succeed, one migration."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = [subprocess.Popen([sys.executable, "-c", _MIGRATE, database_url], env=env, cwd=ROOT,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(4)]
    results = [(p.wait(timeout=120), p.stderr.read().decode()) for p in procs]
    for p in procs:
        p.stdout.close()
        p.stderr.close()
    assert [code for code, _ in results] == [0, 0, 0, 0], results
    store = SqlStore(database_url)
    with store.engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM alembic_version")).scalar_one() == 1
    assert migrate.current_revision(store.engine) == migrate.head_revision()
    store.close()


def test_api_keys_are_kept_hashed_and_revocable(db_store):
    from service.auth import authenticate, create_first_admin_key, create_key

    new = create_key(db_store.keys, "portal", ["read", "screen", "read"])
    assert new.record.scopes == ("screen", "read")
    assert new.token.startswith(f"ks_{new.record.id}_")
    with db_store.engine.connect() as conn:
        rows = conn.execute(select(api_keys)).mappings().all()
    assert len(rows) == 1 and new.token not in str(dict(rows[0]))
    assert authenticate(db_store.keys, new.token) == db_store.keys.get(new.record.id)
    # A first admin key only when there is no key at all.
    assert create_first_admin_key(db_store.keys) is None
    revoked = db_store.keys.revoke(new.record.id)
    assert revoked.revoked_at is not None and not revoked.active
    assert db_store.keys.revoke(new.record.id).revoked_at == revoked.revoked_at  # idempotent
    assert authenticate(db_store.keys, new.token) is None
    assert db_store.keys.revoke("0000000000000000") is None


def test_two_first_starts_at_once_make_one_admin_key(db_store):
    from service.auth import create_first_admin_key

    made = []
    threads = [threading.Thread(target=lambda: made.append(create_first_admin_key(db_store.keys)))
               for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    created = [m for m in made if m is not None]
    assert len(created) == 1 and created[0].record.scopes == ("screen", "read", "review", "admin")
    assert len(db_store.keys.list()) == 1


def test_an_unreachable_database_is_store_unavailable_without_intake_values(ruleset, unused_port):
    store = SqlStore(f"postgresql+psycopg://nobody@127.0.0.1:{unused_port}/none", migrate_now=False)
    intake = validated(example("ineligible-several"))
    decision = screen(intake, ruleset)
    with pytest.raises(StoreUnavailable) as caught:
        store.save_decision(decision, jsonable(intake), client="k", source="http")
    message = str(caught.value)
    assert "OperationalError" in message
    assert intake["subject_id"] not in message and "192" not in message
    for call in (store.ping, lambda: store.get_decision("x"), lambda: store.list_decisions(),
                 lambda: store.keys.get("x")):
        with pytest.raises(StoreUnavailable):
            call()
    store.close()


def test_sqlite_default_is_a_file_under_var_in_the_working_directory(tmp_path, monkeypatch):
    from service.config import Settings

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.delenv("SCREENING_STATE_DIR", raising=False)
    url = Settings.from_env().store_url
    assert url == f"sqlite:///{tmp_path}/var/screening.sqlite3"
    store = SqlStore(url)
    with store.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() > 0
        assert conn.execute(select(func.count()).select_from(decisions)).scalar_one() == 0
    store.close()
    assert (tmp_path / "var" / "screening.sqlite3").exists()


@pytest.fixture
def unused_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
