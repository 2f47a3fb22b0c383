"""Generator and text-encoder backends side by side, with the machine's GEMM ceilings.

Usage:
  python -m benchmarks.backends                      # release model, batches 1,16,64,256
  python -m benchmarks.backends --model runs/00001-film/checkpoint --max-calls 10
  python -m benchmarks.backends --quick              # smoke: tiny batches, 2 calls a row
  python -m benchmarks.backends --upsampler path/to/upsampler-checkpoint-or-export

In one run: the generator's FLOPs per image counted by torch's FlopCounterMode, then
images/s and latency p50/p95/p99 at each batch for onnxruntime fp32, every reduced-precision
ONNX variant and TensorRT when present, and PyTorch eager at batch 1 and 64 (its rows at
16 and 256 add minutes and no ratio; --eager-batches all measures them); the 4x upsampler of
`adgen_256` (64 -> 256 px) on onnxruntime fp32 at batch 1 and 64 with the same threads (the
release upsampler models/adgen-up256 when it exists, else a stated skip); the text
encoder's prompts/s. A row repeats its call until the last 5 calls lie within 5% of their
median (common.RepeatRule; capped in calls and seconds). The fp32 (and int8) GEMM ceilings
(torch.mm taking turns with onnxruntime's MatMul, whose MLAS kernels can be the faster /
torch._int_mm; 2048²) are sampled before and after each batch's rows
(ceilings.CeilingTrack); efficiency = a row's counted FLOP/s / the best call of the ceiling
of its own precision sampled around it (fp32 rows: gemm_efficiency; int8 rows against int8
only). A share above 1 is a measurement error (past_ceiling), never a result. The ceilings
table adds bf16 (measured once) and the CPU features (AVX-512, AVX512-BF16, VNNI, AMX).
Writes benchmarks/results/<machine>/backends.{json,md,png}.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np

from benchmarks.common import RepeatRule, batch_list, command_line, eager_list, machine_info, \
    md_table, percentiles, positive, repeat_until_flat, spread, write_results
from benchmarks.ceilings import CeilingTrack, gemm_ceilings, gemm_timers  # noqa: F401
# (gemm_ceilings: benchmarks.precision_served takes it from here)


# The precision whose matrix ceiling a backend is held against (default fp32); None: no
# ceiling of this CPU applies (a GPU backend).
BACKEND_PRECISION = {"onnxruntime-int8": "int8", "tensorrt-fp16": None}


def count_generator_flops(module, z_dim: int) -> float:
    """FLOPs for one image (2 per multiply-add), counted by torch's FlopCounterMode."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode
    emb, z = torch.randn(1, 384), torch.randn(1, z_dim)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        module(emb, z)
    return float(counter.get_total_flops())


