"""The CI security step (scripts/test.d/90-security.sh) can fail: bandit finds what it should in
code like ours, and the dependency audit fails on a known vulnerability, passes on a clean
report, and says "not audited" (without failing) when no service answers."""
from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys

import pytest

from tests.conftest import ROOT

BANDIT = [sys.executable, "-m", "bandit", "--quiet", "--recursive", "--severity-level", "all",
          "--confidence-level", "all", "--format", "custom", "--msg-template", "{relpath}:{line}: {test_id}"]


def _audit_module():
    spec = importlib.util.spec_from_file_location("audit_dependencies", ROOT / "scripts" / "audit_dependencies.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_hook_runs_bandit_over_service_and_schemas_and_the_audit():
    hook = (ROOT / "scripts" / "test.d" / "90-security.sh").read_text()
    assert "bandit" in hook and "service schemas" in hook and "audit_dependencies.py" in hook


def test_bandit_is_clean_on_our_code():
    done = subprocess.run(BANDIT + ["service", "schemas"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout


def test_bandit_fails_on_an_insecure_module(tmp_path):
    # The same command over our code plus one planted module: the step must go red.
    shutil.copytree(ROOT / "schemas", tmp_path / "schemas")
    (tmp_path / "schemas" / "planted.py").write_text(
        "import subprocess\nimport yaml\n\n"
        "def run(cmd, text):\n"
        "    subprocess.call(cmd, shell=True)\n"
        "    return yaml.load(text, Loader=yaml.Loader), eval(text)\n"
    )
    done = subprocess.run(BANDIT + ["schemas"], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 1
    found = {line.split(": ")[-1] for line in done.stdout.splitlines() if "planted.py" in line}
    assert {"B602", "B506", "B307"} <= found, done.stdout


@pytest.fixture
def audit(monkeypatch, tmp_path):
    module = _audit_module()
    monkeypatch.setattr(module, "IGNORE_FILE", tmp_path / "ignore.txt")
    return module


def _reports(audit, monkeypatch, by_service: dict):
    monkeypatch.setattr(audit, "run_audit", lambda service, ignore: by_service.get(service))


def test_audit_fails_on_a_known_vulnerability(audit, monkeypatch, capsys):
    _reports(audit, monkeypatch, {"pypi": {"dependencies": [
        {"name": "flask", "version": "3.1.0", "vulns": []},
        {"name": "werkzeug", "version": "2.0.0", "vulns": [{"id": "PYSEC-2023-58", "fix_versions": ["2.2.3"]}]},
    ]}})
    assert audit.main() == 1
    assert "werkzeug 2.0.0: PYSEC-2023-58 (fixed in: 2.2.3)" in capsys.readouterr().err


def test_audit_passes_a_clean_report(audit, monkeypatch, capsys):
    _reports(audit, monkeypatch, {"pypi": {"dependencies": [{"name": "flask", "version": "3.1.0", "vulns": []}]}})
    assert audit.main() == 0
    assert "1 dependencies audited, no known vulnerabilities" in capsys.readouterr().out


def test_audit_says_not_audited_when_every_package_was_skipped(audit, monkeypatch, capsys):
    # What pip-audit itself reports as "No known vulnerabilities found" against a mirror.
    skipped = {"dependencies": [{"name": "flask", "skip_reason": "Dependency not found on PyPI"}]}
    _reports(audit, monkeypatch, {"pypi": skipped, "osv": None})
    assert audit.main() == 0
    assert "NOT AUDITED" in capsys.readouterr().err


def test_audit_falls_back_to_osv(audit, monkeypatch):
    skipped = {"dependencies": [{"name": "flask", "skip_reason": "Dependency not found on PyPI"}]}
    vulnerable = {"dependencies": [{"name": "flask", "version": "0.1", "vulns": [{"id": "X-1", "fix_versions": []}]}]}
    _reports(audit, monkeypatch, {"pypi": skipped, "osv": vulnerable})
    assert audit.main() == 1


def test_an_accepted_vulnerability_needs_a_reason(audit):
    audit.IGNORE_FILE.write_text("# comment\nPYSEC-1  # the affected API is not used\n")
    assert audit.accepted_ids() == ["PYSEC-1"]
    audit.IGNORE_FILE.write_text("PYSEC-2\n")
    with pytest.raises(SystemExit, match="without a reason"):
        audit.accepted_ids()
