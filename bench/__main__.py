"""Run every benchmark once and write docs/performance.md (and the raw numbers beside it).

    .venv/bin/python -m bench            # full run, a few minutes on 2 cores
    .venv/bin/python -m bench --quick    # smaller counts, for a check that it all works
    .venv/bin/python -m bench --only engine,growth
    .venv/bin/python -m bench --render   # the Markdown again from docs/performance.json
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from bench import report
from bench.measure import machine

ROOT = Path(__file__).resolve().parent.parent
SECTIONS = ("engine", "growth", "scale", "http", "batch", "memory")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smaller counts and shorter runs")
    parser.add_argument("--only", default=",".join(SECTIONS), help=f"comma-separated subset of {','.join(SECTIONS)}")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "performance.md")
    parser.add_argument("--render", action="store_true",
                        help="only rewrite the Markdown from the last run's JSON (after editing bench/report.py)")
    args = parser.parse_args(argv)
    if args.render:
        args.out.write_text(report.markdown(json.loads(args.out.with_suffix(".json").read_text())))
        return 0
    wanted = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = set(wanted) - set(SECTIONS)
    if unknown:
        parser.error(f"unknown section(s): {', '.join(sorted(unknown))}")

    results: dict = {"machine": machine(), "quick": args.quick, "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
                     "command": "python -m bench" + (" --quick" if args.quick else "")
                     + ("" if args.only == ",".join(SECTIONS) else f" --only {args.only}")}
    started = time.perf_counter()
    for section in SECTIONS:
        if section not in wanted:
            continue
        print(f"bench: {section} …", file=sys.stderr, flush=True)
        t = time.perf_counter()
        if section == "engine":
            from bench import engine_bench
            results["engine"] = engine_bench.run(args.quick)
        elif section == "growth":
            from bench import growth
            results["growth"] = growth.run(args.quick)
        elif section == "scale":
            from bench import scale_bench
            results["scale"] = scale_bench.run(args.quick)
        elif section == "http":
            from bench import http_bench
            results["http"] = http_bench.run(args.quick)
        elif section == "batch":
            from bench import batch_bench
            results["batch"] = batch_bench.run(args.quick)
        elif section == "memory":
            from bench import batch_bench
            results["memory"] = batch_bench.memory(args.quick)
        print(f"bench: {section} done in {time.perf_counter() - t:.0f} s", file=sys.stderr, flush=True)
    results["seconds"] = round(time.perf_counter() - started, 1)
    results["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(results, indent=2) + "\n")
    args.out.write_text(report.markdown(results))
    print(f"bench: wrote {args.out} and {args.out.with_suffix('.json')} ({results['seconds']} s)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
