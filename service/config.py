"""Configuration from the environment, in one place. Every variable is in the README table."""
from __future__ import annotations

import os
from dataclasses import dataclass, field, fields
from pathlib import Path

from service.ruleset import default_rules_path


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


def _float(name: str, default: float) -> float:
    return env_number(name, default, float)


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
    # Requests per API key, a token bucket shared through the database; "0"/"off": none.
    rate_limit: str = "1200/minute"
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
            "rate_limit": os.environ.get("SCREENING_RATE_LIMIT", "1200/minute"),
            "key_cache_seconds": _float("SCREENING_KEY_CACHE_SECONDS", 5.0),
        }
        known = {f.name for f in fields(cls)}
        values.update({k: v for k, v in overrides.items() if k in known})
        return cls(**values)

    @property
    def store_url(self) -> str:
        """DATABASE_URL, or the embedded default: SQLite at <state_dir>/screening.sqlite3."""
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(Path(self.state_dir) / 'screening.sqlite3').resolve()}"
