"""Failed sign-ins per user name, for the sign-in limit of the clinician pages (service.web.signin).

A sliding-window log: one row per attempt in progress or failed, with its time. Rows older than
the window are deleted by every attempt (whatever the user name), so names that never existed
leave nothing behind for longer than the window. Only the SHA-256 of the lower-cased name is
kept, never the name typed.
"""
from __future__ import annotations

from typing import Callable

from sqlalchemy import Engine, delete, func, insert, select

from service.store.dberrors import unavailable_on_db_errors
from service.store.models import signin_failures


class SigninFailureStore:
    def __init__(self, engine: Engine, ensure_schema: Callable[[], None]):
        self._engine = engine
        self._ensure_schema = ensure_schema

    def reserve(self, name_key: str, now: float, window_s: float) -> tuple[int, int, float]:
        """Record an attempt as failed until told otherwise (``release``). Committed before it
        is counted, so that concurrent attempts in other workers see each other. Returns (its
        row id, attempts and failures in the window including this one, the oldest one's time)."""
        self._ensure_schema()
        since = now - window_s
        with unavailable_on_db_errors("counting sign-in attempts"), self._engine.begin() as conn:
            conn.execute(delete(signin_failures).where(signin_failures.c.at <= since))
            seq = conn.execute(insert(signin_failures).values(name_key=name_key, at=now)
                               .returning(signin_failures.c.seq)).scalar_one()
        with unavailable_on_db_errors("counting sign-in attempts"), self._engine.connect() as conn:
            count, oldest = conn.execute(
                select(func.count(), func.min(signin_failures.c.at))
                .where(signin_failures.c.name_key == name_key, signin_failures.c.at > since)).one()
        return seq, int(count), float(oldest if oldest is not None else now)

    def release(self, seq: int) -> None:
        """The attempt did not fail (the password was right, or it was refused unchecked)."""
        with unavailable_on_db_errors("counting sign-in attempts"), self._engine.begin() as conn:
            conn.execute(delete(signin_failures).where(signin_failures.c.seq == seq))

    def count_rows(self) -> int:
        with unavailable_on_db_errors("counting sign-in attempts"), self._engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(signin_failures)).scalar_one())
