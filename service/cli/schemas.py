"""``screening schemas export``: write schemas/json/ from the description /openapi.json serves.

Run it after changing a marshmallow contract (schemas/intake.py, schemas/decision.py) and commit
the result; ``--check`` (for CI) exits 1 when the committed files are stale.
"""
from __future__ import annotations

from pathlib import Path

import click

from schemas import jsonschema


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
