"""The decision-log interface. HTTP, CDS Hooks, batch and `rules diff` use only this."""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Iterator, Protocol

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


class DecisionStore(Protocol):
    def save_decision(self, decision: Decision, intake: dict, *, client: str, source: str) -> None: ...

    def get_decision(self, decision_id: str) -> StoredDecision | None: ...

    def list_decisions(self, *, subject_id: str | None = None, decision: str | None = None,
                       review_status: str | None = None, ruleset_digest: str | None = None,
                       since: dt.datetime | None = None, until: dt.datetime | None = None,
                       cursor: str | None = None, limit: int = 50) -> tuple[list[StoredDecision], str | None]: ...

    def add_review(self, decision_id: str, *, reviewer: str, outcome: str, note: str, client: str = "",
                   credential: str | None = None, meaning: str | None = None,
                   overridden_rules: tuple[str, ...] = (), rescreen_decision_id: str | None = None) -> Review: ...

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

    def ping(self) -> None:
        """Raise StoreUnavailable if the log cannot be reached."""
        ...
