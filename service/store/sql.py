"""The decision log on SQLAlchemy 2: SQLite by default, PostgreSQL by DATABASE_URL.

Every write commits before the method returns, so a decision the service hands out is already
durable. Decisions are written by group commit (``service.store.groupcommit``): the requests in
flight share one transaction and one fsync, and each returns only once its row is committed.
Database failures surface as ``StoreUnavailable`` (HTTP 503) with the driver's error
class only: driver messages and SQL parameters can carry intake values and are never passed on
(``hide_parameters`` keeps them out of SQLAlchemy's own messages too).
"""
from __future__ import annotations

import base64
import binascii
import contextlib
import dataclasses
import datetime as dt
import json
import re
import threading
import uuid
from pathlib import Path
from typing import Any, Iterator, Sequence

from sqlalchemy import (Engine, and_, bindparam, create_engine, delete, event, exists, func, insert, or_, select,
                        text)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.engine import make_url

from schemas.store import MAX_PAGE
from service.decision import Decision, to_json
from service.store import migrate
from service.store.base import (REVIEW_OUTCOMES, REVIEW_STATUSES, DecisionNotFound, Review,
                                ReviewNotAllowed, StoredDecision)
from service.store.dberrors import unavailable_on_db_errors
from service.store.groupcommit import GroupCommitter
from service.store.keys import ApiKeyStore
from service.store.signin_failures import SigninFailureStore
from service.store.web_sessions import WebSessionStore
from service.store.ratelimits import RateLimitStore
from service.store.models import cds_feedback, cds_jti, decisions, reviews
from schemas.patterns import DECISION_ID
from service import signoff


# What a decision id can look like (screen() issues UUIDs); anything else is not in the log.
_DECISION_ID = re.compile(DECISION_ID)
# How long a request waits for a connection or a lock before the caller gets 503.
CONNECT_TIMEOUT_S = 5


class EncodedJSON(str):
    """JSON text already encoded (the response body): stored as it is, not encoded again."""


def _json_serializer(value: Any) -> str:
    if isinstance(value, EncodedJSON):
        return value
    return json.dumps(value)


