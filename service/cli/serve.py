"""``screening serve``: the HTTP service under gunicorn, the production form."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from service.cli import common
from service.cli.keys import ensure_first_key


@click.command("serve")
@click.option("--bind", default=None, help="HOST:PORT to listen on (default $SCREENING_BIND or 127.0.0.1:8000).")
@click.option("--workers", type=int, default=None, help="Worker processes (default $WEB_CONCURRENCY or 2).")
def serve(bind: str | None, workers: int | None) -> None:
    """Run the HTTP service under gunicorn (production form)."""
    # Fail here, readably, rather than in every worker.
    common.load_or_exit(None)
    # Migrates the decision log, and on a first start prints an admin API key once.
    ensure_first_key()
    conf = Path(__file__).resolve().parent.parent / "gunicorn_conf.py"
    args = [sys.executable, "-m", "gunicorn", "-c", str(conf)]
    if bind:
        args += ["--bind", bind]
    if workers:
        args += ["--workers", str(workers)]
    args.append("service.app:create_app()")
    os.execv(sys.executable, args)  # nosec B606 - this interpreter running gunicorn; no shell, arguments are ours
