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
        # Each sample the mean of 5 consecutive calls: a single call right after another
        # contender (thousands of rules' data) measured mostly cache misses, for every contender.
        results = side_by_side(contenders, [None], 3 if quick else 15, warmup=3, repeat=5)
    for row in rows:
        size = row["rules"]
        row["latency_us"] = {name: {kind: round(results[(size, name, kind)]["median_us"], 1)
                                    for kind in CONTENDERS} for name in inputs}
    return {"intakes": list(inputs), "rows": rows, "startup": startup(quick)}


# --- start and reload of a 5,000-rule pack, with and without the rules cache ---------------------

STARTUP_RULES = 5000
ROOT = Path(__file__).resolve().parent.parent


def _first_screening(pack: Path, state: Path, cache: bool) -> float:
    """Seconds from launching gunicorn (2 workers) to its first 200 on POST /v1/screenings."""
    import json
    import os
    import signal
    import socket
    import subprocess
    import sys
    import urllib.error
    import urllib.request

    from service.auth import create_key
    from service.store.factory import open_store

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    state.mkdir(parents=True, exist_ok=True)
    database = f"sqlite:///{state}/decisions.db"
    store = open_store(database)  # migrated and keyed before the clock starts
    try:
        token = create_key(store.keys, "bench", ["screen"]).token
    finally:
        store.close()
    env = {**os.environ, "SCREENING_BIND": f"127.0.0.1:{port}", "WEB_CONCURRENCY": "2",
           "SCREENING_RULES_DIR": str(pack), "SCREENING_STATE_DIR": str(state), "DATABASE_URL": database,
           "SCREENING_RELOAD_INTERVAL": "0", "SCREENING_RATE_LIMIT": "off", "SCREENING_LOG_LEVEL": "warning",
           "SCREENING_RULES_CACHE": "1" if cache else "0", "PYTHONPATH": str(ROOT)}
    for private in ("PROMETHEUS_MULTIPROC_DIR", "_SCREENING_METRICS_DIR_PREPARED_BY", "_SCREENING_METRICS_DIR_TEMPORARY"):
        env.pop(private, None)
    body = (ROOT / "examples" / "eligible-iv.json").read_bytes()
    json.loads(body)
    started = time.perf_counter()
    server = subprocess.Popen([sys.executable, "-m", "gunicorn", "-c", str(ROOT / "service" / "gunicorn_conf.py"),
                               "service.app:create_app()"], env=env, cwd=ROOT,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while time.perf_counter() - started < 300 and server.poll() is None:
            request = urllib.request.Request(f"http://127.0.0.1:{port}/v1/screenings", data=body, method="POST",
                                             headers={"Content-Type": "application/json",
                                                      "Authorization": f"Bearer {token}"})
            try:
                with urllib.request.urlopen(request, timeout=30) as response:
                    if response.status == 200:
                        return time.perf_counter() - started
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.05)
        raise RuntimeError("gunicorn did not screen (run `screening serve` on the pack to see why)")
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(10)


def _bump(pack: Path, tag: str) -> None:
    meta = pack / "pack.yaml"
    lines = meta.read_text().splitlines()
    meta.write_text("\n".join(f"version: bench-{tag}" if line.startswith("version:") else line for line in lines) + "\n")


def startup(quick: bool = False) -> dict:
    """A 5,000-rule pack: time to the first screening after gunicorn starts (2 workers), and a
    reload as one worker does it, without the rules cache (as before it) and with it, the modes
    interleaved in every round. *first*: an empty cache (what the first start or the first
    worker to see an edit pays, writing the entry); *warm*: a restart, or every other worker."""
    import statistics
    import tempfile

    from service.policy.packcache import PackCache
    from service.reload import Reloader
    from service.ruleset import RulesetHolder, default_rules_path, load_ruleset

    from bench.packs import write_pack

    rounds = 1 if quick else 3
    start = {"off": [], "first": [], "warm": [], "shipped": []}
    reload_s = {"off": [], "first": [], "warm": []}
    with tempfile.TemporaryDirectory(prefix="screening-startup-") as tmp:
        tmp = Path(tmp)
        pack = write_pack(tmp / "pack", STARTUP_RULES)
        for n in range(rounds):
            start["off"].append(_first_screening(pack, tmp / f"off-{n}", cache=False))
            start["first"].append(_first_screening(pack, tmp / f"on-{n}", cache=True))
            start["warm"].append(_first_screening(pack, tmp / f"on-{n}", cache=True))
            # the floor: the same start with the shipped pack (a few dozen rules), what is not the pack's
            start["shipped"].append(_first_screening(default_rules_path(), tmp / f"shipped-{n}", cache=True))
        base = load_ruleset(pack)
        for n in range(rounds):
            def timed(tag: str, cache) -> float:
                reloader = Reloader(RulesetHolder(base), pack, "durable", tmp / f"reload-{n}", cache=cache)
                began = time.perf_counter()
                outcome = reloader.reload()
                if outcome.status != "loaded":
                    raise RuntimeError(f"reload {tag}: {outcome.status} {outcome.problems[:3]}")
                return time.perf_counter() - began
            _bump(pack, f"off-{n}")
            reload_s["off"].append(timed("off", None))
            _bump(pack, f"on-{n}")
            cache = PackCache.for_state_dir(tmp / f"reload-cache-{n}")
            reload_s["first"].append(timed("first", cache))
            reload_s["warm"].append(timed("warm", cache))
    median = {k: round(statistics.median(v), 2) for k, v in start.items()}
    reload_median = {k: round(statistics.median(v), 2) for k, v in reload_s.items()}
    return {"rules": STARTUP_RULES, "rounds": rounds, "workers": 2, "first_screening_s": median,
            "reload_s": reload_median}
