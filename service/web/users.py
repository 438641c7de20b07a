"""People who sign in to the clinician pages: configured users with hashed passwords and a role.

``SCREENING_USERS`` holds either a path to a JSON file or the JSON itself::

    {"dr.ada": {"password_hash": "scrypt:32768:8:1$…", "role": "physician"}}

Hashes come from ``screening users hash-password`` (or ``screening users add``), werkzeug's
scrypt or pbkdf2 format. Plain passwords are never accepted in the configuration.
"""
from __future__ import annotations

import json
import logging
import os
import re
import threading
from dataclasses import dataclass
from pathlib import Path

from werkzeug.security import check_password_hash, generate_password_hash

CLINICIAN, PHYSICIAN = "clinician", "physician"
ROLES = (CLINICIAN, PHYSICIAN)
USERNAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}")
_HASH_METHODS = ("scrypt:", "pbkdf2:")
# Checked when the username is unknown, so that a wrong name costs as long as a wrong password
# and response times do not reveal who has an account.
_DUMMY_HASH = generate_password_hash("not a password of anyone")


class UsersConfigError(ValueError):
    """SCREENING_USERS cannot be read or is not in the documented shape."""


@dataclass(frozen=True)
class User:
    username: str
    role: str
    password_hash: str

    @property
    def can_sign_off(self) -> bool:
        return self.role == PHYSICIAN


def hash_password(password: str) -> str:
    return generate_password_hash(password)  # werkzeug's default: scrypt with a random salt


def parse_users(document: object, source: str = "SCREENING_USERS") -> dict[str, User]:
    if not isinstance(document, dict):
        raise UsersConfigError(f"{source}: expected a JSON object of username -> {{password_hash, role}}")
    users: dict[str, User] = {}
    for name, entry in document.items():
        where = f"{source}: user {name!r}"
        if not isinstance(name, str) or not USERNAME_RE.fullmatch(name):
            raise UsersConfigError(f"{where}: a username is 1-64 letters, digits, '.', '_', '@' or '-'")
        if not isinstance(entry, dict):
            raise UsersConfigError(f"{where}: expected an object with password_hash and role")
        unknown = set(entry) - {"password_hash", "role"}
        if unknown:
            raise UsersConfigError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}")
        role = entry.get("role")
        if role not in ROLES:
            raise UsersConfigError(f"{where}: role must be one of {', '.join(ROLES)}")
        password_hash = entry.get("password_hash")
        if not isinstance(password_hash, str) or not password_hash.startswith(_HASH_METHODS):
            raise UsersConfigError(
                f"{where}: password_hash must be a werkzeug scrypt or pbkdf2 hash "
                "(make one with `screening users hash-password`)")
        users[name] = User(name, role, password_hash)
    return users


def read_users_document(value: str) -> tuple[object, str]:
    """The JSON document of SCREENING_USERS: inline JSON, or the file it names."""
    text = value.strip()
    if not text:
        return {}, "SCREENING_USERS"
    if text.startswith("{"):
        source = "SCREENING_USERS"
    else:
        source = text
        try:
            text = Path(text).read_text(encoding="utf-8")
        except OSError as exc:
            raise UsersConfigError(f"SCREENING_USERS: cannot read {source}: {exc.strerror}") from None
    try:
        return json.loads(text), source
    except json.JSONDecodeError as exc:
        # The position only: the document holds password hashes.
        raise UsersConfigError(f"{source}: not valid JSON (line {exc.lineno}, column {exc.colno})") from None


log = logging.getLogger("service.web")


class UserDirectory:
    """The configured people. When SCREENING_USERS names a file, the file is read again whenever
    it changes (its size, time or inode), so ``screening users add`` and removing someone take
    effect at the next request, in every worker, without a restart. A change that breaks the
    file is logged and ignored: the people as last read stay in force."""

    def __init__(self, users: dict[str, User], path: Path | None = None, stamp: tuple | None = None):
        self._users = dict(users)
        self._path = path
        self._stamp = stamp
        self._lock = threading.Lock()

    @classmethod
    def from_setting(cls, value: str) -> "UserDirectory":
        text = value.strip()
        path = Path(text) if text and not text.startswith("{") else None
        stamp = _stamp(path) if path else None
        document, source = read_users_document(value)
        return cls(parse_users(document, source), path, stamp)

    def _current(self) -> dict[str, User]:
        if self._path is None:
            return self._users
        stamp = _stamp(self._path)
        if stamp != self._stamp:
            with self._lock:
                if stamp != self._stamp:
                    self._stamp = stamp
                    try:
                        document, source = read_users_document(str(self._path))
                        self._users = parse_users(document, source)
                        log.info("users file re-read: %d people", len(self._users))
                    except UsersConfigError as exc:
                        log.error("users file changed but cannot be used; keeping the people as last read: %s", exc)
        return self._users

    def __len__(self) -> int:
        return len(self._current())

    def get(self, username: str) -> User | None:
        return self._current().get(username)

    def authenticate(self, username: str, password: str) -> User | None:
        user = self._current().get(username)
        ok = check_password_hash(user.password_hash if user else _DUMMY_HASH, password)
        return user if (user and ok) else None


def _stamp(path: Path) -> tuple | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_ino, st.st_size, st.st_mtime_ns)


def write_user(path: Path, username: str, role: str, password_hash: str) -> bool:
    """Add or replace one user in a users file (created readable by its owner only).
    Returns True when the user was new."""
    if not USERNAME_RE.fullmatch(username):
        raise UsersConfigError("a username is 1-64 letters, digits, '.', '_', '@' or '-'")
    if role not in ROLES:
        raise UsersConfigError(f"role must be one of {', '.join(ROLES)}")
    document: object = {}
    if path.exists():
        document, _ = read_users_document(str(path))
        parse_users(document, str(path))  # refuse to extend a file that is already broken
    assert isinstance(document, dict)  # nosec B101 - narrows the type only: parse_users above refused anything else
    is_new = username not in document
    document[username] = {"password_hash": password_hash, "role": role}
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump(document, fh, indent=2, sort_keys=True)
        fh.write("\n")
    os.replace(tmp, path)
    return is_new
