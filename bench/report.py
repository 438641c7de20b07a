"""docs/performance.md from one run's results: every number in it comes from that run."""
from __future__ import annotations


def _f(value, digits: int = 1) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def _verdict(ok: bool | None) -> str:
    return "–" if ok is None else ("**met**" if ok else "**missed**")


def markdown(r: dict) -> str:
    m = r["machine"]
    out = [
        "# Performance",
        "",
        f"One run of `{r['command']}` ({r['started']}, {r['seconds']} s). Raw numbers: "
        "[`performance.json`](performance.json). Regenerate both with the same command.",
        "",
        "## Machine",
        "",
        "| | |",
        "|---|---|",
        f"| CPU | {m['cpu']} |",
        f"| `nproc` | {m['nproc']} |",
        f"| memory | {m['memory']} |",
        f"| Python | {m['python']} ({m['platform']}) |",
        "| packages | " + ", ".join(f"{k} {v}" for k, v in m["versions"].items()) + " |",
        f"| commit | {m['git']} |",
        f"| load average (1, 5, 15 min) | {m['load_average_at_start']} at start, {r.get('load_average_at_end')} at end |",
        "",
        "The machine is shared (other engineers' test runs and servers): a load average above `nproc` "
        "means the benchmark got less than the whole machine. Ratios are measured side by side, "
        "interleaved, so both sides of a ratio see the same neighbours; absolute numbers are a floor.",
        "",
        "## How to reproduce",
        "",
        "```sh",
        "python3 -m venv .venv && .venv/bin/pip install -e '.[dev,bench]'",
        ".venv/bin/python -m bench            # full run (a few minutes); --quick for a smoke run",
        ".venv/bin/python -m bench --only engine,growth   # a subset",
        "```",
        "",
        "The HTTP section needs `wrk` (installed with apt-get when missing and running as root).",
        "",
    ]
    out += _targets(r)
    if "engine" in r:
        out += _engine(r["engine"])
    if "growth" in r:
        out += _growth(r["growth"])
    if "scale" in r:
        out += _scale(r["scale"])
    if "http" in r:
        out += _http(r["http"])
    if "batch" in r:
        out += _batch(r["batch"])
    if "memory" in r:
        out += _memory(r["memory"])
    out += _analysis()
    return "\n".join(out) + "\n"


