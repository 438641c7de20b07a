"""API keys as the database keeps them: the SHA-256 of the token, never the token itself.
Token format, hashing and checking live in service.auth."""
from __future__ import annotations

import datetime as dt
from typing import Callable

from sqlalchemy import Engine, func, insert, select, update

from service.store.base import ApiKeyRecord
from service.store.dberrors import unavailable_on_db_errors
from service.store.migrate import locked_transaction
from service.store.models import api_keys


class ApiKeyStore:
    def __init__(self, engine: Engine, ensure_schema: Callable[[], None]):
        self._engine = engine
        self._ensure_schema = ensure_schema
        # Called with a key id once it is revoked through this store (service.auth's key cache
        # forgets it at once; other processes honour a revocation within their cache's bound).
        self.revoke_listeners: list[Callable[[str], None]] = []

    def _guard(self, what: str):
        self._ensure_schema()
        return unavailable_on_db_errors(what)

    def add(self, *, key_id: str, name: str, scopes: tuple[str, ...], token_sha256: str,
            physician: str | None = None) -> ApiKeyRecord:
        record = ApiKeyRecord(key_id, name, tuple(scopes), token_sha256, dt.datetime.now(dt.timezone.utc), None,
                              physician)
        with self._guard("saving an API key"), self._engine.begin() as conn:
            conn.execute(insert(api_keys), _row(record))
        return record

    def add_if_none(self, *, key_id: str, name: str, scopes: tuple[str, ...],
                    token_sha256: str) -> ApiKeyRecord | None:
        """Add the key only when no key exists at all (first start); None if one already does.
        Atomic across processes, so two servers starting at once make one first key."""
        record = ApiKeyRecord(key_id, name, tuple(scopes), token_sha256, dt.datetime.now(dt.timezone.utc), None)
        with self._guard("saving an API key"), locked_transaction(self._engine, "first-key") as conn:
            if conn.execute(select(func.count()).select_from(api_keys)).scalar_one():
                return None
            conn.execute(insert(api_keys), _row(record))
        return record

    def get(self, key_id: str) -> ApiKeyRecord | None:
        with self._guard("checking an API key"), self._engine.connect() as conn:
            row = conn.execute(select(api_keys).where(api_keys.c.id == key_id)).mappings().first()
        return _record(row) if row else None

    def list(self) -> list[ApiKeyRecord]:
        with self._guard("listing API keys"), self._engine.connect() as conn:
            rows = conn.execute(select(api_keys).order_by(api_keys.c.created_at, api_keys.c.id)).mappings().all()
        return [_record(r) for r in rows]

    def revoke(self, key_id: str) -> ApiKeyRecord | None:
        """Revoke (idempotently; the first revocation time stays). None if there is no such key."""
        now = dt.datetime.now(dt.timezone.utc)
        with self._guard("revoking an API key"), self._engine.begin() as conn:
            conn.execute(update(api_keys).where(api_keys.c.id == key_id, api_keys.c.revoked_at.is_(None))
                         .values(revoked_at=now))
            row = conn.execute(select(api_keys).where(api_keys.c.id == key_id)).mappings().first()
        for listener in self.revoke_listeners:
            listener(key_id)
        return _record(row) if row else None


def _row(record: ApiKeyRecord) -> dict:
    return {"id": record.id, "name": record.name, "scopes": " ".join(record.scopes),
            "token_sha256": record.token_sha256, "created_at": record.created_at, "revoked_at": record.revoked_at,
            "physician": record.physician}


def _record(row) -> ApiKeyRecord:
    return ApiKeyRecord(row["id"], row["name"], tuple(row["scopes"].split()), row["token_sha256"],
                        row["created_at"], row["revoked_at"], row["physician"])
