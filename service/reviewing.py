"""Recording a physician's sign-off: the one path the API and the clinician page both take.

The rules (which actions fit which decision, notes, overridden rules, answers) are in
``service.signoff``; this module applies them, re-screens when the physician adds missing
answers, and appends the review record with the reviewer bound to a credential.
"""
from __future__ import annotations

from dataclasses import dataclass

from marshmallow import ValidationError

from schemas.errors import dotted, flatten_messages
from service import signoff
from service.decision import Decision, jsonable
from service.ruleset import RulesetHolder
from service.screening import screen
from service.store.base import DecisionStore, Review, ReviewNotAllowed, StoredDecision


@dataclass(frozen=True)
class Reviewer:
    """Who signs, as authenticated: never a name taken from the request."""
    name: str
    credential: str   # session | api_key
    client: str       # the API key's id, or the session's short id


class SignOffRefused(ValueError):
    """The sign-off cannot be recorded; ``errors`` maps each field to what is wrong."""

    def __init__(self, errors: dict[str, str]):
        super().__init__("; ".join(f"{k}: {v}" for k, v in errors.items()))
        self.errors = errors


@dataclass(frozen=True)
class Recorded:
    review: Review
    new_decision: Decision | None = None  # the re-screen's decision


def record(store: DecisionStore, rulesets: RulesetHolder, stored: StoredDecision,
           request: signoff.SignOff, reviewer: Reviewer) -> Recorded:
    """Check the sign-off against the decision, re-screen if asked, append the review.
    Raises SignOffRefused, DecisionNotFound or StoreUnavailable."""
    errors = signoff.check(stored.decision, stored.body, stored.physician_review_required, request)
    if errors:
        raise SignOffRefused(errors)
    new_decision = None
    if request.action == signoff.RESCREEN.name:
        new_decision = _rescreen(store, rulesets, stored, dict(request.answers or {}), reviewer)
    try:
        review = store.add_review(
            stored.decision_id, reviewer=reviewer.name, outcome=request.action, note=request.note,
            client=reviewer.client, credential=reviewer.credential,
            overridden_rules=tuple(request.overridden_rules),
            rescreen_decision_id=new_decision.decision_id if new_decision else None)
    except ReviewNotAllowed:
        raise SignOffRefused({"decision": "This decision does not take this sign-off."}) from None
    return Recorded(review, new_decision)


def _rescreen(store: DecisionStore, rulesets: RulesetHolder, stored: StoredDecision, answers: dict,
              reviewer: Reviewer) -> Decision:
    try:
        raw = signoff.with_answers(stored.intake, answers)
    except ValueError as exc:
        raise SignOffRefused({f"answers.{exc}": "cannot be set in this intake"}) from None
    # One read of the holder: the answers are checked by the catalog of the rules that re-screen.
    ruleset = rulesets.current
    try:
        intake = ruleset.intake_loader.load(raw)
    except ValidationError as exc:
        raise SignOffRefused({f"answers.{dotted(path)}": message
                              for path, message in flatten_messages(exc.messages)}) from None
    decision = screen(intake, ruleset)
    # Recorded as asked by the physician's credential; the review on the first decision links them.
    store.save_decision(decision, jsonable(intake), client=f"{reviewer.credential}:{reviewer.client}",
                        source="rescreen")
    return decision
