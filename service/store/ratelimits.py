"""Request counters per API key and fixed window, in the decision log's database, so that every
gunicorn worker and every instance on that database counts against the same number.

One statement per request: an atomic upsert that returns the new count (SQLite >= 3.35 and
PostgreSQL both have INSERT ... ON CONFLICT DO UPDATE ... RETURNING), so concurrent requests
never lose an increment and never need a lock of their own.
"""
from __future__ import annotations

from typing import Callable

from sqlalchemy import Engine, delete
from sqlalchemy.dialects import postgresql, sqlite

from service.store.dberrors import unavailable_on_db_errors
from service.store.models import rate_limits

_INSERTS = {"postgresql": postgresql.insert, "sqlite": sqlite.insert}


class RateLimitStore:
    def __init__(self, engine: Engine, ensure_schema: Callable[[], None]):
        insert = _INSERTS.get(engine.dialect.name)
        if insert is None:
            raise ValueError(f"rate limiting needs SQLite or PostgreSQL, not {engine.dialect.name}")
        self._engine = engine
        self._ensure_schema = ensure_schema
        statement = insert(rate_limits).values(count=1)
        self._hit = statement.on_conflict_do_update(
            index_elements=[rate_limits.c.key_id, rate_limits.c.window_start],
            set_={"count": rate_limits.c.count + 1},
        ).returning(rate_limits.c.count)

    def hit(self, key_id: str, window_start: int) -> int:
        """Count one request of ``key_id`` in the window starting at ``window_start``; the count
        so far, this one included. Raises StoreUnavailable when the database cannot be reached."""
        self._ensure_schema()
        with unavailable_on_db_errors("counting a request for rate limiting"), self._engine.begin() as conn:
            count = conn.execute(self._hit, {"key_id": key_id, "window_start": window_start}).scalar_one()
            if count == 1:
                # A key's first request of a window: its earlier windows are over, drop them, so
                # the table holds about one row per recently active key.
                conn.execute(delete(rate_limits).where(rate_limits.c.key_id == key_id,
                                                       rate_limits.c.window_start < window_start))
        return count
