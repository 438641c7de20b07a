"""A rule pack loaded and compiled: what a screening runs against."""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

from service.engine import CompiledRules, compile_rules
from service.engine.base import layers
from service.policy.citations import expand
from service.policy.completeness import CompletenessPlan
from service.policy.loader import load_pack
from service.policy.model import Rule, RulePack

if TYPE_CHECKING:
    from service.policy.packcache import PackCache


@dataclass(frozen=True)
class Ruleset:
    pack: RulePack
    compiled: CompiledRules
    loaded_at: dt.datetime = field(default_factory=lambda: dt.datetime.now(dt.timezone.utc))
    # The digest of the files it was read from (service.policy.packcache.files_digest), when
    # loaded through the rules cache; None: not known.
    files: str | None = field(default=None, compare=False)

    @property
    def summary(self) -> dict[str, str]:
        return self.pack.summary()

    @cached_property
    def intake_schema(self):
        """The validator of intakes for these rules, from the pack's field catalog: swapped with
        the rules in one step, so a field added with its rule is accepted from the same moment."""
        return self.pack.catalog.intake_schema()

    @cached_property
    def intake_loader(self):
        """The same validator on the fast path for valid intakes (service.fastload), built once
        per ruleset from its own schema and swapped with it: HTTP and batch use it."""
        from service.fastload import FastLoader

        return FastLoader(self.intake_schema)

    @cached_property
    def completeness(self) -> CompletenessPlan:
        """What each rule reads, for the three-valued pass of a screening."""
        return CompletenessPlan(self.pack)

    @cached_property
    def sources(self) -> dict[str, list[dict]]:
        """rule id -> its citation with every source spelled out (the pack's registry)."""
        return {r.id: expand(r.citation, self.pack.citations) for r in self.pack.rules}

    @cached_property
    def optional_sources(self) -> dict[str, list[dict]]:
        return {o.path: expand(o.citation, self.pack.citations) for o in self.pack.optional}

    @cached_property
    def evaluation_order(self) -> tuple[Rule, ...]:
        """The rules with every finding rule before the rules that use it (the engine's layers),
        whatever order the files give them in."""
        return tuple(rule for layer in layers(self.pack.rules) for rule in layer)

    @cached_property
    def evaluation_rank(self) -> dict[str, int]:
        """rule id -> its place in ``evaluation_order``."""
        return {rule.id: i for i, rule in enumerate(self.evaluation_order)}


def load_ruleset(path: Path | str, backend: str = "durable", cache: PackCache | None = None) -> Ruleset:
    """Load, lint and compile a pack. Raises RulePackError or EngineError; never half-loads.
    With a ``cache``, a pack read before is not read and linted again (only compiled)."""
    files = None
    if cache is not None:
        pack, _, files = cache.load(path)
    else:
        pack = load_pack(path)
    ruleset = Ruleset(pack, compile_rules(pack.rules, backend), files=files)
    ruleset.intake_loader  # built here, off the request path: the first screening does not pay for it
    return ruleset


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
