"""``open_store(url)``: the one way the app, the CLI and the tests get a store for a database URL."""
from __future__ import annotations

import logging

from sqlalchemy.engine import make_url

from service.store.base import Store, StoreUnavailable
from service.store.sql import SqlStore

_log = logging.getLogger(__name__)
# The URL schemes (SQLAlchemy backend names) each implementation serves.
_SQL_BACKENDS = ("sqlite", "postgresql")


def open_store(url: str, *, required: bool = False) -> Store:
    """The store at ``url``, migrated to the current schema.

    ``required=False`` (the service): a database that is down at start does not stop the
    service; it answers 503 (and /readyz says why) until the database is back, then migrates
    and carries on. ``required=True`` (the CLI, tests): raise StoreUnavailable now.
    Raises ValueError for a URL no implementation serves.
    """
    backend = make_url(url).get_backend_name()
    if backend not in _SQL_BACKENDS:
        raise ValueError(f"DATABASE_URL: unsupported database {backend!r} (use sqlite or postgresql+psycopg)")
    store = SqlStore(url, migrate_now=False)
    try:
        store.ensure_schema()
    except StoreUnavailable as exc:
        if required:
            store.close()
            raise
        _log.warning("decision log unavailable at start (%s); retrying on use", exc)
    return store
