"""The impact of a rule change: which real decisions a candidate ruleset would change.

Both rulesets screen the same intakes through the same screen(); the report counts the
decisions that change, in which direction, which rules cause each change, and lists every case:
those whose decision changes and those that keep it with different reasons. It also says what
the change means for integrators (the field catalog's contract changes and the JSON Schema
difference) and warns when the pack changed under an unchanged version.

Without intakes of one's own, the corpus is the rule tests of both packs (``corpus_from_tests``):
synthetic intakes that, by the coverage rule, fire and spare every rule, so a diff means
something on day one and covers a new rule's own cases.
"""
from __future__ import annotations

import datetime as dt
import html
import re
import shutil
import subprocess  # nosec B404 - git with fixed arguments; each call is marked where it stands
import tarfile
import tempfile
from collections import Counter, defaultdict
from contextlib import contextmanager
from dataclasses import dataclass, field
from io import BytesIO
from pathlib import Path
from typing import Callable, Iterable, Iterator

from marshmallow import ValidationError

from service.decision import Decision
from service.errors import ServiceError
from service.intake_reader import Limits, read_json
from service.ruleset import Ruleset
from service.screening import screen

# From most to least permissive: a change "down" this list restricts a patient.
OUTCOMES = ("eligible", "eligible+review", "incomplete", "ineligible")


def outcome_label(decision: Decision) -> str:
    if decision.decision == "eligible":
        return "eligible+review" if decision.physician_review_required else "eligible"
    return decision.decision


@dataclass
class ChangedCase:
    ref: str
    subject_id: str
    before: str
    after: str
    added: list[str]
    removed: list[str]


@dataclass
class ImpactReport:
    current: dict
    candidate: dict
    total: int = 0
    invalid: int = 0
    transitions: Counter = field(default_factory=Counter)
    causes: dict = field(default_factory=lambda: defaultdict(Counter))
    cases: list[ChangedCase] = field(default_factory=list)
    reasons_changed: int = 0
    # (reference, which side) for intakes one contract accepts and the other refuses
    contract_changed: list = field(default_factory=list)
    # cases that keep their decision with different reasons
    reason_cases: list[ChangedCase] = field(default_factory=list)
    # the field catalog's changes (service.policy.contract) and the JSON Schema difference
    contract: list = field(default_factory=list)
    schema_diff: str = ""
    warnings: list[str] = field(default_factory=list)

    @property
    def changed(self) -> int:
        return sum(self.transitions.values())

    def direction(self, before: str, after: str) -> str:
        b, a = OUTCOMES.index(before), OUTCOMES.index(after)
        return "more restrictive" if a > b else "more permissive"


def read_jsonl(path: Path, limits: Limits) -> Iterator[tuple[str, dict | None]]:
    """(reference, raw intake or None if the line is not an acceptable JSON object), streaming.
    Lines are read as strictly as an HTTP body or a batch line (the same limits)."""
    with open(path, "rb") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                value = read_json(line, limits)
            except ServiceError:
                value = None
            yield f"line {number}", value


def compare(current: Ruleset, candidate: Ruleset, intakes: Iterable[tuple[str, dict | None]],
            as_of: dt.datetime | None = None, progress: Callable[[], None] | None = None) -> ImpactReport:
    as_of = as_of or dt.datetime.now(dt.timezone.utc)
    report = ImpactReport(current.summary, candidate.summary)
    for ref, raw in intakes:
        if progress:
            progress()
        report.total += 1
        # Each ruleset reads the intake with its own field catalog: a field the candidate adds
        # is unknown to the current contract, a field it removes is refused by the candidate.
        old, new = _valid(current, raw), _valid(candidate, raw)
        if old is None or new is None:
            report.invalid += 1
            if (old is None) != (new is None):
                report.contract_changed.append((ref, "valid only under the candidate" if old is None
                                                else "valid only under the current rules"))
            continue
        intake = new
        before = screen(old, current, as_of=as_of, decision_id="-")
        after = screen(new, candidate, as_of=as_of, decision_id="-")
        b_ids, a_ids = before.reason_ids, after.reason_ids
        added = [r for r in a_ids if r not in b_ids]
        removed = [r for r in b_ids if r not in a_ids]
        b_label, a_label = outcome_label(before), outcome_label(after)
        if b_label != a_label:
            report.transitions[(b_label, a_label)] += 1
            for rule_id in added + removed:
                report.causes[(b_label, a_label)][rule_id] += 1
            report.cases.append(ChangedCase(ref, intake.get("subject_id", ""), b_label, a_label, added, removed))
        elif added or removed:
            report.reasons_changed += 1
            report.reason_cases.append(ChangedCase(ref, intake.get("subject_id", ""), b_label, a_label, added, removed))
    _describe_change(report, current, candidate)
    return report


