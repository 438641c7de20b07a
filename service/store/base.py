"""The store's interfaces, one per domain, and what they exchange. HTTP, CDS Hooks, the pages,
batch and the CLI code against these protocols only; ``service.store.factory.open_store`` gives
the implementation for a database URL, and tests/test_store_conformance.py holds every
implementation to them (method present, signature compatible, behaviour)."""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Iterator, Protocol, runtime_checkable

from schemas.store import REVIEW_OUTCOMES, REVIEW_STATUSES  # noqa: F401 - part of this interface
from service import signoff
from service.decision import Decision


class StoreUnavailable(RuntimeError):
    """The log cannot be written or read now. A decision that cannot be stored is not returned
    (HTTP 503 with Retry-After)."""


class DecisionNotFound(LookupError):
    """No decision with that id is in the log."""


class ReviewNotAllowed(ValueError):
    """The decision does not ask for physician review, or the action does not fit the decision
    (service.signoff), so nothing is recorded."""


@dataclass(frozen=True)
class Review:
    review_id: str
    decision_id: str
    created_at: dt.datetime
    reviewer: str
    outcome: str  # the action (service.signoff); approve | decline on older records
    note: str
    credential: str | None = None    # session | api_key; None on records older than 0004
    client: str = ""                 # the API key's id, or the session's short id
    meaning: str | None = None       # as stated when signed; None on older records
    overridden_rules: tuple[str, ...] = ()
    rescreen_decision_id: str | None = None

    @property
    def status(self) -> str:
        return signoff.status_of(self.outcome)

    @property
    def treatment(self) -> str:
        return signoff.treatment_of(self.outcome)


@dataclass(frozen=True)
class StoredDecision:
    decision_id: str
    created_at: dt.datetime
    client: str          # who asked: an API key's id, "cli", "cds-hooks:<issuer>", "batch"
    source: str          # http | cds-hooks | batch | cli
    subject_id: str
    decision: str
    physician_review_required: bool
    urgent: bool
    ruleset_name: str
    ruleset_version: str
    ruleset_digest: str
    body: dict           # the decision exactly as returned (Decision.to_dict())
    intake: dict         # the intake as validated, in JSON form (no direct identifiers)
    reviews: tuple[Review, ...] = field(default_factory=tuple)
    # The decision this one re-screened (its review names this one), if any.
    rescreen_of: str | None = None

    @property
    def review_status(self) -> str:
        """not_required | pending | the latest sign-off's status (service.signoff)."""
        if not self.physician_review_required:
            return "not_required"
        if not self.reviews:
            return "pending"
        return self.reviews[-1].status


@dataclass(frozen=True)
class ApiKeyRecord:
    """An API key as kept (KeyStore): the token's SHA-256, never the token."""
    id: str
    name: str
    scopes: tuple[str, ...]
    token_sha256: str
    created_at: dt.datetime
    revoked_at: dt.datetime | None
    # The physician this key signs off as; sign-offs through the API need one (service.auth).
    physician: str | None = None

    @property
    def active(self) -> bool:
        return self.revoked_at is None


@runtime_checkable
class DecisionStore(Protocol):
    """The decision log: decisions, the reviews beside them and CDS Hooks feedback."""

    def save_decision(self, decision: Decision, intake: dict, *, client: str, source: str,
                      body: str | None = None) -> None:
        """Append a decision and return once it is durable. ``body``: the decision as the JSON
        text the caller returns, if it has it (stored as is, so it is encoded once)."""
        ...

    def get_decision(self, decision_id: str) -> StoredDecision | None: ...

    def list_decisions(self, *, subject_id: str | None = None, decision: str | None = None,
                       review_status: str | None = None, ruleset_digest: str | None = None,
                       since: dt.datetime | None = None, until: dt.datetime | None = None,
                       cursor: str | None = None, limit: int = 50) -> tuple[list[StoredDecision], str | None]: ...

    def count_decisions(self) -> int: ...

    def add_review(self, decision_id: str, *, reviewer: str, outcome: str, note: str, client: str = "",
                   credential: str | None = None, meaning: str | None = None,
                   overridden_rules: tuple[str, ...] = (), rescreen_decision_id: str | None = None) -> Review:
        """Raises DecisionNotFound, or ReviewNotAllowed when the decision asks for no review or the
        action does not fit it (service.signoff)."""
        ...

    def review_queue(self, *, cursor: str | None = None,
                     limit: int = 50) -> tuple[list[StoredDecision], str | None]:
        """Decisions waiting for a physician: urgent first, then oldest first."""
        ...

    def queue_counts(self) -> tuple[int, int]:
        """(pending, of which urgent)."""
        ...

    def iter_intakes(self, *, since: dt.datetime | None = None, limit: int | None = None) -> Iterator[tuple[str, dict]]:
        """(decision_id, intake) of recorded decisions, oldest first: the corpus for `rules diff`."""
        ...

    def save_feedback(self, entry: dict) -> None:
        """Append what a clinician did with a CDS Hooks card (``entry["decision_id"]`` is logged)."""
        ...

    def feedback_for(self, decision_id: str) -> list[dict]: ...

    def ping(self) -> None:
        """Raise StoreUnavailable if the log cannot be reached."""
        ...


