"""HTTP: POST /v1/screenings against GET /healthz in the same gunicorn server and run.

The server runs under the production config (service/gunicorn_conf.py) on 127.0.0.1 with a
throwaway SQLite decision log and state directory; the load generator is wrk (Debian package,
installed when missing) with a Lua script that rotates the example intakes as POST bodies.
When the screening endpoint asks for an API key, one is made with ``screening keys create``
against the same DATABASE_URL. wrk shares the machine's cores with the server: the absolute
numbers are a floor; the ratio is what the target is about.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ("eligible-iv", "ineligible-several", "incomplete-no-vitals", "review-substance-history")


def ensure_wrk() -> str | None:
    found = shutil.which("wrk")
    if found:
        return found
    if os.geteuid() == 0 and shutil.which("apt-get"):
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "install", "-y", "-qq", "wrk"], env=env, capture_output=True, timeout=300)
        if not shutil.which("wrk"):
            subprocess.run(["apt-get", "update", "-qq"], env=env, capture_output=True, timeout=300)
            subprocess.run(["apt-get", "install", "-y", "-qq", "wrk"], env=env, capture_output=True, timeout=300)
    return shutil.which("wrk")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _request(url: str, body: bytes | None = None, token: str | None = None) -> int:
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    req = urllib.request.Request(url, data=body, headers=headers, method="POST" if body is not None else "GET")
    try:
        with urllib.request.urlopen(req, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


def _api_key(env: dict) -> tuple[str | None, str]:
    """A key for the screening endpoint from the `screening keys create` CLI, if it exists."""
    attempts = (["keys", "create", "--name", "bench", "--scope", "screen"],
                ["keys", "create", "bench", "--scope", "screen"],
                ["keys", "create", "--name", "bench"],
                ["keys", "create", "bench"])
    last = ""
    for args in attempts:
        out = subprocess.run([sys.executable, "-m", "service.cli", *args], env=env, cwd=ROOT,
                             capture_output=True, text=True, timeout=60)
        match = re.search(r"\bks_[A-Za-z0-9_\-]+", out.stdout + out.stderr)
        if out.returncode == 0 and match:
            return match.group(0), " ".join(args)
        last = ((out.stderr or out.stdout).strip().splitlines() or [""])[-1]
    try:  # the CLI may not be there yet: the same function it calls, on the same database
        from service.auth import create_key
        from service.store.factory import open_store

        store = open_store(env["DATABASE_URL"])
        try:
            return create_key(store.keys, "bench", ["screen"]).token, "service.auth.create_key (no `keys create` CLI: " + last + ")"
        finally:
            store.close()
    except Exception as exc:  # reported in the results, not fatal to the bench
        return None, f"{last}; create_key: {exc}"


def _count_decisions(url: str) -> int | str:
    """Decisions the run wrote to the decision log (the screening endpoint records each one)."""
    try:
        from service.store.factory import open_store

        store = open_store(url)
        try:
            return store.count_decisions()
        finally:
            store.close()
    except Exception as exc:  # reported, not fatal
        return f"unknown ({exc})"


def _commit_cost(url: str, samples: int = 100) -> dict | str:
    """What one decision-log write costs on its own (the same store, the same database file):
    the floor under each screening request's latency, whatever the engine does."""
    try:
        import datetime as dt
        import statistics

        from schemas.intake import IntakeSchema
        from service.decision import jsonable
        from service.ruleset import default_rules_path, load_ruleset
        from service.screening import screen
        from service.store.factory import open_store

        intake = IntakeSchema().load(json.loads((ROOT / "examples" / "ineligible-several.json").read_text()))
        ruleset = load_ruleset(default_rules_path())
        store = open_store(url)
        try:
            ms = []
            for _ in range(samples):
                decision = screen(intake, ruleset, as_of=dt.datetime.now(dt.timezone.utc))
                t = time.perf_counter()
                store.save_decision(decision, jsonable(intake), client="bench", source="bench")
                ms.append((time.perf_counter() - t) * 1000)
            t = time.perf_counter()
            for _ in range(samples):
                screen(intake, ruleset, as_of=dt.datetime.now(dt.timezone.utc)).to_dict()
            screen_ms = (time.perf_counter() - t) * 1000 / samples
        finally:
            store.close()
        return {"save_decision_median_ms": round(statistics.median(ms), 3), "screen_ms": round(screen_ms, 3)}
    except Exception as exc:  # reported, not fatal
        return f"unknown ({exc})"


def _commit_sizes(base: str) -> dict | str:
    """Decisions per decision-log commit during the run, from the server's own metric
    (screening_decision_log_commit_rows, summed over the workers): how many requests shared each
    transaction and its fsync."""
    try:
        with urllib.request.urlopen(base + "/metrics", timeout=10) as response:
            text = response.read().decode()
        values = {}
        for line in text.splitlines():
            for suffix in ("sum", "count"):
                if line.startswith(f"screening_decision_log_commit_rows_{suffix} "):
                    values[suffix] = float(line.split()[1])
        commits, rows = values.get("count", 0.0), values.get("sum", 0.0)
        return {"commits": int(commits), "decisions": int(rows),
                "decisions_per_commit": round(rows / commits, 2) if commits else None}
    except Exception as exc:  # reported, not fatal
        return f"unknown ({exc})"


def _lua(bodies: list[str], token: str | None) -> str:
    quoted = ",\n".join(f"[==[{b}]==]" for b in bodies)
    auth = f'wrk.headers["Authorization"] = "Bearer {token}"\n' if token else ""
    return (
        'wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n' + auth +
        f"local bodies = {{\n{quoted}\n}}\nlocal i = 0\n"
        "request = function()\n  i = i % #bodies + 1\n  return wrk.format(nil, nil, nil, bodies[i])\nend\n"
    )


