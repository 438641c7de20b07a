"""Bringing the schema to Alembic's head at start, safely when several workers start at once.

Each gunicorn worker builds its own app and calls ``upgrade``. They serialise on a lock so that
exactly one runs the migrations and the others find the schema already at head:
PostgreSQL takes a transaction-scoped advisory lock; SQLite (one host by nature) an exclusive
``flock`` on a file beside the database.
"""
from __future__ import annotations

import contextlib
import fcntl
import os
import threading
import zlib
from pathlib import Path
from typing import Iterator

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, Engine, text

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"
# Any constant shared by every process of this service; "KSCR" in ASCII.
_PG_LOCK_KEY = 0x4B534352


def alembic_config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    return config


def upgrade(engine: Engine) -> None:
    """Run pending migrations under a lock; a no-op when the schema is at head."""
    config = alembic_config()
    with locked_transaction(engine, "migrate") as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "head")


@contextlib.contextmanager
def locked_transaction(engine: Engine, purpose: str) -> Iterator[Connection]:
    """A transaction that one process at a time holds, per ``purpose``, across all processes."""
    with sqlite_file_lock(engine, purpose):
        with engine.begin() as connection:
            if connection.dialect.name == "postgresql":
                # Released at commit, once the work is visible to whoever waits next.
                connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _pg_key(purpose)})
            yield connection


def _pg_key(purpose: str) -> int:
    return _PG_LOCK_KEY << 32 | zlib.crc32(purpose.encode())


def current_revision(engine: Engine) -> str | None:
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def head_revision() -> str | None:
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(alembic_config()).get_current_head()


@contextlib.contextmanager
def sqlite_file_lock(engine: Engine, purpose: str = "migrate") -> Iterator[None]:
    """Serialise processes on one SQLite database (no-op on PostgreSQL and in-memory SQLite)."""
    database = engine.url.database if engine.dialect.name == "sqlite" else None
    if not database or database == ":memory:" or database.startswith("file:"):
        yield
        return
    lock_path = Path(database).with_name(Path(database).name + f".{purpose}-lock")
    with open(lock_path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


class HeldFileLock:
    """``sqlite_file_lock`` for a lock taken many times a second (the decision writer's turn): the
    lock file stays open in this process instead of being opened and closed on every turn.

    Reopened in a forked child: a descriptor inherited across ``fork`` shares its ``flock`` with
    the parent's, so the two processes would not exclude each other. One holder at a time within
    a process (the group committer's leader); other threads of the process wait on ``_local``."""

    def __init__(self, engine: Engine, purpose: str):
        database = engine.url.database if engine.dialect.name == "sqlite" else None
        usable = database and database != ":memory:" and not database.startswith("file:")
        self.path = Path(database).with_name(Path(database).name + f".{purpose}-lock") if usable else None
        self._local = threading.Lock()
        self._handle = None
        self._pid: int | None = None

    @contextlib.contextmanager
    def __call__(self) -> Iterator[None]:
        if self.path is None:
            yield
            return
        if self._pid is not None and self._pid != os.getpid():
            # A forked child: the parent's thread lock may have been copied held, and its
            # descriptor shares the parent's flock. Start afresh (the parent's copy is its own).
            self._local, self._handle, self._pid = threading.Lock(), None, None
        with self._local:
            if self._handle is None:
                self._handle = open(self.path, "a")  # kept open on purpose; close() closes it
                self._pid = os.getpid()
            fcntl.flock(self._handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(self._handle, fcntl.LOCK_UN)

    def close(self) -> None:
        if self._pid != os.getpid():  # never opened here, or the parent's copy: not ours to close
            self._handle, self._pid = None, None
            return
        with self._local:
            if self._handle is not None:
                self._handle.close()
            self._handle, self._pid = None, None
