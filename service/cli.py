"""The ``screening`` command: serve, evaluate, and the policy editors' rules tools.

Exit codes of ``evaluate`` (for scripts): 0 eligible without review, 10 eligible with physician
review, 20 ineligible, 30 incomplete, 65 the intake is not valid, 66 the input cannot be read,
78 the rule pack is broken. ``rules lint``/``rules test``: 0 clean, 1 problems or failures.
"""
from __future__ import annotations

import datetime as dt
import json
import os
import subprocess  # nosec B404 - only its exception type, for git failures
import sys
from pathlib import Path

import click
from marshmallow import ValidationError

from schemas.errors import dotted, flatten_messages
from service.config import Settings
from service.decision import ELIGIBLE, INCOMPLETE, INELIGIBLE, Decision
from service.engine import EngineError
from service.policy.problems import RulePackError
from service.ruleset import Ruleset, default_rules_path, load_ruleset

EXIT_ELIGIBLE, EXIT_REVIEW, EXIT_INELIGIBLE, EXIT_INCOMPLETE = 0, 10, 20, 30
EXIT_DATAERR, EXIT_NOINPUT, EXIT_CONFIG = 65, 66, 78

rules_option = click.option(
    "--rules", "rules_dir", type=click.Path(path_type=Path), default=None,
    help="Rule pack directory (default: $SCREENING_RULES_DIR or the shipped pack).",
)


def _rules_dir(value: Path | None) -> Path:
    return value or Path(os.environ.get("SCREENING_RULES_DIR") or default_rules_path())


def _load(rules_dir: Path | None) -> Ruleset:
    try:
        return load_ruleset(_rules_dir(rules_dir), os.environ.get("SCREENING_ENGINE", "durable"))
    except RulePackError as exc:
        for problem in exc.problems:
            click.echo(str(problem), err=True)
        raise SystemExit(EXIT_CONFIG) from None
    except EngineError as exc:
        click.echo(f"engine: {exc}", err=True)
        raise SystemExit(EXIT_CONFIG) from None


@click.group()
@click.version_option(package_name="ketamine-screening")
def main() -> None:
    """Ketamine treatment screening: decisions with every reason, from declarative rules."""


@main.command()
@click.option("--bind", default=None, help="HOST:PORT to listen on (default $SCREENING_BIND or 127.0.0.1:8000).")
@click.option("--workers", type=int, default=None, help="Worker processes (default $WEB_CONCURRENCY or 2).")
def serve(bind: str | None, workers: int | None) -> None:
    """Run the HTTP service under gunicorn (production form)."""
    # Fail here, readably, rather than in every worker.
    _load(None)
    # Migrates the decision log, and on a first start prints an admin API key once.
    from service.cli_keys import ensure_first_key
    ensure_first_key()
    conf = Path(__file__).with_name("gunicorn_conf.py")
    args = [sys.executable, "-m", "gunicorn", "-c", str(conf)]
    if bind:
        args += ["--bind", bind]
    if workers:
        args += ["--workers", str(workers)]
    args.append("service.app:create_app()")
    os.execv(sys.executable, args)  # nosec B606 - this interpreter running gunicorn; no shell, arguments are ours


@main.command()
@click.argument("intake_file", type=click.File("rb"), default="-")
@click.option("--json", "as_json", is_flag=True, help="Print the decision as JSON.")
@click.option("--explain", is_flag=True, help="Show every rule's outcome, not only the reasons.")
@click.option("--as-of", type=click.DateTime(formats=["%Y-%m-%d", "%Y-%m-%dT%H:%M:%S"]), default=None,
              help="Evaluate as on this date (UTC) instead of now.")
@rules_option
def evaluate(intake_file, as_json: bool, explain: bool, as_of, rules_dir: Path | None) -> None:
    """Screen one intake (a JSON file, or - for standard input)."""
    from service.screening import screen

    from service.api.jsonbody import parse_json_bytes
    from service.api.problems import ApiError

    try:
        data = intake_file.read()
    except OSError as exc:
        click.echo(f"{intake_file.name}: cannot read: {exc}", err=True)
        raise SystemExit(EXIT_NOINPUT) from None
    # The HTTP API's strict reader: the same document gets the same answer at a terminal
    # (deep nesting, NaN, duplicate keys and unpaired surrogates are refused, not a traceback).
    settings = Settings.from_env()
    try:
        raw = parse_json_bytes(data, settings.max_body_bytes, settings.max_json_depth)
    except ApiError as exc:
        click.echo(f"{intake_file.name}: not an intake document: {exc.message}", err=True)
        for error in exc.errors:
            click.echo(f"  {error['path']}: {error['message']}", err=True)
        raise SystemExit(EXIT_DATAERR) from None
    ruleset = _load(rules_dir)
    try:
        intake = ruleset.intake_schema.load(raw)  # the pack's own field catalog
    except ValidationError as exc:
        click.echo(f"{intake_file.name}: the intake is not valid:", err=True)
        for path, message in flatten_messages(exc.messages):
            click.echo(f"  {dotted(path)}: {message}", err=True)
        raise SystemExit(EXIT_DATAERR) from None
    when = as_of.replace(tzinfo=dt.timezone.utc) if as_of else None
    decision = screen(intake, ruleset, as_of=when, explain=explain)
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