def _describe_change(report: ImpactReport, current: Ruleset, candidate: Ruleset) -> None:
    from service.policy.contract import classify, json_schema_diff

    old, new = current.pack, candidate.pack
    if old.catalog.digest != new.catalog.digest:
        report.contract = classify(old.catalog, new.catalog)
        report.schema_diff = json_schema_diff(old.catalog, new.catalog)
    report.warnings.extend(change_warnings(old, new, report.contract))


def change_warnings(old, new, contract: list) -> list[str]:
    """What an editor must fix before shipping: a changed pack under the same version, and a
    breaking contract change without a new version."""
    from service.policy.contract import breaking

    out = []
    if old.digest != new.digest and old.version == new.version:
        out.append(f"the pack changed but its version is still {new.version}: bump `version` in pack.yaml "
                   "(a running service refuses the change until you do)")
        if breaking(contract):
            out.append("the field catalog changes the intake contract in a breaking way "
                       f"({len(breaking(contract))} change(s)): integrators need a new version to know")
    return out


def corpus_from_tests(*rulesets: Ruleset) -> Iterator[tuple[str, dict | None]]:
    """The rule tests' intakes of every given pack, once each (the current pack's and the
    candidate's: a new rule brings its own cases, a removed one keeps its own)."""
    import json

    seen: set[str] = set()
    for ruleset in rulesets:
        for case in ruleset.pack.tests:
            key = json.dumps(case.intake, sort_keys=True, default=str)
            if key in seen:
                continue
            seen.add(key)
            yield f"{case.location.file.rsplit('/', 1)[-1]}: {case.name}", case.intake


def _valid(ruleset: Ruleset, raw: dict | None) -> dict | None:
    if raw is None:
        return None
    try:
        return ruleset.intake_schema.load(raw)
    except ValidationError:
        return None


# A revision as people write them (HEAD~2, main^, v1.4, origin/main, a sha, HEAD@{1}); never
# one that starts with "-", which git would take as an option (--output=FILE truncates a file).
_REVISION = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._/~^@{}-]{0,199}")


@contextmanager
def checked_out(revision: str, pack_dir: Path) -> Iterator[Path]:
    """The pack as it is at a git revision, in a temporary directory removed on leaving the
    block (whether the comparison succeeded or not). Raises ValueError for a revision git does
    not know or cannot read the pack at."""
    parent = Path(tempfile.mkdtemp(prefix="rules-rev-"))
    try:
        yield checkout_revision(revision, pack_dir, parent)
    finally:
        shutil.rmtree(parent, ignore_errors=True)


