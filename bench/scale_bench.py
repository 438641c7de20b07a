"""Scale: per-evaluation cost on generated packs of 100, 1,000 and 5,000 rules, side by side with
zen-engine on the same rules and intakes, and the time to load each pack.

One process, round-robin across sizes and contenders (``bench.measure.side_by_side``), so the
ratios do not depend on when a neighbour on the machine was busy. Intakes: *five* and *none* (below),
and the growth intakes *clean* and *hot* of ``bench.packs``, whose fired rules grow with the pack.
"""
from __future__ import annotations

import tempfile
import time
from pathlib import Path

SIZES = (100, 1000, 5000)

# *five* is complete and healthy and fires exactly five rules at every size (``bench.packs.FIVE``):
# the measure. *none* concerns no generated rule and answers almost nothing (low blood
# pressure on the nasal route): every rule reading what it lacks is undecided, so its cost follows
# the rules that read the missing answers. *clean* and *hot* fire more rules as the pack grows.
NONE = {"subject_id": "none", "treatment": {"route": "esketamine_nasal", "indication": "treatment_resistant_depression"},
        "vitals": {"systolic_bp": 91, "diastolic_bp": 41}}
CONTENDERS = ("screen", "match", "zen_graph", "zen_table")


def run(quick: bool = False, sizes=SIZES) -> dict:
    from schemas.intake import IntakeSchema
    from service.engine import compile_rules
    from service.policy.loader import load_pack
    from service.ruleset import Ruleset
    from service.screening import screen

    from bench.measure import side_by_side
    from bench.packs import AS_OF, FIVE, intakes, write_pack
    from bench.zen_pack import ZenRules, ZenTable

    schema = IntakeSchema()
    raws = {"five": FIVE, "none": NONE, **{r["subject_id"]: r for r in intakes() if r["subject_id"] in ("clean", "hot")}}
    inputs = {name: schema.load(raw) for name, raw in raws.items()}
    contenders, rows = {}, []
    with tempfile.TemporaryDirectory() as tmp:
        for size in sizes:
            directory = write_pack(Path(tmp) / str(size), size)
            start = time.perf_counter()
            pack = load_pack(directory)
            loaded = time.perf_counter()
            durable = compile_rules(pack.rules, "durable")
            compiled = time.perf_counter()
            zen = ZenRules(pack.rules)
            zen_built = time.perf_counter()
            table = ZenTable(pack.rules)
            table_built = time.perf_counter()
            reference = compile_rules(pack.rules, "reference")
            ruleset = Ruleset(pack, durable)
            fired, agree = {}, True
            for name, intake in inputs.items():
                got = durable.match(intake, AS_OF).fired
                agree &= got == reference.match(intake, AS_OF).fired == zen.match(intake, AS_OF) == table.match(intake, AS_OF)
                fired[name] = len(got)
                contenders[(size, name, "screen")] = (lambda r, i: lambda _: screen(i, r, as_of=AS_OF))(ruleset, intake)
                contenders[(size, name, "match")] = (lambda c, i: lambda _: c.match(i, AS_OF))(durable, intake)
                contenders[(size, name, "zen_graph")] = (lambda z, i: lambda _: z.match(i, AS_OF))(zen, intake)
                contenders[(size, name, "zen_table")] = (lambda z, i: lambda _: z.match(i, AS_OF))(table, intake)
            rows.append({"rules": size, "shards": durable.shard_count, "load_lint_s": round(loaded - start, 3),
                         "compile_s": round(compiled - loaded, 3), "zen_build_s": round(zen_built - compiled, 3),
                         "zen_table_build_s": round(table_built - zen_built, 3),
                         "fired": fired, "agree": agree})
        results = side_by_side(contenders, [None], 3 if quick else 9, warmup=2)
    for row in rows:
        size = row["rules"]
        row["latency_us"] = {name: {kind: round(results[(size, name, kind)]["median_us"], 1)
                                    for kind in CONTENDERS} for name in inputs}
    return {"intakes": list(inputs), "rows": rows}
