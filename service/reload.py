"""Safe hot reload of the rule pack in a running service.

A candidate is taken from a snapshot of the rules directory (so that what is checked is what is
loaded, even while an editor is still saving), then:
1. read and linted — every problem collected (or taken from the rules cache when another worker
   or a restart has read these very files: service.policy.packcache);
2. compiled in a child process with a deadline — a compile that does not finish in bounded time
   is abandoned there, never in a worker that serves requests (once one worker has proven a pack
   compiles, an authenticated mark in the rules cache spares the others a child of their own);
3. compiled here and its rule tests run in full;
4. swapped in with one reference assignment (see RulesetHolder).
A candidate that fails any step is refused: the last good ruleset keeps screening, and the
refusal is logged, shown on /readyz and counted. Each gunicorn worker runs its own watcher over
the same directory, so every worker reaches the same digest; every decision names the digest it
was made under. The last good pack is also kept on disk, so that a worker that (re)starts while
the directory holds a broken pack serves the last good one instead of failing to boot.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import logging
import os
import shutil
import subprocess  # nosec B404 - compiles a pack in a child interpreter; the call is marked where it stands
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from service.engine import EngineError, compile_rules
from service.policy.loader import load_pack
from service.policy.model import RulePack
from service.policy.problems import RulePackError
from service.policy.testing import run_tests
from service.ruleset import Ruleset, RulesetHolder, load_ruleset

if TYPE_CHECKING:
    from service.policy.packcache import PackCache

log = logging.getLogger("screening.reload")

LAST_GOOD = "last-good-rules"


@dataclass
class ReloadOutcome:
    status: str  # loaded | unchanged | refused
    message: str
    version: str | None = None
    digest: str | None = None
    problems: list[str] = field(default_factory=list)
    seconds: float = 0.0
    # True for the first worker to report this change: every gunicorn worker checks the same
    # edit, and metrics count the change once, not once per worker.
    first: bool = True

    def to_dict(self) -> dict:
        return asdict(self)


# Catalog fields the service binds when it starts: the rule-file contract (applies_to) and the
# CDS Hooks order mapping read them at import. A change to them is taken on by a restart.
BOUND_AT_START = {
    "treatment.route": "the routes a rule may name in applies_to, and the CDS Hooks order mapping, are read when the service starts",
    "treatment.indication": "the indications a rule may name in applies_to, and the CDS Hooks indication mapping, are read when the service starts",
}


def restart_reasons(current: RulePack, candidate: RulePack) -> list[str]:
    """Why the candidate cannot be taken on by a reload (empty: it can)."""
    out = []
    for path, why in BOUND_AT_START.items():
        old, new = current.catalog.definition(path), candidate.catalog.definition(path)
        if (old.spec if old else None) != (new.spec if new else None):
            out.append(f"this change needs a restart because {why}: '{path}' changed in the field catalog")
    return out


def version_problem(current: RulePack, candidate: RulePack) -> str | None:
    """A changed pack under an unchanged version: decisions would name a version that no longer
    says which rules made them."""
    if candidate.digest != current.digest and candidate.version == current.version:
        return (f"the rules changed (digest {candidate.digest[:19]}…) but pack.yaml still says version "
                f"{candidate.version}: bump `version` with every change")
    return None


REPORT_MARKERS = "reload-reports"
# How long a marker is kept: every worker checks one edit within a poll interval plus one
# reload (a compile deadline of minutes at most), so an hour is far beyond the last worker.
# An older marker only grows the state directory (one file per reload, never removed before).
REPORT_MARKER_SECONDS = 3600


def first_report(state_dir: Path, kind: str, key: str) -> bool:
    """True for the first process to report (kind, key): a marker file created exclusively,
    shared by the workers of one service through SCREENING_STATE_DIR. Writing one removes the
    markers older than REPORT_MARKER_SECONDS."""
    marks = state_dir / REPORT_MARKERS
    try:
        marks.mkdir(parents=True, exist_ok=True)
        fd = os.open(marks / f"{kind}-{key.replace(':', '-')[:80]}", os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    except FileExistsError:
        return False
    except OSError:
        return True  # no shared state: count it here rather than lose it
    os.close(fd)
    prune_reports(marks)
    return True


def prune_reports(marks: Path, keep_seconds: float = REPORT_MARKER_SECONDS) -> int:
    """Remove report markers older than ``keep_seconds``; how many were removed. Workers prune
    concurrently: a marker another one removed first is not an error."""
    cutoff = time.time() - keep_seconds
    removed = 0
    try:
        entries = list(os.scandir(marks))
    except OSError:
        return 0
    for entry in entries:
        try:
            if entry.is_file(follow_symlinks=False) and entry.stat(follow_symlinks=False).st_mtime < cutoff:
                os.unlink(entry.path)
                removed += 1
        except OSError:
            continue
    return removed


def content_key(pack_dir: Path) -> str:
    """A digest of the candidate's files as written (a broken pack has no rules digest)."""
    digest = hashlib.sha256()
    for path in sorted(pack_dir.glob("*.yaml")):
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:32]