def _inputs(batch: int, z_dim: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    emb = rng.standard_normal((batch, 384)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    return emb, rng.standard_normal((batch, z_dim)).astype(np.float32)


def _measure(fn, batch: int, rule: RepeatRule) -> dict:
    """One warm-up call, then calls until `rule` finds the series flat (or capped): images/s
    from the median call, latency percentiles, and why the repeats stopped."""
    fn()  # warm-up (allocations, kernel selection)

    def timed() -> float:
        t0 = time.perf_counter()
        fn()
        return time.perf_counter() - t0
    times = repeat_until_flat(timed, rule)
    pct = percentiles(times)
    return {"batch": batch, "images_per_s": batch / pct["p50"], "calls": len(times),
            "spread_last_k": spread(times[-rule.k:]), "stopped": rule.stop(times),
            "latency_ms": {k: v * 1000 for k, v in pct.items()}}


# Repeats of one row: stop once the last 5 calls lie within 5% of their median (at least
# 0.3 s of calls: a few ms call gets enough samples for its p99), at most 40 calls or 3 s.
FULL_RULE = RepeatRule(k=5, tol=0.05, min_calls=5, min_seconds=0.3, max_calls=40,
                       max_seconds=3.0)
QUICK_RULE = RepeatRule(k=2, tol=1.0, min_calls=2, max_calls=2, max_seconds=60.0)


def ort_session(path: Path, threads: int):
    import onnxruntime as ort
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def backends(model_path, out_dir: Path, threads: int, precisions: list[str]) -> dict:
    """name -> callable(emb, z) for every backend that can run here."""
    import torch
    from adgen.export.onnx_export import export_onnx
    from adgen.training.checkpoint import load_generator

    loaded = load_generator(model_path)
    module = loaded.module.eval()
    found = {}

    def eager(emb, z):
        with torch.inference_mode():
            return module(torch.from_numpy(emb), torch.from_numpy(z)).numpy()
    found["pytorch-eager"] = eager

    for precision in precisions:
        folder = out_dir / f"onnx-{precision}"
        try:
            # parity at batch 1 only and a small calibration set: this part measures speed,
            # and its own max |Δ| vs eager is taken at every batch below
            export_onnx(model_path, folder, precision=precision, force=True,
                        parity_batches=(1,), calibration_size=128, progress=False)
        except Exception as exc:  # a variant that cannot be built here is reported, not fatal
            print(f"skip onnxruntime-{precision}: {exc}", file=sys.stderr)
            continue
        manifest = json.loads((folder / "manifest.json").read_text())
        onnx_file = folder / manifest.get("optimized_model", manifest.get("model", "generator.onnx"))
        if not onnx_file.is_file():
            onnx_file = folder / "generator.onnx"
        sess = ort_session(onnx_file, threads)
        found[f"onnxruntime-{precision}"] = (
            lambda emb, z, s=sess: s.run(None, {"EMBEDDING": emb, "Z": z})[0])
    try:
        from adgen.export.tensorrt import tensorrt_runner  # noqa: F401  (GPU machines only)
        found["tensorrt-fp16"] = tensorrt_runner(out_dir / "onnx-fp32" / "generator.onnx",
                                                 out_dir / "trt")
    except Exception as exc:
        print(f"skip tensorrt: {exc}", file=sys.stderr)
    return loaded, found


UPSAMPLER_BATCHES = (1, 64)


def resolve_bench_upsampler(upsampler=None):
    """(UpsamplerArtifact or None, note): the upsampler the 256 px rows measure.

    None: the release upsampler (models/adgen-up256) when it exists, else (None, reason);
    False: none (reason stated); a path: that checkpoint or export folder. A checkpoint is
    exported once to artifacts/upsampler/ (adgen.export.repo.resolve_upsampler, parity checked),
    the same ONNX `adgen_256` serves."""
    from adgen.export.repo import resolve_upsampler
    from adgen.serving.runtime.backend import UPSAMPLER_FILE
    from adgen.paths import release_upsampler_dir
    if upsampler is False:
        return None, "no upsampler asked for"
    if upsampler is None:
        path = release_upsampler_dir()
        if not ((path / "upsampler.safetensors").is_file() or (path / UPSAMPLER_FILE).is_file()):
            return None, ("no release upsampler at models/adgen-up256 yet (pass one with "
                          "--upsampler)")
        note = "release upsampler models/adgen-up256"
    else:
        path, note = Path(upsampler), f"given: {upsampler}"
    return resolve_upsampler(path, progress=False), note


def bench_upsampler(artifact, note: str, threads: int, batches, rule: RepeatRule,
                    track: CeilingTrack) -> dict:
    """onnxruntime images/s of the 4x upsampler as served here (RAW_IMAGE -> RAW_IMAGE_256:
    its int8 export where the rule keeps it, else fp32) and its FLOP/s against the GEMM
    ceiling of that precision sampled just before and after each batch's row."""
    manifest = json.loads((artifact.folder / "manifest.json").read_text())
    flops = manifest.get("flops_per_image")
    if not flops:  # an older export: the formula of adgen.training.upsampler.Upsampler
        c, n = manifest["model"]["width"], manifest["model"]["n_blocks"]
        flops = 2 * (9 * 3 * c + n * 2 * 9 * c * c + 9 * c * 48) * 64 * 64
    from adgen.serving.runtime.backend import UPSAMPLER_FILE
    precision = getattr(artifact, "precision", "fp32")
    sess = ort_session(artifact.folder / UPSAMPLER_FILE, threads)
    rows = []
    for b in batches:
        x = np.random.default_rng(b).uniform(-1, 1, (b, 3, 64, 64)).astype(np.float32)
        row = _measure(lambda: sess.run(None, {"RAW_IMAGE": x}), b, rule)
        track.sample()
        rows.append(track.attach(row, flops, precision))
    return {"note": note, "name": artifact.name, "sha256": artifact.sha256,
            "model": manifest.get("model"), "flops_per_image": float(flops),
            "backend": f"onnxruntime-{precision}", "precision_reason": artifact.reason,
            "threads": threads, "rows": rows}


def bench_text_encoder(batches: list[int], rule: RepeatRule, threads: int):
    from benchmarks.text_encoder import make_prompts
    from adgen.export.text_encoder import export_text_encoder
    from adgen.serving.runtime.text import TextEncoder
    enc = TextEncoder(export_text_encoder(), threads=threads, batch_size=max(batches))
    rows = []
    for b in batches:
        prompts = make_prompts(b)
        r = _measure(lambda: enc.encode(prompts), b, rule)
        r["prompts_per_s"] = r.pop("images_per_s")
        rows.append(r)
    return rows


def plot(payload: dict, path: Path) -> None:
    from benchmarks.plots import batch_lines, figure, log2_axes
    with figure(path, 2, (11, 4), dpi=110) as (ax1, ax2):
        for name, rows in payload["generator"].items():
            batch_lines(ax1, ax2, name, rows)
        up = payload.get("upsampler") or {}
        if up.get("rows"):
            xs = [r["batch"] for r in up["rows"]]
            ax1.plot(xs, [r["images_per_s"] for r in up["rows"]], marker="s", ls="--",
                     color="k", label=f"upsampler 64→256 ({up['backend']})")
            ax2.plot(xs, [r["latency_ms"]["p50"] for r in up["rows"]], marker="s", ls="--",
                     color="k", label="upsampler p50")
        log2_axes((ax1, ax2), "batch", legend=None)
        ax1.set_ylabel("images/s")
        ax1.set_title(f"generator throughput ({payload['machine']['name']})")
        ax2.set_yscale("log")
        ax2.set_ylabel("latency ms (p50, band to p99)")
        ax1.legend(fontsize=8)


# The batches of the PyTorch eager rows: the reference batch of ort_vs_eager_b64 and batch 1
# (eager at 16 and 256 adds minutes on 2 cores and no ratio).
EAGER_BATCHES = (1, 64)


def generator_rows(found: dict, batches, eager_batches, z_dim: int, flops_per_image: float,
                   rule: RepeatRule, track: CeilingTrack, log=print):
    """Each backend's row at each batch, the ceilings sampled before and after each batch's
    rows (every row divided by the ceiling next to it); (rows by backend, max |Δ| vs eager)."""
    results = {name: [] for name in found}
    parity = {name: 0.0 for name in found}
    track.sample()
    for b in batches:
        emb, z = _inputs(b, z_dim)
        ref = found["pytorch-eager"](emb, z)
        done = []
        for name, fn in found.items():
            if name == "pytorch-eager" and b not in eager_batches:
                continue
            parity[name] = max(parity[name], float(np.abs(fn(emb, z) - ref).max()))
            done.append((name, _measure(lambda: fn(emb, z), b, rule)))
        track.sample()
        for name, row in done:
            results[name].append(track.attach(row, flops_per_image,
                                              BACKEND_PRECISION.get(name, "fp32")))
        log(f"backends: batch {b}: " + ", ".join(
            f"{n} {r['images_per_s']:.0f}/s ({r['calls']} calls, {r['stopped']})"
            for n, r in done))
    return results, parity


def run(model=None, batches=(1, 16, 64, 256), rule: RepeatRule = FULL_RULE, threads=0,
        precisions=("fp32", "int8"), quick=False, upsampler=None,
        upsampler_batches=UPSAMPLER_BATCHES, eager_batches=EAGER_BATCHES, log=print) -> dict:
    """upsampler: None = the release upsampler when it exists, False = none, or a path.
    eager_batches: the batches PyTorch eager is measured at (None: every batch)."""
    import os
    import torch
    from adgen.paths import release_model_dir
    threads = threads or os.cpu_count() or 1
    torch.set_num_threads(threads)
    model = Path(model) if model else release_model_dir()
    ref_b = 64 if 64 in batches else batches[-1]
    eager_batches = set(batches if eager_batches is None else eager_batches) | {ref_b}
    steps, t = {}, time.perf_counter()

    def step(name: str) -> None:
        nonlocal t
        steps[name] = round(time.perf_counter() - t, 1)
        t = time.perf_counter()
    n = 1024 if quick else 2048
    with tempfile.TemporaryDirectory(prefix="adgen-bench-") as tmp:
        loaded, found = backends(model, Path(tmp), threads, list(precisions))
        z_dim = loaded.z_dim
        flops_per_image = count_generator_flops(loaded.module, z_dim)
        step("exports")
        want = {"fp32"} | {BACKEND_PRECISION[k] for k in found if BACKEND_PRECISION.get(k)}
        track = CeilingTrack(gemm_timers(threads, n, sorted(want)), calls=2 if quick else 4)
        results, parity = generator_rows(found, batches, eager_batches, z_dim,
                                         flops_per_image, rule, track, log)
        step("generator rows")
        artifact, up_note = resolve_bench_upsampler(upsampler)
        up = bench_upsampler(artifact, up_note, threads, upsampler_batches, rule, track) \
            if artifact else {"skipped": up_note}
        step("upsampler rows")
        text = bench_text_encoder(list(batches), rule, threads)
        step("text encoder rows")
        # the ceilings table: fp32 (and int8) over every sample of this run, bf16 once
        once = CeilingTrack(gemm_timers(threads, n, [k for k in ("bf16", "int8")
                                                      if k not in track.samples]), calls=4)
        once.sample()
        ceilings = {k: t.summary(k, threads) for t in (track, once) for k in t.samples}
        ceilings = {k: ceilings.get(k, {"skipped": "torch cannot multiply this precision here"})
                    for k in ("fp32", "bf16", "int8")}
        step("ceilings table")
    gemm = ceilings["fp32"]
    by_batch = {name: {r["batch"]: r for r in rows} for name, rows in results.items()}
    ratios = {f"{name}_vs_eager_b{ref_b}": by_batch[name][ref_b]["images_per_s"]
              / by_batch["pytorch-eager"][ref_b]["images_per_s"] for name in by_batch}
    best = max(by_batch, key=lambda n: by_batch[n][ref_b]["images_per_s"])
    # like with like: an fp32 backend's FLOP/s against the fp32 ceiling measured next to it
    fp32_rows = [by_batch[n][ref_b] for n in by_batch
                 if by_batch[n][ref_b]["ceiling_precision"] == "fp32"]
    eff = max(fp32_rows, key=lambda r: r["gemm_efficiency"])
    eff_backend = next(n for n in by_batch if by_batch[n][ref_b] is eff)
    payload = {
        "machine": machine_info(), "threads": threads, "model": str(model),
        "arch": loaded.arch, "z_dim": z_dim, "checkpoint_sha256": loaded.sha256,
        "generator_flops_per_image": flops_per_image, "gemm": gemm, "ceilings": ceilings,
        "isa": machine_info()["isa"], "repeat_rule": asdict(rule),
        "generator": results, "upsampler": up, "text_encoder": text,
        "max_abs_diff_vs_eager": parity, "ratios": ratios,
        "ort_vs_eager_b64": ratios.get(f"onnxruntime-fp32_vs_eager_b{ref_b}"),
        "gemm_efficiency": eff["gemm_efficiency"], "gemm_efficiency_backend": eff_backend,
        "best_backend": best, "step_seconds": steps,
    }
    payload["measurement_errors"] = past_ceiling(payload)
    if up.get("rows"):
        # 256 px compute per image = generator + upsampler: the upsampler's share of it at the
        # largest batch both were measured at, both on onnxruntime fp32, this run
        gen = by_batch.get("onnxruntime-fp32", {})
        common = [r["batch"] for r in up["rows"] if r["batch"] in gen]
        if common:
            b = max(common)
            u = next(r for r in up["rows"] if r["batch"] == b)["images_per_s"]
            g = gen[b]["images_per_s"]
            up["share_of_256px_compute"] = {"batch": b, "upsampler_ms_per_image": 1000 / u,
                                            "generator_ms_per_image": 1000 / g,
                                            "upsampler_share": (1 / u) / (1 / u + 1 / g)}
    return payload


def past_ceiling(p: dict) -> dict[str, dict]:
    """Every share of a ceiling above 1 in a backends payload: a measurement error (the
    ceiling next to the row ran slower than the row), never a result. label -> {value, limit,
    why}."""
    rows = [(f"{name} b{r['batch']}", r) for name, rs in p["generator"].items() for r in rs]
    rows += [(f"upsampler b{r['batch']}", r) for r in (p.get("upsampler") or {}).get("rows", [])]
    return {f"{label} of {r['ceiling_precision']} GEMM": {
        "value": r["own_ceiling_efficiency"], "limit": 1.0,
        "why": f"share of the {r['ceiling_precision']} GEMM ceiling above 1"}
        for label, r in rows if (r.get("own_ceiling_efficiency") or 0) > 1.0}


def share(value: float | None) -> str:
    """A share of a ceiling as a table cell: above 1 it is a measurement error, not a value."""
    if value is None:
        return "–"
    return f"{value:.2f}" if value <= 1.0 else f"measurement error ({value:.2f} > 1)"


def ceilings_markdown(p: dict) -> list[str]:
    """The matrix ceilings of each precision and the ISA they were measured on."""
    c = p.get("ceilings")
    if not c:
        return []
    isa = ", ".join(p.get("isa") or []) or "unknown"
    rows = [f"CPU features: {isa}.", "", "| matmul precision | ops/s (median) | vs fp32 |",
            "|---|---|---|"]
    fp32 = c["fp32"]["flops_median"]
    for name, v in c.items():
        if "skipped" in v:
            rows.append(f"| {name} | skipped: {v['skipped']} | |")
        else:
            rows.append(f"| {name} | {v['flops_median'] / 1e9:.1f} G | "
                        f"{v['flops_median'] / fp32:.2f}× |")
    return rows + [""]


def markdown(p: dict, command: str) -> str:
    lines = [f"# Generator backends ({p['machine']['name']}, {p['threads']} threads)", "",
             f"Model: `{p['model']}` ({p['arch']}, z={p['z_dim']}); "
             f"{p['generator_flops_per_image'] / 1e6:.1f} MFLOP per image (counted); "
             f"fp32 GEMM ceiling {p['gemm']['flops_median'] / 1e9:.1f} GFLOP/s (median, "
             f"{p['gemm']['n']}², torch.mm and onnxruntime MatMul taking turns), "
             f"{_sample_range(p['gemm'])}.", "",
             "Each row's share of a ceiling divides by that precision's ceiling sampled just "
             "before and after its batch's rows (the best call of those samples); a share "
             "above 1 is printed as a measurement error. Calls per row stop once the last "
             f"{p['repeat_rule']['k']} lie within {100 * p['repeat_rule']['tol']:.0f}% of their "
             f"median (at most {p['repeat_rule']['max_calls']} calls or "
             f"{p['repeat_rule']['max_seconds']:g} s).", ""] + ceilings_markdown(p)
    lines += md_table(["backend", *SPEED_COLUMNS, "of fp32 GEMM", "of own precision's GEMM"],
                      [[name, *_speed_cells(r), _own_ceiling(r)]
                       for name, rows in p["generator"].items() for r in rows])
    lines += [""] + upsampler_markdown(p.get("upsampler")) + [""]
    lines += md_table(["text encoder batch", "prompts/s", "p50 ms", "p99 ms"],
                      [[r["batch"], f"{r['prompts_per_s']:.1f}", f"{r['latency_ms']['p50']:.2f}",
                        f"{r['latency_ms']['p99']:.2f}"] for r in p["text_encoder"]])
    lines += ["", "Ratios (same run): " + ", ".join(f"{k} {v:.2f}×" for k, v in p["ratios"].items()),
              "Max |Δ| vs eager: " + ", ".join(f"{k} {v:.2e}" for k, v in
                                                p["max_abs_diff_vs_eager"].items()),
              ""]
    if p.get("measurement_errors"):
        lines += ["Measurement errors (not results): " + "; ".join(
            f"{k} {v['value']:.2f}" for k, v in p["measurement_errors"].items()), ""]
    lines += ["Time per step (s): " + ", ".join(f"{k} {v:.0f}" for k, v in
                                                 p.get("step_seconds", {}).items()),
              "", f"Command: `{command}`"]
    return "\n".join(lines)


def _sample_range(c: dict) -> str:
    per = c.get("flops_best_per_sample")
    if not per:
        return "measured once"
    return (f"best per sample {min(per) / 1e9:.1f}–{max(per) / 1e9:.1f} GFLOP/s over "
            f"{len(per)} samples between the rows")


SPEED_COLUMNS = ["batch", "images/s", "p50 ms", "p95 ms", "p99 ms", "GFLOP/s", "calls"]


def _speed_cells(r: dict) -> list:
    """A generator or upsampler row under SPEED_COLUMNS, then its share of the fp32 GEMM
    ceiling sampled next to it."""
    lat = r["latency_ms"]
    return [r["batch"], f"{r['images_per_s']:.1f}", f"{lat['p50']:.2f}", f"{lat['p95']:.2f}",
            f"{lat['p99']:.2f}", f"{r['gflops_per_s']:.1f}", f"{r.get('calls', '')}",
            share(r.get("gemm_efficiency"))]


def _own_ceiling(r: dict) -> str:
    own = r.get("own_ceiling_efficiency")
    return f"{share(own)} ({r['ceiling_precision']})" if own is not None else "–"


def upsampler_markdown(up: dict | None) -> list[str]:
    if not up:
        return []
    if "skipped" in up:
        return [f"Upsampler (64 → 256 px, `adgen_256`): not measured: {up['skipped']}."]
    m = up.get("model") or {}
    lines = [f"Upsampler (64 → 256 px, `adgen_256`): {up['note']} ({up['name']}, width "
             f"{m.get('width')}, {m.get('n_blocks')} blocks); {up['flops_per_image'] / 1e9:.2f} "
             f"GFLOP per image (convolutions); {up['backend']}, {up['threads']} threads, the "
             "fp32 GEMM ceiling sampled before and after each row.", ""]
    lines += md_table(["backend", *SPEED_COLUMNS, "of fp32 GEMM"],
                      [[f"upsampler {up['backend']}", *_speed_cells(r)] for r in up["rows"]])
    sh = up.get("share_of_256px_compute")
    if sh:
        lines += ["", f"At batch {sh['batch']} (onnxruntime fp32): generator "
                  f"{sh['generator_ms_per_image']:.2f} ms + upsampler "
                  f"{sh['upsampler_ms_per_image']:.2f} ms per 256 px image; the upsampler is "
                  f"{100 * sh['upsampler_share']:.0f}% of that compute."]
    return lines


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=None, help="checkpoint folder (default: release model)")
    ap.add_argument("--batches", type=batch_list, default="1,16,64,256")
    ap.add_argument("--eager-batches", type=eager_list,
                    default=",".join(map(str, EAGER_BATCHES)),
                    help="batches PyTorch eager is measured at ('all': every batch)")
    ap.add_argument("--max-calls", type=positive(int), default=FULL_RULE.max_calls,
                    help="calls per row at most (fewer once the last 5 are within --tol)")
    ap.add_argument("--tol", type=positive(float), default=FULL_RULE.tol,
                    help="a row stops once its last 5 calls lie within this share of their "
                    "median")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--precisions", default="fp32,int8")
    ap.add_argument("--quick", action="store_true", help="smoke run: batches 1,4; 2 calls")
    ap.add_argument("--out-subdir", default=None, help="results subfolder (default: machine)")
    ap.add_argument("--upsampler", default=None, help="upsampler checkpoint or export folder "
                    "(default: models/adgen-up256 when it exists; 'none' skips its rows)")
    args = ap.parse_args(argv)
    batches = [1, 4] if args.quick else args.batches
    eager = None if args.quick else args.eager_batches
    rule = QUICK_RULE if args.quick else replace(FULL_RULE, max_calls=args.max_calls,
                                                 tol=args.tol)
    payload = run(args.model, batches, rule, args.threads, args.precisions.split(","),
                  args.quick, upsampler=False if args.upsampler == "none" else args.upsampler,
                  upsampler_batches=(1, 4) if args.quick else UPSAMPLER_BATCHES,
                  eager_batches=eager)
    command = command_line("backends", argv)
    payload["command"] = command
    md = markdown(payload, command)
    path = write_results("backends", payload, md, args.out_subdir)
    plot(payload, path.with_suffix(".png"))
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
