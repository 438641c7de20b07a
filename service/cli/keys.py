"""``screening keys create|list|revoke``: API keys for machines, against DATABASE_URL's log.

A token is printed once, when it is made; the database keeps only its SHA-256.
Exit codes: 0 done, 1 no such key, 69 the database cannot be reached.
"""
from __future__ import annotations

import contextlib
import json
from typing import Iterator

import click

from service.auth import PHYSICIAN_NAME, SCOPES, check_scopes, create_first_admin_key, create_key
from service.cli import common
from service.store.base import Store, StoreUnavailable
from service.store.factory import open_store
from service.store.keys import ApiKeyRecord

EXIT_UNAVAILABLE = 69


@contextlib.contextmanager
def _opened_store() -> Iterator[Store]:
    """The log at DATABASE_URL (migrated); exit 69 with a readable line when it is down."""
    try:
        store = open_store(common.settings().store_url, required=True)
    except StoreUnavailable as exc:
        click.echo(f"the decision log is unavailable: {exc}", err=True)
        raise SystemExit(EXIT_UNAVAILABLE) from None
    try:
        yield store
    except StoreUnavailable as exc:
        click.echo(f"the decision log is unavailable: {exc}", err=True)
        raise SystemExit(EXIT_UNAVAILABLE) from None
    finally:
        store.close()


def _describe(record: ApiKeyRecord) -> dict:
    return {
        "id": record.id, "name": record.name, "scopes": list(record.scopes), "physician": record.physician,
        "created_at": record.created_at.isoformat().replace("+00:00", "Z"),
        "revoked_at": record.revoked_at.isoformat().replace("+00:00", "Z") if record.revoked_at else None,
    }


@click.group("keys")
def keys_group() -> None:
    """API keys for intake systems and EHRs (scopes: screen, read, review, admin)."""


@keys_group.command("create")
@click.option("--name", required=True, help="Who or what uses the key, e.g. 'intake-portal'.")
@click.option("--scope", "scopes", multiple=True, required=True, type=click.Choice(SCOPES),
              help="Repeat for several: screen, read, review, admin (admin allows everything).")
@click.option("--physician", default=None, metavar="USERNAME",
              help="The physician this key signs off as (their user name); sign-offs need it.")
@click.option("--json", "as_json", is_flag=True, help="Print the key and its token as JSON.")
def keys_create(name: str, scopes: tuple[str, ...], physician: str | None, as_json: bool) -> None:
    """Make a key and print its token (shown this once only)."""
    if not name.strip():
        raise click.BadParameter("must not be empty", param_hint="--name")
    if physician is not None and not PHYSICIAN_NAME.fullmatch(physician):
        raise click.BadParameter("a user name: 1-64 letters, digits, '.', '_', '@' or '-'", param_hint="--physician")
    if physician is None and ("review" in scopes or "admin" in scopes):
        click.echo("note: without --physician this key cannot record sign-offs "
                   "(a sign-off is recorded as the physician its key was issued to)", err=True)
    with _opened_store() as store:
        new = create_key(store.keys, name.strip(), check_scopes(scopes), physician=physician)
    if as_json:
        click.echo(json.dumps({**_describe(new.record), "token": new.token}, indent=2))
        return
    click.echo(f"Created API key {new.record.id} ({new.record.name}; scopes: {' '.join(new.record.scopes)}).",
               err=True)
    click.echo("Token (shown only now; send it as 'Authorization: Bearer <token>'):", err=True)
    click.echo(new.token)


@keys_group.command("list")
@click.option("--json", "as_json", is_flag=True)
def keys_list(as_json: bool) -> None:
    """Every key, active and revoked (never the tokens)."""
    with _opened_store() as store:
        records = store.keys.list()
    if as_json:
        click.echo(json.dumps([_describe(r) for r in records], indent=2))
        return
    for r in records:
        d = _describe(r)
        state = f"revoked {d['revoked_at']}" if r.revoked_at else "active"
        signs = f"  signs as {r.physician}" if r.physician else ""
        click.echo(f"{r.id}  {r.name:<24} {' '.join(r.scopes):<26} created {d['created_at']}  {state}{signs}")
    if not records:
        click.echo("no API keys", err=True)


@keys_group.command("revoke")
@click.argument("key_id")
def keys_revoke(key_id: str) -> None:
    """Revoke a key: requests with it get 401 within SCREENING_KEY_CACHE_SECONDS (how long a running
    worker trusts a key it has read). The record stays, for the audit trail."""
    with _opened_store() as store:
        record = store.keys.revoke(key_id)
    if record is None:
        click.echo(f"no API key with id {key_id}", err=True)
        raise SystemExit(1)
    click.echo(f"revoked {record.id} ({record.name}) at {_describe(record)['revoked_at']}")
    seconds = common.settings().key_cache_seconds
    if seconds > 0:
        click.echo(f"running servers refuse it within {seconds:g} s (SCREENING_KEY_CACHE_SECONDS)", err=True)


def ensure_first_key() -> None:
    """For `screening serve`: on a log with no API keys at all, make an admin key and print it
    once, so the service is usable out of the box without any built-in secret."""
    with _opened_store() as store:
        new = create_first_admin_key(store.keys)
    if new is None:
        return
    click.echo("", err=True)
    click.echo("First start: created an admin API key (all scopes). It is shown ONLY NOW; keep it safe:", err=True)
    click.echo(f"    SCREENING_API_KEY={new.token}", err=True)
    click.echo("Send it as 'Authorization: Bearer <key>'. Make narrower keys with `screening keys create`, "
               f"and revoke this one with `screening keys revoke {new.record.id}`.", err=True)
    click.echo("", err=True)