def checkout_revision(revision: str, pack_dir: Path, into: Path) -> Path:
    """The pack as it is at a git revision, extracted under ``into`` (which the caller removes:
    use ``checked_out``)."""
    if not _REVISION.fullmatch(revision) or ".." in revision:
        raise ValueError(f"not a git revision: {revision!r} (a commit, branch, tag or HEAD~n)")
    pack_dir = pack_dir.resolve()
    top = subprocess.run(["git", "rev-parse", "--show-toplevel"], cwd=pack_dir, capture_output=True,  # nosec B603 B607
                         text=True, check=True).stdout.strip()
    relative = pack_dir.relative_to(top)
    # Resolved to a commit id first, with the revision after --end-of-options; then `--` ends
    # git archive's options, so nothing the user typed is ever read as one.
    resolved = subprocess.run(["git", "rev-parse", "--verify", "--quiet", "--end-of-options",  # nosec B603 B607
                               f"{revision}^{{commit}}"], cwd=top, capture_output=True, text=True, check=False)
    commit = resolved.stdout.strip()
    if resolved.returncode != 0 or not re.fullmatch(r"[0-9a-f]{40,64}", commit):
        raise ValueError(f"git knows no commit {revision!r}")
    archive = subprocess.run(["git", "archive", "--format=tar", "--", commit, str(relative)], cwd=top,  # nosec B603 B607
                             capture_output=True, check=False)
    if archive.returncode != 0:
        raise ValueError(f"git cannot read {relative} at {revision}: {archive.stderr.decode().strip()}")
    with tarfile.open(fileobj=BytesIO(archive.stdout)) as tar:
        tar.extractall(into, filter="data")
    return into / relative


# --- rendering ------------------------------------------------------------------------------

def _rows(report: ImpactReport) -> list[tuple[str, str, int, str, str]]:
    rows = []
    for (before, after), count in sorted(report.transitions.items(), key=lambda kv: -kv[1]):
        causes = ", ".join(f"{rule} ({n})" for rule, n in report.causes[(before, after)].most_common())
        rows.append((before, after, count, report.direction(before, after), causes))
    return rows


def _header(report: ImpactReport) -> list[str]:
    c, k = report.current, report.candidate
    return [
        f"current:   {c['name']} {c['version']} {c['digest']}",
        f"candidate: {k['name']} {k['version']} {k['digest']}",
        f"intakes: {report.total} screened, {report.invalid} invalid, {report.changed} decisions change, "
        f"{report.reasons_changed} keep their decision with different reasons",
    ] + [f"WARNING: {w}" for w in report.warnings]


def _case_line(case: ChangedCase) -> str:
    moved = f"{case.before} -> {case.after}" if case.before != case.after else f"{case.before} (same decision)"
    who = f"{case.subject_id} [{case.ref}]" if case.subject_id else case.ref
    return (f"  {who}: {moved}"
            f"{'  +' + ','.join(case.added) if case.added else ''}{'  -' + ','.join(case.removed) if case.removed else ''}")


def _contract_lines(report: ImpactReport) -> list[str]:
    if not report.contract and not report.contract_changed:
        return []
    lines = ["", "Intake contract (fields.yaml):"]
    lines += [f"  {c}" for c in report.contract] or ["  no change"]
    lines += [f"  {ref}: {side}" for ref, side in report.contract_changed]
    if report.schema_diff:
        lines += ["", "JSON Schema difference (schemas/json/intake.schema.json):", report.schema_diff]
    return lines


def _case_block(title: str, cases: list[ChangedCase], max_cases: int) -> list[str]:
    lines = [title] + [_case_line(case) for case in cases[:max_cases]]
    if len(cases) > max_cases:
        lines.append(f"  … and {len(cases) - max_cases} more (use --format markdown or html for all)")
    return lines


def render_text(report: ImpactReport, max_cases: int = 50) -> str:
    lines = _header(report) + [""]
    rows = _rows(report)
    if not rows:
        lines.append("No decision changes.")
    else:
        widths = [max(len(str(r[i])) for r in rows + [("from", "to", "count", "direction", "rules")]) for i in range(4)]
        head = ("from", "to", "count", "direction", "caused by")
        lines.append("  ".join(str(h).ljust(widths[i]) if i < 4 else h for i, h in enumerate(head)))
        for row in rows:
            lines.append("  ".join(str(v).ljust(widths[i]) if i < 4 else str(v) for i, v in enumerate(row)))
        lines += ["", *_case_block("Cases whose decision changes:", report.cases, max_cases)]
    if report.reason_cases:
        lines += ["", *_case_block("Cases that keep their decision with different reasons:", report.reason_cases, max_cases)]
    lines += _contract_lines(report)
    return "\n".join(lines)


