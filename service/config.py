"""Configuration from the environment, in one place. Every variable is in the README table."""
from __future__ import annotations

import os
from dataclasses import dataclass, field, fields
from pathlib import Path

from service.ruleset import default_rules_path


def _int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise SystemExit(f"configuration: {name} must be a whole number, got {raw!r}") from None


def _float(name: str, default: float) -> float:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return float(raw)
    except ValueError:
        raise SystemExit(f"configuration: {name} must be a number, got {raw!r}") from None


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
