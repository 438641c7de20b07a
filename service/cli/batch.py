"""``screening batch``: a JSON Lines file of intakes screened into one decision (or error) per
line; the work is service.batch.run_batch."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from service.batch import BatchError, count_lines, run_batch
from service.cli import common
from service.cli.common import as_of_option, rules_option


@click.command("batch")
@click.argument("input_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("-o", "--output", "output_file", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Where the decisions go, one JSON line per input line, in input order.")
@click.option("--resume", is_flag=True,
              help="Continue an interrupted run: keep the output's complete lines and skip as many input lines.")
@as_of_option("Evaluate every intake as on this date (UTC), for reproducible replays (default: now).")
@click.option("--workers", type=click.IntRange(1, 256), default=None, help="Worker processes (default: all cores).")
@click.option("--summary", "summary_file", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Also write the summary (counts by decision, by rule, errors) as JSON to this file.")
@click.option("--progress/--no-progress", default=None, help="Progress bar (default: when stderr is a terminal).")
@rules_option
def batch_command(input_file: Path, output_file: Path, resume: bool, as_of, workers: int | None,
                  summary_file: Path | None, progress: bool | None, rules_dir: Path | None) -> None:
    """Screen a JSON Lines file of intakes (one per line) into OUTPUT.

    Every input line gets one output line: {"line": n, "decision": {...}} or {"line": n,
    "error": {"status", "code", "message", "errors": [{"path", "message"}]}}; a bad line does not
    stop the run. A summary goes to stderr. Exit 0 when every line was decided, 65 when some
    lines were errors (the output is still complete), 78 for a broken rule pack, 1 when the run
    could not be done.
    """
    from tqdm import tqdm

    if input_file.resolve() == output_file.resolve():
        raise click.UsageError("the output must not be the input file")
    directory = common.rules_dir(rules_dir)
    ruleset = common.load_or_exit(directory)  # problems are printed and exit 78 here, not in every worker
    settings = common.settings()
    show = progress if progress is not None else sys.stderr.isatty()
    bar = tqdm(total=count_lines(input_file) if show else None, unit=" intakes", disable=not show,
               dynamic_ncols=True, smoothing=0.1)
    try:
        summary = run_batch(input_file, output_file, rules_dir=directory, backend=settings.engine_backend, as_of=as_of,
                            workers=workers, resume=resume, progress=bar.update, ruleset=ruleset,
                            settings=settings)
    except BatchError as exc:
        bar.close()
        click.echo(f"batch: {exc}", err=True)
        raise SystemExit(1) from None
    bar.close()
    click.echo(summary.format(), err=True)
    if summary_file:
        summary_file.write_text(json.dumps(summary.to_dict(), indent=2) + "\n")
    raise SystemExit(common.EXIT_DATAERR if summary.errors else 0)
