#!/usr/bin/env bash
# The project's test command (README, and .ci/run). Creates .venv, installs the project with its
# test extras, installs what the tests need from Debian when missing, and runs pytest.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-$(command -v python3.12 || command -v python3.11 || command -v python3)}
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

set +e
.venv/bin/python -m pytest "$@"
status=$?
set -e
if [ "$status" -eq 5 ]; then
  echo "pytest collected no tests: that is a failure, not a pass" >&2
  exit 1
fi
exit "$status"
