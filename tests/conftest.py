from __future__ import annotations

import copy
import datetime as dt
import json
import os
from pathlib import Path

import pytest
from hypothesis import settings

from schemas.intake import IntakeSchema
from service.app import create_app
from service.auth import SCOPES, create_key
from service.config import Settings
from service.ruleset import default_rules_path, load_ruleset

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
AS_OF = dt.datetime(2026, 11, 24, 12, 0, tzinfo=dt.timezone.utc)

# Property tests: in CI the same examples every run (a red build is reproducible) and no example
# database; locally random, with failures remembered in .hypothesis/. HYPOTHESIS_PROFILE overrides.
settings.register_profile("ci", derandomize=True, database=None, print_blob=True)
settings.register_profile("dev")
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE") or ("ci" if os.environ.get("CI") else "dev"))

# The decision-log fixtures, parametrised over SQLite and the throwaway PostgreSQL server.
from tests.dbfixtures import database_url, db_app, db_client, db_store  # noqa: E402,F401


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
def app(tmp_path_factory):
    # A fresh SQLite decision log per test session, never the developer's var/.
    state = tmp_path_factory.mktemp("app-state")
    # Rate limiting on (its headers and 429 documented) but out of reach: the whole session,
    # fuzzing included, shares one key (tests/test_rate_limit.py tests the limit itself).
    app = create_app(Settings.from_env(reload_interval=0, state_dir=state,
                                       database_url=f"sqlite:///{state}/screening.sqlite3",
                                       rate_limit="1000000/minute"))
    yield app
    app.extensions["store"].close()


@pytest.fixture(scope="session")
def api_token(app) -> str:
    """A key with every scope in the session app's log."""
    return create_key(app.extensions["store"].keys, "tests", SCOPES).token


@pytest.fixture
def client(app, api_token):
    """A test client whose requests carry the all-scopes API key (pass headers to override)."""
    client = app.test_client()
    client.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {api_token}"
    return client


@pytest.fixture
def anonymous_client(app):
    return app.test_client()