def snapshot(rules_dir: Path) -> Path:
    """A private copy of the pack's files: editors may keep writing while we check."""
    target = Path(tempfile.mkdtemp(prefix="rules-candidate-")) / rules_dir.name
    target.mkdir()
    for path in sorted(rules_dir.glob("*.yaml")):
        if path.is_file():
            shutil.copy2(path, target / path.name)
    return target


def signature(rules_dir: Path) -> tuple:
    try:
        return tuple(sorted((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in rules_dir.glob("*.yaml")))
    except OSError:
        return ()


# Loading and compiling grow linearly with the pack (bench: about 1 ms per rule on a busy 2-core
# machine): the configured deadline covers the fixed cost and this much more per rule, ten
# times the measured cost, so a 5,000-rule pack is not refused for being large.
COMPILE_SECONDS_PER_RULE = 0.01


def compile_deadline(compile_timeout: float, rules: int) -> float:
    """The child's deadline for a pack of ``rules`` rules: SCREENING_COMPILE_TIMEOUT plus a
    per-rule allowance. It still stops a compile that hangs (durable-rules does at 512
    conditions in one ruleset), just later for a larger pack."""
    return compile_timeout + rules * COMPILE_SECONDS_PER_RULE


def compile_in_child(pack_dir: Path, backend: str, timeout: float, cache: PackCache | None = None) -> str | None:
    """Compile in a separate process with a deadline. Returns a problem, or None if it compiled.
    With a ``cache``, the child takes the pack the parent has just read and linted from it."""
    code = (
        "import sys; from pathlib import Path; from service.ruleset import load_ruleset; "
        "from service.policy.packcache import PackCache; "
        "cache = PackCache(Path(sys.argv[3]), create=False) if sys.argv[3] else None; "
        "r = load_ruleset(sys.argv[1], sys.argv[2], cache); print(r.pack.digest)"
    )
    try:
        done = subprocess.run(  # nosec B603 - fixed interpreter and code, paths as arguments
            [sys.executable, "-c", code, str(pack_dir), backend, str(cache.directory) if cache else ""],
            capture_output=True, text=True, timeout=timeout,
            cwd=str(Path(__file__).resolve().parent.parent),
        )
    except subprocess.TimeoutExpired:
        return f"compiling the candidate did not finish within {timeout:g} s; it was abandoned"
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
        return f"compiling the candidate failed: {tail[0][:500]}"
    return None


def validate_candidate(pack_dir: Path, backend: str, compile_timeout: float,
                       shown_as: Path | None = None, cache: PackCache | None = None) -> tuple[Ruleset | None, list[str]]:
    """Every check a pack must pass before it may screen anyone. ``shown_as``: the directory
    problems name (the candidate is a snapshot of it). With a ``cache``, a pack another worker
    (or a restart) has read is not read and linted again, here or in the child."""
    files = None
    try:
        # lint first: cheap, and the clearest messages
        if cache is not None:
            pack, _, files = cache.load(pack_dir, shown_as)
        else:
            pack = load_pack(pack_dir, shown_as)
    except RulePackError as exc:
        return None, [str(p) for p in exc.problems if p.level == "error"]
    if files is not None and cache is not None and cache.compiled(files, backend):
        log.info("candidate %s already proven to compile by another worker: no child compile", pack.digest)
    else:
        problem = compile_in_child(pack_dir, backend, compile_deadline(compile_timeout, len(pack.rules)), cache)
        if problem:
            return None, [problem]
        if files is not None and cache is not None:
            cache.mark_compiled(files, backend)
    try:
        ruleset = Ruleset(pack, compile_rules(pack.rules, backend), files=files)  # proven to finish in the child
    except EngineError as exc:
        return None, [str(exc)]
    ruleset.intake_loader  # the candidate's validator, built before it is swapped in
    report = run_tests(ruleset)
    if report.failed:
        return None, [f"rule test failed: {r.case.location} {r.case.name}" for r in report.failed]
    return ruleset, []


def save_last_good(pack_dir: Path, state_dir: Path) -> None:
    state_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".last-good-", dir=state_dir))
    try:
        for path in pack_dir.glob("*.yaml"):
            shutil.copy2(path, staging / path.name)
    except OSError:
        shutil.rmtree(staging, ignore_errors=True)  # a half copy is never left in the state directory
        raise
    target = state_dir / LAST_GOOD
    old = state_dir / f".{LAST_GOOD}-old-{os.getpid()}-{time.monotonic_ns()}"
    if target.exists():
        os.replace(target, old)
    os.replace(staging, target)
    shutil.rmtree(old, ignore_errors=True)


