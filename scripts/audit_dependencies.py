"""Known-vulnerability audit of the installed dependencies (pip-audit), for scripts/test.d/90-security.sh.

Exit 0: no known vulnerability in what could be audited, or the vulnerability service could not
be reached at all (said loudly: nothing was audited). Exit 1: a known vulnerability that is not
accepted in scripts/pip-audit-ignore.txt.

pip-audit on its own reports "No known vulnerabilities found" when every package was skipped
because the service did not know it (a PyPI mirror without the per-version JSON API does that):
that is "not audited", and this script says so instead of passing silently.
"""
from __future__ import annotations

import json
import subprocess  # nosec B404 - runs pip-audit with this interpreter, arguments are fixed
import sys
import tempfile
from pathlib import Path

IGNORE_FILE = Path(__file__).with_name("pip-audit-ignore.txt")
SERVICES = ("pypi", "osv")  # OSV answers for packages a mirror hides from the PyPI service


def accepted_ids(path: Path | None = None) -> list[str]:
    """Vulnerability ids accepted with a reason: lines 'ID  # why it does not apply'."""
    path = path or IGNORE_FILE
    if not path.exists():
        return []
    ids = []
    for line in path.read_text().splitlines():
        vuln, _, reason = line.partition("#")
        if vuln.strip():
            if not reason.strip():
                raise SystemExit(f"{path}: '{vuln.strip()}' is accepted without a reason")
            ids.append(vuln.strip())
    return ids


def run_audit(service: str, ignore: list[str]) -> dict | None:
    """pip-audit's JSON report, or None when the service could not be reached."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "audit.json"
        args = [sys.executable, "-m", "pip_audit", "--progress-spinner", "off", "--skip-editable",
                "--vulnerability-service", service, "--format", "json", "--output", str(out), "--timeout", "20"]
        for vuln in ignore:
            args += ["--ignore-vuln", vuln]
        done = subprocess.run(args, capture_output=True, text=True, timeout=600, stdin=subprocess.DEVNULL)  # nosec B603
        if not out.exists():  # a connection error ends pip-audit before it writes a report
            last = (done.stderr.strip().splitlines() or ["no output"])[-1]
            print(f"pip-audit ({service}): {last[:300]}", file=sys.stderr)
            return None
        return json.loads(out.read_text())


def main() -> int:
    ignore = accepted_ids()
    for service in SERVICES:
        report = run_audit(service, ignore)
        if report is None:
            continue
        deps = report.get("dependencies", [])
        audited = [d for d in deps if "skip_reason" not in d]
        vulnerable = [d for d in audited if d.get("vulns")]
        if vulnerable:
            for dep in vulnerable:
                for vuln in dep["vulns"]:
                    fixes = ", ".join(vuln.get("fix_versions") or []) or "no fixed version yet"
                    print(f"pip-audit: {dep['name']} {dep['version']}: {vuln['id']} (fixed in: {fixes})", file=sys.stderr)
            print("pip-audit: upgrade, or accept with a reason in scripts/pip-audit-ignore.txt", file=sys.stderr)
            return 1
        if audited:
            skipped = len(deps) - len(audited)
            note = f"; {skipped} not known to the service (not audited)" if skipped else ""
            print(f"pip-audit ({service}): {len(audited)} dependencies audited, no known vulnerabilities{note}")
            return 0
    print("pip-audit: NOT AUDITED - no vulnerability service could be reached or knew these packages "
          f"({', '.join(SERVICES)}); run `python scripts/audit_dependencies.py` where PyPI's JSON API or OSV is "
          "reachable. Not failing the run for it.", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
