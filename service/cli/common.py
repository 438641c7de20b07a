"""What every ``screening`` command shares: exit codes, the --rules and --as-of options, and
loading a rule pack or exiting 78 with its problems, and the run's one Settings. Command
modules import this one, never service.cli.main (which imports them)."""
from __future__ import annotations

import datetime as dt
from pathlib import Path

import click

from service.config import Settings
from service.engine import EngineError
from service.policy.problems import RulePackError
from service.ruleset import Ruleset, load_ruleset

# sysexits.h: the input data was incorrect, an input file is missing, a configuration error.
EXIT_DATAERR, EXIT_NOINPUT, EXIT_CONFIG = 65, 66, 78

rules_option = click.option(
    "--rules", "rules_dir", type=click.Path(path_type=Path), default=None,
    help="Rule pack directory (default: $SCREENING_RULES_DIR or the shipped pack).",
)


def _utc(_ctx, _param, value: dt.datetime | None) -> dt.datetime | None:
    return value.replace(tzinfo=dt.timezone.utc) if value else None


def as_of_option(help: str = "Evaluate as on this date (UTC) instead of now."):
    """``--as-of DATE[THH:MM:SS]``, read as UTC: the command receives an aware datetime or None."""
    return click.option("--as-of", type=click.DateTime(formats=["%Y-%m-%d", "%Y-%m-%dT%H:%M:%S"]), default=None,
                        callback=_utc, help=help)


def settings() -> Settings:
    """This run's settings: read from the environment once, by the first part of the command
    that asks, and kept on the click context for the rest of the run."""
    ctx = click.get_current_context(silent=True)
    if ctx is None:  # called outside a command (a library caller): one read for this call
        return Settings.from_env()
    meta = ctx.find_root().meta
    if "screening.settings" not in meta:
        meta["screening.settings"] = Settings.from_env()
    return meta["screening.settings"]


def rules_dir(value: Path | None) -> Path:
    """``--rules``, or the configured pack ($SCREENING_RULES_DIR, else the shipped one)."""
    return value or settings().rules_dir


def load_or_exit(directory: Path | None) -> Ruleset:
    """The pack at ``directory`` (see rules_dir), compiled; its problems printed and exit 78 if broken.
    The service's rules cache is used when its state directory has one (a command never makes it)."""
    try:
        return load_ruleset(rules_dir(directory), settings().engine_backend, settings().pack_cache(create=False))
    except RulePackError as exc:
        for problem in exc.problems:
            click.echo(str(problem), err=True)
        raise SystemExit(EXIT_CONFIG) from None
    except EngineError as exc:
        click.echo(f"engine: {exc}", err=True)
        raise SystemExit(EXIT_CONFIG) from None