def _analysis() -> list[str]:
    """What the profiles said (pyinstrument, cProfile, on this machine, while writing the bench)."""
    return [
        "## Where the time goes (profiles)",
        "",
        "`POST /v1/screenings`: each part timed on its own or switched off, without a profiler (cProfile "
        "and pyinstrument both inflate call-dense Python such as SQLAlchemy's several-fold), through the "
        "Flask test client, one thread, decision log on tmpfs, best of 25 rounds of 150 requests "
        "(load average 2.6 on 2 cores). Loading a 5,000-rule pack was profiled with cProfile.",
        "",
        "| part of one `POST /v1/screenings` (test client, tmpfs, one request at a time) | µs | share |",
        "|---|---:|---:|",
        "| the work `/healthz` does too (Flask, werkzeug, request id, log line, metrics, headers) | 160 | 20 % |",
        "| decision log write: row made ready, group commit, one INSERT and COMMIT for a batch of one, "
        "SQLite's WAL checkpoints (a 1,000-page copy every ~300 decisions, 10-20 % of the write) | 220 | 28 % |",
        "| `screen()`: engine match, evidence, missing data, messages (alone, warm: 172 µs) | 172 | 22 % |",
        "| reading the body strictly (11 µs) and validating it on the fast path (25 µs) | 36 | 5 % |",
        "| encoding the decision once (`to_dict` + `to_json`, the same text for the response and the log) | 15 | 2 % |",
        "| the rest: the test client's POST, API key check, webargs for `explain`, a decision's log "
        "fields and metrics, the response | 193 | 24 % |",
        "",
        "- **What was cut** (same harness, before → after, side by side): a screening's cost above "
        "`/healthz` went from 782 to 620 µs, ratio in the test client 0.17 → 0.21. The decision log's "
        "INSERT was SQLAlchemy Core per call (compile-cache lookup, parameter processing, a pooled "
        "connection and its transaction: ~¼ of the request under a profiler); now the row is made ready "
        "in the request's thread with SQLAlchemy's own bind processors for the dialect, and the group "
        "commit's leader sends one multi-row INSERT compiled once per batch size (`MultiRowInsert` in "
        "`service/store/sql.py`; tests prove rows identical to Core's insert on SQLite and PostgreSQL). "
        "`jsonable()` copied the decision and the intake in Python before `json.dumps`; `to_json` encodes "
        "in one pass of the C encoder with a hook for dates (same bytes, property-tested). webargs "
        "instantiated the `explain` query schema per request (now one instance; OpenAPI unchanged). The "
        "writers' lock file stays open per process. A raw DBAPI connection instead of SQLAlchemy's "
        "`begin()` would save ~12 µs per commit more and lose pre-ping reconnects: not taken.",
        "- **Durable decisions**: SQLite runs in WAL mode with `synchronous=FULL`: one fsync of the WAL "
        "per commit (a rollback journal would take several), plus a checkpoint's fsync of the database "
        "file about every 1,000 pages. Every request commits before it answers; the requests in flight "
        "share one transaction and one fsync (`service/store/groupcommit.py`), and the gunicorn workers "
        "take turns on a lock file, each turn writing everything its worker has waiting. How big the "
        "batches get is the server's own metric `screening_decision_log_commit_rows` (section 3): with 2 "
        "workers × 4 threads and 8 clients, about 1.5-3 decisions per commit, because a worker has at most "
        "4 requests in flight and wrk's 8 keep-alive connections often all land on one worker (gthread "
        "accepts as many as it can). Measured under load, a commit holding its turn took ~2 ms on disk "
        "(p50; `fdatasync` on this shared virtual disk 0.1-0.3 ms idle, ~1.7 ms under load) against "
        "~0.2 ms on tmpfs: while it runs, the worker's other threads have finished their CPU and wait, so "
        "the disk run loses throughput the tmpfs run does not. 8 or 16 threads per worker let more "
        "requests share a commit (4 per commit), but their GIL contention made each commit slower and "
        "three alternated runs showed no steady gain: the default stays 4. What would make more "
        "requests share an fsync is one writer for every worker (a writer process, or PostgreSQL's own "
        "group commit with `commit_delay`): a larger change, left for a later issue. `SO_REUSEPORT` (the "
        "kernel spreading connections over the workers) was tried too: no gain in two alternated runs.",
        "- **No write per request besides the decision**: API keys are read once per worker every "
        "`SCREENING_KEY_CACHE_SECONDS`; rate-limit tokens are taken from the shared bucket a second's worth "
        "at a time (README, *Rate limit and key cache tolerances*).",
        "- **Why 0.5× is out of reach with this stack**: `/healthz` costs ~160 µs of Python in Flask; "
        "`screen()` alone is ~170 µs and the durable write ~100-200 µs (SQLite's own B-tree and WAL work "
        "for a ~11 KB row and six indexes, most of what is left of it), so a screening is at least ~3× "
        "`/healthz` before Flask, auth and the body are counted, and wrk shares the two cores.",
        "- **Engine**: conditions are grouped into durable-rules shards by a *guard* (a literal the "
        "condition cannot hold without: a value, an item's value in a list of records — a medication's "
        "name —, a threshold, a finding, a present field), and a guard index (`service/engine/index.py`) "
        "picks the shards an intake can satisfy; each shard is asserted only the fact's properties it "
        "reads. An intake that concerns few rules of a large pack meets few shards (*five*: one shard of "
        "184 at 5,000 rules).",
        "- **`screen()`** visits the rules that fired, those reading something the intake lacks or "
        "requiring it, and the users of a finding that may be undecided; every other rule is \"not "
        "fired\" and says nothing (tests/test_screening_visits.py holds this to `explain`, which visits "
        "every rule). Rules reading only absent answers are settled by group of what they read (their "
        "three-valued answer is the same for every intake lacking those answers, worked out once), so an "
        "intake missing a whole section pays a set comparison per group, not a visit per rule. What grows "
        "with what fires: the evidence of each fired rule (the values that made it fire, re-read in "
        "Python: about three quarters of `screen()` on *hot*, which fires thousands of rules at once; "
        "zen-engine returns no evidence).",
        "- **Loading**: a per-rule scan of the file's positions made loading quadratic (5.6 s of 17 s under "
        "cProfile for 5,000 rules); positions are now grouped in one pass, YAML is parsed by libyaml "
        "(`CSafeLoader`, same line and column marks), and one schema instance reads a file's rules.",
        "- **Batch**: marshmallow's machinery was the largest stage of a line; `service/fastload.py` walks the "
        "same schema object (fields' own conversion and validators, the schema's hooks) and falls back to "
        "`schema.load` for any problem, so errors are marshmallow's; tests/test_batch.py holds the two to "
        "the same output on generated valid and invalid intakes.",
        "",
    ]


