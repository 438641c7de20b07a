# Security checks: bandit over the service's own code, and a known-vulnerability audit of the
# installed dependencies. Sourced by scripts/test.sh: a finding fails the run here, before pytest.
# Bandit findings are fixed, or justified where they stand with `# nosec BXXX - reason`.
# The audit needs a vulnerability service (PyPI's JSON API or OSV); when none can be reached it
# says so loudly and does not fail (see scripts/audit_dependencies.py).
if ! .venv/bin/python -m bandit --quiet --recursive service schemas --severity-level all --confidence-level all \
     --format custom --msg-template "{relpath}:{line}: {test_id} [{severity}] {msg}" 2>/dev/null; then
  echo "bandit: security findings above (fix, or justify inline with '# nosec BXXX - reason')" >&2
  exit 1
fi
.venv/bin/python scripts/audit_dependencies.py || { echo "pip-audit: known vulnerabilities above" >&2; exit 1; }