@runtime_checkable
class KeyStore(Protocol):
    """API keys as kept: the SHA-256 of each token, never the token (service.auth makes and checks them)."""

    def add(self, *, key_id: str, name: str, scopes: tuple[str, ...], token_sha256: str) -> ApiKeyRecord: ...

    def add_if_none(self, *, key_id: str, name: str, scopes: tuple[str, ...],
                    token_sha256: str) -> ApiKeyRecord | None:
        """Add only when no key exists at all (first start), atomically across processes."""
        ...

    def get(self, key_id: str) -> ApiKeyRecord | None: ...

    def list(self) -> list[ApiKeyRecord]: ...

    def revoke(self, key_id: str) -> ApiKeyRecord | None:
        """Idempotent (the first revocation time stays); None if there is no such key."""
        ...


@dataclass(frozen=True)
class Take:
    """What a take from a shared token bucket got (CounterStore.take)."""
    granted: int    # tokens handed out: all that were asked for, or 0
    left: float     # in the shared bucket after this take


@runtime_checkable
class CounterStore(Protocol):
    """Token buckets per key shared by every worker and instance (rate limits)."""

    def take(self, key_id: str, want: int, capacity: float, per_second: float, now: float) -> Take:
        """Take ``want`` tokens from ``key_id``'s bucket (refilled at ``per_second`` up to
        ``capacity``; new buckets are full): all of them or none (``Take.granted``)."""
        ...


@runtime_checkable
class JtiStore(Protocol):
    """CDS client JWT ids seen, so a token is accepted once across workers."""

    def use_jti_once(self, key: str, expires_at: float, now: float) -> bool:
        """True the first time ``key`` is presented, False for a replay until it expires."""
        ...


@runtime_checkable
class SigninFailureLog(Protocol):
    """Sign-in attempts per user name in a sliding window (service.web.signin), shared by every
    worker and instance; rows older than the window are deleted."""

    def reserve(self, name_key: str, now: float, window_s: float) -> tuple[int, int, float]:
        """Count an attempt as failed until released: (its id, attempts in the window, oldest time)."""
        ...

    def release(self, seq: int) -> None:
        """The attempt did not fail."""
        ...

    def count_rows(self) -> int: ...


@runtime_checkable
class WebSessionStore(Protocol):
    """Sign-ins of the clinician pages, so that signing out ends a session everywhere."""

    def start(self, username: str, lifetime_s: float) -> str:
        """A new session's id (for the cookie only; only its SHA-256 is kept)."""
        ...

    def user_of(self, sid: str) -> str | None:
        """The user of a live session; None when it ended, expired or never existed."""
        ...

    def end(self, sid: str) -> None: ...

    def end_all_of(self, username: str) -> int: ...


@runtime_checkable
class Store(DecisionStore, JtiStore, Protocol):
    """Everything the app holds as ``app.extensions["store"]``: the decision log and JWT ids on
    one database, with its API keys and request counters beside them."""

    keys: KeyStore
    counters: CounterStore
    signin_failures: SigninFailureLog
    web_sessions: WebSessionStore

    @property
    def backend(self) -> str:
        """The database's dialect name (sqlite, postgresql)."""
        ...

    def ensure_schema(self) -> None:
        """Migrate to head once; raise StoreUnavailable while the database cannot be reached."""
        ...

    def close(self) -> None: ...
