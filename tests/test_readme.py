"""The README's promises: its example intakes get the decisions its table states, and its two
set-up commands are the ones CI runs."""
from __future__ import annotations

import re

from service.screening import screen
from tests.conftest import AS_OF, ROOT, example, validated

ROW = re.compile(r"^\| \[`examples/(?P<name>[a-z0-9-]+)\.json`\]\([^)]*\) \| (?P<outcome>[^|]+) \|")


def readme_rows() -> list[tuple[str, str]]:
    rows = []
    for line in (ROOT / "README.md").read_text().splitlines():
        m = ROW.match(line)
        if m:
            rows.append((m.group("name"), m.group("outcome").strip()))
    return rows


def test_readme_lists_every_example():
    names = {name for name, _ in readme_rows()}
    shipped = {p.stem for p in (ROOT / "examples").glob("*.json")}
    assert names == shipped and len(names) >= 4


def test_readme_examples_get_the_stated_decisions(ruleset):
    for name, outcome in readme_rows():
        decision = screen(validated(example(name)), ruleset, as_of=AS_OF)
        stated = re.findall(r"`(eligible|ineligible|incomplete)`", outcome)[0]
        assert decision.decision == stated, name
        if "no review" in outcome:
            assert decision.physician_review_required is False, name
        if "review required" in outcome or stated != "eligible":
            assert decision.physician_review_required is True, name


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    assert "bash scripts/test.sh" in readme
    assert "scripts/test.sh" in (ROOT / ".ci" / "run").read_text()
