"""Fixtures and helpers every test module shares. The decision-log fixtures (SQLite and
PostgreSQL) live in tests/dbfixtures.py and the CDS Hooks ones in tests/cdshooks_conftest.py;
both are loaded as plugins below, so no test module imports a fixture by name."""
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
from service.decision import Decision, jsonable
from service.ruleset import default_rules_path, load_ruleset
from service.screening import screen

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
AS_OF = dt.datetime(2026, 11, 24, 12, 0, tzinfo=dt.timezone.utc)

# Property tests: in CI the same examples every run (a red build is reproducible) and no example
# database; locally random, with failures remembered in .hypothesis/. HYPOTHESIS_PROFILE overrides.
settings.register_profile("ci", derandomize=True, database=None, print_blob=True)
settings.register_profile("dev")
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE") or ("ci" if os.environ.get("CI") else "dev"))

# The decision-log fixtures (parametrised over SQLite and the throwaway PostgreSQL server) and
# the CDS Hooks client fixtures.
pytest_plugins = ["tests.dbfixtures", "tests.cdshooks_conftest"]


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


def decide(ruleset, raw: dict, **kw) -> Decision:
    """screen() on a copy of ``raw``, validated, as on AS_OF (keywords go to screen)."""
    return screen(validated(copy.deepcopy(raw)), ruleset, as_of=AS_OF, **kw)


def save_example(store, ruleset, name: str, subject: str | None = None, client: str = "k1",
                 source: str = "http") -> tuple[Decision, dict]:
    """Screen examples/<name>.json (as ``subject``) and log the decision; (decision, raw intake)."""
    raw = example(name)
    if subject:
        raw["subject_id"] = subject
    intake = validated(raw)
    decision = screen(intake, ruleset)
    store.save_decision(decision, jsonable(intake), client=client, source=source)
    return decision, raw


def bearer(app, scopes=SCOPES, name: str = "tests") -> dict[str, str]:
    """The Authorization header of a new API key in ``app``'s log."""
    return {"Authorization": f"Bearer {create_key(app.extensions['store'].keys, name, scopes).token}"}


def app_settings(state_dir: Path, **overrides) -> Settings:
    """A test app's settings: its own SQLite log under ``state_dir`` and no rules watcher (never
    the developer's var/); ``overrides`` win, the environment fills the rest."""
    values = {"reload_interval": 0, "state_dir": state_dir,
              "database_url": f"sqlite:///{state_dir}/screening.sqlite3", **overrides}
    return Settings.from_env(**values)


@pytest.fixture
def new_app(tmp_path):
    """``new_app(**settings)``: an app of the test's own (see app_settings), closed afterwards."""
    made = []

    def make(**overrides):
        made.append(create_app(app_settings(tmp_path, **overrides)))
        return made[-1]

    yield make
    for app in made:
        app.extensions["store"].close()


@pytest.fixture(scope="session")
def app(tmp_path_factory):
    # A fresh SQLite decision log per test session, never the developer's var/.
    state = tmp_path_factory.mktemp("app-state")
    # Rate limiting on (its headers and 429 documented) but out of reach: the whole session,
    # fuzzing included, shares one key (tests/test_rate_limit.py tests the limit itself).
    app = create_app(app_settings(state, rate_limit="1000000/minute"))
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
