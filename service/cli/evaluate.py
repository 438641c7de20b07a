"""``screening evaluate``: one intake at a terminal or in a script.

Exit codes (for scripts): 0 eligible without review, 10 eligible with physician review,
20 ineligible, 30 incomplete, 65 the intake is not valid, 66 the input cannot be read,
78 the rule pack is broken.
"""
from __future__ import annotations

import json
from pathlib import Path

import click

from service.cli import common
from service.cli.common import EXIT_DATAERR, EXIT_NOINPUT, as_of_option, rules_option
from service.decision import INCOMPLETE, INELIGIBLE, Decision

EXIT_ELIGIBLE, EXIT_REVIEW, EXIT_INELIGIBLE, EXIT_INCOMPLETE = 0, 10, 20, 30


@click.command("evaluate")
@click.argument("intake_file", type=click.File("rb"), default="-")
@click.option("--json", "as_json", is_flag=True, help="Print the decision as JSON.")
@click.option("--explain", is_flag=True, help="Show every rule's outcome, not only the reasons.")
@as_of_option()
@rules_option
def evaluate(intake_file, as_json: bool, explain: bool, as_of, rules_dir: Path | None) -> None:
    """Screen one intake (a JSON file, or - for standard input)."""
    from service.screening import screen

    from service.errors import ServiceError
    from service.intake_reader import Limits, read_intake

    try:
        data = intake_file.read()
    except OSError as exc:
        click.echo(f"{intake_file.name}: cannot read: {exc}", err=True)
        raise SystemExit(EXIT_NOINPUT) from None
    ruleset = common.load_or_exit(rules_dir)
    # Every channel's strict reader: the same document gets the same answer at a terminal
    # (deep nesting, NaN, duplicate keys and unpaired surrogates are refused, not a traceback),
    # validated by the pack's own field catalog.
    try:
        intake = read_intake(data, Limits.of(common.settings()), ruleset.intake_schema)
    except ServiceError as exc:
        click.echo(f"{intake_file.name}: {exc.message}", err=True)
        for error in exc.errors:
            click.echo(f"  {error['path']}: {error['message']}", err=True)
        raise SystemExit(EXIT_DATAERR) from None
    decision = screen(intake, ruleset, as_of=as_of, explain=explain)
    if as_json:
        click.echo(json.dumps(decision.to_dict(), indent=2, ensure_ascii=False))
    else:
        click.echo(format_decision(decision))
    raise SystemExit(exit_code(decision))


def exit_code(decision: Decision) -> int:
    if decision.decision == INELIGIBLE:
        return EXIT_INELIGIBLE
    if decision.decision == INCOMPLETE:
        return EXIT_INCOMPLETE
    return EXIT_REVIEW if decision.physician_review_required else EXIT_ELIGIBLE


_MARK = {"exclude": "✗", "review": "!"}


def format_decision(decision: Decision) -> str:
    review = "physician review required" if decision.physician_review_required else "no review required"
    urgent = " — URGENT" if decision.urgent else ""
    rs = decision.ruleset
    lines = [
        click.style(f"{decision.decision.upper()}", bold=True) + f" — {review}{urgent}",
        f"subject {decision.subject_id} · ruleset {rs['name']} {rs['version']} ({rs['digest'][:19]}…) · "
        f"{decision.evaluated_at.isoformat(timespec='seconds')}",
    ]
    if decision.reasons:
        lines.append("")
        lines.append("Reasons:")
        for r in decision.reasons:
            lines.append(f"  {_MARK[r.effect]} {r.rule_id} [{r.effect}, {r.severity}{', urgent' if r.priority == 'urgent' else ''}]")
            lines.append(f"      {r.message}")
            if r.evidence:
                lines.append("      values: " + ", ".join(f"{k} = {json.dumps(v)}" for k, v in r.evidence.items()))
            lines.append(f"      source: {r.citation}")
    if decision.missing:
        lines.append("")
        lines.append("Missing (needed to decide): " + ", ".join(decision.missing))
    if decision.findings:
        lines.append("")
        lines.append("Findings: " + ", ".join(f.finding for f in decision.findings))
    if decision.explanation is not None:
        lines.append("")
        lines.append("Every rule:")
        for e in decision.explanation:
            detail = ""
            if e.get("missing"):
                detail = " — missing " + ", ".join(e["missing"])
            elif e.get("comparisons"):
                detail = " — " + "; ".join(
                    f"{c['path']} {c['op']} {json.dumps(c['operand'])}: {json.dumps(c['value'])} → {'yes' if c['held'] else 'no'}"
                    for c in e["comparisons"][:6])
            lines.append(f"  {e['status']:<14} {e['rule_id']}{detail}")
    return "\n".join(lines)