def make_engine(url: str) -> Engine:
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        database = parsed.database
        if database and database != ":memory:" and not database.startswith("file:"):
            Path(database).parent.mkdir(parents=True, exist_ok=True)
        connect_args: dict[str, Any] = {}
        if "timeout" not in parsed.query:
            connect_args["timeout"] = CONNECT_TIMEOUT_S  # sqlite3's busy timeout, in seconds
        engine = create_engine(parsed, connect_args=connect_args, hide_parameters=True,
                               json_serializer=_json_serializer)

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_connection, _record) -> None:
            cursor = dbapi_connection.cursor()
            # WAL: readers (API key checks, GETs) are not blocked by a writer.
            cursor.execute("PRAGMA journal_mode=WAL")
            # FULL: a committed decision survives power loss, not only a killed process.
            cursor.execute("PRAGMA synchronous=FULL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.close()

        return engine
    if backend == "postgresql":
        connect_args = {} if "connect_timeout" in parsed.query else {"connect_timeout": CONNECT_TIMEOUT_S}
        # pre_ping: after a database restart, pooled connections are dead; replace them quietly.
        return create_engine(parsed, connect_args=connect_args, pool_pre_ping=True,
                             pool_timeout=CONNECT_TIMEOUT_S, hide_parameters=True,
                             json_serializer=_json_serializer)
    raise ValueError(f"DATABASE_URL: unsupported database {backend!r} (use sqlite or postgresql+psycopg)")


def encode_cursor(seq: int) -> str:
    raw = json.dumps({"v": 1, "after": seq}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


# A cursor this service issues is ~40 characters; seq is a 64-bit column on PostgreSQL.
_MAX_CURSOR_CHARS = 100
_MAX_SEQ = 9_223_372_036_854_775_807  # the largest BIGINT (PostgreSQL's seq column)


def decode_cursor(cursor: str) -> int:
    """The seq a cursor continues after; ValueError for anything this service did not issue
    (a number past the column's range or deeply nested JSON included, never an OverflowError
    or RecursionError from the driver or the parser)."""
    try:
        if len(cursor) > _MAX_CURSOR_CHARS:
            raise ValueError
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        value = json.loads(raw)
        seq = value["after"]
        if value.get("v") != 1 or not isinstance(seq, int) or isinstance(seq, bool) or not 0 < seq <= _MAX_SEQ:
            raise ValueError
        return seq
    except (ValueError, KeyError, TypeError, AttributeError, binascii.Error, UnicodeDecodeError, RecursionError):
        raise ValueError("not a cursor this service issued") from None


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


class MultiRowInsert:
    """``INSERT INTO table VALUES (…), (…), …`` for a batch of rows, as SQLAlchemy compiles it for
    this dialect (its quoting and its PostgreSQL casts), compiled once per batch size and
    sent with ``exec_driver_sql``.

    ``row`` applies the columns' own bind processors (SQLAlchemy's, for this dialect: UTC text
    for dates on SQLite, booleans as integers, JSON columns through the engine's serializer) in
    the caller's thread, so what reaches the driver is what ``conn.execute(insert(table), rows)``
    would send. One statement per batch: a group commit's leader makes one call into the driver
    for the rows and one for the commit, not SQLAlchemy's per-call compile and processing
    (measured: the insert was a quarter of a screening request), and on SQLite one statement
    releases and retakes the GIL once, where executemany does so for every row."""

    # Bound parameters per statement: SQLite's historical limit (999), so any build accepts it.
    MAX_PARAMETERS = 999

    def __init__(self, dialect, table):
        self.dialect = dialect
        self.table = table
        self.columns = [c for c in table.c if not (c.primary_key and c.autoincrement)]
        self.processors = [c.type.dialect_impl(dialect).bind_processor(dialect) for c in self.columns]
        self.rows_per_statement = max(1, self.MAX_PARAMETERS // len(self.columns))
        self.positional = dialect.positional
        self._compiled: dict[int, tuple[str, list[str] | None]] = {}
        self._lock = threading.Lock()

    def row(self, values: dict) -> tuple:
        """One row ready for the driver; KeyError names a column that was not given."""
        return tuple(value if process is None else process(value)
                     for value, process in zip((values[c.name] for c in self.columns), self.processors))

    def statements(self, rows: Sequence[tuple]) -> Iterator[tuple[str, tuple | dict]]:
        step = self.rows_per_statement
        for start in range(0, len(rows), step):
            chunk = rows[start:start + step]
            sql, names = self._statement(len(chunk))
            if self.positional:
                yield sql, tuple(value for row in chunk for value in row)
            else:
                yield sql, {name: value for name, value in zip(names, (v for row in chunk for v in row))}

    def _statement(self, n: int) -> tuple[str, list[str]]:
        compiled = self._compiled.get(n)
        if compiled is None:
            values = [{c.name: bindparam(f"{c.name}_{i}", type_=c.type) for c in self.columns} for i in range(n)]
            statement = insert(self.table).values(values).compile(dialect=self.dialect)
            expected = [f"{c.name}_{i}" for i in range(n) for c in self.columns]
            if self.positional and list(statement.positiontup) != expected:
                raise RuntimeError("the compiled INSERT's parameters are not in column order")
            compiled = (statement.string, expected)
            with self._lock:
                self._compiled[n] = compiled
        return compiled


class SqlStore:
    """The Store (service.store.base) on a SQLAlchemy engine. Thread-safe; one per process (per
    app). Open it with service.store.factory.open_store."""

    def __init__(self, url: str, *, migrate_now: bool = True):
        self.url = url
        self.engine = make_engine(url)
        self.keys = ApiKeyStore(self.engine, self.ensure_schema)
        self.counters = RateLimitStore(self.engine, self.ensure_schema)
        self.signin_failures = SigninFailureStore(self.engine, self.ensure_schema)
        self.web_sessions = WebSessionStore(self.engine, self.ensure_schema)
        self._schema_ready = False
        self._schema_lock = threading.Lock()
        # SQLite: one writer process at a time, waiting on a lock that wakes it at once, rather
        # than SQLite's busy handler, which sleeps in steps of up to 100 ms while another
        # process commits (measured: it, not the fsync, bounded two gunicorn workers).
        self._writer_turn = migrate.HeldFileLock(self.engine, "decision-writer")
        serialise = self._writer_turn if self.engine.dialect.name == "sqlite" else contextlib.nullcontext
        self._decision_insert = MultiRowInsert(self.engine.dialect, decisions)
        self.decision_writer: GroupCommitter[tuple] = GroupCommitter(self._write_decisions, serialise=serialise)
        if migrate_now:
            self.ensure_schema()

    @property
    def backend(self) -> str:
        return self.engine.dialect.name

    def ensure_schema(self) -> None:
        """Migrate to head once; retried on the next call if the database was unreachable."""
        if self._schema_ready:
            return
        with self._schema_lock:
            if self._schema_ready:
                return
            with unavailable_on_db_errors("migrating the decision log"):
                migrate.upgrade(self.engine)
            self._schema_ready = True

    def close(self) -> None:
        self._writer_turn.close()
        self.engine.dispose()

    # -- decisions ---------------------------------------------------------------------------

    def save_decision(self, decision: Decision, intake: dict, *, client: str, source: str,
                      body: str | None = None) -> None:
        """Append a decision; returns once it is committed. ``body``: the decision already
        encoded as JSON (what the response carries), so it is not encoded twice."""
        self.ensure_schema()
        ruleset = decision.ruleset
        # The row is made ready for the driver here, in the caller's thread: the leader of a
        # group commit holds the write lock for the INSERT and the commit only.
        row = self._decision_insert.row({
            "decision_id": decision.decision_id,
            "created_at": _now(),
            "client": client,
            "source": source,
            "subject_id": decision.subject_id,
            "decision": decision.decision,
            "physician_review_required": decision.physician_review_required,
            "urgent": decision.urgent,
            "ruleset_name": ruleset.get("name", ""),
            "ruleset_version": ruleset.get("version", ""),
            "ruleset_digest": ruleset.get("digest", ""),
            "body": EncodedJSON(body if body is not None else to_json(decision.to_dict())),
            "intake": EncodedJSON(to_json(intake)),
        })
        self.decision_writer.submit(row)

    def _write_decisions(self, rows: Sequence[tuple]) -> None:
        """One transaction for the batch: all of it is committed, or none of it."""
        with unavailable_on_db_errors("saving a decision"), self.engine.begin() as conn:
            for statement, parameters in self._decision_insert.statements(rows):
                conn.exec_driver_sql(statement, parameters)

    def get_decision(self, decision_id: str) -> StoredDecision | None:
        if not _DECISION_ID.fullmatch(decision_id):
            return None  # no such id was ever issued (and PostgreSQL refuses NUL in a parameter)
        self.ensure_schema()
        with unavailable_on_db_errors("reading a decision"), self.engine.connect() as conn:
            row = conn.execute(select(decisions).where(decisions.c.decision_id == decision_id)).mappings().first()
            if row is None:
                return None
            origin = conn.execute(select(reviews.c.decision_id)
                                  .where(reviews.c.rescreen_decision_id == decision_id).limit(1)).scalar()
            return dataclasses.replace(self._stored([row], conn)[0], rescreen_of=origin)

    def list_decisions(self, *, subject_id: str | None = None, decision: str | None = None,
                       review_status: str | None = None, ruleset_digest: str | None = None,
                       since: dt.datetime | None = None, until: dt.datetime | None = None,
                       cursor: str | None = None, limit: int = 50) -> tuple[list[StoredDecision], str | None]:
        """Newest first (in the order recorded). ``since`` is inclusive, ``until`` exclusive.
        Raises ValueError for a cursor this service did not issue or a bad filter value."""
        if not 1 <= limit <= MAX_PAGE:
            raise ValueError(f"limit must be between 1 and {MAX_PAGE}")
        if review_status is not None and review_status not in REVIEW_STATUSES:
            raise ValueError(f"review_status must be one of {', '.join(REVIEW_STATUSES)}")
        conditions = []
        if cursor:
            conditions.append(decisions.c.seq < decode_cursor(cursor))
        if subject_id is not None:
            conditions.append(decisions.c.subject_id == subject_id)
        if decision is not None:
            conditions.append(decisions.c.decision == decision)
        if ruleset_digest is not None:
            conditions.append(decisions.c.ruleset_digest == ruleset_digest)
        if since is not None:
            conditions.append(decisions.c.created_at >= since)
        if until is not None:
            conditions.append(decisions.c.created_at < until)
        if review_status is not None:
            conditions.append(_review_status_condition(review_status))
        query = select(decisions).where(and_(True, *conditions)).order_by(decisions.c.seq.desc()).limit(limit + 1)
        self.ensure_schema()
        with unavailable_on_db_errors("listing decisions"), self.engine.connect() as conn:
            rows = conn.execute(query).mappings().all()
            page = rows[:limit]
            items = self._stored(page, conn)
        next_cursor = encode_cursor(page[-1]["seq"]) if len(rows) > limit else None
        return items, next_cursor

    def count_decisions(self) -> int:
        self.ensure_schema()
        with unavailable_on_db_errors("counting decisions"), self.engine.connect() as conn:
            return conn.execute(select(func.count()).select_from(decisions)).scalar_one()

    def iter_intakes(self, *, since: dt.datetime | None = None,
                     limit: int | None = None) -> Iterator[tuple[str, dict]]:
        """Oldest first, fetched in batches so a long replay holds no connection open."""
        self.ensure_schema()
        after, produced, batch = 0, 0, 500
        while limit is None or produced < limit:
            size = batch if limit is None else min(batch, limit - produced)
            query = select(decisions.c.seq, decisions.c.decision_id, decisions.c.intake).where(decisions.c.seq > after)
            if since is not None:
                query = query.where(decisions.c.created_at >= since)
            with unavailable_on_db_errors("reading intakes"), self.engine.connect() as conn:
                rows = conn.execute(query.order_by(decisions.c.seq).limit(size)).all()
            for seq, decision_id, intake in rows:
                yield decision_id, intake
            produced += len(rows)
            if len(rows) < size:
                return
            after = rows[-1][0]

    # -- reviews -----------------------------------------------------------------------------

    def add_review(self, decision_id: str, *, reviewer: str, outcome: str, note: str,
                   client: str = "", credential: str | None = None, meaning: str | None = None,
                   overridden_rules: tuple[str, ...] = (), rescreen_decision_id: str | None = None) -> Review:
        """Append a physician's sign-off. Raises DecisionNotFound, or ReviewNotAllowed when the
        decision does not ask for review or the action does not fit it (service.signoff); the
        decision itself never changes. Callers check the rest (notes, rules) with signoff.check."""
        if outcome not in signoff.ACTION_NAMES:
            raise ValueError(f"outcome must be one of {', '.join(signoff.ACTION_NAMES)}")
        if not _DECISION_ID.fullmatch(decision_id):
            raise DecisionNotFound(decision_id)
        self.ensure_schema()
        review = Review(review_id=str(uuid.uuid4()), decision_id=decision_id, created_at=_now(),
                        reviewer=reviewer, outcome=outcome, note=note, credential=credential, client=client,
                        meaning=meaning or signoff.BY_NAME[outcome].meaning,
                        overridden_rules=tuple(overridden_rules), rescreen_decision_id=rescreen_decision_id)
        with unavailable_on_db_errors("saving a review"), self.engine.begin() as conn:
            row = conn.execute(select(decisions.c.physician_review_required, decisions.c.decision)
                               .where(decisions.c.decision_id == decision_id)).first()
            if row is None:
                raise DecisionNotFound(decision_id)
            required, kind = row
            if not required or outcome not in signoff.names(signoff.actions_for(kind)):
                raise ReviewNotAllowed(decision_id)
            conn.execute(insert(reviews), {
                "review_id": review.review_id, "decision_id": decision_id, "created_at": review.created_at,
                "reviewer": reviewer, "outcome": outcome, "note": note, "client": client,
                "credential": credential, "meaning": review.meaning,
                "overridden_rules": list(review.overridden_rules) or None,
                "rescreen_decision_id": rescreen_decision_id,
            })
        return review

    def review_queue(self, *, cursor: str | None = None,
                     limit: int = 50) -> tuple[list[StoredDecision], str | None]:
        """Decisions waiting for a physician: urgent first, then oldest first (docs/rules.md).
        Raises ValueError for a cursor this method did not issue."""
        if not 1 <= limit <= MAX_PAGE:
            raise ValueError(f"limit must be between 1 and {MAX_PAGE}")
        conditions = [_review_status_condition("pending")]
        urgent = decisions.c.urgent
        if cursor:
            after_urgent, after_seq = decode_queue_cursor(cursor)
            if after_urgent:
                conditions.append(or_(and_(urgent.is_(True), decisions.c.seq > after_seq), urgent.is_(False)))
            else:
                conditions.append(and_(urgent.is_(False), decisions.c.seq > after_seq))
        query = (select(decisions).where(and_(True, *conditions))
                 .order_by(urgent.desc(), decisions.c.seq.asc()).limit(limit + 1))
        self.ensure_schema()
        with unavailable_on_db_errors("listing the review queue"), self.engine.connect() as conn:
            rows = conn.execute(query).mappings().all()
            page = rows[:limit]
            items = self._stored(page, conn)
        next_cursor = encode_queue_cursor(bool(page[-1]["urgent"]), page[-1]["seq"]) if len(rows) > limit else None
        return items, next_cursor

    def queue_counts(self) -> tuple[int, int]:
        """(decisions pending review, of which urgent)."""
        self.ensure_schema()
        query = select(func.count(), func.count().filter(decisions.c.urgent.is_(True))).where(
            _review_status_condition("pending"))
        with unavailable_on_db_errors("counting the review queue"), self.engine.connect() as conn:
            pending, urgent = conn.execute(query).one()
        return int(pending), int(urgent)

    def save_feedback(self, entry: dict) -> None:
        """Append what a clinician did with a CDS Hooks card (its uuid is the decision id)."""
        self.ensure_schema()
        with unavailable_on_db_errors("saving CDS Hooks feedback"), self.engine.begin() as conn:
            conn.execute(insert(cds_feedback), {
                "decision_id": entry["decision_id"], "created_at": _now(), "service": entry["service"],
                "client": entry["client"], "outcome": entry["outcome"], "body": entry,
            })

    def feedback_for(self, decision_id: str) -> list[dict]:
        with unavailable_on_db_errors("reading CDS Hooks feedback"), self.engine.connect() as conn:
            rows = conn.execute(select(cds_feedback.c.body).where(cds_feedback.c.decision_id == decision_id)
                                .order_by(cds_feedback.c.seq)).scalars()
            return list(rows)

    def use_jti_once(self, key: str, expires_at: float, now: float) -> bool:
        """True the first time a JWT id is presented, False for a replay (until it expires)."""
        self.ensure_schema()
        with unavailable_on_db_errors("checking a CDS client's JWT id"), self.engine.begin() as conn:
            conn.execute(delete(cds_jti).where(cds_jti.c.expires_at < now))
            try:
                with conn.begin_nested():
                    conn.execute(insert(cds_jti), {"jti": key, "expires_at": expires_at})
            except IntegrityError:
                return False
        return True

    def ping(self) -> None:
        with unavailable_on_db_errors("reaching the decision log"), self.engine.connect() as conn:
            conn.execute(text("SELECT 1"))

    # -- helpers -----------------------------------------------------------------------------

    def _stored(self, rows, conn) -> list[StoredDecision]:
        ids = [row["decision_id"] for row in rows]
        by_decision: dict[str, list[Review]] = {i: [] for i in ids}
        if ids:
            review_rows = conn.execute(
                select(reviews).where(reviews.c.decision_id.in_(ids)).order_by(reviews.c.seq)).mappings()
            for r in review_rows:
                by_decision[r["decision_id"]].append(Review(
                    review_id=r["review_id"], decision_id=r["decision_id"], created_at=r["created_at"],
                    reviewer=r["reviewer"], outcome=r["outcome"], note=r["note"],
                    credential=r["credential"], client=r["client"], meaning=r["meaning"],
                    overridden_rules=tuple(r["overridden_rules"] or ()),
                    rescreen_decision_id=r["rescreen_decision_id"]))
        return [
            StoredDecision(
                decision_id=row["decision_id"], created_at=row["created_at"], client=row["client"],
                source=row["source"], subject_id=row["subject_id"], decision=row["decision"],
                physician_review_required=row["physician_review_required"], urgent=row["urgent"],
                ruleset_name=row["ruleset_name"], ruleset_version=row["ruleset_version"],
                ruleset_digest=row["ruleset_digest"], body=row["body"], intake=row["intake"],
                reviews=tuple(by_decision[row["decision_id"]]),
            )
            for row in rows
        ]


def _review_status_condition(status: str):
    required = decisions.c.physician_review_required
    if status == "not_required":
        return required.is_(False)
    has_review = exists().where(reviews.c.decision_id == decisions.c.decision_id)
    if status == "pending":
        return and_(required.is_(True), ~has_review)
    latest = (select(reviews.c.outcome).where(reviews.c.decision_id == decisions.c.decision_id)
              .order_by(reviews.c.seq.desc()).limit(1).scalar_subquery())
    # Old records hold approve/decline whatever the decision; both map to a status of their own.
    outcomes = [name for name in REVIEW_OUTCOMES if signoff.status_of(name) == status]
    return and_(required.is_(True), latest.in_(outcomes))




def encode_queue_cursor(urgent: bool, seq: int) -> str:
    raw = json.dumps({"v": 2, "urgent": urgent, "after": seq}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_queue_cursor(cursor: str) -> tuple[bool, int]:
    """(urgent, seq) of the last item of the previous page of the review queue."""
    try:
        if len(cursor) > 200:
            raise ValueError
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        value = json.loads(raw)
        seq, urgent = value["after"], value["urgent"]
        if (value.get("v") != 2 or not isinstance(seq, int) or isinstance(seq, bool)
                or not 0 <= seq <= _MAX_SEQ or not isinstance(urgent, bool)):
            raise ValueError
        return urgent, seq
    except (ValueError, KeyError, TypeError, RecursionError, binascii.Error, UnicodeDecodeError, AttributeError):
        raise ValueError("not a cursor this service issued") from None

