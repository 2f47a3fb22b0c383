"""Shared helpers for benchmark scripts: machine description, timing, result files."""
from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

# Benchmarks run from a checkout (they are not in the wheel): its root and results folder.
ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = ROOT / "benchmarks" / "results"

# The summary's ratios and their goals (adgen bench); every ratio compares like with like
# (same precision, batch, config and server on both sides, measured side by side).
GOALS = {"ort_vs_eager_b64": (">=", 2.0), "gemm_efficiency": (">=", 0.5),
         "triton_vs_inprocess": (">=", 0.90), "e2e_vs_triton": (">=", 0.90),
         "generate_256_png_vs_64_png": (">=", 0.40), "p99_over_p50_b1_c1": ("<=", 3.0),
         "release_vs_previous_release": (">=", 0.8)}
# Ratios physics bounds: a share of a measured ceiling cannot pass 1, and a job cannot outrun
# the server it calls. A value past its limit is a measurement error (a ceiling measured
# under noise, unlike configurations), reported as such and never as a result.
PHYSICAL_LIMITS = {"gemm_efficiency": 1.0, "e2e_vs_triton": 1.0}


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


def spread(samples) -> float:
    """(max - min) / median of `samples`: 0.03 = the samples lie within 3% of their median."""
    med = statistics.median(samples)
    return (max(samples) - min(samples)) / med if med > 0 else float("inf")


@dataclass(frozen=True)
class RepeatRule:
    """When to stop timing a call: once the last `k` calls lie within `tol` of their median
    (spread), after at least `min_calls` calls and `min_seconds` of them; in any case after
    `max_calls` calls or `max_seconds` spent (the cap: a noisy series stops there)."""
    k: int = 5
    tol: float = 0.05
    min_calls: int = 5
    min_seconds: float = 0.0
    max_calls: int = 40
    max_seconds: float = 6.0

    def stop(self, times: list[float]) -> str | None:
        """Why to stop after `times` (seconds per call so far): "flat", "cap" or None."""
        if len(times) >= max(self.min_calls, self.k, 1) and sum(times) >= self.min_seconds \
                and spread(times[-self.k:]) <= self.tol:
            return "flat"
        if len(times) >= self.max_calls or (times and sum(times) >= self.max_seconds):
            return "cap"
        return None


def repeat_until_flat(timed_call, rule: RepeatRule) -> list[float]:
    """Seconds of each call of `timed_call` (which returns the seconds one call took), called
    until `rule` says the series is flat or capped."""
    times: list[float] = []
    while rule.stop(times) is None:
        times.append(timed_call())
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


def scrub(payload: dict) -> dict:
    """The payload with this checkout's and the temp folder's absolute paths made neutral
    (project-relative, `$TMPDIR/...`): result files are committed and must not name a machine."""
    text = json.dumps(payload)
    for prefix, repl in ((str(ROOT) + "/", ""), (str(ROOT), "."),
                         (tempfile.gettempdir().rstrip("/") + "/", "$TMPDIR/")):
        text = text.replace(json.dumps(prefix)[1:-1], json.dumps(repl)[1:-1])
    return json.loads(text)


def write_part(name: str, payload: dict, command: str, results_dir, markdown,
               plot=None) -> Path:
    """One part's result files in <results_dir>/<machine>/ (results_dir None: RESULTS_DIR):
    <name>.json and .md, and .png when `plot` is given; the payload is stamped with the
    command that made it and scrubbed of this machine's paths. Returns the JSON path."""
    payload["command"] = command
    payload = scrub(payload)
    folder = Path(results_dir or RESULTS_DIR).resolve() / machine_name()
    path = write_results(name, payload, markdown(payload, command), subdir=str(folder))
    if plot is not None:
        plot(payload, path.with_suffix(".png"))
    return path


def part_parser(doc: str, model_help: str = "checkpoint or ONNX export folder"):
    """The options every part run on its own shares: --model and --results-dir."""
    ap = argparse.ArgumentParser(description=doc.split("\n")[0])
    ap.add_argument("--model", default=None, help=model_help)
    ap.add_argument("--results-dir", default=None, help=f"default {RESULTS_DIR}")
    return ap


def show(path: Path) -> int:
    """Prints a part's Markdown result (beside its JSON at `path`); the exit status."""
    print(path.with_suffix(".md").read_text())
    return 0


def model_note(model) -> str:
    return f"given: {model}" if model else "release model models/adgen-emoji64"


def run_header(cfg) -> dict:
    """What a part's payload opens with: the machine, its load at the end of the run, the
    model and the part's config (a dataclass with a `model` field) as plain JSON."""
    return {"machine": machine_info(), "load_average_at_end": list(os.getloadavg()),
            "model": model_note(cfg.model),
            "config": json.loads(json.dumps(asdict(cfg), default=str))}


def eager_list(text: str) -> list[int] | None:
    """batch_list, or 'all' -> None (every batch)."""
    return None if text == "all" else batch_list(text)


def batch_list(text: str) -> list[int]:
    """'1,16,64' -> [1, 16, 64]; anything else one clear argparse error."""
    try:
        out = [int(b) for b in text.split(",")]
    except ValueError:
        out = []
    if not out or min(out) < 1:
        raise argparse.ArgumentTypeError(f"want a comma list of batch sizes >= 1, got {text!r}")
    return out


def positive(kind):
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            value = 0
        if value <= 0:
            raise argparse.ArgumentTypeError(f"want a number > 0, got {text!r}")
        return value
    parse.__name__ = kind.__name__
    return parse


def md_table(header: list[str], rows, align: str = "") -> list[str]:
    """A Markdown table's lines: header, rule (column i right-aligned where align[i] is
    'r'), one line per row of cells (str() of each)."""
    rule = "|" + "|".join("---:" if a == "r" else "---"
                          for a in align.ljust(len(header), "-")) + "|"
    return [md_row(header), rule] + [md_row(r) for r in rows]


def md_row(cells) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"
