"""API keys for machines (intake systems, EHRs): tokens, scopes, and the check on each endpoint.

A token is ``ks_<id>_<secret>``. The database keeps only its SHA-256; the id finds the row and
the hashes are compared in constant time, so response times say nothing about the secret.
Scopes: ``screen`` (POST /v1/screenings), ``read`` (decisions, the review queue, the ruleset),
``review`` (sign-offs), ``admin`` (everything; the key made on first start has it).
"""
from __future__ import annotations

import functools
import hashlib
import hmac
import logging
import re
import secrets
import threading
import time
from copy import deepcopy
from dataclasses import dataclass
from typing import Callable, Iterable

from flask import Request, current_app, g, request
from flask_smorest import Api
from flask_smorest.utils import deepupdate

from schemas.errors import ErrorSchema
from service.errors import ServiceError
from service import ratelimit
from service.store.keys import ApiKeyRecord, ApiKeyStore

log = logging.getLogger(__name__)

SCOPES = ("screen", "read", "review", "admin")
_TOKEN = re.compile(r"ks_(?P<id>[0-9a-f]{16})_(?P<secret>[A-Za-z0-9_-]{32,128})")
# Compared against when the id is unknown, so that case costs the same as a wrong secret.
_NO_SUCH_KEY = hashlib.sha256(b"no such key").hexdigest()
_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="screening"'}


@dataclass(frozen=True)
class NewKey:
    record: ApiKeyRecord
    token: str  # shown once; only its hash is kept


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def _new_token() -> tuple[str, str]:
    key_id = secrets.token_hex(8)
    return key_id, f"ks_{key_id}_{secrets.token_urlsafe(32)}"


def check_scopes(scopes: Iterable[str]) -> tuple[str, ...]:
    """Scopes in canonical order, without repeats; ValueError naming any unknown one."""
    wanted = set(scopes)
    unknown = sorted(wanted - set(SCOPES))
    if unknown:
        raise ValueError(f"unknown scope(s): {', '.join(unknown)} (known: {', '.join(SCOPES)})")
    if not wanted:
        raise ValueError(f"give at least one scope ({', '.join(SCOPES)})")
    return tuple(s for s in SCOPES if s in wanted)


# A physician's user name, as in the users file of the clinician pages (service.web.users).
PHYSICIAN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}")


def create_key(keys: ApiKeyStore, name: str, scopes: Iterable[str], *, physician: str | None = None) -> NewKey:
    """A new key. ``physician``: the person its sign-offs are recorded as (the review scope
    through the API records nothing without one: the reviewer is never taken from a request)."""
    if physician is not None and not PHYSICIAN_NAME.fullmatch(physician):
        raise ValueError("a physician is named by their user name: 1-64 letters, digits, '.', '_', '@' or '-'")
    key_id, token = _new_token()
    record = keys.add(key_id=key_id, name=name, scopes=check_scopes(scopes), token_sha256=hash_token(token),
                      physician=physician)
    return NewKey(record, token)


def create_first_admin_key(keys: ApiKeyStore) -> NewKey | None:
    """On an empty key table only: an admin key with every scope. None when keys exist."""
    key_id, token = _new_token()
    record = keys.add_if_none(key_id=key_id, name="first admin key", scopes=SCOPES, token_sha256=hash_token(token))
    return NewKey(record, token) if record else None


class KeyCache:
    """API key records as read from the database, kept for ``max_age`` seconds so that a request
    does not read the key table (the hash is still compared on every request).

    The bound: a key revoked (`screening keys revoke`, in another process) is refused by every
    worker of every instance at most ``max_age`` seconds later (``SCREENING_KEY_CACHE_SECONDS``;
    0 turns the cache off and reads the key on every request). Unknown key ids are not cached,
    so a key created elsewhere works at once."""

    MAX_ENTRIES = 10_000

    def __init__(self, keys: ApiKeyStore, max_age: float, clock: Callable[[], float] = time.monotonic):
        self.keys = keys
        self.max_age = max_age
        self.clock = clock
        self._records: dict[str, tuple[float, ApiKeyRecord]] = {}
        self._lock = threading.Lock()
        if hasattr(keys, "revoke_listeners"):
            keys.revoke_listeners.append(self.forget)  # revoked in this process: at once

    def get(self, key_id: str) -> ApiKeyRecord | None:
        if self.max_age <= 0:
            return self.keys.get(key_id)
        now = self.clock()
        with self._lock:
            cached = self._records.get(key_id)
        if cached is not None and now - cached[0] < self.max_age:
            return cached[1]
        record = self.keys.get(key_id)
        with self._lock:
            if record is None:
                self._records.pop(key_id, None)
            else:
                if len(self._records) >= self.MAX_ENTRIES:
                    self._records.clear()
                self._records[key_id] = (now, record)
        return record

    def forget(self, key_id: str) -> None:
        with self._lock:
            self._records.pop(key_id, None)


