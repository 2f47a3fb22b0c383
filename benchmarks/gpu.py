"""Generator on an NVIDIA GPU: eager fp32/tf32/fp16, CUDA graphs, torch.compile, onnxruntime, TensorRT.

Usage:
  bash benchmarks/gpu.sh                                   # NVIDIA machine, < 8 min
  bash benchmarks/gpu.sh --model runs/00004-film/checkpoints/latest
  python -m benchmarks.gpu --device cpu --quick --model CKPT --results-dir out/r   # CPU smoke

One run, one machine: GEMM ceilings (fp32 with TF32 off, TF32, fp16), the generator's FLOPs
per image (counted by FlopCounterMode), then images/s and latency p50/p95/p99 per call at
batch 1..4096 (where memory allows) for every backend in benchmarks/gpu_backends.py, each on
device buffers, each row naming the provider that really ran it.

A run that is cut short still reports. Every step (the GEMMs, each backend) runs in its own
child process with a time limit (--step-limit-s) inside the overall budget (--budget-s): a
step past its limit (a slow torch.compile, a TensorRT build that does not return) is killed
and recorded as skipped with that reason. Each measured row is appended to
<results>/<machine>/gpu.rows.jsonl (flushed, fsynced) the moment it exists, and gpu.json /
gpu.md are rewritten after every step, so a killed run keeps every row it measured.
Backends that cannot run here (no TensorRT, no onnxruntime-gpu) are rows saying why.
Writes <results>/<machine>/gpu.{json,md,png}, gpu.rows.jsonl and summary.json.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.common import RESULTS_DIR, command_line, machine_info, machine_name, \
    percentiles, scrub

ROWS_FILE = "gpu.rows.jsonl"
GEMM_STEP = "gemm"


class Budget:
    def __init__(self, seconds: float):
        self.end = time.monotonic() + seconds

    def left(self) -> float:
        return self.end - time.monotonic()


def result_folder_name(device: str) -> str:
    info = machine_info()
    if device == "cuda" and info.get("gpu"):
        words = "".join(c if c.isalnum() else "-" for c in info["gpu"].lower()).split("-")
        return "gpu-" + "-".join(w for w in words if w and w != "nvidia")[:40]
    return machine_name()


def append_row(path: Path, record: dict) -> None:
    """One JSON line, on disk before this returns: a kill a moment later loses nothing."""
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(record) + "\n")
        f.flush()
        os.fsync(f.fileno())


def read_rows(path: Path) -> list[dict]:
    """Every complete line (a line cut by a kill mid-write is ignored)."""
    out = []
    if path.is_file():
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                continue
    return out


def _sync(torch, device):
    if device == "cuda":
        torch.cuda.synchronize()


def _timed_calls(torch, device, fn, calls: int, seconds: float) -> list[float]:
    """Seconds per call (synchronised), after 3 warm-up calls; at least `calls` calls."""
    for _ in range(3):
        fn()
    _sync(torch, device)
    out, t_end = [], time.perf_counter() + seconds
    while len(out) < calls or (time.perf_counter() < t_end and len(out) < 50 * calls):
        t0 = time.perf_counter()
        fn()
        _sync(torch, device)
        out.append(time.perf_counter() - t0)
    return out


def gemm(torch, device: str, dtype, n: int, quick: bool = False) -> float:
    """n x n matmul FLOP/s. On a CPU the size comes from pick_n: a dtype without fast kernels
    there (bf16 without AVX512-BF16 or AMX: about 1.3 s a 1024 x 1024 call on one core)
    samples a smaller matrix instead of spending a minute."""
    if device == "cpu":
        from benchmarks.ceilings import probe_n
        small = torch.randn(256, 256, dtype=dtype)
        n = probe_n(lambda: small @ small, 256, n, 0.2)
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    times = _timed_calls(torch, device, lambda: a @ b, calls=5 if quick else 10,
                         seconds=0.3 if quick else 2.0)
    return 2.0 * n ** 3 / float(np.median(times))


# ----------------------------------------------------------------------------- child: one step

def child(args) -> int:
    """Runs one step (GEMMs or one backend) and appends its rows; the parent enforces time."""
    import torch

    from benchmarks import gpu_backends as GB
    rows_path, device, step = Path(args.rows_file), args.device, args.child
    deadline = time.monotonic() + args.deadline_s
    if step == GEMM_STEP:
        n = 1024 if args.quick or device == "cpu" else 8192
        half = torch.float16 if device == "cuda" else torch.bfloat16
        GB.set_tf32(torch, False)
        q = bool(args.quick)
        record = {"kind": "gemm", "n": n, "fp32": gemm(torch, device, torch.float32, n, q)}
        if device == "cuda":
            GB.set_tf32(torch, True)
            record["tf32"] = gemm(torch, device, torch.float32, n, q)
            GB.set_tf32(torch, False)
        record["half"] = gemm(torch, device, half, n, q)
        append_row(rows_path, record)
        return 0
    from adgen.training.checkpoint import load_generator
    loaded = load_generator(args.model)
    batches = [int(b) for b in args.batches.split(",")]
    try:
        factory = GB.make(step, torch, loaded.module, loaded.z_dim,
                          Path(args.onnx) if args.onnx else None, device, max(batches))
    except GB.Skip as exc:
        append_row(rows_path, {"kind": "skip", "backend": step, "reason": str(exc)})
        return 0
    need = 0.0
    with torch.inference_mode():
        for i, b in enumerate(batches):
            if time.monotonic() + need > deadline:
                append_row(rows_path, {"kind": "skip", "backend": step, "batch": b,
                                       "reason": "step time limit (not enough left)"})
                continue
            started = time.monotonic()
            try:
                fn, provider = factory(b)
                times = _timed_calls(torch, device, fn, calls=5 if args.quick else 20,
                                     seconds=0.2 if args.quick else 1.5)
            except Exception as exc:  # e.g. out of memory at 4096: recorded, larger skipped
                oom = "out of memory" in str(exc).lower()
                append_row(rows_path, {"kind": "skip", "backend": step, "batch": b,
                                       "reason": f"{type(exc).__name__}: {str(exc)[:200]}"})
                if device == "cuda":
                    torch.cuda.empty_cache()
                if oom:
                    for bigger in batches[i + 1:]:
                        append_row(rows_path, {"kind": "skip", "backend": step,
                                               "batch": bigger,
                                               "reason": f"out of memory at batch {b}"})
                    break
                continue
            pct = percentiles(times)
            append_row(rows_path, {
                "kind": "row", "backend": step, "batch": b, "provider": provider,
                "images_per_s": b / pct["p50"], "calls": len(times),
                "latency_ms": {k: v * 1000 for k, v in pct.items()}})
            need = time.monotonic() - started  # the next, larger batch takes at least this
    return 0


# ----------------------------------------------------------------------------- parent

def steps_for(args) -> list[str]:
    from benchmarks import gpu_backends as GB
    if args.backends:
        return [GEMM_STEP] + [b for b in args.backends.split(",") if b]
    if args.device == "cuda":
        return [GEMM_STEP, *GB.ORDER]
    # the CPU smoke path: a CPU compile takes minutes, so --quick leaves it out
    return [GEMM_STEP, *(b for b in GB.CPU_ORDER if not (args.quick and "compile" in b))]


def _die_with_parent() -> None:
    """In the step's process: SIGKILL when the parent dies (gpu.sh's `timeout`, a kill -9), so
    no GPU work outlives the run that asked for it (Linux prctl; elsewhere nothing)."""
    try:
        import ctypes
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def run_step(args, step: str, rows_path: Path, onnx_path: Path | None, batches: list[int],
             limit_s: float, log) -> None:
    """One step in a child process; past limit_s it is killed and the kill is recorded."""
    cmd = [sys.executable, "-m", "benchmarks.gpu", "--child", step, "--device", args.device,
           "--model", str(args.model), "--rows-file", str(rows_path),
           "--batches", ",".join(map(str, batches)), "--deadline-s", f"{limit_s:.1f}"]
    cmd += ["--onnx", str(onnx_path)] if onnx_path else []
    cmd += ["--quick"] if args.quick else []
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            start_new_session=True,  # its own group: a kill takes its workers
                            preexec_fn=_die_with_parent)
    try:
        _, err = proc.communicate(timeout=limit_s + 10)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        append_row(rows_path, {"kind": "skip", "backend": step,
                               "reason": f"step time limit: killed after {limit_s:.0f} s"})
        log(f"{step}: killed at its {limit_s:.0f} s limit; rows so far kept")
        return
    if proc.returncode != 0:
        last = (err or "").strip().splitlines()[-1:] or [f"exit code {proc.returncode}"]
        append_row(rows_path, {"kind": "skip", "backend": step,
                               "reason": f"step failed: {last[0][:300]}"})
        log(f"{step}: failed: {last[0][:300]}")


def assemble(header: dict, records: list[dict]) -> dict:
    """The payload from the run header and the rows so far (complete or not)."""
    gemm_rec = next((r for r in records if r["kind"] == "gemm"), None)
    ceilings = {k: gemm_rec[k] for k in ("fp32", "tf32", "half") if gemm_rec and k in gemm_rec}
    flops = header["generator_flops_per_image"]
    results, skipped = {}, []
    for r in records:
        if r["kind"] == "row":
            name = r["backend"]
            kind = ("tf32" if name.endswith("tf32") else "fp32"
                    if name.endswith("fp32") or name == "onnxruntime" else "half")
            row = {k: r[k] for k in ("batch", "images_per_s", "calls", "latency_ms",
                                     "provider")}
            if ceilings.get(kind):
                row["gemm_efficiency"] = r["images_per_s"] * flops / ceilings[kind]
            results.setdefault(name, []).append(row)
        elif r["kind"] == "skip":
            skipped.append({k: r[k] for k in ("backend", "batch", "reason") if k in r})
    return {**header, "gemm_flops": ceilings, "generator": results, "skipped": skipped,
            "ratios": ratios(results)}


def write_partial(folder: Path, payload: dict, command: str) -> Path:
    """gpu.json and gpu.md as they stand (each replaced atomically)."""
    path = folder / "gpu.json"
    for target, text in ((path, json.dumps(payload, indent=2) + "\n"),
                         (path.with_suffix(".md"), markdown(payload, command).rstrip() + "\n")):
        tmp = target.with_name(f".{target.name}.tmp")
        tmp.write_text(text)
        os.replace(tmp, target)
    return path


def run(args, folder: Path, command: str, log=print) -> dict:
    import torch

    from benchmarks.backends import count_generator_flops
    from adgen.training.checkpoint import load_generator
    device = args.device
    if device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("error: torch sees no CUDA device (CPU-only torch, or no GPU)")
    budget = Budget(args.budget_s)
    folder.mkdir(parents=True, exist_ok=True)
    rows_path = folder / ROWS_FILE
    rows_path.write_text("")  # this run's rows only
    loaded = load_generator(args.model)
    header = {"machine": machine_info(), "device": device, "model": str(args.model),
              "arch": loaded.arch, "z_dim": loaded.z_dim, "command": command,
              "generator_flops_per_image": count_generator_flops(loaded.module, loaded.z_dim),
              "rows_file": ROWS_FILE, "complete": False}
    batches = [1, 4] if args.quick else [1, 16, 64, 256, 1024, 4096]
    with tempfile.TemporaryDirectory(prefix="adgen-gpu-") as tmp:
        onnx_path = None
        try:
            from adgen.export.onnx_export import export_onnx
            onnx_path = export_onnx(args.model, Path(tmp) / "onnx", parity_batches=(1,),
                                    progress=False) / "generator.onnx"
        except Exception as exc:  # reported; the PyTorch rows still run
            append_row(rows_path, {"kind": "skip", "backend": "onnx-export",
                                   "reason": f"{type(exc).__name__}: {exc}"})
        for step in steps_for(args):
            limit = min(args.step_limit_s, budget.left())
            if limit < 10:
                append_row(rows_path, {"kind": "skip", "backend": step,
                                       "reason": f"time budget ({args.budget_s:.0f} s) spent"})
                continue
            log(f"{step} (limit {limit:.0f} s)")
            run_step(args, step, rows_path, onnx_path, batches, limit, log)
            write_partial(folder, scrub(assemble(header, read_rows(rows_path))), command)
    return {**assemble(header, read_rows(rows_path)), "complete": True}


def ratios(results: dict) -> dict:
    def at(name, b):
        return next((r["images_per_s"] for r in results.get(name, []) if r["batch"] == b), None)
    out = {}
    names = list(results)
    eager32 = "pytorch-eager-fp32"
    for name in names:
        for b in sorted({r["batch"] for rows in results.values() for r in rows}):
            if name != eager32 and at(name, b) and at(eager32, b):
                out[f"{name}_vs_eager_fp32_b{b}"] = at(name, b) / at(eager32, b)
    best = max(((r["images_per_s"], n, r["batch"]) for n, rows in results.items() for r in rows),
               default=None)
    if best:
        out["best"] = {"images_per_s": best[0], "backend": best[1], "batch": best[2]}
    return out


def _tflops(g: dict, key: str) -> str:
    return f"{g[key] / 1e12:.2f}" if g.get(key) else "n/a"


def markdown(p: dict, command: str) -> str:
    g = p["gemm_flops"]
    state = "" if p.get("complete") else " (partial: the run has not finished or was cut)"
    lines = [f"# Generator on {p['machine'].get('gpu', p['device'])} ({p['device']}){state}", "",
             f"Command: `{command}`  ", f"Model: `{p['model']}` ({p['arch']}, z={p['z_dim']}); "
             f"{p['generator_flops_per_image'] / 1e6:.1f} MFLOP per image (counted); GEMM "
             f"TFLOP/s: fp32 (TF32 off) {_tflops(g, 'fp32')}, TF32 {_tflops(g, 'tf32')}, "
             f"half {_tflops(g, 'half')}.", "",
             "| backend | provider | batch | images/s | p50 ms | p95 ms | p99 ms | of GEMM |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]
    for name, rows in p["generator"].items():
        for r in rows:
            lat, eff = r["latency_ms"], r.get("gemm_efficiency")
            lines.append(f"| {name} | {r['provider']} | {r['batch']} | {r['images_per_s']:.0f} | "
                         f"{lat['p50']:.3f} | {lat['p95']:.3f} | {lat['p99']:.3f} | "
                         f"{'n/a' if eff is None else f'{eff:.3f}'} |")
    if p["skipped"]:
        lines += ["", "Skipped:", ""]
        lines += [f"- {s['backend']}{' b' + str(s['batch']) if 'batch' in s else ''}: "
                  f"{s['reason']}" for s in p["skipped"]]
    best = p["ratios"].get("best")
    if best:
        lines += ["", f"Best: {best['backend']} at batch {best['batch']}: "
                  f"{best['images_per_s']:.0f} images/s."]
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    ap.add_argument("--model", default=None, help="checkpoint folder (default: release model)")
    ap.add_argument("--quick", action="store_true", help="batches 1 and 4, short timings")
    ap.add_argument("--budget-s", type=float, default=420.0, help="stop measuring after this")
    ap.add_argument("--step-limit-s", type=float, default=150.0,
                    help="kill a step (GEMMs, one backend) that runs longer than this")
    ap.add_argument("--backends", default=None,
                    help="comma list instead of every backend (benchmarks/gpu_backends.py)")
    ap.add_argument("--results-dir", default=None, help=f"default {RESULTS_DIR}")
    # the child side of one step (run_step); not for direct use
    for flag in ("--child", "--rows-file", "--onnx", "--batches"):
        ap.add_argument(flag, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--deadline-s", type=float, default=0.0, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.model is None:
        from adgen.paths import release_model_dir
        args.model = str(release_model_dir())
    if args.child:
        return child(args)
    from benchmarks.plots import plot_gpu
    command = command_line("gpu", argv)
    folder = Path(args.results_dir or RESULTS_DIR).resolve() / result_folder_name(args.device)
    payload = scrub(run(args, folder, command,
                        log=lambda m: print(m, file=sys.stderr, flush=True)))
    path = write_partial(folder, payload, command)
    plot_gpu(payload, path.with_suffix(".png"))
    summary = {"machine": payload["machine"], "command": command, "device": args.device,
               "ratios": payload["ratios"], "files": {"gpu": f"{folder.name}/gpu.json"}}
    (folder / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(path.with_suffix(".md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
