"""Growth: generated packs of increasing size, each measured in a fresh process (clean RSS).

``python -m bench.growth SIZE [--reps N]`` prints one JSON object; ``run()`` drives the sizes.
"""
from __future__ import annotations

import argparse
import gc
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SIZES = (10, 100, 1000, 5000)


def measure(size: int, reps: int) -> dict:
    from schemas.intake import IntakeSchema
    from service.engine import compile_rules
    from service.policy.loader import load_pack
    from service.ruleset import Ruleset
    from service.screening import screen

    from bench.measure import rss_mib, summarise
    from bench.packs import AS_OF, intakes, write_pack

    with tempfile.TemporaryDirectory() as tmp:
        directory = write_pack(Path(tmp) / "pack", size)
        inputs = [IntakeSchema().load(raw) for raw in intakes()]
        gc.collect()
        rss_before = rss_mib()
        start = time.perf_counter()
        pack = load_pack(directory)
        loaded = time.perf_counter()
        durable = compile_rules(pack.rules, "durable")
        compiled = time.perf_counter()
    gc.collect()
    rss_after = rss_mib()
    reference = compile_rules(pack.rules, "reference")
    ruleset = Ruleset(pack, durable)

    per_intake = {}
    correct = True
    for raw, intake in zip(intakes(), inputs):
        fired = durable.match(intake, AS_OF).fired
        same = fired == reference.match(intake, AS_OF).fired
        correct &= same
        timings = {}
        for name, fn in (("match_durable", lambda: durable.match(intake, AS_OF)),
                         ("match_reference", lambda: reference.match(intake, AS_OF)),
                         ("screen_durable", lambda: screen(intake, ruleset, as_of=AS_OF))):
            ns = []
            for _ in range(reps):
                t = time.perf_counter_ns()
                fn()
                ns.append(time.perf_counter_ns() - t)
            timings[name] = summarise(ns)["median_us"]
        per_intake[raw["subject_id"]] = {"fired": len(fired), "equals_reference": same, **timings}
    decision = screen(inputs[0], ruleset, as_of=AS_OF)
    return {
        "rules": size,
        "shards": durable.shard_count,
        "load_lint_s": round(loaded - start, 3),
        "compile_s": round(compiled - loaded, 3),
        "rss_delta_mib": round(rss_after - rss_before, 1),
        "correct": correct,
        "hot_decision": decision.decision,
        "hot_reasons": len(decision.reasons),
        "intakes": per_intake,
    }


def interleaved(sizes, rounds: int) -> dict[int, dict[str, float]]:
    """``match()`` latency of every size on every intake, measured round-robin in one process so
    that the ratios between sizes do not depend on when each size's process happened to run."""
    from schemas.intake import IntakeSchema
    from service.ruleset import load_ruleset

    from bench.measure import side_by_side
    from bench.packs import AS_OF, intakes, write_pack

    inputs = [IntakeSchema().load(raw) for raw in intakes()]
    names = [raw["subject_id"] for raw in intakes()]
    contenders = {}
    with tempfile.TemporaryDirectory() as tmp:
        for size in sizes:
            compiled = load_ruleset(write_pack(Path(tmp) / str(size), size)).compiled
            for name, intake in zip(names, inputs):
                contenders[(size, name)] = (lambda c, i: lambda _: c.match(i, AS_OF))(compiled, intake)
    results = side_by_side(contenders, [None], rounds, warmup=1)
    return {size: {name: results[(size, name)]["median_us"] for name in names} for size in sizes}


def run(quick: bool = False, sizes=SIZES) -> list[dict]:
    results = []
    for size in sizes:
        reps = max(5, (200 if quick else 2000) // max(size // 10, 1))
        out = subprocess.run([sys.executable, "-m", "bench.growth", str(size), "--reps", str(reps)],
                             capture_output=True, text=True, timeout=900,
                             cwd=str(Path(__file__).resolve().parent.parent))
        if out.returncode != 0:
            results.append({"rules": size, "error": out.stderr.strip().splitlines()[-1:] or ["failed"]})
            continue
        results.append(json.loads(out.stdout))
    side = interleaved(sizes, 5 if quick else 15)
    for row in results:
        row["interleaved_match_us"] = side[row["rules"]]
    return results


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("size", type=int)
    parser.add_argument("--reps", type=int, default=50)
    args = parser.parse_args()
    print(json.dumps(measure(args.size, args.reps)))
