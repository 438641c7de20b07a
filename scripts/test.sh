#!/usr/bin/env bash
# The project's test command (README, and .ci/run). Creates .venv, installs the project with its
# test extras, installs what the tests need from Debian when missing, runs ruff, then pytest.
set -euo pipefail
cd "$(dirname "$0")/.."

# durable-rules imports on 3.11 and 3.12 only. A name on PATH may be a shim that does not run
# (pyenv), so each candidate is asked for its version.
PY=${PYTHON:-}
if [ -z "$PY" ]; then
  for candidate in python3.12 python3.11 python3; do
    if "$candidate" -c 'import sys; sys.exit(not (3, 11) <= sys.version_info[:2] < (3, 13))' 2>/dev/null; then
      PY=$candidate
      break
    fi
  done
fi
if [ -z "$PY" ]; then
  echo "needs Python 3.11 or 3.12 (durable-rules does not import on 3.13); set PYTHON=/path/to/python" >&2
  exit 1
fi
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check --upgrade pip >/dev/null
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'

for hook in scripts/test.d/*.sh; do
  [ -e "$hook" ] || continue
  # shellcheck disable=SC1090
  source "$hook"
done

# The linter first ([tool.ruff] in pyproject.toml states the rule set): seconds, and a finding
# fails the run like a failing test.
.venv/bin/python -m ruff check service tests bench scripts

set +e
.venv/bin/python -m pytest "$@"
status=$?
set -e
if [ "$status" -eq 5 ]; then
  echo "pytest collected no tests: that is a failure, not a pass" >&2
  exit 1
fi
exit "$status"
