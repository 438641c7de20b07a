"""Decision-log fixtures, each test run on SQLite and on a real PostgreSQL server.

PostgreSQL is the throwaway cluster scripts/test.d/20-postgres.sh starts (SCREENING_TEST_POSTGRES_URL).
Run directly with pytest and without that variable, the PostgreSQL variants skip; under
scripts/test.sh (SCREENING_REQUIRE_POSTGRES=1) a missing or unreachable server fails them.
Each PostgreSQL test gets a schema of its own (search_path), dropped afterwards.
"""
from __future__ import annotations

import os
import subprocess
import uuid

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from service.app import create_app
from service.store.factory import open_store
from tests.conftest import app_settings, bearer

POSTGRES_URL = os.environ.get("SCREENING_TEST_POSTGRES_URL", "")
REQUIRE_POSTGRES = os.environ.get("SCREENING_REQUIRE_POSTGRES") == "1"


def _postgres_or_skip() -> str:
    if not POSTGRES_URL:
        if REQUIRE_POSTGRES:
            pytest.fail("SCREENING_REQUIRE_POSTGRES=1 but SCREENING_TEST_POSTGRES_URL is not set")
        pytest.skip("no PostgreSQL test server (scripts/test.sh starts one)")
    return POSTGRES_URL


def postgres_schema_url(schema: str) -> str:
    url = make_url(_postgres_or_skip()).update_query_dict({"options": f"-csearch_path={schema}"})
    return url.render_as_string(hide_password=False)


def _admin_engine():
    return create_engine(_postgres_or_skip(), isolation_level="AUTOCOMMIT")


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request, tmp_path):
    """An empty decision log's URL: a SQLite file, or a fresh schema on the PostgreSQL server."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/log.sqlite3"
        return
    schema = f"t_{uuid.uuid4().hex[:16]}"
    admin = _admin_engine()
    with admin.connect() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    try:
        yield postgres_schema_url(schema)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture
def db_store(database_url):
    store = open_store(database_url, required=True)
    yield store
    store.close()


@pytest.fixture
def db_app(database_url, tmp_path):
    app = create_app(app_settings(tmp_path, database_url=database_url))
    yield app
    app.extensions["store"].close()


@pytest.fixture
def db_client(db_app):
    """A client of db_app whose requests carry an API key with every scope."""
    client = db_app.test_client()
    client.environ_base["HTTP_AUTHORIZATION"] = bearer(db_app)["Authorization"]
    return client


class PostgresCluster:
    """Stop and start the test cluster (for the database-down tests)."""

    def __init__(self) -> None:
        _postgres_or_skip()
        self.bin = os.environ.get("SCREENING_TEST_POSTGRES_BIN", "")
        self.data = os.environ.get("SCREENING_TEST_POSTGRES_DATA", "")
        if not (self.bin and self.data):
            pytest.skip("the PostgreSQL test server was not started by scripts/test.sh")

    def _pg_ctl(self, *args: str) -> None:
        command = [f"{self.bin}/pg_ctl", "-D", self.data, *args]
        if os.geteuid() == 0:  # PostgreSQL refuses to run as root
            command = ["runuser", "-u", "postgres", "--", *command]
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                       stdin=subprocess.DEVNULL, timeout=120)

    def stop(self) -> None:
        self._pg_ctl("-m", "fast", "-w", "stop")

    def start(self) -> None:
        log = os.path.join(os.path.dirname(self.data), "server.log")
        self._pg_ctl("-l", log, "-w", "-t", "60", "start")

    def running(self) -> bool:
        return os.path.exists(os.path.join(self.data, "postmaster.pid"))