# The ruleset the gunicorn master loaded before forking its workers (see ``preload``).
_preloaded: tuple[Path, str, str, Ruleset] | None = None


def preload(ruleset: Ruleset, rules_dir: Path, backend: str) -> bool:
    """Keep the master's ruleset for the workers it forks: a worker started on the same files
    uses it as it stands — read, linted and compiled once, in the master, for every worker, and
    again for a worker that restarts. durable-rules keeps its compiled rules in the C extension's
    heap, which a fork copies (copy-on-write); the master never evaluates, so no session or lock
    is held at the fork, and each worker's sessions stay its own (tests/test_rules_sharing.py
    screens through two gunicorn workers forked this way). Needs ``ruleset.files`` (a load
    through the rules cache): without knowing its files, a worker could not tell it is current."""
    global _preloaded
    if ruleset.files is None:
        return False
    _preloaded = (Path(rules_dir).resolve(), backend, ruleset.files, ruleset)
    return True


def inherited(rules_dir: Path, backend: str) -> Ruleset | None:
    """The preloaded ruleset, if this process was forked with one for the files ``rules_dir``
    holds now (a pack changed since, by a reload or an edit, is loaded afresh)."""
    from service.policy.packcache import files_digest

    if _preloaded is None:
        return None
    directory, preloaded_backend, files, ruleset = _preloaded
    if directory != Path(rules_dir).resolve() or preloaded_backend != backend:
        return None
    try:
        return ruleset if files_digest(rules_dir) == files else None
    except OSError:
        return None


def load_or_fall_back(rules_dir: Path, backend: str, state_dir: Path,
                      serving: bool = False, cache: PackCache | None = None) -> tuple[Ruleset, str | None]:
    """A worker's start: the configured pack, or — only once the service is serving
    (Settings.serving) — the last good pack, with the reason it was needed. With a ``cache``:
    the ruleset the master loaded before the fork when the files are still the same, else the
    pack from the cache (compiled here), else read, linted, compiled and kept in the cache."""
    if cache is not None:
        shared = inherited(rules_dir, backend)
        if shared is not None:
            log.info("using the ruleset loaded before the fork: %s %s (not read, linted or compiled again)",
                     shared.pack.version, shared.pack.digest)
            return shared, None
    try:
        return load_ruleset(rules_dir, backend, cache), None
    except (RulePackError, EngineError) as exc:
        fallback = state_dir / LAST_GOOD
        if not serving or not fallback.is_dir():
            raise
        log.error("rules in %s are broken; serving the last good pack: %s", rules_dir, exc)
        return load_ruleset(fallback, backend, cache), f"serving the last good pack: {exc}"


