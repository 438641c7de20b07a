"""``screening schemas export``: write schemas/json/ from the description /openapi.json serves.

Run it after changing a contract — the pack's field catalog (rules/ketamine-screening/fields.yaml)
or schemas/decision.py — and commit the result; ``--check`` (for CI) exits 1 when the committed files are stale.
"""
from __future__ import annotations

import contextlib
import logging
from pathlib import Path

import click

from schemas import jsonschema


@contextlib.contextmanager
def _quiet(*names: str):
    loggers = [logging.getLogger(n) for n in names]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


@click.group("schemas")
def schemas_group() -> None:
    """The intake and decision contracts as JSON Schema files for integrators."""


@schemas_group.command("export")
@click.option("--out", "out_dir", type=click.Path(path_type=Path, file_okay=False), default=None,
              help="Write here instead of schemas/json/.")
@click.option("--check", is_flag=True, help="Write nothing; exit 1 if the files differ from the description.")
def export_command(out_dir: Path | None, check: bool) -> None:
    from dataclasses import replace

    from service.cli import common
    from service.app import create_app

    out_dir = out_dir or jsonschema.JSON_DIR
    # No rule reloading thread: this process only builds the description, exactly as served.
    # Nobody signs in to or calls this app, so the start-up warnings (no users, no secret key,
    # no CDS base URL) and its one request's log line are not for this reader.
    with _quiet("service.web", "service.app", "service.cdshooks", "screening.request"):
        app = create_app(replace(common.settings(), reload_interval=0))
        document = app.test_client().get("/openapi.json").get_json()
    if check:
        stale = jsonschema.stale(document, out_dir)
        for name in stale:
            click.echo(f"{out_dir / name} is stale: run `screening schemas export`", err=True)
        raise SystemExit(1 if stale else 0)
    for path in jsonschema.export(document, out_dir):
        click.echo(f"wrote {path}")


if __name__ == "__main__":
    schemas_group()
