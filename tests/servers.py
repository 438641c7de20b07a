"""Run the REAL production server (gunicorn with service/gunicorn_conf.py) on a loopback port."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
GUNICORN_CONF = ROOT / "service" / "gunicorn_conf.py"
APP_SPEC = "service.app:create_app()"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Gunicorn:
    """One gunicorn master with its workers; stderr (the JSON logs) goes to ``log_path``."""

    def __init__(self, workdir: Path, *, workers: int = 2, env: dict[str, str] | None = None):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = workdir / f"gunicorn-{self.port}.log"
        state = workdir / f"state-{self.port}"
        state.mkdir(parents=True, exist_ok=True)
        self.env = {
            **os.environ,
            "SCREENING_BIND": f"127.0.0.1:{self.port}",
            "WEB_CONCURRENCY": str(workers),
            "SCREENING_STATE_DIR": str(state),
            "DATABASE_URL": f"sqlite:///{state}/decisions.db",
            "SCREENING_RELOAD_INTERVAL": "0",
            "SCREENING_LOG_LEVEL": "info",
            **(env or {}),
        }
        # Each server sums its own workers only: never inherit another run's metrics directory.
        for private in ("PROMETHEUS_MULTIPROC_DIR", "_SCREENING_METRICS_DIR_PREPARED_BY",
                        "_SCREENING_METRICS_DIR_TEMPORARY"):
            if private not in (env or {}):
                self.env.pop(private, None)
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 90.0) -> "Gunicorn":
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "-c", str(GUNICORN_CONF), APP_SPEC],
            cwd=ROOT, env=self.env, stdout=log, stderr=log, stdin=subprocess.DEVNULL,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"gunicorn exited with {self.proc.returncode}:\n{self.log_text()[-4000:]}")
            try:
                if requests.get(self.url + "/healthz", timeout=5).status_code == 200:
                    return self
            except requests.RequestException:  # not listening yet, or workers still booting
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"gunicorn did not answer /healthz in {timeout}s:\n{self.log_text()[-4000:]}")

    def stop(self, timeout: float = 30.0) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return None if self.proc is None else self.proc.returncode
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(10)

    def api_key(self, *scopes: str) -> str:
        """A key in the server's own database (the one DATABASE_URL names), made as an operator would."""
        return make_api_key(self.env["DATABASE_URL"], scopes or ("screen", "read"))

    def log_text(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace") if self.log_path.exists() else ""

    def log_records(self) -> list[dict]:
        """Every log line parsed as JSON (a line that is not JSON raises)."""
        return [json.loads(line) for line in self.log_text().splitlines() if line.strip()]

    def __enter__(self) -> "Gunicorn":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def make_api_key(database_url: str, scopes: tuple[str, ...] = ("screen", "read"), name: str = "tests") -> str:
    from service.auth import create_key
    from service.store.sql import SqlStore

    store = SqlStore(database_url)
    try:
        return create_key(store.keys, name, scopes).token
    finally:
        store.close()