def _targets(r: dict) -> list[str]:
    rows = []
    if "engine" in r:
        lat = r["engine"]["latency"]
        x = lat["screen() durable"]["x_zen"]
        xm = lat["match() durable"]["x_zen"]
        rows.append(("Engine: ≤ 1.0× zen-engine per evaluation (median)",
                     f"`screen()` {x:.2f}×, `match()` {xm:.2f}× zen-engine", _verdict(x <= 1.0)))
    if "growth" in r:
        by = {g["rules"]: g for g in r["growth"] if "error" not in g}
        if 100 in by and 1000 in by:
            ratios = {k: by[1000]["interleaved_match_us"][k] / by[100]["interleaved_match_us"][k]
                      for k in by[100]["intakes"]}
            worst = max(ratios.values())
            fired = {k: by[1000]["intakes"][k]["fired"] / max(by[100]["intakes"][k]["fired"], 1) for k in ratios}
            rows.append(("Growth: 1,000 rules ≤ 10× the 100-rule cost",
                         "`match()` " + ", ".join(f"{k} {v:.1f}×" for k, v in ratios.items())
                         + " (fired rules grew " + ", ".join(f"{v:.1f}×" for v in fired.values()) + ")",
                         _verdict(worst <= 10.0)))
        ok = all(g.get("correct") for g in r["growth"])
        rows.append(("Growth: every size loads and decides as the reference backend",
                     ", ".join(f"{g['rules']:,}: {'yes' if g.get('correct') else g.get('error', 'NO')}" for g in r["growth"]),
                     _verdict(ok)))
    if "http" in r:
        h = r["http"]
        if "error" in h:
            rows.append(("HTTP: screening ≥ 0.5× /healthz throughput", h["error"], _verdict(None)))
        else:
            rows.append(("HTTP: screening ≥ 0.5× /healthz throughput",
                         f"{h['ratio']:.2f}× ({_f(h['screenings_rps'])} vs {_f(h['healthz_rps'])} req/s)",
                         _verdict(h["ratio"] >= 0.5)))
    if "http" in r and isinstance(r["http"].get("tmpfs"), dict) and "ratio" in r["http"]["tmpfs"]:
        t = r["http"]["tmpfs"]
        rows.append(("HTTP, decision log on tmpfs (CPU per request only)",
                     f"{t['ratio']:.2f}× ({_f(t['screenings_rps'])} vs {_f(t['healthz_rps'])} req/s)", "–"))
    if "scale" in r and "zen_table" in r["scale"]["rows"][0]["latency_us"].get("five", {}):
        sc = r["scale"]["rows"]
        five = {row["rules"]: (row["latency_us"]["five"]["screen"], _best_zen(row["latency_us"]["five"])) for row in sc}
        rows.append(("Scale: `screen()`, 5 rules firing, ≤ zen-engine at " + " / ".join(f"{n:,}" for n in five) + " rules",
                     " / ".join(f"{s_:,.0f} vs {z:,.0f} µs ({s_ / z:.2f}×)" for s_, z in five.values()),
                     _verdict(all(s_ <= z for s_, z in five.values()))))
        others = [k for k in r["scale"]["intakes"] if k != "five"]
        rows.append(("Scale, other intakes: `screen()` × zen-engine at " + " / ".join(f"{n:,}" for n in five) + " rules",
                     "; ".join(f"{k} " + " / ".join(f"{row['latency_us'][k]['screen'] / _best_zen(row['latency_us'][k]):.2f}×"
                                                   for row in sc) for k in others), "–"))
        big = [row for row in r["scale"]["rows"] if row["rules"] == 5000]
        if big:
            load = big[0]["load_lint_s"] + big[0]["compile_s"]
            rows.append(("Scale: loading a 5,000-rule pack ≤ 5 s", f"{load:.1f} s (load+lint {big[0]['load_lint_s']} s, "
                         f"compile {big[0]['compile_s']} s; zen-engine builds its graph in {big[0]['zen_build_s']} s)",
                         _verdict(load <= 5.0)))
        if "startup" in r["scale"]:
            st = r["scale"]["startup"]
            first, reload_s = st["first_screening_s"], st["reload_s"]
            rows.append((f"Scale: {st['rules']:,}-rule pack, workers and restarts do not recompile (rules cache)",
                         f"restart to first screening {first['warm']} s vs {first['off']} s without the cache "
                         f"({first['off'] / first['warm']:.1f}×; floor {first['shipped']} s with the shipped pack); "
                         f"reload {reload_s['warm']} s vs {reload_s['off']} s in every worker but the first "
                         f"({reload_s['first']} s)", "–"))
    if "batch" in r:
        b = r["batch"]
        rows.append((f"Batch: ≥ 5,000 intakes/s ({b['intakes']:,} intakes)", f"{_f(b['intakes_per_s'])}/s on {b['workers']} workers",
                     _verdict(b["intakes_per_s"] >= 5000)))
    if "memory" in r:
        mem = r["memory"]
        rows.append((f"Memory: RSS flat over {mem['evaluations']:,} evaluations",
                     f"{mem['growth_after_first_10k_mib']:+.1f} MiB after the first 10,000",
                     _verdict(abs(mem["growth_after_first_10k_mib"]) <= 2.0)))
    lines = ["## Targets", "", "| target | measured | |", "|---|---|---|"]
    lines += [f"| {a} | {b} | {c} |" for a, b, c in rows]
    return lines + [""]


