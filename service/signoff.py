"""What a physician may do with a screening decision: the sign-off rules, in one place.

The API (``POST /v1/decisions/{id}/review``) and the clinician page both ask this module which
actions fit a decision and whether a sign-off is complete; neither has rules of its own.

- ``ineligible`` (a rule excludes treatment): **confirm** the exclusion, or **override** it,
  naming every excluding rule overridden and saying why.
- ``incomplete`` (data the rules need is missing): **re-screen** with the missing answers added
  (a new decision, linked to this one), or **decline**, saying why.
- ``eligible`` with physician review: **approve**, or **decline**, saying why.

Each action's meaning is the sentence on its button and is recorded with the sign-off. Reviews
recorded before these actions existed hold ``approve`` or ``decline`` whatever the decision
was; ``LEGACY`` says what those meant, so that old records still read correctly.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Mapping

# One limit for the note, in the API schema and on the page.
MAX_NOTE_CHARS = 4000
MAX_ANSWERS = 100

# What the sign-off means for the patient's treatment.
MAY_PROCEED, MUST_NOT_PROCEED, RESCREENED = "may_proceed", "must_not_proceed", "rescreened"


@dataclass(frozen=True)
class Action:
    name: str          # recorded in the review (its "outcome")
    status: str        # the decision's review status while this is the latest sign-off
    label: str         # the action, briefly
    button: str        # the button's words: the action and what it means for treatment
    meaning: str       # what it means, in full: recorded with the sign-off
    treatment: str     # MAY_PROCEED | MUST_NOT_PROCEED | RESCREENED
    note_required: bool
    note_prompt: str


CONFIRM = Action("confirm", "confirmed", "Confirm the exclusion",
                 "Confirm the exclusion: treatment must not go ahead",
                 "Exclusion confirmed: treatment must not go ahead.", MUST_NOT_PROCEED, False,
                 "Optional.")
OVERRIDE = Action("override", "overridden", "Override the exclusion",
                  "Override the exclusion: treatment may go ahead despite the rules ticked",
                  "Exclusion overridden: treatment may go ahead despite the rule(s) named, for the "
                  "reason given.", MAY_PROCEED, True,
                  "Required: why treatment may go ahead despite the rule(s).")
RESCREEN = Action("rescreen", "rescreened", "Add the missing answers and re-screen",
                  "Re-screen with these answers: a new decision replaces this one",
                  "Re-screened with the missing answers added: the new decision replaces this one.",
                  RESCREENED, False, "Optional.")
DECLINE = Action("decline", "declined", "Decline",
                 "Decline: treatment must not go ahead",
                 "Declined: treatment must not go ahead.", MUST_NOT_PROCEED, True,
                 "Required: why treatment must not go ahead.")
APPROVE = Action("approve", "approved", "Approve",
                 "Approve: treatment may go ahead as screened",
                 "Approved: treatment may go ahead as screened.", MAY_PROCEED, False, "Optional.")

ACTIONS: dict[str, tuple[Action, ...]] = {
    "ineligible": (CONFIRM, OVERRIDE),
    "incomplete": (RESCREEN, DECLINE),
    "eligible": (APPROVE, DECLINE),
}
ACTION_NAMES = tuple(dict.fromkeys(a.name for actions in ACTIONS.values() for a in actions))
BY_NAME = {a.name: a for actions in ACTIONS.values() for a in actions}

# Reviews recorded before sign-off actions were matched to the decision (approve/decline on any
# decision). Shown as they were meant then; never offered now on ineligible or incomplete.
LEGACY = {
    "approve": "Approved (recorded before sign-off actions were matched to the decision): "
               "treatment may go ahead as screened.",
    "decline": "Declined: treatment must not go ahead.",
}

# Review statuses: the latest sign-off's action, in the past tense.
REVIEW_STATUSES = ("pending",) + tuple(BY_NAME[n].status for n in ACTION_NAMES) + ("not_required",)
STATUS_OF_ACTION = {a.name: a.status for a in BY_NAME.values()}


def actions_for(decision: str) -> tuple[Action, ...]:
    return ACTIONS.get(decision, ())


def action(name: str) -> Action | None:
    return BY_NAME.get(name)


def status_of(outcome: str) -> str:
    """The review status a recorded outcome (old or new) gives its decision."""
    return STATUS_OF_ACTION.get(outcome, "declined" if outcome == "decline" else "approved")


def meaning_of(outcome: str, decision: str, recorded: str | None = None) -> str:
    """What a recorded sign-off meant: the sentence recorded with it, or for old records the
    meaning they had then."""
    if recorded:
        return recorded
    if outcome == "approve" and decision != "eligible":
        return LEGACY["approve"]
    found = BY_NAME.get(outcome)
    return found.meaning if found else LEGACY.get(outcome, outcome)


def treatment_of(outcome: str) -> str:
    found = BY_NAME.get(outcome)
    if found:
        return found.treatment
    return MUST_NOT_PROCEED if outcome == "decline" else MAY_PROCEED


def excluding_rules(body: Mapping[str, Any]) -> list[str]:
    """Rule ids of the reasons that exclude treatment: what an override must name."""
    return list(dict.fromkeys(r["rule_id"] for r in body.get("reasons", []) if r.get("effect") == "exclude"))


@dataclass(frozen=True)
class SignOff:
    """A sign-off as asked for, checked against the decision by ``check``."""
    action: str
    note: str = ""
    overridden_rules: tuple[str, ...] = ()
    answers: Mapping[str, Any] | None = None  # path -> value, for re-screening


def check(decision: str, body: Mapping[str, Any], review_required: bool,
          request: SignOff) -> dict[str, str]:
    """Every problem with this sign-off on this decision, by field: {} when it may be recorded.
    The fields are the API's (action, note, overridden_rules, answers); the page uses the same."""
    errors: dict[str, str] = {}
    if not review_required:
        return {"decision": "This decision does not require a physician's sign-off."}
    offered = actions_for(decision)
    chosen = next((a for a in offered if a.name == request.action), None)
    if chosen is None:
        names = " or ".join(f"{a.name} ({a.label.lower()})" for a in offered)
        errors["action"] = f"Choose {names}: these are the sign-offs for a decision that is {decision}."
        return errors
    note = request.note
    if "\x00" in note:
        errors["note"] = "The note must not contain NUL characters."
    elif len(note) > MAX_NOTE_CHARS:
        errors["note"] = f"The note is {len(note)} characters; the limit is {MAX_NOTE_CHARS}."
    elif chosen.note_required and not note.strip():
        errors["note"] = f"A note is required to {chosen.name}: {chosen.note_prompt[len('Required: '):]}"
    if chosen is OVERRIDE:
        excluding = excluding_rules(body)
        named = list(request.overridden_rules)
        unknown = [r for r in named if r not in excluding]
        left = [r for r in excluding if r not in named]
        if unknown:
            errors["overridden_rules"] = (f"Not a rule that excludes this decision: {', '.join(unknown)} "
                                          f"(excluding: {', '.join(excluding)}).")
        elif left:
            errors["overridden_rules"] = ("Name every rule you override; treatment stays excluded by "
                                          f"{', '.join(left)} otherwise.")
    elif request.overridden_rules:
        errors["overridden_rules"] = "Only an override names rules."
    if chosen is RESCREEN:
        missing = set(body.get("missing", []))
        answers = dict(request.answers or {})
        if not answers:
            errors["answers"] = "Give at least one of the missing answers to re-screen."
        elif len(answers) > MAX_ANSWERS:
            errors["answers"] = f"At most {MAX_ANSWERS} answers."
        else:
            extra = sorted(p for p in answers if p not in missing)
            if extra:
                errors["answers"] = ("Only the missing data can be added here, not "
                                     f"{', '.join(extra)}; screen a corrected intake for anything else.")
    elif request.answers:
        errors["answers"] = "Only a re-screen adds answers."
    return errors