class Reloader:
    """Watches one rules directory for one app (one per gunicorn worker)."""

    def __init__(self, holder: RulesetHolder, rules_dir: Path, backend: str, state_dir: Path,
                 compile_timeout: float = 30.0, on_outcome=None, cache: PackCache | None = None):
        self.holder = holder
        self.cache = cache
        self.rules_dir = Path(rules_dir)
        self.backend = backend
        self.state_dir = Path(state_dir)
        self.compile_timeout = compile_timeout
        self.on_outcome = on_outcome
        self._lock = threading.Lock()
        self._seen = signature(self.rules_dir)
        self._stop = threading.Event()
        self._refused = False
        self.last_outcome: ReloadOutcome | None = None

    def reload(self) -> ReloadOutcome:
        with self._lock:
            started = time.monotonic()
            self._seen = signature(self.rules_dir)
            candidate_dir = snapshot(self.rules_dir)
            served = self.holder.current.pack.digest
            try:
                outcome = self._reload_from(candidate_dir)
                # One change = from what every worker serves to what was written: the same key in
                # every worker, a new one when the edit is reverted and made again.
                changed_to = outcome.digest if outcome.status == "loaded" else content_key(candidate_dir)
                key = hashlib.sha256(f"{served}>{changed_to}".encode()).hexdigest()[:32]
            finally:
                shutil.rmtree(candidate_dir.parent, ignore_errors=True)
            outcome.seconds = round(time.monotonic() - started, 3)
            if outcome.status != "unchanged":
                outcome.first = first_report(self.state_dir, outcome.status, key)
            self.last_outcome = outcome
            was_refused = self._refused
            self._refused = outcome.status == "refused"
            if outcome.status == "refused":
                self.holder.last_error = f"{dt.datetime.now(dt.timezone.utc).isoformat(timespec='seconds')} reload refused: " + "; ".join(outcome.problems[:5])
                if not was_refused or outcome.first:
                    log.error("rules reload refused, still serving %s %s: %s", self.holder.current.pack.version,
                              self.holder.current.pack.digest, "; ".join(outcome.problems[:20]))
            elif outcome.status == "loaded":
                log.info("rules reloaded: %s %s", outcome.version, outcome.digest)
            if was_refused and outcome.status != "refused":
                current = self.holder.current.pack
                log.info("rules reload error cleared: serving %s %s", current.version, current.digest)
            if self.on_outcome:
                self.on_outcome(outcome)
            return outcome

    def _reload_from(self, candidate_dir: Path) -> ReloadOutcome:
        ruleset, problems = validate_candidate(candidate_dir, self.backend, self.compile_timeout, self.rules_dir,
                                               self.cache)
        current = self.holder.current.pack
        if ruleset is None:
            return ReloadOutcome("refused", "the candidate ruleset was refused; the last good one keeps serving",
                                 current.version, current.digest, problems)
        new = ruleset.pack
        if (new.digest, new.version) == (current.digest, current.version):
            self.holder.last_error = None
            return ReloadOutcome("unchanged", "the rules are unchanged", new.version, new.digest)
        refusals = restart_reasons(current, new)
        bump = version_problem(current, new)
        if bump:
            refusals.append(bump)
        if refusals:
            return ReloadOutcome("refused", "the candidate ruleset was refused; the last good one keeps serving",
                                 current.version, current.digest, refusals)
        self.holder.swap(ruleset)
        try:
            save_last_good(candidate_dir, self.state_dir)
        except OSError as exc:  # the swap stands; only the fallback copy is stale
            log.warning("could not keep a copy of the last good rules: %s", exc)
        return ReloadOutcome("loaded", f"now serving {new.name} {new.version}", new.version, new.digest)

    def poll_once(self) -> ReloadOutcome | None:
        """Reload when the files changed and have stayed unchanged for one poll (debounce)."""
        first = signature(self.rules_dir)
        if first == self._seen:
            return None
        time.sleep(0.2)
        if signature(self.rules_dir) != first:
            return None  # still being written; next poll
        return self.reload()

    def start(self, interval: float) -> None:
        def run() -> None:
            while not self._stop.wait(interval):
                try:
                    self.poll_once()
                except Exception:  # the watcher must outlive any one bad candidate
                    log.exception("rules watcher failed; will retry")

        threading.Thread(target=run, name="rules-watcher", daemon=True).start()

    def stop(self) -> None:
        self._stop.set()
