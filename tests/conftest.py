from __future__ import annotations

import copy
import datetime as dt
import json
from pathlib import Path

import pytest

from schemas.intake import IntakeSchema
from service.app import create_app
from service.config import Settings
from service.ruleset import default_rules_path, load_ruleset

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
AS_OF = dt.datetime(2026, 11, 24, 12, 0, tzinfo=dt.timezone.utc)


@pytest.fixture(scope="session")
def ruleset():
    return load_ruleset(default_rules_path())


@pytest.fixture(scope="session")
def reference_ruleset():
    return load_ruleset(default_rules_path(), "reference")


def example(name: str) -> dict:
    return json.loads((EXAMPLES / f"{name}.json").read_text())


@pytest.fixture
def clean_intake() -> dict:
    return copy.deepcopy(example("eligible-iv"))


def validated(raw: dict) -> dict:
    return IntakeSchema().load(raw)


@pytest.fixture(scope="session")
def app():
    return create_app(Settings.from_env(reload_interval=0))


@pytest.fixture
def client(app):
    return app.test_client()