def authenticate(keys: ApiKeyStore | KeyCache, token: str) -> ApiKeyRecord | None:
    """The active key this token belongs to, or None (unknown, wrong secret or revoked)."""
    match = _TOKEN.fullmatch(token)
    record = keys.get(match["id"]) if match else None
    expected = record.token_sha256 if record else _NO_SUCH_KEY
    if not hmac.compare_digest(expected, hash_token(token)) or record is None or not record.active:
        return None
    return record


def grants(record: ApiKeyRecord, scope: str) -> bool:
    return scope in record.scopes or "admin" in record.scopes


def presented_token(req: Request) -> str | None:
    header = req.headers.get("Authorization", "")
    if header:
        scheme, _, value = header.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
        return None
    value = req.headers.get("X-API-Key", "").strip()
    return value or None


def require_scope(scope: str) -> Callable:
    """Put directly under ``@blp.route`` so the key is checked before the body is read.
    Sets ``g.api_key`` for the view (its id is the decision's ``client``)."""
    if scope not in SCOPES:
        raise ValueError(f"unknown scope {scope!r}")

    def decorator(view: Callable) -> Callable:
        @functools.wraps(view)
        def wrapper(*args, **kwargs):
            g.api_key = _check(scope)
            return view(*args, **kwargs)

        wrapper.required_scope = scope
        # flask-smorest reads the OpenAPI description from _apidoc; service.api.openapi completes
        # operations that carry security with the 401/403 responses and the scope in words.
        wrapper._apidoc = deepcopy(getattr(wrapper, "_apidoc", {}))
        wrapper._apidoc["manual_doc"] = deepupdate(deepcopy(wrapper._apidoc.get("manual_doc", {})), {
            "security": [{"bearerAuth": []}, {"apiKeyHeader": []}],
            "responses": {"401": "Unauthorized", "403": "Forbidden"},
            "x-required-scope": scope,
        })
        return wrapper

    return decorator


def _check(scope: str) -> ApiKeyRecord:
    token = presented_token(request)
    if token is None:
        raise ServiceError(401, "An API key is required: send 'Authorization: Bearer <key>'.", headers=_CHALLENGE)
    cache = current_app.extensions.get("key_cache") or current_app.extensions["store"].keys
    record = authenticate(cache, token)
    if record is None:
        log.warning("API key rejected on %s %s", request.method, request.path)
        raise ServiceError(401, "The API key is not valid or has been revoked.", headers=_CHALLENGE)
    if not grants(record, scope):
        log.warning("API key %s lacks scope %s for %s %s", record.id, scope, request.method, request.path)
        raise ServiceError(403, f"This API key does not have the '{scope}' scope.")
    # Counted only once admitted: refused requests cost a key nothing, and nobody can use up
    # someone else's rate without their key.
    ratelimit.check(current_app, record.id)
    return record


def register(api: Api) -> None:
    """The security schemes and the 401/403 responses, for the OpenAPI description."""
    api.spec.components.security_scheme("bearerAuth", {
        "type": "http", "scheme": "bearer", "bearerFormat": "API key",
        "description": "An API key (ks_<id>_<secret>) made with `screening keys create`, sent as "
                       "`Authorization: Bearer <key>`. Scopes: " + ", ".join(f"`{x}`" for x in SCOPES) + "."})
    api.spec.components.security_scheme("apiKeyHeader", {
        "type": "apiKey", "in": "header", "name": "X-API-Key",
        "description": "The same API key, for clients that cannot set Authorization."})
    api.spec.components.response("Unauthorized", {
        "description": "No API key, or one that is not valid or has been revoked.",
        "content": {"application/json": {"schema": ErrorSchema}}})
    api.spec.components.response("Forbidden", {
        "description": "The API key does not have the scope this operation needs.",
        "content": {"application/json": {"schema": ErrorSchema}}})
