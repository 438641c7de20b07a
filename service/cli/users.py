"""``screening users``: password hashes and the users file for the clinician pages."""
from __future__ import annotations

import sys
from pathlib import Path

import click

from service.cli import common
from service.web.users import ROLES, UsersConfigError, hash_password, write_user

MIN_PASSWORD_CHARS = 12


def _password(value: str | None) -> str:
    password = value if value is not None else click.prompt(
        "Password", hide_input=True, confirmation_prompt=True, err=True)
    if len(password) < MIN_PASSWORD_CHARS:
        raise click.BadParameter(f"a password needs at least {MIN_PASSWORD_CHARS} characters", param_hint="password")
    return password


@click.group("users")
def users() -> None:
    """People who sign in to the clinician pages (SCREENING_USERS)."""


@users.command("hash-password")
@click.option("--password-stdin", is_flag=True, help="Read the password from standard input (for scripts).")
def hash_password_command(password_stdin: bool) -> None:
    """Print a password hash for a users file (prompts for the password)."""
    value = sys.stdin.readline().rstrip("\r\n") if password_stdin else None
    click.echo(hash_password(_password(value)))


@users.command("add")
@click.argument("username")
@click.option("--role", type=click.Choice(ROLES), required=True, help="physician may sign off; clinician reads.")
@click.option("--file", "path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="The users file (default: $SCREENING_USERS when it names a file).")
@click.option("--password-stdin", is_flag=True, help="Read the password from standard input (for scripts).")
def add_command(username: str, role: str, path: Path | None, password_stdin: bool) -> None:
    """Add a person to the users file, or replace their password and role."""
    if path is None:
        configured = common.settings().web.users.strip()
        if not configured or configured.startswith("{"):
            raise click.UsageError("give --file, or set SCREENING_USERS to the path of the users file")
        path = Path(configured)
    value = sys.stdin.readline().rstrip("\r\n") if password_stdin else None
    try:
        is_new = write_user(path, username, role, hash_password(_password(value)))
    except UsersConfigError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"{'added' if is_new else 'updated'} {username} ({role}) in {path}", err=True)