def _engine(e: dict) -> list[str]:
    a = e["agreement"]
    agree = (f"All contenders agree on the pack's {a['cases']} test cases: hand-written vs `screen()` "
             f"(decision, reasons, findings, missing, review) {'✓' if not a['handwritten_disagrees'] else '✗ ' + ', '.join(a['handwritten_disagrees'])}; "
             f"zen-engine vs the reference backend (fired rules) {'✓' if not a['zen_disagrees'] else '✗ ' + ', '.join(a['zen_disagrees'])}; "
             f"durable vs reference {'✓' if not a['durable_disagrees'] else '✗ ' + ', '.join(a['durable_disagrees'])}.")
    lines = [
        "## 1. Engine: the shipped pack",
        "",
        f"{e['rules']} rules ({e['shards']} durable-rules shards), the {e['inputs']} test-case intakes of the pack, "
        f"{e['rounds']} interleaved rounds; per-call latency.",
        "",
        "| contender | median µs | p99 µs | mean µs | × zen-engine | × hand-written |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, s in e["latency"].items():
        lines.append(f"| {name} | {_f(s['median_us'])} | {_f(s['p99_us'])} | {_f(s['mean_us'])} | "
                     f"{s['x_zen']:.2f} | {s['x_handwritten']:.1f} |")
    lines += [
        "",
        agree,
        "",
        "- `screen()` is the whole decision: engine match, then evidence, messages, missing data and the "
        "`Decision`. `match()` is the engine alone (which rules fire). The hand-written function "
        "(`bench/handwritten.py`) gives the outcome only (no evidence or messages): it is the floor.",
        "- zen-engine: the same rules as a JDM graph generated from the loaded pack (`bench/zen_pack.py`: one "
        "expression node per forward-chaining layer), evaluated on the same fact the durable backend gets, "
        "passed as a JSON string (faster than a dict); its time includes building that fact and reading "
        "the result back.",
        "- p99 on a shared 2-core machine is dominated by preemption (another process on a core), not by the "
        "code: compare medians.",
        "",
    ]
    return lines


def _growth(g: list[dict]) -> list[str]:
    lines = [
        "## 2. Growth: generated packs",
        "",
        "Packs generated as YAML (`bench/packs.py`) and read through the real loader and lint, each size in a "
        "fresh process. Intakes: *hot* fires most rules at once (hundreds to thousands, far past durable-rules' "
        "64 conditions per assert and 512 per ruleset), *clean*, *nasal* (the other route), *sparse* (mostly "
        "missing). Latency is the median per evaluation, µs.",
        "",
        "`match()` columns are measured round-robin across the sizes in one process (the ratios between "
        "sizes are side by side); `screen()` columns in each size's own process.",
        "",
        "| rules | shards | load+lint s | compile s | RSS Δ MiB | same fired set as reference | hot: fired | hot `match()` | hot `screen()` | clean: fired | clean `match()` | clean `screen()` | nasal `match()` | sparse `match()` |",
        "|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in g:
        if "error" in row:
            lines.append(f"| {row['rules']:,} | failed: {row['error']} |")
            continue
        hot, clean = row["intakes"]["hot"], row["intakes"]["clean"]
        side = row["interleaved_match_us"]
        lines.append(
            f"| {row['rules']:,} | {row['shards']} | {row['load_lint_s']} | {row['compile_s']} | {row['rss_delta_mib']} | "
            f"{'yes' if row['correct'] else 'NO'} | {hot['fired']:,} | {_f(side['hot'])} | {_f(hot['screen_durable'])} | "
            f"{clean['fired']:,} | {_f(side['clean'])} | {_f(clean['screen_durable'])} | {_f(side['nasal'])} | {_f(side['sparse'])} |")
    lines += [
        "",
        "Cost per evaluation follows the shards visited and the rules that fire, each times the size of the "
        "fact (see *Where the time goes*). Load time is mostly YAML parsing and lint, not compilation.",
        "",
    ]
    return lines


def _best_zen(lat: dict) -> float:
    """zen-engine in whichever of its two forms was faster on this intake and pack."""
    return min(lat["zen_graph"], lat["zen_table"])


def _scale(sc: dict) -> list[str]:
    lines = [
        "## 2b. Scale: generated packs against zen-engine",
        "",
        "The generated packs of 100, 1,000 and 5,000 rules, all in one process, the contenders and sizes "
        "measured round-robin (`bench/scale_bench.py`); median µs per evaluation, each sample the mean of 5 "
        "consecutive calls (steady state: one call right after another contender's thousands of rules "
        "measured mostly cache misses, for every contender alike). *five* is complete and "
        "healthy and fires exactly five rules at every size (the issue's measure); *none* answers almost "
        "nothing and concerns no rule (every rule reading what it lacks is undecided, so `screen()` "
        "follows them); *clean* and *hot* fire more rules as the pack grows. zen-engine gets the same rules "
        "and the same fact in two forms (`bench/zen_pack.py`): a JDM graph of expression nodes, and "
        "decision tables (hit policy *collect*, a unary column per plain field a rule compares, an "
        "expression column for the rest); the ratio is against the faster of the two. zen-engine is "
        "fastest on tables of plain comparisons (a 1,000-row table of one unary column: about 0.35 µs a "
        "row on this machine); the generated rules read lists of records, dates and findings, which cost "
        "it several µs a row.",
        "",
        "| rules | shards | load+lint s | compile s | zen build s (graph, tables) | same fired set (durable, reference, zen ×2) |",
        "|---:|---:|---:|---:|---|---|",
    ]
    for row in sc["rows"]:
        lines.append(f"| {row['rules']:,} | {row['shards']} | {row['load_lint_s']} | {row['compile_s']} | "
                     f"{row['zen_build_s']}, {row.get('zen_table_build_s', '–')} | {'yes' if row['agree'] else 'NO'} |")
    lines += ["", "| rules | intake | fired | `screen()` µs | `match()` µs | zen graph µs | zen tables µs | `screen()` × zen |",
              "|---:|---|---:|---:|---:|---:|---:|---:|"]
    for row in sc["rows"]:
        for k in sc["intakes"]:
            lat = row["latency_us"][k]
            lines.append(f"| {row['rules']:,} | {k} | {row['fired'][k]:,} | {_f(lat['screen'])} | {_f(lat['match'])} | "
                         f"{_f(lat['zen_graph'])} | {_f(lat['zen_table'])} | {lat['screen'] / _best_zen(lat):.2f} |")
    if "startup" in sc:
        lines += [""] + _startup(sc["startup"])
    return lines + [""]


def _startup(st: dict) -> list[str]:
    first, reload_s = st["first_screening_s"], st["reload_s"]
    return [
        f"### Start and reload of a {st['rules']:,}-rule pack, with and without the rules cache",
        "",
        f"Medians of {st['rounds']} interleaved round(s), seconds (`bench/scale_bench.py` `startup`). *Start*: from "
        f"launching gunicorn ({st['workers']} workers) to its first 200 on `POST /v1/screenings`. *Reload*: one "
        "worker's `Reloader.reload()` of an edited pack (snapshot, read and lint, compile proven in a child, compile, "
        "rule tests, swap). *Off*: `SCREENING_RULES_CACHE=0`, every process reads, lints and compiles (as before the "
        "cache). *Empty*: the first start, or the first worker to see an edit (it writes the entry). *Warm*: a "
        "restart, or every other worker (pack from the cache, workers forked with the master's compiled ruleset, "
        "no second child compile).",
        "",
        "| | off | empty | warm | off ÷ warm |",
        "|---|---:|---:|---:|---:|",
        f"| start to first screening | {first['off']} | {first['first']} | {first['warm']} | "
        f"{first['off'] / first['warm']:.1f}× |",
        f"| reload in one worker | {reload_s['off']} | {reload_s['first']} | {reload_s['warm']} | "
        f"{reload_s['off'] / reload_s['warm']:.1f}× |",
        "",
        f"The floor: the same start with the shipped pack takes {first['shipped']} s (interpreter, imports, app, "
        "database); the rest of a start is the pack's.",
    ]


def _http(h: dict) -> list[str]:
    lines = ["## 3. HTTP: `POST /v1/screenings` vs `GET /healthz`", ""]
    if "error" in h:
        return lines + [f"Not measured: {h['error']}", ""]
    lines += [
        f"gunicorn with `service/gunicorn_conf.py` ({h['workers']} workers × {h['threads']} threads, gthread) on "
        f"127.0.0.1; wrk, 1 thread, {h['connections']} connections, {h['seconds_per_run']} s per run, the two "
        f"endpoints alternated {len(h['rounds'])}×; POST bodies rotate the four examples. API key: {h['api_key']}. "
        f"Decisions written to the decision log (SQLite) during the run: {h['decisions_logged']}.",
        "",
        "| endpoint | req/s | p50 ms | p99 ms |",
        "|---|---:|---:|---:|",
        f"| `GET /healthz` | {_f(h['healthz_rps'])} | {_f(h['healthz_p50_ms'], 2)} | {_f(h['healthz_p99_ms'], 2)} |",
        f"| `POST /v1/screenings` | {_f(h['screenings_rps'])} | {_f(h['screenings_p50_ms'], 2)} | {_f(h['screenings_p99_ms'], 2)} |",
        "",
        f"Ratio screening / trivial: **{h['ratio']:.2f}**. Non-2xx responses: {int(h['non_2xx'])}. wrk runs on "
        "the same cores as the server. Rate limiting is off for this run.",
        "",
    ]
    t = h.get("tmpfs")
    if isinstance(t, dict) and "error" not in t:
        lines += [
            "The same, with the decision log on tmpfs (`/dev/shm`: no fsync cost at all, so what is left is "
            "CPU per request):",
            "",
            "| endpoint | req/s | p50 ms | p99 ms |",
            "|---|---:|---:|---:|",
            f"| `GET /healthz` | {_f(t['healthz_rps'])} | {_f(t['healthz_p50_ms'], 2)} | {_f(t['healthz_p99_ms'], 2)} |",
            f"| `POST /v1/screenings` | {_f(t['screenings_rps'])} | {_f(t['screenings_p50_ms'], 2)} | {_f(t['screenings_p99_ms'], 2)} |",
            "",
            f"Ratio on tmpfs: **{t['ratio']:.2f}**; on disk it is {h['ratio']:.2f} of that run's own /healthz. "
            f"Decisions logged: {t['decisions_logged']}. Non-2xx: {int(t['non_2xx'])}.",
            "",
        ]
    sizes = [(label, x.get("group_commit")) for label, x in (("disk", h), ("tmpfs", t if isinstance(t, dict) else {}))]
    sizes = [(label, g) for label, g in sizes if isinstance(g, dict) and g.get("decisions_per_commit")]
    if sizes:
        lines += [
            "Group commit, from the server's metric `screening_decision_log_commit_rows`: "
            + "; ".join(f"{label} **{g['decisions_per_commit']}** decisions per commit ({g['decisions']:,} "
                        f"in {g['commits']:,} commits)" for label, g in sizes) + ".",
            "",
        ]
    w = h.get("decision_log_write")
    if isinstance(w, dict):
        lines += [
            f"Every screening is committed to the decision log before the response (SQLite, `synchronous=FULL`: "
            f"a committed decision survives power loss). One write alone on the same database file: "
            f"**{w['save_decision_median_ms']} ms** (median) against {w['screen_ms']} ms for the decision itself "
            "(`screen()` + `to_dict()`). Under load the requests in flight share a transaction and its fsync "
            "(group commit, `service/store/groupcommit.py`), so the fsync is paid once per batch, not per request.",
            "",
        ]
    return lines


def _batch(b: dict) -> list[str]:
    s = b["per_line_single_process_us"]
    return [
        "## 4. Batch: `screening batch`",
        "",
        f"{b['intakes']:,} intakes (the pack's test-case intakes and the examples, repeated) through `run_batch` "
        f"with {b['workers']} worker processes: **{_f(b['intakes_per_s'])} intakes/s** ({b['seconds']} s; "
        f"{b['output_lines']:,} output lines; decisions {b['decisions']}).",
        "",
        "Where one line's time goes, single process (µs per line; each stage the best of five passes):",
        "",
        "| strict JSON parse | validate (fast path) | (marshmallow alone) | engine `match()` | rest of `screen()` | `to_dict()` | `json.dumps` | total |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
        f"| {s['parse_json']} | {s['validate']} | {s.get('validate_marshmallow', '–')} | {s['engine_match']} | "
        f"{s['screen_minus_match']} | {s['to_dict']} | {s['json_dumps']} | {s['line_total']} |",
        "",
        f"At {s['line_total']} µs per line a core does about {1e6 / s['line_total']:,.0f} lines/s; "
        f"{b['workers']} cores at best {b['workers'] * 1e6 / s['line_total']:,.0f}/s, fewer when the cores are shared.",
        "",
    ]


def _memory(mem: dict) -> list[str]:
    return [
        "## 5. Memory",
        "",
        f"RSS (MiB) every 10,000 `screen()` evaluations on the durable backend ({mem['evaluations']:,} in all; "
        "session state is deleted after each shard's evaluation):",
        "",
        "| evaluations | " + " | ".join(f"{n:,}" for n, _ in mem["rss_mib"]) + " |",
        "|---|" + "---:|" * len(mem["rss_mib"]),
        "| RSS MiB | " + " | ".join(f"{v}" for _, v in mem["rss_mib"]) + " |",
        "",
    ]
