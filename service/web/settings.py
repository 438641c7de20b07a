"""Settings of the clinician pages, from the environment (every variable is in the README table)."""
from __future__ import annotations

import os
from dataclasses import dataclass

from service.config import env_flag, env_number


_flag = env_flag


def _int(name: str, default: int) -> int:
    return env_number(name, default, int)


@dataclass(frozen=True)
class WebSettings:
    # None: a key generated once and kept in the state directory (service.web.signin).
    secret_key: str | None = None
    # SCREENING_USERS: a path to a JSON file, or the JSON itself.
    users: str = ""
    # Off only for plain-http development on loopback: browsers drop Secure cookies over http.
    cookie_secure: bool = True
    session_hours: int = 8

    @classmethod
    def from_env(cls) -> "WebSettings":
        return cls(
            secret_key=os.environ.get("SCREENING_SECRET_KEY") or None,
            users=os.environ.get("SCREENING_USERS", ""),
            cookie_secure=_flag("SCREENING_COOKIE_SECURE", True),
            session_hours=_int("SCREENING_SESSION_HOURS", 8),
        )
