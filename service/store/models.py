"""The decision log's tables. The Alembic migrations in service/migrations create them; this
module is what the queries are written against, and the two must agree (tests check it)."""
from __future__ import annotations

import datetime as dt

from sqlalchemy import (JSON, BigInteger, Boolean, Column, DateTime, Float, ForeignKey, Index, Integer,
                        MetaData, String, Table, Text)
from sqlalchemy.types import TypeDecorator

metadata = MetaData()

# SQLite has no 64-bit autoincrement type of its own; INTEGER PRIMARY KEY is its rowid.
Seq = BigInteger().with_variant(Integer(), "sqlite")
# Plain JSON, not JSONB, on PostgreSQL: kept as sent (key order, and "\u0000" inside strings,
# which JSONB refuses), and nothing queries inside these documents.
Json = JSON()


class UtcDateTime(TypeDecorator):
    """Aware UTC datetimes on every backend: SQLite keeps naive text, so the zone is added back."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(dt.timezone.utc)
        # Naive UTC text sorts and compares correctly in SQLite.
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value, dialect):
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=dt.timezone.utc)
        return value.astimezone(dt.timezone.utc)


decisions = Table(
    "decisions", metadata,
    # Insertion order: the stable key of "newest first" and of the pagination cursor.
    Column("seq", Seq, primary_key=True, autoincrement=True),
    Column("decision_id", String(64), nullable=False, unique=True),
    Column("created_at", UtcDateTime(), nullable=False),
    Column("client", String(200), nullable=False),
    Column("source", String(32), nullable=False),
    Column("subject_id", String(200), nullable=False),
    Column("decision", String(16), nullable=False),
    Column("physician_review_required", Boolean(), nullable=False),
    Column("urgent", Boolean(), nullable=False),
    Column("ruleset_name", String(200), nullable=False),
    Column("ruleset_version", String(100), nullable=False),
    Column("ruleset_digest", String(100), nullable=False),
    Column("body", Json, nullable=False),
    Column("intake", Json, nullable=False),
    Index("ix_decisions_subject_id", "subject_id"),
    Index("ix_decisions_created_at", "created_at"),
    Index("ix_decisions_decision", "decision"),
    Index("ix_decisions_review_required", "physician_review_required"),
    Index("ix_decisions_ruleset_digest", "ruleset_digest"),
)

reviews = Table(
    "reviews", metadata,
    Column("seq", Seq, primary_key=True, autoincrement=True),
    Column("review_id", String(64), nullable=False, unique=True),
    Column("decision_id", String(64), ForeignKey("decisions.decision_id"), nullable=False),
    Column("created_at", UtcDateTime(), nullable=False),
    Column("reviewer", String(200), nullable=False),
    Column("outcome", String(16), nullable=False),
    Column("note", Text(), nullable=False),
    # Which credential recorded it: an API key's id, or the signed-in session's short id.
    Column("client", String(200), nullable=False),
    # 0004: what the action meant, the rules an override names, how the reviewer was
    # authenticated (session | api_key), and a re-screen's new decision. NULL on older rows.
    Column("meaning", Text(), nullable=True),
    Column("overridden_rules", Json, nullable=True),
    Column("credential", String(32), nullable=True),
    Column("rescreen_decision_id", String(64), nullable=True),
    Index("ix_reviews_decision_seq", "decision_id", "seq"),
)

cds_feedback = Table(
    "cds_feedback", metadata,
    Column("seq", Seq, primary_key=True, autoincrement=True),
    Column("decision_id", String(64), ForeignKey("decisions.decision_id"), nullable=False),
    Column("created_at", UtcDateTime(), nullable=False),
    Column("service", String(100), nullable=False),
    Column("client", String(200), nullable=False),
    Column("outcome", String(16), nullable=False),
    Column("body", Json, nullable=False),
    Index("ix_cds_feedback_decision", "decision_id", "seq"),
)

# JWT ids of CDS clients already used, until they expire (epoch seconds): a replay is refused by
# whichever worker or instance it reaches.
cds_jti = Table(
    "cds_jti", metadata,
    Column("jti", String(600), primary_key=True),
    Column("expires_at", Float(), nullable=False),
    Index("ix_cds_jti_expires_at", "expires_at"),
)

api_keys = Table(
    "api_keys", metadata,
    Column("id", String(32), primary_key=True),
    Column("name", String(200), nullable=False),
    Column("scopes", String(200), nullable=False),  # space-separated
    Column("token_sha256", String(64), nullable=False),
    Column("created_at", UtcDateTime(), nullable=False),
    Column("revoked_at", UtcDateTime(), nullable=True),
    # 0004: the physician this key signs off as (sign-offs through the API need one).
    Column("physician", String(64), nullable=True),
)

# Sign-ins of the clinician pages (0004): the cookie names a session, this row makes it valid,
# and signing out deletes it, in every worker and instance on the database.
web_sessions = Table(
    "web_sessions", metadata,
    Column("sid_sha256", String(64), primary_key=True),
    Column("username", String(64), nullable=False),
    Column("created_at", UtcDateTime(), nullable=False),
    Column("expires_at", Float(), nullable=False),  # Unix seconds
    Index("ix_web_sessions_expires_at", "expires_at"),
)

# Failed sign-ins per user name (0004): one row per failure, deleted once out of the window.
signin_failures = Table(
    "signin_failures", metadata,
    Column("seq", Seq, primary_key=True, autoincrement=True),
    Column("name_key", String(64), nullable=False),
    Column("at", Float(), nullable=False),  # Unix seconds
    Index("ix_signin_failures_name_at", "name_key", "at"),
    Index("ix_signin_failures_at", "at"),
)

# Token buckets for rate limits (service/ratelimit.py): scratch state, not records. A row whose
# bucket would be full again (full_at passed) means the same as no row, and is deleted.
rate_buckets = Table(
    "rate_buckets", metadata,
    Column("key_id", String(64), primary_key=True),
    Column("tokens", Float(), nullable=False),      # in the bucket at updated_at
    Column("granted", Integer(), nullable=False),   # what the last take was given
    Column("updated_at", Float(), nullable=False),  # Unix seconds
    Column("full_at", Float(), nullable=False),     # Unix seconds when the bucket is full again
)
