"""The container image as built from the Dockerfile (no Docker engine runs on CI machines, so
the file is checked for what the issue asks of it: Python 3.12, non-root, a health check, a
read-only root filesystem, no secrets)."""
from __future__ import annotations

import re

from tests.conftest import ROOT

DOCKERFILE = (ROOT / "Dockerfile").read_text()
LINES = [line.strip() for line in DOCKERFILE.replace("\\\n", " ").splitlines() if line.strip() and not line.strip().startswith("#")]


def _instructions(name: str) -> list[str]:
    return [line for line in LINES if line.upper().startswith(name + " ")]


def test_python_312_slim_because_durable_rules_fails_on_313():
    assert all(line.split()[1].startswith("python:3.12-slim") for line in _instructions("FROM"))


def test_runs_as_a_non_root_user():
    users = _instructions("USER")
    assert users, "no USER: the service would run as root"
    assert users[-1].split()[1] not in ("root", "0")
    assert re.search(r"useradd --system --uid (\d+)", DOCKERFILE)


def test_health_check_uses_healthz():
    assert any("/healthz" in line for line in _instructions("HEALTHCHECK") + LINES)


def test_writes_only_to_a_volume_so_the_root_filesystem_can_be_read_only():
    assert "SCREENING_STATE_DIR=/data" in DOCKERFILE
    assert 'VOLUME ["/data"]' in DOCKERFILE
    assert "chown screening:screening /data" in DOCKERFILE


def test_no_secrets_baked_into_the_image():
    for line in _instructions("ENV") + _instructions("ARG"):
        assert not re.search(r"(SECRET|PASSWORD|TOKEN|API_KEY|DATABASE_URL)\s*=", line, re.I), line
    ignored = (ROOT / ".dockerignore").read_text().split()
    for path in (".git", ".venv", "var"):
        assert path in ignored, f"{path} would be copied into the build context"
