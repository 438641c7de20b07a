"""Batch screening: a JSON Lines file of intakes in, one decision (or error) per line out.

For nightly re-screening and replays. The output has exactly one line per input line, in input
order: ``{"line": n, "decision": {...}}`` or ``{"line": n, "error": {...}}`` (the same error body
as the HTTP API), so a bad line never stops the run. Decisions come from ``screen()`` like every
other entry point.

Memory stays constant whatever the file's size: input is read line by line into chunks, and at
most ``workers * IN_FLIGHT_PER_WORKER`` chunks are out at any time (``Pool.imap`` would read the
whole input ahead). Each worker process loads and compiles the ruleset once.

Resume is explicit (``resume=True``): the complete lines already in the output are kept, a partial
last line (the run was killed mid-write) is cut off, and that many input lines are skipped. It is
not automatic because an existing output may come from another ruleset or another ``as_of``; a
resume under a different ruleset digest is refused rather than mixing two rulesets in one file.
"""
from __future__ import annotations

import datetime as dt
import json
import multiprocessing
import os
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator

from service.config import Settings
from service.errors import ServiceError
from service.intake_reader import Limits, read_intake
from service.ruleset import Ruleset, load_ruleset
from service.screening import screen

CHUNK_LINES = 256
IN_FLIGHT_PER_WORKER = 4


class BatchError(RuntimeError):
    """The run cannot start or continue (not a bad input line: those go to the output)."""


@dataclass
class Summary:
    lines: int = 0
    resumed_from: int = 0
    decisions: Counter = field(default_factory=Counter)
    review_required: int = 0
    rules: Counter = field(default_factory=Counter)
    errors: Counter = field(default_factory=Counter)
    seconds: float = 0.0
    ruleset: dict | None = None

    def add(self, other: "Summary") -> None:
        self.lines += other.lines
        self.decisions.update(other.decisions)
        self.review_required += other.review_required
        self.rules.update(other.rules)
        self.errors.update(other.errors)

    def count(self, record: dict) -> None:
        """Count one output record (as written, or as read back from an output on resume)."""
        self.lines += 1
        decision = record.get("decision")
        if decision is not None:
            self.decisions[decision["decision"]] += 1
            self.review_required += bool(decision["physician_review_required"])
            self.rules.update(r["rule_id"] for r in decision["reasons"])
        else:
            self.errors[str(record["error"]["status"])] += 1

    def to_dict(self) -> dict:
        processed = self.lines - self.resumed_from
        return {
            "lines": self.lines,
            "resumed_from": self.resumed_from,
            "decisions": dict(sorted(self.decisions.items())),
            "physician_review_required": self.review_required,
            "errors": {"total": sum(self.errors.values()), "by_status": dict(sorted(self.errors.items()))},
            "rules": dict(sorted(self.rules.items(), key=lambda kv: (-kv[1], kv[0]))),
            "seconds": round(self.seconds, 3),
            "intakes_per_second": round(processed / self.seconds, 1) if self.seconds > 0 else None,
            "ruleset": self.ruleset,
        }

    def format(self) -> str:
        d = self.to_dict()
        parts = [f"{d['lines']} lines"
                 + (f" ({d['resumed_from']} from an earlier run)" if d["resumed_from"] else "")
                 + f" in {d['seconds']} s" + (f", {d['intakes_per_second']}/s" if d["intakes_per_second"] else "")]
        parts.append("decisions: " + (", ".join(f"{k} {v}" for k, v in d["decisions"].items()) or "none")
                     + f"; physician review required {d['physician_review_required']}")
        parts.append(f"errors: {d['errors']['total']}"
                     + "".join(f", {v} × {k}" for k, v in d["errors"]["by_status"].items()))
        if d["rules"]:
            parts.append("rules:")
            parts.extend(f"  {v:>8}  {k}" for k, v in d["rules"].items())
        return "\n".join(parts)


# --- one line ---------------------------------------------------------------------------------

class LineScreener:
    """Turns one input line into one output line. Lives once per worker process."""

    def __init__(self, ruleset: Ruleset, as_of: dt.datetime | None, settings: Settings):
        self.ruleset = ruleset
        self.as_of = as_of
        self.limits = Limits.of(settings)
        # the catalog of the rules this batch runs, on its fast path for valid intakes (service.fastload)
        self.loader = ruleset.intake_loader

    def __call__(self, number: int, data: bytes, summary: Summary) -> str:
        try:
            intake = read_intake(data, self.limits, self.loader)
        except ServiceError as exc:
            record = {"line": number, "error": exc.to_dict()}
        else:
            record = {"line": number, "decision": screen(intake, self.ruleset, as_of=self.as_of).to_dict()}
        summary.count(record)
        return json_line(record)


# Characters that JSON leaves raw but that many line readers (Python's str.splitlines, JavaScript)
# take for a line break: escaped, so one record is always one line of the output.
_LINE_BREAKS = str.maketrans({"\x85": "\\u0085", "\u2028": "\\u2028", "\u2029": "\\u2029"})


def json_line(record: dict) -> str:
    """One output record: compact JSON, Unicode kept, nothing a reader could split, then \\n."""
    return json.dumps(record, ensure_ascii=False, separators=(",", ":")).translate(_LINE_BREAKS) + "\n"


