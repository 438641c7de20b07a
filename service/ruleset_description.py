"""A loaded ruleset described for people and integrators: GET /v1/rulesets/current and
`screening rules show` print the same thing."""
from __future__ import annotations

from service.ruleset import Ruleset


def describe(ruleset: Ruleset) -> dict:
    pack = ruleset.pack
    return {
        **pack.summary(),
        "description": pack.description,
        "loaded_at": ruleset.loaded_at.isoformat().replace("+00:00", "Z"),
        "engine": ruleset.compiled.backend,
        "rules": [
            {
                "rule_id": r.id, "title": r.title, "effect": r.effect, "concludes": r.concludes,
                "severity": r.severity, "priority": r.priority if r.effect else None,
                "routes": list(r.routes), "indications": list(r.indications),
                "requires": list(r.requires), "citation": r.citation, "source": str(r.location),
            }
            for r in pack.rules
        ],
    }
