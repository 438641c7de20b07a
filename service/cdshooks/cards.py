"""A screening decision rendered as a CDS Hooks card.

One decision, one card: `critical` when ineligible, `warning` when a physician must review (an
incomplete screening included), `info` for a clean eligible. The card's uuid is the decision id,
so feedback on the card finds the decision it refers to without another table.
"""
from __future__ import annotations

from typing import Any

from service.decision import ELIGIBLE, INCOMPLETE, INELIGIBLE, Decision

SUMMARY_LIMIT = 139  # the spec: a summary under 140 characters
EXTENSION_KEY = "org.ketamine-screening.decision"
TOPIC_SYSTEM = "urn:ketamine-screening:cds-topics"
OVERRIDE_SYSTEM = "urn:ketamine-screening:override-reasons"

OVERRIDE_REASONS = [
    {"system": OVERRIDE_SYSTEM, "code": "physician-reviewed", "display": "Reviewed by the treating physician; benefits outweigh risks"},
    {"system": OVERRIDE_SYSTEM, "code": "record-outdated", "display": "The record is out of date; the finding no longer applies"},
    {"system": OVERRIDE_SYSTEM, "code": "data-will-be-collected", "display": "Missing data will be collected before the first dose"},
    {"system": OVERRIDE_SYSTEM, "code": "monitoring-arranged", "display": "Additional monitoring arranged"},
]

_DRUG = {"iv_ketamine": "IV ketamine", "esketamine_nasal": "Esketamine nasal spray"}


def indicator(decision: Decision, assumed: int = 0) -> str:
    """critical: ineligible; warning: review required, or answers assumed from the record's
    silence that the clinician must confirm; info: eligible on what the record states."""
    if decision.decision == INELIGIBLE:
        return "critical"
    if decision.physician_review_required or assumed:
        return "warning"
    return "info"


def _clip(text: str) -> str:
    return text if len(text) <= SUMMARY_LIMIT else text[: SUMMARY_LIMIT - 1].rstrip() + "…"


def prune_empty(value: Any) -> Any:
    """The value without null, empty-string, empty-list and empty-object elements, at any depth:
    CDS Hooks (like FHIR JSON) forbids them in a response."""
    if isinstance(value, dict):
        out = {k: prune_empty(v) for k, v in value.items()}
        return {k: v for k, v in out.items() if not _empty(v)}
    if isinstance(value, (list, tuple)):
        out = [prune_empty(v) for v in value]
        return [v for v in out if not _empty(v)]
    return value


def _empty(value: Any) -> bool:
    return value is None or (isinstance(value, (str, list, dict)) and len(value) == 0)


def summary(decision: Decision, route: str, assumed: int = 0) -> str:
    drug = _DRUG.get(route, "Ketamine")
    if decision.decision == INELIGIBLE:
        excluded = [r.title for r in decision.reasons if r.effect == "exclude"]
        more = f" (+{len(excluded) - 1} more)" if len(excluded) > 1 else ""
        return _clip(f"{drug}: not eligible — {excluded[0]}{more}")
    if decision.decision == INCOMPLETE:
        return _clip(f"{drug}: screening incomplete — missing {', '.join(decision.missing)}")
    confirm = f"; confirm {assumed} answer{'s' if assumed != 1 else ''} assumed from the record" if assumed else ""
    if decision.physician_review_required:
        n = len(decision.reasons)
        return _clip(f"{drug}: eligible, physician review required ({n} finding{'s' if n != 1 else ''}){confirm}")
    return _clip(f"{drug}: eligible — no contraindication found{confirm}")


def _evidence_text(evidence: dict, sources: dict[str, list[str]]) -> str:
    parts = []
    for path, value in evidence.items():
        shown = "yes" if value is True else "no" if value is False else value
        origin = sources.get(_field_of(path))
        if origin and path != _field_of(path):  # an item of a list: its own record
            index = int(path.split("[", 1)[1].split("]", 1)[0])
            origin = origin[index:index + 1] if index < len(origin) else origin[:1]
        parts.append(f"`{path}` = {shown}" + (f" (from {'; '.join(origin[:2])})" if origin else ""))
    return ", ".join(parts) or "—"


def _field_of(path: str) -> str:
    """substance_use[0].status -> substance_use (provenance is kept per field, lists whole)."""
    return path.split("[", 1)[0]


def detail(decision: Decision, sources: dict[str, list[str]], notes: list[str],
           assumptions: list[str] | None = None, warnings: list[str] | None = None,
           not_from_ehr: dict[str, str] | None = None) -> str:
    """The card's markdown. ``not_from_ehr``: missing paths no FHIR mapping can fill -> the
    question to ask (the catalog's words); the other missing paths the record could have held."""
    ask = not_from_ehr or {}
    lines = [f"**Decision: {decision.decision}**"
             + (" — physician review required" if decision.physician_review_required else "")
             + (" — **urgent**" if decision.urgent else "")]
    if decision.reasons:
        lines.append("")
        lines.append("| # | Effect | Rule | Reason | Evidence | Citation |")
        lines.append("|---|---|---|---|---|---|")
        for i, r in enumerate(decision.reasons, 1):
            lines.append(" | ".join([
                f"| {i}", r.effect, f"`{r.rule_id}`", _cell(r.message),
                _cell(_evidence_text(r.evidence, sources)), _cell(r.citation or "—") + " |",
            ]))
    in_record = [p for p in decision.missing if p not in ask]
    if in_record:
        lines.append("")
        lines.append("**Missing from the record** (the rules that need these could not be decided):")
        for path in in_record:
            lines.append(f"- `{path}`")
    if ask:
        lines.append("")
        lines.append("**Not available from the EHR — ask** (no FHIR mapping of this service answers these; "
                     "the rules that need them could not be decided):")
        for path, question in ask.items():
            lines.append(f"- `{path}`: {_cell(question)}")
    inferred = [p for p in assumptions or [] if _inferred(p, sources)]
    silent = [p for p in assumptions or [] if p not in inferred]
    if silent:
        lines.append("")
        lines.append("**Assumed from the record's silence — confirm with the patient** (no coded record "
                     "says otherwise; these answers were not stated):")
        lines.extend(_assumption_lines(silent))
    if inferred:
        lines.append("")
        lines.append("**Inferred from the record — confirm with the patient** (no record states these answers):")
        for path in inferred:
            lines.append(f"- `{path}`: " + _cell(sources[path][0].removeprefix(INFERRED)))
    if warnings:
        lines.append("")
        lines.append("**Could not be read from the record:**")
        lines.extend(f"- {_cell(w)}" for w in warnings[:10])
    if notes:
        lines.append("")
        lines.extend(f"_Note: {n}_" for n in notes)
    rs = decision.ruleset
    lines.append("")
    lines.append(f"Ruleset {rs.get('name', '')} {rs.get('version', '')} (digest {str(rs.get('digest', '')).split(':')[-1][:12]}); "
                 f"decision `{decision.decision_id}`.")
    return "\n".join(lines)


