"""Timing, memory and machine description shared by the benchmarks."""
from __future__ import annotations

import os
import platform
import statistics
import subprocess
import sys
import time
from typing import Callable, Sequence


def rss_mib() -> float:
    """Resident set size of this process now (VmRSS), in MiB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def side_by_side(contenders: dict[str, Callable[[object], object]], inputs: Sequence, rounds: int,
                 warmup: int = 200, repeat: int = 1) -> dict[str, dict]:
    """Per-call latency of each contender on the same inputs, interleaved round by round so that
    a noisy neighbour on the machine slows them all alike. Returns median/p99/mean in µs.
    ``repeat``: each sample is the mean of that many consecutive calls (steady state, not the
    first call after another contender has filled the CPU's caches with its own data)."""
    for fn in contenders.values():
        for i in range(warmup):
            fn(inputs[i % len(inputs)])
    samples: dict[str, list[int]] = {name: [] for name in contenders}
    clock = time.perf_counter_ns
    for _ in range(rounds):
        for name, fn in contenders.items():
            out = samples[name]
            for item in inputs:
                start = clock()
                for _ in range(repeat):
                    fn(item)
                out.append((clock() - start) // repeat)
    return {name: summarise(values) for name, values in samples.items()}


def summarise(ns: list[int]) -> dict:
    ordered = sorted(ns)
    return {
        "n": len(ordered),
        "median_us": ordered[len(ordered) // 2] / 1000,
        "p99_us": ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] / 1000,
        "mean_us": statistics.fmean(ordered) / 1000,
    }


def machine() -> dict:
    cpu = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    try:
        load = os.getloadavg()
    except OSError:
        load = (float("nan"),) * 3
    mem = "unknown"
    try:
        with open("/proc/meminfo") as f:
            mem = f"{int(f.readline().split()[1]) / 1024 / 1024:.1f} GiB"
    except OSError:
        pass
    versions = {}
    for module in ("durable", "zen", "marshmallow", "flask", "gunicorn"):
        try:
            from importlib.metadata import version
            versions[module] = version({"durable": "durable-rules", "zen": "zen-engine"}.get(module, module))
        except Exception:  # a missing package is reported, not fatal
            versions[module] = "not installed"
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "memory": mem,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "load_average_at_start": [round(x, 2) for x in load],
        "versions": versions,
        "git": _git(),
    }


def _git() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        dirty = subprocess.run(["git", "status", "--porcelain"], capture_output=True, text=True, timeout=5,
                               cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        return out.stdout.strip() + (" (with uncommitted changes)" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"
