"""A rule pack loaded and compiled: what a screening runs against."""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from service.engine import CompiledRules, compile_rules
from service.engine.base import layers
from service.policy.loader import load_pack
from service.policy.model import Rule, RulePack


@dataclass(frozen=True)
class Ruleset:
    pack: RulePack
    compiled: CompiledRules
    loaded_at: dt.datetime = field(default_factory=lambda: dt.datetime.now(dt.timezone.utc))

    @property
    def summary(self) -> dict[str, str]:
        return self.pack.summary()

    @cached_property
    def intake_schema(self):
        """The validator of intakes for these rules, from the pack's field catalog: swapped with
        the rules in one step, so a field added with its rule is accepted from the same moment."""
        return self.pack.catalog.intake_schema()

    @cached_property
    def evaluation_order(self) -> tuple[Rule, ...]:
        """The rules with every finding rule before the rules that use it (the engine's layers),
        whatever order the files give them in."""
        return tuple(rule for layer in layers(self.pack.rules) for rule in layer)


def load_ruleset(path: Path | str, backend: str = "durable") -> Ruleset:
    """Load, lint and compile a pack. Raises RulePackError or EngineError; never half-loads."""
    pack = load_pack(path)
    return Ruleset(pack, compile_rules(pack.rules, backend))


def default_rules_path() -> Path:
    """The shipped pack: rules/ketamine-screening beside the service package."""
    return Path(__file__).resolve().parent.parent / "rules" / "ketamine-screening"


class RulesetHolder:
    """The ruleset an app screens with. Swapping is one reference assignment, so a request
    sees the old ruleset or the new one, never a mixture; each request reads ``current`` once."""

    def __init__(self, ruleset: Ruleset):
        self._current = ruleset
        self.last_error: str | None = None

    @property
    def current(self) -> Ruleset:
        return self._current

    def swap(self, ruleset: Ruleset) -> None:
        self._current = ruleset
        self.last_error = None
