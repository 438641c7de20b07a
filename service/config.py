"""Configuration from the environment, in one place. Every variable is in the README table.

``Settings.from_env()`` is the only reader: the app factory calls it once per app (or is given a
Settings), each ``screening`` command once per run, and every part gets its section passed down
(``settings.web`` to the pages, ``settings.cds_hooks`` to CDS Hooks). No module reads the
environment at import (tests/test_settings.py holds that).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field, fields
from pathlib import Path

from service.ruleset import default_rules_path

# Set by the gunicorn master (service/gunicorn_conf.py) once it has validated the pack: from then
# on a worker that boots on a broken directory falls back to the last good pack rather than
# crash-looping (Settings.serving).
SERVING_ENV = "SCREENING_SERVING"


def env_number(name: str, default, kind=int):
    """A number from the environment; a malformed one stops start-up with the variable named."""
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        return kind(raw)
    except ValueError:
        what = "a whole number" if kind is int else "a number"
        raise SystemExit(f"configuration: {name} must be {what}, got {raw!r}") from None


def env_flag(name: str, default: bool) -> bool:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    value = raw.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise SystemExit(f"configuration: {name} must be 1 or 0, got {raw!r}")


def _int(name: str, default: int) -> int:
    return env_number(name, default, int)


def _at_least_one(name: str, default: int) -> int:
    value = _int(name, default)
    if value < 1:
        raise SystemExit(f"configuration: {name} must be at least 1, got {value}")
    return value


def _float(name: str, default: float) -> float:
    return env_number(name, default, float)


def _text(name: str, default: str = "") -> str:
    return os.environ.get(name) or default


@dataclass(frozen=True)
class WebSettings:
    """The clinician pages (service/web)."""
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
            cookie_secure=env_flag("SCREENING_COOKIE_SECURE", True),
            session_hours=_int("SCREENING_SESSION_HOURS", 8),
        )


@dataclass(frozen=True)
class CdsHooksSettings:
    """CDS Hooks for EHRs (service/cdshooks)."""
    # SCREENING_CDS_ISSUERS: the allow-listed clients, as service.cdshooks.jwt_auth.parse_issuers reads them.
    issuers: str | None = None
    jwt_leeway: int = 30
    # The public base URL, when a proxy hides it from the request (a JWT's aud names it).
    base_url: str | None = None
    fhir_timeout: float = 2.0
    # Pages followed per FHIR search; a whole list longer than this is read as unread.
    fhir_max_pages: int = 5
    # FHIR prefetch is far larger than an intake.
    max_body_bytes: int = 4 * 1024 * 1024
    # "*" or the allowed origins; bearer tokens, not cookies, so "*" exposes no session.
    cors_origins: str | tuple[str, ...] = "*"

    @classmethod
    def from_env(cls) -> "CdsHooksSettings":
        origins = os.environ.get("SCREENING_CDS_CORS_ORIGINS", "*").strip()
        return cls(
            issuers=os.environ.get("SCREENING_CDS_ISSUERS"),
            jwt_leeway=_int("SCREENING_CDS_JWT_LEEWAY", 30),
            base_url=_text("SCREENING_CDS_BASE_URL").rstrip("/") or None,
            fhir_timeout=_float("SCREENING_CDS_FHIR_TIMEOUT", 2.0),
            fhir_max_pages=_at_least_one("SCREENING_CDS_FHIR_MAX_PAGES", 5),
            max_body_bytes=_int("SCREENING_CDS_MAX_BODY_BYTES", 4 * 1024 * 1024),
            cors_origins="*" if origins in ("", "*") else tuple(o.strip() for o in origins.split(",") if o.strip()),
        )


@dataclass(frozen=True)
class Settings:
    rules_dir: Path = field(default_factory=default_rules_path)
    engine_backend: str = "durable"
    # Intakes are a few kilobytes; anything near this is a mistake or an attack.
    max_body_bytes: int = 256 * 1024
    max_json_depth: int = 32
    database_url: str = ""
    # Where the service keeps its own files (SQLite log, the last good rule pack).
    state_dir: Path = Path("var")
    # Seconds between checks of the rules directory; 0 turns the watcher off.
    reload_interval: float = 2.0
    compile_timeout: float = 30.0
    # The rules cache: the read and linted pack kept by the digest of its files in
    # <state_dir>/rules-cache, and the master's compiled ruleset shared with the workers it forks
    # (service.policy.packcache, service.reload.preload). Off: every process reads, lints and
    # compiles the pack itself.
    rules_cache: bool = True
    # Requests per API key, a token bucket shared through the database; "0"/"off": none.
    rate_limit: str = "1200/minute"
    log_level: str = "info"
    # Set by `screening serve` for its workers once the master has checked the pack: a worker
    # that (re)starts on a broken rules directory then serves the last good pack instead.
    serving: bool = False
    web: WebSettings = field(default_factory=WebSettings)
    cds_hooks: CdsHooksSettings = field(default_factory=CdsHooksSettings)
    # How long a worker trusts an API key it has read: the bound on honouring a revocation.
    key_cache_seconds: float = 5.0

    @classmethod
    def from_env(cls, **overrides) -> "Settings":
        values = {
            "rules_dir": Path(os.environ.get("SCREENING_RULES_DIR") or default_rules_path()),
            "engine_backend": os.environ.get("SCREENING_ENGINE", "durable"),
            "max_body_bytes": _int("SCREENING_MAX_BODY_BYTES", 256 * 1024),
            "max_json_depth": _int("SCREENING_MAX_JSON_DEPTH", 32),
            "database_url": os.environ.get("DATABASE_URL", ""),
            "state_dir": Path(os.environ.get("SCREENING_STATE_DIR") or "var"),
            "reload_interval": _float("SCREENING_RELOAD_INTERVAL", 2.0),
            "compile_timeout": _float("SCREENING_COMPILE_TIMEOUT", 30.0),
            "rules_cache": env_flag("SCREENING_RULES_CACHE", True),
            "rate_limit": os.environ.get("SCREENING_RATE_LIMIT", "1200/minute"),
            "log_level": _text("SCREENING_LOG_LEVEL", "info"),
            "serving": os.environ.get(SERVING_ENV) == "1",
            "web": WebSettings.from_env(),
            "cds_hooks": CdsHooksSettings.from_env(),
            "key_cache_seconds": _float("SCREENING_KEY_CACHE_SECONDS", 5.0),
        }
        known = {f.name for f in fields(cls)}
        values.update({k: v for k, v in overrides.items() if k in known})
        return cls(**values)

    def pack_cache(self, create: bool = True):
        """The rules cache in the state directory, or None when SCREENING_RULES_CACHE is off.
        ``create=False`` (the CLI): use the service's cache if there is one, never make it."""
        if not self.rules_cache:
            return None
        from service.policy.packcache import PackCache

        return PackCache.for_state_dir(self.state_dir, create)

    @property
    def store_url(self) -> str:
        """DATABASE_URL, or the embedded default: SQLite at <state_dir>/screening.sqlite3."""
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(Path(self.state_dir) / 'screening.sqlite3').resolve()}"
