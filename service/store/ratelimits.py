"""Token buckets in the decision log's database, so that every gunicorn worker and every instance
on that database draws on the same bucket per key.

One statement per take: an atomic upsert (SQLite >= 3.35 and PostgreSQL both have INSERT ... ON
CONFLICT DO UPDATE ... RETURNING) that refills the bucket for the time passed, hands out the
tokens asked for if they are all there (all or nothing), and returns what it granted and what is
left. Concurrent takes never lose an update and need no lock of their own. The caller decides how
many tokens to take at once (``service.ratelimit`` takes a batch per worker, so most requests
write nothing at all).
"""
from __future__ import annotations

import time
from typing import Callable

from sqlalchemy import Engine, case, delete, literal
from sqlalchemy.dialects import postgresql, sqlite

from service.store.base import Take
from service.store.dberrors import unavailable_on_db_errors
from service.store.models import rate_buckets

_INSERTS = {"postgresql": postgresql.insert, "sqlite": sqlite.insert}
# Buckets that are full again are deleted at most this often per process (seconds).
PRUNE_EVERY = 60.0


class RateLimitStore:
    def __init__(self, engine: Engine, ensure_schema: Callable[[], None]):
        insert = _INSERTS.get(engine.dialect.name)
        if insert is None:
            raise ValueError(f"rate limiting needs SQLite or PostgreSQL, not {engine.dialect.name}")
        self._engine = engine
        self._ensure_schema = ensure_schema
        self._insert = insert
        self._next_prune = 0.0

    def take(self, key_id: str, want: int, capacity: float, per_second: float, now: float) -> Take:
        """Take ``want`` tokens (1 <= want <= capacity) from ``key_id``'s bucket, refilled at
        ``per_second`` up to ``capacity``; a bucket seen for the first time is full. Raises
        StoreUnavailable when the database cannot be reached."""
        if not 1 <= want <= capacity:
            raise ValueError("want must be between 1 and the bucket's capacity")
        self._ensure_schema()
        b = rate_buckets.c
        elapsed = case((literal(now) > b.updated_at, literal(now) - b.updated_at), else_=0.0)
        refilled = b.tokens + elapsed * per_second
        level = case((refilled > capacity, literal(capacity)), else_=refilled)
        enough = level >= want
        tokens_after = case((enough, level - want), else_=level)
        statement = self._insert(rate_buckets).values(
            key_id=key_id, tokens=capacity - want, granted=want, updated_at=now,
            full_at=now + want / per_second,
        )
        statement = statement.on_conflict_do_update(
            index_elements=[b.key_id],
            set_={
                "tokens": tokens_after,
                "granted": case((enough, want), else_=0),
                "updated_at": now,
                "full_at": literal(now) + (literal(capacity) - tokens_after) / per_second,
            },
        ).returning(b.granted, b.tokens)
        with unavailable_on_db_errors("counting a request for rate limiting"), self._engine.begin() as conn:
            granted, left = conn.execute(statement).one()
            if time.monotonic() >= self._next_prune:
                # Full buckets mean the same as no row: the table holds only recently busy keys
                # (sign-in attempts for made-up user names included).
                self._next_prune = time.monotonic() + PRUNE_EVERY
                conn.execute(delete(rate_buckets).where(rate_buckets.c.full_at < now))
        return Take(int(granted), float(left))