def names(actions: Iterable[Action]) -> list[str]:
    return [a.name for a in actions]


def _parse_path(path: str) -> list[str | int] | None:
    """``vitals.systolic_bp`` -> ['vitals', 'systolic_bp']; ``substance_use[0].last_use`` ->
    ['substance_use', 0, 'last_use']; None when it is not a path."""
    parts: list[str | int] = []
    for piece in path.split("."):
        name, _, rest = piece.partition("[")
        if not name:
            return None
        parts.append(name)
        while rest:
            index, close, rest = rest.partition("]")
            if not close or not index.isdigit() or (rest and not rest.startswith("[")):
                return None
            parts.append(int(index))
            rest = rest[1:]
    return parts


def with_answers(intake: Mapping[str, Any], answers: Mapping[str, Any]) -> dict:
    """A copy of the intake with each answer set at its path (objects made as needed).
    ValueError naming a path that cannot be set."""
    import copy

    out = copy.deepcopy(dict(intake))
    for path, value in answers.items():
        parts = _parse_path(path)
        if not parts:
            raise ValueError(path)
        node: Any = out
        for part, following in zip(parts, parts[1:]):
            if isinstance(part, int):
                if not isinstance(node, list) or part >= len(node):
                    raise ValueError(path)
                node = node[part]
            else:
                if not isinstance(node, dict):
                    raise ValueError(path)
                node = node.setdefault(part, [] if isinstance(following, int) else {})
        last = parts[-1]
        if isinstance(last, int) or not isinstance(node, dict):
            raise ValueError(path)
        node[last] = value
    return out
