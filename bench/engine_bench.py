"""Engine: per-evaluation latency on the shipped pack, side by side with the floor and a peer.

Inputs are every test case of the shipped pack (validated once, each with its ``as_of``), so the
mix holds clean intakes, single contraindications, many at once and missing data.
"""
from __future__ import annotations

from schemas.intake import IntakeSchema
from service.ruleset import default_rules_path, load_ruleset
from service.screening import screen

from bench import handwritten
from bench.measure import side_by_side
from bench.zen_pack import ZenRules


def cases(ruleset) -> list[tuple[dict, object]]:
    schema = IntakeSchema()
    return [(schema.load(c.intake), c.as_of or ruleset.pack.test_as_of) for c in ruleset.pack.tests]


def agreement(ruleset, reference, zen: ZenRules, inputs) -> dict:
    """Every contender against screen() (outcomes) and the reference backend (fired rules)."""
    hand_bad, zen_bad, durable_bad = [], [], []
    for n, (intake, as_of) in enumerate(inputs):
        d = screen(intake, ruleset, as_of=as_of)
        expected = (d.decision, tuple(d.reason_ids), tuple(f.finding for f in d.findings), tuple(d.missing),
                    d.physician_review_required)
        if tuple(handwritten.decide(intake, as_of)) != expected:
            hand_bad.append(ruleset.pack.tests[n].name)
        fired = reference.compiled.match(intake, as_of).fired
        if zen.match(intake, as_of) != fired:
            zen_bad.append(ruleset.pack.tests[n].name)
        if ruleset.compiled.match(intake, as_of).fired != fired:
            durable_bad.append(ruleset.pack.tests[n].name)
    return {"cases": len(inputs), "handwritten_disagrees": hand_bad, "zen_disagrees": zen_bad,
            "durable_disagrees": durable_bad}


def run(quick: bool = False) -> dict:
    path = default_rules_path()
    ruleset = load_ruleset(path, "durable")
    reference = load_ruleset(path, "reference")
    zen = ZenRules(ruleset.pack.rules)
    inputs = cases(ruleset)
    contenders = {
        "screen() durable": lambda c: screen(c[0], ruleset, as_of=c[1]),
        "screen() reference": lambda c: screen(c[0], reference, as_of=c[1]),
        "match() durable": lambda c: ruleset.compiled.match(c[0], c[1]),
        "match() reference": lambda c: reference.compiled.match(c[0], c[1]),
        "zen-engine": lambda c: zen.match(c[0], c[1]),
        "hand-written": lambda c: handwritten.decide(c[0], c[1]),
    }
    rounds = 3 if quick else 15
    results = side_by_side(contenders, inputs, rounds)
    zen_median = results["zen-engine"]["median_us"]
    hand_median = results["hand-written"]["median_us"]
    for r in results.values():
        r["x_zen"] = r["median_us"] / zen_median
        r["x_handwritten"] = r["median_us"] / hand_median
    return {
        "rules": len(ruleset.pack.rules),
        "shards": getattr(ruleset.compiled, "shard_count", None),
        "inputs": len(inputs),
        "rounds": rounds,
        "agreement": agreement(ruleset, reference, zen, inputs),
        "latency": results,
    }