def _wrk(wrk: str, url: str, seconds: int, connections: int, script: Path | None) -> dict:
    args = [wrk, "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", "--timeout", "10s"]
    if script:
        args += ["-s", str(script)]
    out = subprocess.run(args + [url], capture_output=True, text=True, timeout=seconds + 60).stdout
    def number(pattern: str) -> float | None:
        m = re.search(pattern, out)
        return float(m.group(1)) if m else None

    def latency_ms(pct: str) -> float | None:
        m = re.search(rf"^\s*{pct}%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
        if not m:
            return None
        return float(m.group(1)) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[m.group(2)]

    return {
        "requests_per_s": number(r"Requests/sec:\s+([\d.]+)"),
        "requests": number(r"(\d+) requests in"),
        "non_2xx": number(r"Non-2xx or 3xx responses:\s+(\d+)") or 0,
        "errors": re.findall(r"Socket errors:.*", out),
        "p50_ms": latency_ms("50"),
        "p99_ms": latency_ms("99"),
    }


TMPFS = Path("/dev/shm")


def run(quick: bool = False) -> dict:
    """The decision log on disk (every decision fsynced, synchronous=FULL), then on tmpfs (no
    fsync cost at all: what is left is CPU per request)."""
    wrk = ensure_wrk()
    if not wrk:
        return {"error": "wrk is not installed and could not be installed"}
    result = measure(wrk, quick, None)
    if TMPFS.is_dir():
        result["tmpfs"] = measure(wrk, quick, TMPFS)
    return result


def measure(wrk: str, quick: bool, log_dir: Path | None) -> dict:
    seconds = 3 if quick else 10
    connections = 8
    with tempfile.TemporaryDirectory(prefix="screening-bench-", dir=log_dir) as tmp:
        port = _free_port()
        # Rate limiting off: the comparison is about the screening itself and its durable write.
        env = {**os.environ, "SCREENING_BIND": f"127.0.0.1:{port}", "SCREENING_LOG_LEVEL": "warning",
               "DATABASE_URL": f"sqlite:///{tmp}/bench.db", "SCREENING_STATE_DIR": f"{tmp}/state",
               "PYTHONPATH": str(ROOT), "SCREENING_RATE_LIMIT": "off"}
        env.pop("PROMETHEUS_MULTIPROC_DIR", None)
        for setup in (["db", "upgrade"], ["store", "init"]):  # whichever the store offers; harmless if absent
            subprocess.run([sys.executable, "-m", "service.cli", *setup], env=env, cwd=ROOT,
                           capture_output=True, timeout=60)
        server = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "-c", str(ROOT / "service" / "gunicorn_conf.py"), "service.app:create_app()"],
            env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            base = f"http://127.0.0.1:{port}"
            deadline = time.time() + 60
            while True:
                try:
                    if _request(base + "/healthz") == 200:
                        break
                except OSError:
                    pass
                if time.time() > deadline or server.poll() is not None:
                    return {"error": "the server did not start (run `screening serve` to see why)"}
                time.sleep(0.2)
            bodies = [json.dumps(json.loads((ROOT / "examples" / f"{n}.json").read_text())) for n in EXAMPLES]
            token, key_note = None, "the endpoint asked for no key"
            status = _request(base + "/v1/screenings", bodies[0].encode())
            if status in (401, 403):
                token, key_note = _api_key(env)
                if not token:
                    return {"error": f"POST /v1/screenings needs an API key and `screening keys create` "
                                     f"gave none ({key_note})"}
                key_note = f"key from {key_note}" if key_note.startswith("service.") else f"key from `screening {key_note}`"
                status = _request(base + "/v1/screenings", bodies[0].encode(), token)
            if status != 200:
                return {"error": f"POST /v1/screenings answered {status} before the run"}
            script = Path(tmp) / "post.lua"
            script.write_text(_lua(bodies, token))
            rounds = []
            for _ in range(1 if quick else 2):  # alternate, so drift on a shared machine hits both
                rounds.append({"healthz": _wrk(wrk, base + "/healthz", seconds, connections, None),
                               "screenings": _wrk(wrk, base + "/v1/screenings", seconds, connections, script)})
            commits = _commit_sizes(base)
            logged = _count_decisions(env["DATABASE_URL"])
            commit = _commit_cost(env["DATABASE_URL"])
        finally:
            server.terminate()
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                server.kill()

    def mean(kind: str, key: str) -> float | None:
        values = [r[kind][key] for r in rounds if r[kind][key] is not None]
        return sum(values) / len(values) if values else None

    health, screening = mean("healthz", "requests_per_s"), mean("screenings", "requests_per_s")
    return {
        "decision_log": "tmpfs (/dev/shm)" if log_dir else "disk",
        "workers": int(os.environ.get("WEB_CONCURRENCY", "2")),
        "threads": int(os.environ.get("SCREENING_THREADS", "4")),
        "connections": connections,
        "seconds_per_run": seconds,
        "api_key": key_note,
        "decisions_logged": logged,
        "decision_log_write": commit,
        "group_commit": commits,
        "healthz_rps": health,
        "screenings_rps": screening,
        "ratio": screening / health if health and screening else None,
        "healthz_p50_ms": mean("healthz", "p50_ms"), "healthz_p99_ms": mean("healthz", "p99_ms"),
        "screenings_p50_ms": mean("screenings", "p50_ms"), "screenings_p99_ms": mean("screenings", "p99_ms"),
        "non_2xx": sum(r[k]["non_2xx"] for r in rounds for k in r),
        "rounds": rounds,
    }