@main.group()
def rules() -> None:
    """Tools for policy editors: lint, test, show."""


@rules.command("lint")
@click.argument("paths", nargs=-1, type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Problems as JSON.")
@click.option("--strict", is_flag=True, help="Fail on warnings too.")
@click.option("--against", default="HEAD", show_default=True,
              help="Git revision to compare with: a changed pack needs a new version, a breaking change of "
                   "the intake contract an explicit one (skipped where the pack is not in git).")
def rules_lint(paths: tuple[Path, ...], as_json: bool, strict: bool, against: str) -> None:
    """Check rule packs: every problem with file, line, column and rule."""
    from service.policy.lint import lint
    from service.policy.loader import read_pack

    all_problems = []
    for path in paths or (_rules_dir(None),):
        pack, problems = read_pack(path)
        if pack is not None:
            problems = problems + lint(pack) + _lint_against(pack, Path(path), against)
        all_problems.extend(problems)
    if as_json:
        click.echo(json.dumps([p.to_dict() for p in all_problems], indent=2))
    else:
        for p in all_problems:
            click.echo(str(p), err=False)
        errors = sum(p.level == "error" for p in all_problems)
        warnings = len(all_problems) - errors
        click.echo(f"{errors} error(s), {warnings} warning(s)", err=True)
    failing = [p for p in all_problems if p.level == "error" or strict]
    raise SystemExit(1 if failing else 0)


def _lint_against(pack, path: Path, revision: str) -> list:
    """The pack compared with itself at a git revision; nothing when there is no such revision."""
    from service.policy.contract import lint_against
    from service.policy.impact import checkout_revision
    from service.policy.loader import read_pack

    try:
        old_dir = checkout_revision(revision, path)
    except (ValueError, OSError, subprocess.CalledProcessError):
        return []
    old, problems = read_pack(old_dir)
    if old is None:
        return []
    return lint_against(old, pack)


@rules.command("test")
@click.argument("paths", nargs=-1, type=click.Path(path_type=Path))
@click.option("--coverage-min", type=click.FloatRange(0, 100), default=None,
              help="Fail when coverage (rules triggered and left untriggered) is below this percentage.")
@click.option("-v", "--verbose", is_flag=True, help="List every case, not only failures.")
def rules_test(paths: tuple[Path, ...], coverage_min: float | None, verbose: bool) -> None:
    """Run the test cases that live beside the rules, and report coverage."""
    from service.policy.testing import run_tests

    failed_any = False
    for path in paths or (_rules_dir(None),):
        ruleset = _load(path)
        def progress(result):
            if verbose or not result.passed:
                mark = click.style("PASS", fg="green") if result.passed else click.style("FAIL", fg="red")
                click.echo(f"{mark} {result.case.location} {result.case.name}")
                if result.diff:
                    click.echo("\n".join("    " + line for line in result.diff.splitlines()))
        report = run_tests(ruleset, progress)
        passed = len(report.results) - len(report.failed)
        click.echo(f"{ruleset.pack.name}: {passed} passed, {len(report.failed)} failed")
        click.echo(f"coverage: {report.coverage}% ({len(report.rule_ids)} rules)")
        if report.never_triggered:
            click.echo("  never triggered: " + ", ".join(report.never_triggered))
        if report.never_untriggered:
            click.echo("  never left untriggered: " + ", ".join(report.never_untriggered))
        if report.failed or (coverage_min is not None and report.coverage < coverage_min):
            failed_any = True
            if coverage_min is not None and report.coverage < coverage_min:
                click.echo(f"coverage {report.coverage}% is below --coverage-min {coverage_min}%")
    raise SystemExit(1 if failed_any else 0)


@rules.command("show")
@click.option("--json", "as_json", is_flag=True)
@rules_option
def rules_show(as_json: bool, rules_dir: Path | None) -> None:
    """The ruleset's version, digest, rules and citations (as GET /v1/rulesets/current)."""
    from service.api.rulesets import describe

    info = describe(_load(rules_dir))
    if as_json:
        click.echo(json.dumps(info, indent=2))
        return
    click.echo(f"{info['name']} {info['version']}  {info['digest']}  ({len(info['rules'])} rules, engine {info['engine']})")
    for r in info["rules"]:
        kind = r["effect"] or f"finding:{r['concludes']}"
        click.echo(f"  {r['rule_id']:<40} {kind:<28} {r['citation']}")


@rules.command("diff")
@click.argument("pack_dir", required=False, type=click.Path(path_type=Path, exists=True, file_okay=False))
@click.option("--against", "against", default=None,
              help="Compare with the pack at this git revision (default: HEAD, i.e. your uncommitted edits).")
@click.option("--current", "current_dir", type=click.Path(path_type=Path, exists=True, file_okay=False), default=None,
              help="Or: compare with this pack directory.")
@click.option("--intakes", type=click.Path(path_type=Path, exists=True, dir_okay=False), default=None,
              help="Intakes to replay, one JSON object per line (default: the rule tests of both packs).")
@click.option("--from-log", is_flag=True, help="Replay the intakes recorded in the decision log ($DATABASE_URL).")
@click.option("--format", "fmt", type=click.Choice(["text", "markdown", "html"]), default="text")
@click.option("-o", "--output", type=click.Path(path_type=Path), default=None, help="Write the report here.")
@click.option("--as-of", type=click.DateTime(formats=["%Y-%m-%d"]), default=None,
              help="Evaluate as on this date (default: the pack's test date for the rule tests, else now).")
@click.option("--fail-on-change", is_flag=True, help="Exit 1 if any decision changes.")
# Earlier spellings, kept so that scripts keep working; the docs show one form.
@click.option("--candidate", "candidate_dir", type=click.Path(path_type=Path, exists=True, file_okay=False), hidden=True)
@click.option("--candidate-rev", default=None, hidden=True)
@click.option("--current-rev", default=None, hidden=True)
def rules_diff(pack_dir, against, current_dir, intakes, from_log, fmt, output, as_of, fail_on_change,
               candidate_dir, candidate_rev, current_rev) -> None:
    """Which decisions your edit of PACK_DIR would change, before it goes live.

    PACK_DIR (default: $SCREENING_RULES_DIR or the shipped pack) is read as it is on disk,
    uncommitted edits included, and compared with the same pack at --against (default HEAD).
    Every case whose decision or reasons change is listed, with what the field catalog's changes
    mean for integrators.
    """
    from tqdm import tqdm

    from service.policy import impact

    if from_log and intakes:
        raise click.UsageError("give the intakes as --intakes FILE.jsonl or --from-log, not both")
    candidate_dir = candidate_dir or pack_dir or _rules_dir(None)
    against = against or current_rev
    try:
        if candidate_rev:
            candidate_dir = impact.checkout_revision(candidate_rev, candidate_dir)
        if against:
            base_dir = impact.checkout_revision(against, current_dir or candidate_dir)
        elif current_dir:
            base_dir = current_dir
        else:
            base_dir = impact.checkout_revision("HEAD", candidate_dir)
    except (ValueError, OSError, subprocess.CalledProcessError) as exc:
        raise click.ClickException(f"{exc}; give the pack to compare with as --current DIR") from None
    current, candidate = _load(base_dir), _load(candidate_dir)
    when = as_of.replace(tzinfo=dt.timezone.utc) if as_of else None
    if intakes:
        source = impact.read_jsonl(intakes)
    elif from_log:
        from service.store.sql import open_store

        store = open_store(Settings.from_env().store_url)
        source = ((f"decision {ref}", intake) for ref, intake in store.iter_intakes())
    else:
        source = impact.corpus_from_tests(current, candidate)
        when = when or candidate.pack.test_as_of or current.pack.test_as_of
    bar = tqdm(desc="replaying", unit=" intakes", disable=not sys.stderr.isatty(), file=sys.stderr)
    report = impact.compare(current, candidate, source, when, progress=lambda: bar.update(1))
    bar.close()
    text = {"text": impact.render_text, "markdown": impact.render_markdown, "html": impact.render_html}[fmt](report)
    if output:
        output.write_text(text, encoding="utf-8")
        click.echo(f"{report.changed} of {report.total} decisions change; report written to {output}", err=True)
    else:
        click.echo(text)
    for warning in report.warnings:
        click.echo(f"warning: {warning}", err=True)
    raise SystemExit(1 if fail_on_change and report.changed else 0)


from service.batch import batch_command  # noqa: E402 - batch.py imports this module's helpers lazily
main.add_command(batch_command)
from service.schema_export import schemas_group  # noqa: E402 - the JSON Schema files for integrators
main.add_command(schemas_group)
from service.web.cli import users as users_group  # noqa: E402 - people who sign in to the pages
main.add_command(users_group)
from service.cli_keys import keys_group  # noqa: E402 - API keys: create, list, revoke
main.add_command(keys_group)

if __name__ == "__main__":
    main()