# The source of an answer the mapping inferred rather than read (a negative pregnancy test as
# "not pregnant") starts with this: the card shows such answers apart from silence's.
INFERRED = "inferred: "


def _inferred(path: str, sources: dict[str, list[str]]) -> bool:
    return any(str(s).startswith(INFERRED) for s in sources.get(path) or [])


def _assumption_lines(assumptions: list[str]) -> list[str]:
    """One line per list whose silence was read: the problem list, the allergy list, the
    medication list."""
    diagnoses = [p.split(".", 1)[1].replace("_", " ") for p in assumptions
                 if p.startswith(("psychiatric_history.", "medical_history."))]
    allergies = [p.split(".", 1)[1] for p in assumptions if p.startswith("allergies.")]
    lines = []
    if diagnoses:
        lines.append(f"- Not on the problem list, so taken as absent: {', '.join(diagnoses)}")
    if "substance_use" in assumptions:
        lines.append("- No substance use disorder on the problem list: taken as none")
    if allergies:
        lines.append(f"- Not on the allergy list: no {' or '.join(allergies)} allergy")
    if "medications" in assumptions:
        lines.append("- No active medication on the medication list: taken as none")
    return lines


def _cell(text: str) -> str:
    # A table cell cannot hold a pipe or a line break in GitHub Flavored Markdown.
    return str(text).replace("|", "\\|").replace("\n", " ")


def decision_card(decision: Decision, *, route: str, sources: dict[str, list[str]], notes: list[str],
                  decision_url: str | None, assumptions: list[str] | None = None,
                  warnings: list[str] | None = None, not_from_ehr: dict[str, str] | None = None) -> dict:
    rs = decision.ruleset
    assumed = len(assumptions or [])
    card: dict = {
        "uuid": decision.decision_id,
        "summary": summary(decision, route, assumed),
        "indicator": indicator(decision, assumed),
        "detail": detail(decision, sources, notes, assumptions, warnings, not_from_ehr),
        "source": {
            "label": f"Ketamine screening rules {rs.get('name', '')} v{rs.get('version', '')}".strip(),
            "topic": {"system": TOPIC_SYSTEM, "code": "ketamine-eligibility",
                      "display": "Ketamine / esketamine eligibility screening"},
        },
    }
    if decision.decision != ELIGIBLE or decision.physician_review_required or assumed:
        card["overrideReasons"] = list(OVERRIDE_REASONS)
    if decision_url:
        card["links"] = [{"label": "Open the screening decision for review", "url": decision_url, "type": "absolute"}]
    extension = decision.to_dict()
    if assumptions:
        extension["assumed"] = list(assumptions)
    if warnings:
        extension["warnings"] = list(warnings)
    if not_from_ehr:
        extension["not_from_ehr"] = list(not_from_ehr)
    card["extension"] = {EXTENSION_KEY: extension}
    return prune_empty(card)


def unidentified_orders_card(orders: list[str], *, label: str) -> dict:
    """Draft medication orders named only by a code this service does not know: if one of them
    is ketamine or esketamine it was not screened, and the clinician is told so."""
    items = "\n".join(f"- {o}" for o in orders[:10])
    return {
        "summary": _clip("Ketamine screening: a draft order could not be identified — not screened"),
        "indicator": "info",
        "detail": "These draft medication orders carry no drug name and a code this service does not "
                  f"recognise:\n\n{items}\n\nIf one is ketamine or esketamine, it was **not** screened.",
        "source": {"label": label,
                   "topic": {"system": TOPIC_SYSTEM, "code": "ketamine-eligibility",
                             "display": "Ketamine / esketamine eligibility screening"}},
    }


def unscreenable_card(problems: list[dict], *, route: str, label: str) -> dict:
    """The record holds values the intake contract refuses (e.g. a systolic of 320): no decision
    can be made, and the clinician is told which values to check."""
    items = "\n".join(f"- `{p['path']}`: {p['message']}" for p in problems)
    return {
        "summary": _clip(f"{_DRUG.get(route, 'Ketamine')}: could not be screened — the record holds impossible values"),
        "indicator": "warning",
        "detail": "The screening was not run because these values from the record are outside what is "
                  f"physically possible or allowed:\n\n{items}\n\nCorrect the record and re-open the order.",
        "source": {"label": label,
                   "topic": {"system": TOPIC_SYSTEM, "code": "ketamine-eligibility",
                             "display": "Ketamine / esketamine eligibility screening"}},
    }