_worker: LineScreener | None = None
# The run's ruleset, set by the parent just before it forks its pool: a forked worker screens
# with it as it stands (read, linted and compiled once, in the parent; durable-rules' compiled
# state is copied by the fork). A spawned worker (no fork on this platform) starts without it
# and loads the pack itself, through the rules cache when there is one.
_parent_ruleset: Ruleset | None = None


def _init_worker(rules_dir: str, backend: str, as_of: dt.datetime | None, settings: Settings) -> None:
    global _worker
    ruleset = _parent_ruleset or load_ruleset(rules_dir, backend, settings.pack_cache(create=False))
    _worker = LineScreener(ruleset, as_of, settings)


def _screen_chunk(chunk: tuple[int, list[bytes]]) -> tuple[str, Summary]:
    first, lines = chunk
    summary = Summary()
    out = "".join(_worker(first + i, line, summary) for i, line in enumerate(lines))
    return out, summary


# --- files ------------------------------------------------------------------------------------

def prepare_resume(output: Path) -> tuple[int, Summary]:
    """Keep the complete lines of an earlier output, cut a partial last line, and count them."""
    summary = Summary()
    if not output.exists():
        return 0, summary
    keep = 0
    with output.open("rb") as f:
        for raw in f:
            if not raw.endswith(b"\n"):
                break
            try:
                record = json.loads(raw)
                if record["line"] != summary.lines + 1:
                    raise ValueError(f"expected line {summary.lines + 1}, found {record['line']}")
            except (ValueError, KeyError, TypeError) as exc:
                raise BatchError(f"{output}: line {summary.lines + 1} is not batch output ({exc}); "
                                 "cannot resume from it") from None
            if summary.ruleset is None and "decision" in record:
                summary.ruleset = record["decision"]["ruleset"]
            summary.count(record)
            keep += len(raw)
    with output.open("r+b") as f:
        f.truncate(keep)
    return summary.lines, summary


def count_lines(path: Path) -> int:
    """Lines in a file, for the progress bar's ETA (a fast pass over raw bytes)."""
    n = 0
    last = b"\n"
    with path.open("rb") as f:
        while block := f.read(1 << 20):
            n += block.count(b"\n")
            last = block[-1:]
    return n + (last != b"\n")


def _chunks(lines: Iterable[bytes], skip: int, size: int) -> Iterator[tuple[int, list[bytes]]]:
    number = 0
    chunk: list[bytes] = []
    first = skip + 1
    for number, line in enumerate(lines, 1):
        if number <= skip:
            continue
        chunk.append(line.rstrip(b"\r\n"))
        if len(chunk) == size:
            yield first, chunk
            first += size
            chunk = []
    if chunk:
        yield first, chunk


def run_batch(
    input_path: Path,
    output_path: Path,
    *,
    rules_dir: Path,
    backend: str = "durable",
    as_of: dt.datetime | None = None,
    workers: int | None = None,
    resume: bool = False,
    chunk_lines: int = CHUNK_LINES,
    progress: Callable[[int], None] | None = None,
    ruleset: Ruleset | None = None,
    settings: Settings | None = None,
) -> Summary:
    """Screen every line of ``input_path`` into ``output_path``. ``progress(n)`` is called with
    the number of lines finished since its last call. Raises BatchError before writing anything
    when the run cannot be done. ``settings`` (the body limits) are read from the environment
    when not given, once for the run; every worker gets them from here."""
    global _parent_ruleset
    settings = settings or Settings.from_env()
    ruleset = ruleset or load_ruleset(rules_dir, backend, settings.pack_cache(create=False))
    workers = workers or os.cpu_count() or 1
    started = time.perf_counter()
    skip, summary = prepare_resume(output_path) if resume else (0, Summary())
    if summary.ruleset and summary.ruleset["digest"] != ruleset.summary["digest"]:
        raise BatchError(f"{output_path} was written under ruleset {summary.ruleset['version']} "
                         f"({summary.ruleset['digest']}), not the loaded {ruleset.summary['version']} "
                         f"({ruleset.summary['digest']}); write to a new output instead of resuming")
    summary.resumed_from = skip
    summary.ruleset = ruleset.summary
    if progress and skip:
        progress(skip)

    with input_path.open("rb") as source, output_path.open("ab" if resume else "wb") as sink:
        chunks = _chunks(source, skip, chunk_lines)

        def emit(text: str, part: Summary) -> None:
            sink.write(text.encode("utf-8"))
            summary.add(part)
            if progress:
                progress(part.lines)

        if workers == 1:
            screener = LineScreener(ruleset, as_of, settings)
            for first, lines in chunks:
                part = Summary()
                emit("".join(screener(first + i, line, part) for i, line in enumerate(lines)), part)
        else:
            context = multiprocessing.get_context("fork" if os.name == "posix" else "spawn")
            _parent_ruleset = ruleset
            try:
                with context.Pool(workers, _init_worker, (str(rules_dir), backend, as_of, settings)) as pool:
                    pending: deque = deque()
                    for chunk in chunks:
                        pending.append(pool.apply_async(_screen_chunk, (chunk,)))
                        if len(pending) >= workers * IN_FLIGHT_PER_WORKER:
                            emit(*pending.popleft().get())
                    while pending:
                        emit(*pending.popleft().get())
            finally:
                _parent_ruleset = None
    summary.seconds = time.perf_counter() - started
    return summary
