"""Sign-in that holds: the limit on password guessing, and the key that signs cookies.

**The limit.** At most ``SIGNIN_LIMIT`` (10) wrong passwords are checked per user name in any
``SIGNIN_WINDOW_S`` (15-minute) window, across every worker and instance sharing the database:
a sliding window, not fixed windows (which allow twice the limit across a window's edge). Only
failures count: a right password frees its place, so a physician who signs in often is never
locked out by it. Each attempt reserves its place (committed) before its password is checked,
so concurrent attempts in other workers cannot slip past the count; an attempt refused by the
limit is not checked and does not extend the lock-out.

**The key.** Flask signs session cookies and CSRF tokens with SECRET_KEY. When
``SCREENING_SECRET_KEY`` is not set, a key is generated once and kept in the state directory
(``<state dir>/secret_key``, mode 0600), so every gunicorn worker, and the service after a
restart, use the same one. Several instances on different hosts need SCREENING_SECRET_KEY (or a
shared state directory).
"""
from __future__ import annotations

import hashlib
import logging
import math
import secrets
import stat
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from service.statefiles import create_once
from service.store.signin_failures import SigninFailureStore

log = logging.getLogger("service.web")

SIGNIN_LIMIT = 10
SIGNIN_WINDOW_S = 15 * 60
SECRET_FILE = "secret_key"  # nosec B105 - the name of the file that holds the key, not a key
MIN_SECRET_CHARS = 32


@dataclass(frozen=True)
class Attempt:
    allowed: bool
    retry_after_s: int = 0
    seq: int | None = None


class SigninGuard:
    def __init__(self, failures: SigninFailureStore, limit: int = SIGNIN_LIMIT,
                 window_s: float = SIGNIN_WINDOW_S, clock: Callable[[], float] = time.time):
        self.failures = failures
        self.limit = limit
        self.window_s = window_s
        self.clock = clock

    @staticmethod
    def name_key(username: str) -> str:
        return hashlib.sha256(username.strip().lower().encode("utf-8")).hexdigest()

    def begin(self, username: str) -> Attempt:
        """Before the password is checked: may it be, and the place it holds if so."""
        now = self.clock()
        seq, count, oldest = self.failures.reserve(self.name_key(username), now, self.window_s)
        if count > self.limit:
            self.failures.release(seq)
            return Attempt(False, max(1, math.ceil(oldest + self.window_s - now)))
        return Attempt(True, seq=seq)

    def succeeded(self, attempt: Attempt) -> None:
        """The password was right: the attempt does not count."""
        if attempt.seq is not None:
            self.failures.release(attempt.seq)


def shared_secret(state_dir: Path) -> str:
    """The cookie key kept in the state directory, made on first use. Every worker that starts
    at the same moment ends up with the same key: it is written to a private temporary file
    and linked into place, which fails for all but the first."""
    path = Path(state_dir) / SECRET_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists() and create_once(path, secrets.token_urlsafe(48) + "\n"):
        log.warning("SCREENING_SECRET_KEY is not set: generated a cookie key in %s (shared by "
                    "every worker here; set SCREENING_SECRET_KEY when several hosts serve)", path)
    mode = path.stat().st_mode
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise SystemExit(f"configuration: {path} holds the cookie key and must be readable by its owner "
                         f"only (chmod 600 {path})")
    secret = path.read_text(encoding="ascii").strip()
    if len(secret) < MIN_SECRET_CHARS:
        raise SystemExit(f"configuration: {path} must hold a key of at least {MIN_SECRET_CHARS} characters")
    return secret
