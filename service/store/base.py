"""The decision-log interface. HTTP, CDS Hooks, batch and `rules diff` use only this."""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Iterator, Protocol

from schemas.store import REVIEW_OUTCOMES, REVIEW_STATUSES  # noqa: F401 - part of this interface
from service.decision import Decision


class StoreUnavailable(RuntimeError):
    """The log cannot be written or read now. A decision that cannot be stored is not returned
    (HTTP 503 with Retry-After)."""


class DecisionNotFound(LookupError):
    """No decision with that id is in the log."""


class ReviewNotAllowed(ValueError):
    """The decision does not ask for physician review, so there is nothing to sign off."""


@dataclass(frozen=True)
class Review:
    review_id: str
    decision_id: str
    created_at: dt.datetime
    reviewer: str
    outcome: str  # approve | decline
    note: str


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

    @property
    def review_status(self) -> str:
        """not_required | pending | approved | declined (the latest review counts)."""
        if not self.physician_review_required:
            return "not_required"
        if not self.reviews:
            return "pending"
        return "approved" if self.reviews[-1].outcome == "approve" else "declined"


class DecisionStore(Protocol):
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

    def add_review(self, decision_id: str, *, reviewer: str, outcome: str, note: str) -> Review: ...

    def iter_intakes(self, *, since: dt.datetime | None = None, limit: int | None = None) -> Iterator[tuple[str, dict]]:
        """(decision_id, intake) of recorded decisions, oldest first: the corpus for `rules diff`."""
        ...

    def ping(self) -> None:
        """Raise StoreUnavailable if the log cannot be reached."""
        ...