def render_markdown(report: ImpactReport) -> str:
    out = ["# Impact of the rule change", ""] + [f"- {line}" for line in _header(report)] + [""]
    out += ["| from | to | decisions | direction | caused by |", "|---|---|---:|---|---|"]
    out += [f"| {b} | {a} | {n} | {d} | {c} |" for b, a, n, d, c in _rows(report)] or ["| — | — | 0 | — | — |"]
    out += ["", "## Cases", "", "| subject | case | from | to | reasons added | reasons removed |",
            "|---|---|---|---|---|---|"]
    out += [f"| {c.subject_id} | {c.ref} | {c.before} | {c.after} | {', '.join(c.added)} | {', '.join(c.removed)} |"
            for c in report.cases]
    out += ["", "## Same decision, different reasons", "",
            "| subject | case | decision | reasons added | reasons removed |", "|---|---|---|---|---|"]
    out += [f"| {c.subject_id} | {c.ref} | {c.before} | {', '.join(c.added)} | {', '.join(c.removed)} |"
            for c in report.reason_cases]
    if report.contract or report.contract_changed:
        out += ["", "## Intake contract (fields.yaml)", ""]
        out += [f"- **{c.kind}** `{c.path}`: {c.message}" for c in report.contract]
        out += [f"- {ref}: {side}" for ref, side in report.contract_changed]
        if report.schema_diff:
            out += ["", "```diff", report.schema_diff, "```"]
    return "\n".join(out) + "\n"


def render_html(report: ImpactReport) -> str:
    e = html.escape
    head = "".join(f"<li>{e(line)}</li>" for line in _header(report))
    rows = "".join(f"<tr><td>{e(b)}</td><td>{e(a)}</td><td>{n}</td><td>{e(d)}</td><td>{e(c)}</td></tr>"
                   for b, a, n, d, c in _rows(report)) or '<tr><td colspan="5">No decision changes.</td></tr>'
    cases = "".join(f"<tr><td>{e(c.subject_id or c.ref)}</td><td>{e(c.before)}</td><td>{e(c.after)}</td>"
                    f"<td>{e(', '.join(c.added))}</td><td>{e(', '.join(c.removed))}</td></tr>"
                    for c in report.cases + report.reason_cases)
    contract = "".join(f"<li><strong>{e(c.kind)}</strong> <code>{e(c.path)}</code>: {e(c.message)}</li>"
                       for c in report.contract)
    if report.schema_diff:
        contract += f"<li><pre>{e(report.schema_diff)}</pre></li>"
    return (
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Impact of the rule change</title>"
        "<style>body{font-family:system-ui,sans-serif;max-width:70rem;margin:1rem auto;padding:0 1rem;color:#111}"
        "table{border-collapse:collapse;width:100%}th,td{border:1px solid #777;padding:.3rem .5rem;text-align:left}"
        "th{background:#e8e8e8}</style></head><body><main><h1>Impact of the rule change</h1>"
        f"<ul>{head}</ul><h2>Changes</h2><table><thead><tr><th scope=\"col\">From</th><th scope=\"col\">To</th>"
        "<th scope=\"col\">Decisions</th><th scope=\"col\">Direction</th><th scope=\"col\">Caused by</th></tr></thead>"
        f"<tbody>{rows}</tbody></table><h2>Cases</h2><table><thead><tr><th scope=\"col\">Subject</th>"
        "<th scope=\"col\">From</th><th scope=\"col\">To</th><th scope=\"col\">Reasons added</th>"
        f"<th scope=\"col\">Reasons removed</th></tr></thead><tbody>{cases}</tbody></table>"
        f"<h2>Intake contract</h2><ul>{contract or '<li>no change</li>'}</ul></main></body></html>\n"
    )
