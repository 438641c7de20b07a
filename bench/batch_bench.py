"""Batch throughput (the `screening batch` path, all cores) and flat memory over many evaluations."""
from __future__ import annotations

import gc
import json
import os
import tempfile
import time
from pathlib import Path

from schemas.intake import IntakeSchema
from service.intake_reader import Limits, read_json
from service.batch import run_batch
from service.fastload import FastLoader
from service.ruleset import default_rules_path, load_ruleset
from service.screening import screen

from bench.measure import rss_mib

ROOT = Path(__file__).resolve().parent.parent


def _raw_intakes() -> list[str]:
    """Every test case intake of the shipped pack, plus the examples: a realistic mix."""
    ruleset = load_ruleset(default_rules_path(), "reference")
    raws = [json.dumps(c.intake) for c in ruleset.pack.tests]
    raws += [json.dumps(json.loads(p.read_text())) for p in sorted((ROOT / "examples").glob("*.json"))]
    return raws


def write_input(path: Path, count: int) -> Path:
    raws = _raw_intakes()
    with path.open("w") as f:
        for i in range(count):
            f.write(raws[i % len(raws)] + "\n")
    return path


def stages(sample: int = 1000, repeats: int = 5) -> dict:
    """Where one line's time goes in a single process (µs per line): what bounds a batch. Each
    stage's best of ``repeats`` passes, so a pass slowed by a neighbour on the machine drops out."""
    runs = [_stages_once(sample) for _ in range(repeats)]
    per_line = {k: min(r[k] for r in runs) for k in runs[0]}
    per_line["screen_minus_match"] = round(per_line["screen_total"] - per_line["engine_match"], 1)
    per_line["line_total"] = round(sum(per_line[k] for k in ("parse_json", "validate", "screen_total", "to_dict", "json_dumps")), 1)
    return per_line


def _stages_once(sample: int) -> dict:
    ruleset = load_ruleset(default_rules_path())
    as_of = ruleset.pack.test_as_of
    lines = [r.encode() for r in _raw_intakes()]
    lines = (lines * (sample // len(lines) + 1))[:sample]
    schema = IntakeSchema()
    out: dict[str, float] = {}
    t = time.perf_counter()
    raws = [read_json(line, Limits(1 << 20, 32)) for line in lines]
    out["parse_json"] = time.perf_counter() - t
    t = time.perf_counter()
    intakes = [schema.load(raw) for raw in raws]
    out["validate_marshmallow"] = time.perf_counter() - t
    fast = FastLoader(IntakeSchema())
    t = time.perf_counter()
    fast_intakes = [fast.load(raw) for raw in raws]
    out["validate"] = time.perf_counter() - t  # what batch and HTTP use (service.fastload)
    assert fast_intakes == intakes
    t = time.perf_counter()
    matches = [ruleset.compiled.match(i, as_of) for i in intakes]
    out["engine_match"] = time.perf_counter() - t
    t = time.perf_counter()
    decisions = [screen(i, ruleset, as_of=as_of) for i in intakes]
    out["screen_total"] = time.perf_counter() - t
    t = time.perf_counter()
    dicts = [d.to_dict() for d in decisions]
    out["to_dict"] = time.perf_counter() - t
    t = time.perf_counter()
    for d in dicts:
        json.dumps(d, ensure_ascii=False, separators=(",", ":"))
    out["json_dumps"] = time.perf_counter() - t
    del matches
    return {k: round(v / sample * 1e6, 1) for k, v in out.items()}


def run(quick: bool = False) -> dict:
    count = 20_000 if quick else 100_000
    workers = os.cpu_count() or 1
    with tempfile.TemporaryDirectory(prefix="screening-batch-") as tmp:
        source = write_input(Path(tmp) / "in.jsonl", count)
        summary = run_batch(source, Path(tmp) / "out.jsonl", rules_dir=default_rules_path(), workers=workers,
                            as_of=load_ruleset(default_rules_path(), "reference").pack.test_as_of)
        with (Path(tmp) / "out.jsonl").open("rb") as f:
            written = sum(1 for _ in f)
    return {
        "intakes": count,
        "workers": workers,
        "seconds": round(summary.seconds, 2),
        "intakes_per_s": round(count / summary.seconds, 1),
        "output_lines": written,
        "decisions": dict(summary.decisions),
        "errors": sum(summary.errors.values()),
        "per_line_single_process_us": stages(),
    }


def memory(quick: bool = False) -> dict:
    """RSS every 10,000 screen() evaluations on the durable backend."""
    total = 30_000 if quick else 100_000
    ruleset = load_ruleset(default_rules_path())
    schema = IntakeSchema()
    cases = [(schema.load(c.intake), c.as_of or ruleset.pack.test_as_of) for c in ruleset.pack.tests]
    gc.collect()
    samples = [(0, round(rss_mib(), 1))]
    for n in range(1, total + 1):
        intake, as_of = cases[n % len(cases)]
        screen(intake, ruleset, as_of=as_of).to_dict()
        if n % 10_000 == 0:
            samples.append((n, round(rss_mib(), 1)))
    after_first = samples[1][1]
    return {
        "evaluations": total,
        "rss_mib": samples,
        "growth_after_first_10k_mib": round(samples[-1][1] - after_first, 1),
    }
