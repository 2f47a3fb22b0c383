"""Shared helpers for benchmark scripts: machine description, timing, result files."""
from __future__ import annotations

import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path

# Benchmarks run from a checkout (they are not in the wheel): its root and results folder.
ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = ROOT / "benchmarks" / "results"


def machine_name() -> str:
    """A short stable label: '<cores>cpu-<cpu model words>' or 'gpu-<name>'."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    words = "".join(c if c.isalnum() else "-" for c in cpu.lower()).split("-")
    tag = "-".join(w for w in words if w and w not in {"r", "tm", "cpu", "processor"})[:40]
    return f"{os.cpu_count()}cpu-{tag}"


# CPU features that decide which matrix precision is fast (Linux /proc/cpuinfo names).
ISA_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "avx_vnni", "amx_tile",
             "amx_bf16", "amx_int8")


def cpu_isa(text: str | None = None) -> list[str]:
    """The ISA_FLAGS this CPU reports (or `text`, a /proc/cpuinfo, does), in ISA_FLAGS order;
    [] where there is no /proc/cpuinfo."""
    if text is None:
        try:
            text = Path("/proc/cpuinfo").read_text()
        except OSError:
            return []
    flags = set()
    for line in text.splitlines():
        if line.startswith("flags"):
            flags.update(line.split(":", 1)[1].split())
            break
    return [f for f in ISA_FLAGS if f in flags]


def machine_info() -> dict:
    info = {"name": machine_name(), "cpus": os.cpu_count(), "platform": platform.platform(),
            "python": sys.version.split()[0], "isa": cpu_isa()}
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=10)
        if out.returncode == 0 and out.stdout.strip():
            info["gpu"] = out.stdout.strip().splitlines()[0]
    except (OSError, subprocess.TimeoutExpired):
        pass
    return info


def time_calls(fn, repeats: int, warmup: int = 2) -> list[float]:
    """Seconds per call, after warm-up calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return times


def percentiles(samples: list[float]) -> dict:
    s = sorted(samples)

    def pct(p):
        k = (len(s) - 1) * p / 100
        lo, hi = int(k), min(int(k) + 1, len(s) - 1)
        return s[lo] + (s[hi] - s[lo]) * (k - lo)

    return {"p50": pct(50), "p95": pct(95), "p99": pct(99), "min": s[0], "max": s[-1],
            "mean": statistics.fmean(s)}


def write_results(name: str, payload: dict, markdown: str, subdir: str | None = None) -> Path:
    """benchmarks/results/<machine>/<name>.json and .md; returns the JSON path."""
    folder = RESULTS_DIR / (subdir or machine_name())
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.json").write_text(json.dumps(payload, indent=2) + "\n")
    (folder / f"{name}.md").write_text(markdown.rstrip() + "\n")
    return folder / f"{name}.json"


def command_line(module: str, argv=None) -> str:
    """The command that made a result, for its files: `python -m benchmarks.<module> ARGS`.

    Absolute paths are machine-specific, so results name them by their last component only.
    """
    args = list(argv) if argv is not None else sys.argv[1:]
    shown = [shlex.quote(f"<abs>/{Path(a).name}" if os.path.isabs(a) else a) for a in args]
    return " ".join([f"python -m benchmarks.{module}", *shown])
