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
    if "http" in r:
        out += _http(r["http"])
    if "batch" in r:
        out += _batch(r["batch"])
    if "memory" in r:
        out += _memory(r["memory"])
    out += _analysis()
    return "\n".join(out) + "\n"


def _analysis() -> list[str]:
    """What the profiles said (pyinstrument/cProfile, on this machine, while writing the bench)."""
    return [
        "## Where the time goes (profiles)",
        "",
        "- **Engine** (`match()`): the C extension's `assert_fact` and draining its actions. The backend "
        "asserts the fact once per shard of at most 63 conditions (durable-rules fails an assert firing more "
        "than 64 and hangs compiling 512 in one ruleset), and every fired condition comes back as an action "
        "message that carries the whole fact. So an evaluation costs about (shards + fired conditions) × "
        "fact size. Registering more rulesets does not slow an assert (checked: the shipped pack's "
        "`match()` is unchanged with a 5,000-rule pack's 196 shards registered beside it).",
        "- **Growth past linear**: in the generated packs one rule in nine concludes a finding, and every "
        "concluded finding is appended to the fact for the next layer, so the fact grows with the pack and "
        "the per-fired-rule cost with it (hot intake: 810 fired at 1,000 rules, 4,036 at 5,000). A "
        "proposed engine change, not made here: assert to each shard only the fields its conditions read "
        "(known at compile time), and carry findings as one property each (`__f_<name>: 1`) rather than "
        "one list, so that a shard's fact, and each action message, stays the size of what it reads.",
        "- **Rest of `screen()`**: evidence for each fired rule (the witness walk in Python), the missing "
        "fields of each rule that did not fire, and message rendering.",
        "- **Batch**: per line, strict JSON parsing, marshmallow validation, `screen()`, `to_dict()`, "
        "`json.dumps` — see the table above; validation and the engine are the two large stages. Parallel "
        "workers scale with free cores; on a machine shared with other jobs they do not get them.",
        "- **HTTP**: the decision log's durable commit per request (above), then API-key lookup "
        "(a database read per request), validation and `screen()`.",
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
        "the same cores as the server.",
        "",
    ]
    w = h.get("decision_log_write")
    if isinstance(w, dict):
        lines += [
            f"What bounds it: every screening is written to the decision log before the response, one SQLite "
            f"transaction with `synchronous=FULL` (a committed decision survives power loss). Measured alone on the "
            f"same database file: **{w['save_decision_median_ms']} ms per write** (median) against "
            f"{w['screen_ms']} ms for the decision itself (`screen()` + `to_dict()`). The fsync, not the engine, "
            "sets the endpoint's throughput; /healthz writes nothing.",
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
        "| strict JSON parse | validate (marshmallow) | engine `match()` | rest of `screen()` | `to_dict()` | `json.dumps` | total |",
        "|---:|---:|---:|---:|---:|---:|---:|",
        f"| {s['parse_json']} | {s['validate']} | {s['engine_match']} | {s['screen_minus_match']} | {s['to_dict']} | "
        f"{s['json_dumps']} | {s['line_total']} |",
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
