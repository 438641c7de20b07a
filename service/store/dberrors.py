"""Database failures as the rest of the service sees them: ``StoreUnavailable``, naming only the
driver's error class. Driver messages and SQL parameters can carry intake values; they stop here."""
from __future__ import annotations

import contextlib
from typing import Iterator

from sqlalchemy import exc as sa_exc

from service.store.base import StoreUnavailable


@contextlib.contextmanager
def unavailable_on_db_errors(what: str) -> Iterator[None]:
    """Turn 'the database cannot be reached or written now' into StoreUnavailable."""
    try:
        yield
    except (sa_exc.OperationalError, sa_exc.InterfaceError, sa_exc.TimeoutError) as exc:
        raise StoreUnavailable(f"{what}: {_kind(exc)}") from None
    except sa_exc.DBAPIError as exc:
        if exc.connection_invalidated:
            raise StoreUnavailable(f"{what}: {_kind(exc)}") from None
        raise


def _kind(exc: Exception) -> str:
    orig = getattr(exc, "orig", None)
    return type(orig if orig is not None else exc).__name__
