"""Sign-ins of the clinician pages, kept in the decision log's database.

The browser's cookie (signed by Flask) carries a random session id; only its SHA-256 is stored.
A request is signed in while the row exists and has not expired, so signing out (the row is
deleted) ends the session in every worker and every instance on the database at once, and a
copied cookie stops working with it.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import secrets
import time
from typing import Callable

from sqlalchemy import Engine, delete, insert, select

from service.store.dberrors import unavailable_on_db_errors
from service.store.models import web_sessions


def _digest(sid: str) -> str:
    return hashlib.sha256(sid.encode("utf-8")).hexdigest()


class WebSessionStore:
    def __init__(self, engine: Engine, ensure_schema: Callable[[], None], clock: Callable[[], float] = time.time):
        self._engine = engine
        self._ensure_schema = ensure_schema
        self.clock = clock

    def start(self, username: str, lifetime_s: float) -> str:
        """A new session for ``username``; returns its id (for the cookie only)."""
        sid = secrets.token_urlsafe(32)
        now = self.clock()
        self._ensure_schema()
        with unavailable_on_db_errors("starting a session"), self._engine.begin() as conn:
            # Expired sessions of anyone go here: the table holds about the live sessions only.
            conn.execute(delete(web_sessions).where(web_sessions.c.expires_at <= now))
            conn.execute(insert(web_sessions), {
                "sid_sha256": _digest(sid), "username": username,
                "created_at": dt.datetime.now(dt.timezone.utc), "expires_at": now + lifetime_s})
        return sid

    def user_of(self, sid: str) -> str | None:
        """The user of a live session; None when it ended, expired or never existed."""
        if not isinstance(sid, str) or not 20 <= len(sid) <= 100:
            return None
        self._ensure_schema()
        with unavailable_on_db_errors("checking a session"), self._engine.connect() as conn:
            row = conn.execute(select(web_sessions.c.username, web_sessions.c.expires_at)
                               .where(web_sessions.c.sid_sha256 == _digest(sid))).first()
        if row is None or row.expires_at <= self.clock():
            return None
        return row.username

    def end(self, sid: str) -> None:
        self._ensure_schema()
        with unavailable_on_db_errors("ending a session"), self._engine.begin() as conn:
            conn.execute(delete(web_sessions).where(web_sessions.c.sid_sha256 == _digest(sid)))

    def end_all_of(self, username: str) -> int:
        """Sign a person out everywhere (e.g. when removed from the users file)."""
        self._ensure_schema()
        with unavailable_on_db_errors("ending sessions"), self._engine.begin() as conn:
            return conn.execute(delete(web_sessions).where(web_sessions.c.username == username)).rowcount


def short_ref(sid: str) -> str:
    """What a sign-off records of the session: enough to match it in the logs, not to use it."""
    return "s-" + _digest(sid)[:12]
