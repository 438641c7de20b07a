"""Configuration is read once (service.config.Settings.from_env) and passed down: no module
reads the environment when imported, an app given its Settings reads nothing more, and a
``screening`` command reads it once per run."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import MutableMapping
from pathlib import Path

import pytest
from click.testing import CliRunner

from service.config import Settings
from tests.conftest import EXAMPLES, ROOT

WATCHED = ("SCREENING_", "DATABASE_URL", "WEB_CONCURRENCY")


class RecordingEnviron(MutableMapping):
    """os.environ, noting every read of the service's own variables."""

    def __init__(self, real):
        self.real, self.read = real, []

    def _note(self, key):
        if isinstance(key, str) and key.startswith(WATCHED):
            self.read.append(key)

    def __getitem__(self, key):
        self._note(key)
        return self.real[key]

    def __contains__(self, key):
        self._note(key)
        return key in self.real

    def __setitem__(self, key, value):
        self.real[key] = value

    def __delitem__(self, key):
        del self.real[key]

    def __iter__(self):
        return iter(self.real)

    def __len__(self):
        return len(self.real)

    def copy(self):
        return dict(self.real)


_IMPORT_EVERYTHING = r"""
import importlib, json, os, pkgutil, sys
sys.path.insert(0, sys.argv[1])
from tests.test_settings import RecordingEnviron
recorder = os.environ = RecordingEnviron(os.environ)
import service
skip = ("service.gunicorn_conf", "service.migrations")  # gunicorn's config file; Alembic's scripts
for info in pkgutil.walk_packages(service.__path__, "service."):
    if not info.name.startswith(skip) and not info.name.endswith(".__main__"):  # __main__ runs a command
        importlib.import_module(info.name)
print(json.dumps(sorted(set(recorder.read))))
"""


def test_importing_the_service_reads_no_configuration():
    env = {**os.environ, "SCREENING_CDS_CORS_ORIGINS": "https://poisoned.example", "SCREENING_LOG_LEVEL": "poison"}
    out = subprocess.run([sys.executable, "-c", _IMPORT_EVERYTHING, str(ROOT)], env=env, cwd=ROOT,
                         capture_output=True, text=True, timeout=300, check=True)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []


@pytest.fixture
def counted(monkeypatch):
    """Counts Settings.from_env calls, and records what the environment is asked otherwise."""
    calls = []
    real = Settings.from_env.__func__

    def from_env(cls, **overrides):
        calls.append(overrides)
        return real(cls, **overrides)

    monkeypatch.setattr(Settings, "from_env", classmethod(from_env))
    recorder = RecordingEnviron(os.environ)
    monkeypatch.setattr(os, "environ", recorder)
    return calls, recorder


def test_an_app_given_its_settings_reads_nothing_more(tmp_path, counted):
    from service.app import create_app

    calls, recorder = counted
    app = create_app(Settings(reload_interval=0, state_dir=tmp_path))
    assert calls == [] and recorder.read == []
    assert app.extensions["settings"].web is app.extensions["web_settings"]
    app.extensions["store"].close()


def test_an_app_reads_the_environment_once(tmp_path, monkeypatch, counted):
    from service.app import create_app

    calls, recorder = counted
    monkeypatch.setenv("SCREENING_RELOAD_INTERVAL", "0")
    monkeypatch.setenv("SCREENING_STATE_DIR", str(tmp_path))
    monkeypatch.setenv("SCREENING_CDS_CORS_ORIGINS", "https://ehr.example.org, https://b.example.org")
    app = create_app()
    assert len(calls) == 1
    assert app.config["CORS_ORIGINS"] == ["https://ehr.example.org", "https://b.example.org"]
    response = app.test_client().options("/cds-services", headers={
        "Origin": "https://b.example.org", "Access-Control-Request-Method": "GET"})
    assert response.headers["Access-Control-Allow-Origin"] == "https://b.example.org"
    app.extensions["store"].close()


def test_a_command_reads_the_environment_once(counted, monkeypatch):
    from service.cli import main

    calls, _ = counted
    result = CliRunner().invoke(main, ["evaluate", str(EXAMPLES / "eligible-iv.json"), "--as-of", "2026-11-24"])
    assert result.exit_code in (0, 10), result.output
    assert len(calls) == 1


def test_a_malformed_number_names_its_variable(monkeypatch):
    monkeypatch.setenv("SCREENING_CDS_JWT_LEEWAY", "thirty")
    with pytest.raises(SystemExit, match="SCREENING_CDS_JWT_LEEWAY must be a whole number"):
        Settings.from_env()


def test_settings_sections_come_from_the_environment(monkeypatch):
    monkeypatch.setenv("SCREENING_USERS", "/etc/users.json")
    monkeypatch.setenv("SCREENING_COOKIE_SECURE", "0")
    monkeypatch.setenv("SCREENING_CDS_BASE_URL", "https://cds.example.org/")
    monkeypatch.setenv("SCREENING_LOG_LEVEL", "debug")
    settings = Settings.from_env()
    assert (settings.web.users, settings.web.cookie_secure) == ("/etc/users.json", False)
    assert settings.cds_hooks.base_url == "https://cds.example.org" and settings.cds_hooks.cors_origins == "*"
    assert settings.log_level == "debug"
    assert Path(settings.rules_dir).is_dir()
