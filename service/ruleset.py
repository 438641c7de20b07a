"""A rule pack loaded and compiled: what a screening runs against."""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path

from service.engine import CompiledRules, compile_rules
from service.policy.loader import load_pack
from service.policy.model import RulePack


@dataclass(frozen=True)
class Ruleset:
    pack: RulePack
    compiled: CompiledRules
    loaded_at: dt.datetime = field(default_factory=lambda: dt.datetime.now(dt.timezone.utc))

    @property
    def summary(self) -> dict[str, str]:
        return self.pack.summary()


def load_ruleset(path: Path | str, backend: str = "durable") -> Ruleset:
    """Load, lint and compile a pack. Raises RulePackError or EngineError; never half-loads."""
    pack = load_pack(path)
    return Ruleset(pack, compile_rules(pack.rules, backend))


def default_rules_path() -> Path:
    """The shipped pack: rules/ketamine-screening beside the service package."""
    return Path(__file__).resolve().parent.parent / "rules" / "ketamine-screening"
