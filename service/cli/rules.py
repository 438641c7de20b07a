"""``screening rules lint|test|show|diff``: the policy editors' tools.

Exit codes of ``rules lint``/``rules test``: 0 clean, 1 problems or failures; 78 a pack that
does not load.
"""
from __future__ import annotations

import json
import subprocess  # nosec B404 - only its exception type, for git failures
import sys
from contextlib import ExitStack
from pathlib import Path

import click

from service.cli import common
from service.cli.common import as_of_option, rules_option


@click.group("rules")
def rules() -> None:
    """Tools for policy editors: lint, test, show, diff."""


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
    for path in paths or (common.rules_dir(None),):
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
        warnings = sum(p.level == "warning" for p in all_problems)
        notes = sum(p.level == "note" for p in all_problems)
        click.echo(f"{errors} error(s), {warnings} warning(s), {notes} note(s)", err=True)
    failing = [p for p in all_problems if p.level == "error" or (strict and p.level == "warning")]
    raise SystemExit(1 if failing else 0)


def _lint_against(pack, path: Path, revision: str) -> list:
    """The pack compared with itself at a git revision; nothing when there is no such revision."""
    from service.policy.contract import lint_against
    from service.policy.impact import checked_out
    from service.policy.loader import read_pack

    try:
        with checked_out(revision, path) as old_dir:
            old, _problems = read_pack(old_dir)
    except (ValueError, OSError, subprocess.CalledProcessError):
        return []
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
    for path in paths or (common.rules_dir(None),):
        ruleset = common.load_or_exit(path)
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
    from service.ruleset_description import describe

    info = describe(common.load_or_exit(rules_dir))
    if as_json:
        click.echo(json.dumps(info, indent=2))
        return
    click.echo(f"{info['name']} {info['version']}  {info['digest']}  ({len(info['rules'])} rules, engine {info['engine']})")
    for r in info["rules"]:
        kind = r["effect"] or f"finding:{r['concludes']}"
        click.echo(f"  {r['rule_id']:<40} {kind:<28} {r['citation']}")


@rules.command("basis")
@click.option("-o", "--output", type=click.Path(path_type=Path), default=None,
              help="Write here (default: print). The shipped pack's file is docs/clinical-basis.md.")
@click.option("--check", is_flag=True, help="Exit 1 if --output is not what the pack generates.")
@rules_option
def rules_basis(output: Path | None, check: bool, rules_dir: Path | None) -> None:
    """The clinical basis of every rule (rule, source, section, label/guideline/software default)."""
    from service.policy.basis import render

    text = render(common.load_or_exit(rules_dir).pack)
    if output is None:
        click.echo(text, nl=False)
        return
    if check:
        current = output.read_text(encoding="utf-8") if output.exists() else ""
        if current != text:
            click.echo(f"{output} is out of date: run `screening rules basis -o {output}`", err=True)
            raise SystemExit(1)
        click.echo(f"{output} is up to date", err=True)
        return
    output.write_text(text, encoding="utf-8")
    click.echo(f"wrote {output}", err=True)


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
@as_of_option("Evaluate as on this date (UTC); default: the pack's test date for the rule tests, else now.")
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

    from service.intake_reader import Limits
    from service.policy import impact

    if from_log and intakes:
        raise click.UsageError("give the intakes as --intakes FILE.jsonl or --from-log, not both")
    candidate_dir = candidate_dir or pack_dir or common.rules_dir(None)
    against = against or current_rev
    # Packs checked out of git live in temporary directories removed when the packs are loaded.
    with ExitStack() as checkouts:
        try:
            if candidate_rev:
                candidate_dir = checkouts.enter_context(impact.checked_out(candidate_rev, candidate_dir))
            if against:
                base_dir = checkouts.enter_context(impact.checked_out(against, current_dir or candidate_dir))
            elif current_dir:
                base_dir = current_dir
            else:
                base_dir = checkouts.enter_context(impact.checked_out("HEAD", candidate_dir))
        except (ValueError, OSError, subprocess.CalledProcessError) as exc:
            raise click.ClickException(f"{exc}; give the pack to compare with as --current DIR") from None
        current, candidate = common.load_or_exit(base_dir), common.load_or_exit(candidate_dir)
    when = as_of
    if intakes:
        source = impact.read_jsonl(intakes, Limits.of(common.settings()))
    elif from_log:
        from service.store.factory import open_store

        store = open_store(common.settings().store_url, required=True)
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
