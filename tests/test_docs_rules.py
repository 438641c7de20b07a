"""docs/rules.md's walkthrough, "Adding a new fact, end to end", run as an editor would follow it:
its edits applied to a committed copy of the pack, its commands run, and a service that was
already running takes the new fact on reload."""
from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

from service.ruleset import default_rules_path
from tests.conftest import EXAMPLES, ROOT, bearer

DOC = ROOT / "docs" / "rules.md"
STEP = re.compile(r"<!-- walkthrough: (?P<what>[^>]*?) -->\n```(?P<lang>\w+)\n(?P<body>.*?)```", re.S)
GIT = ["git", "-c", "user.email=t@example.org", "-c", "user.name=t"]
GROUP = "  medical_history:\n    type: group\n    label: Medical history\n    fields:\n"
FIXTURE_GROUP = "    medical_history:\n"
# The last line of a `missing:` list naming every medical_history question.
EVERY_MEDICAL_QUESTION = "        - medical_history.unstable_cardiovascular_disease\n"


def steps() -> list[tuple[str, str]]:
    found = [(m.group("what"), m.group("body")) for m in STEP.finditer(DOC.read_text())]
    assert [what for what, _ in found] == [
        "fields.yaml under medical_history", "new file 92-pheochromocytoma.yaml",
        "new file 92-pheochromocytoma_test.yaml", "fixtures.yaml under every medical_history",
        "missing lists of every medical_history question", "version", "run"], found
    return found


def apply(what: str, body: str, pack: Path) -> None:
    if what == "fields.yaml under medical_history":
        text = (pack / "fields.yaml").read_text()
        assert GROUP in text
        (pack / "fields.yaml").write_text(text.replace(GROUP, GROUP + body, 1))
    elif what == "fixtures.yaml under every medical_history":
        text = (pack / "fixtures.yaml").read_text()
        assert text.count(FIXTURE_GROUP) >= 5
        (pack / "fixtures.yaml").write_text(text.replace(FIXTURE_GROUP, FIXTURE_GROUP + body))
    elif what == "missing lists of every medical_history question":
        named = ["20-vascular_test.yaml", "99-combined_test.yaml"]  # the files the doc names
        for name in named:
            text = (pack / name).read_text()
            assert EVERY_MEDICAL_QUESTION in text, name
            (pack / name).write_text(text.replace(EVERY_MEDICAL_QUESTION, EVERY_MEDICAL_QUESTION + body))
        others = [p.name for p in pack.glob("*_test.yaml") if p.name not in named and EVERY_MEDICAL_QUESTION in p.read_text()]
        assert others == [], "the doc names every file with such a list"
    elif what.startswith("new file "):
        (pack / what.removeprefix("new file ")).write_text(body)
    elif what == "version":
        text = (pack / "pack.yaml").read_text()
        old = re.search(r"^version: .*$", text, re.M).group(0)
        assert old != body.strip(), "the walkthrough's version is the shipped one: give it a newer one"
        (pack / "pack.yaml").write_text(text.replace(old, body.strip()))


def test_the_walkthrough_adds_a_fact_without_python_or_restart(tmp_path, new_app):
    repo = tmp_path / "repo"
    pack = repo / "rules" / "ketamine-screening"
    shutil.copytree(default_rules_path(), pack)
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    subprocess.run(GIT + ["-C", str(repo), "add", "."], check=True)
    subprocess.run(GIT + ["-C", str(repo), "commit", "-qm", "pack"], check=True)
    # The service is already running on the pack.
    app = new_app(rules_dir=pack)
    headers = bearer(app)
    intake = json.loads((EXAMPLES / "eligible-iv.json").read_text())
    intake["medical_history"]["pheochromocytoma"] = True
    assert app.test_client().post("/v1/screenings", json=intake, headers=headers).status_code == 422

    outputs = {}
    env = {**os.environ, "SCREENING_RULES_DIR": str(pack), "PYTHONPATH": str(ROOT),
           "SCREENING_STATE_DIR": str(tmp_path / "cli-state"), "DATABASE_URL": f"sqlite:///{tmp_path / 'cli.sqlite3'}"}
    for what, body in steps():
        if what != "run":
            apply(what, body, pack)
            continue
        for line in body.strip().splitlines():
            argv = shlex.split(line)
            assert argv[0] == "screening"
            if argv[1:3] == ["schemas", "export"]:
                argv += ["--out", str(tmp_path / "json")]  # not the checkout's published files
            done = subprocess.run([sys.executable, "-m", "service.cli", *argv[1:]], cwd=repo, env=env,
                                  capture_output=True, text=True, timeout=300)
            assert done.returncode == 0, f"{line}\n{done.stdout}\n{done.stderr}"
            outputs[" ".join(argv[1:3])] = done.stdout + done.stderr
    doc = DOC.read_text()
    assert "untreated pheochromocytoma excludes" in doc and "untreated pheochromocytoma excludes" in outputs["rules diff"]
    for claim in ("`eligible -> incomplete`", "`valid only under the\ncandidate`"):
        assert claim in doc and claim.strip("`").replace("\n", " ") in outputs["rules diff"], claim
    assert "92-pheochromocytoma_test.yaml: untreated pheochromocytoma excludes: valid only under the candidate" \
        in outputs["rules diff"]
    claim = "additive: medical_history.pheochromocytoma: added\n(optional)"
    assert claim in doc and claim.replace("\n", " ") in outputs["rules diff"]
    assert "0 error(s), 0 warning(s)" in outputs["rules lint"]
    assert "coverage: 100.0%" in outputs["rules test"]
    schema = json.loads((tmp_path / "json" / "intake.schema.json").read_text())
    assert "pheochromocytoma" in schema["$defs"]["MedicalHistory"]["properties"]

    # ... and the running service takes it on reload, without a restart.
    outcome = app.extensions["reloader"].reload()
    assert outcome.status == "loaded", outcome.problems
    response = app.test_client().post("/v1/screenings", json=intake, headers=headers)
    assert response.status_code == 200, response.get_data(as_text=True)
    assert [r["rule_id"] for r in response.get_json()["reasons"]] == ["pheochromocytoma"]
