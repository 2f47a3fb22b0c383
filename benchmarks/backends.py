"""Generator and text-encoder backends side by side, with the machine's GEMM ceiling.

Usage:
  python -m benchmarks.backends                      # release model, batches 1,16,64,256
  python -m benchmarks.backends --model runs/00001-film/checkpoint --repeats 5
  python -m benchmarks.backends --quick              # smoke: tiny batches, 2 repeats
  python -m benchmarks.backends --upsampler path/to/upsampler-checkpoint-or-export

In one run: fp32, bf16 and int8 GEMM ops/s (torch.mm / torch._int_mm, 2048²) and the CPU
features they ran on (AVX-512, AVX512-BF16, VNNI, AMX); the generator's FLOPs per image counted by
torch's FlopCounterMode, then images/s and latency p50/p95/p99 at each batch for PyTorch
eager, onnxruntime fp32, every reduced-precision ONNX variant, and TensorRT when present;
the 4x upsampler of `adgen_256` (64 -> 256 px) on onnxruntime fp32 at batch 1 and 64 with
the same threads (the release upsampler models/adgen-up256 when it exists, else a stated
skip); the text encoder's prompts/s. Efficiency = achieved FLOP/s / fp32 GEMM FLOP/s, and
against the ceiling of the backend's own precision (int8 for the INT8 export).
Writes benchmarks/results/<machine>/backends.{json,md,png}.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.common import command_line, machine_info, md_table, percentiles, time_calls, \
    write_results


def gemm_flops(threads: int, n: int = 2048, repeats: int = 5) -> dict:
    """Measured fp32 matmul FLOP/s: the practical ceiling for conv/linear work here."""
    import torch
    torch.set_num_threads(threads)
    a, b = torch.randn(n, n), torch.randn(n, n)
    times = time_calls(lambda: torch.mm(a, b), repeats, warmup=2)
    best, med = min(times), statistics.median(times)
    flop = 2.0 * n ** 3
    return {"n": n, "threads": threads, "flops_median": flop / med, "flops_best": flop / best}


# The precision whose matrix ceiling a backend is held against (default fp32).
BACKEND_PRECISION = {"onnxruntime-int8": "int8"}


def gemm_ceilings(threads: int, n: int = 2048, repeats: int = 5) -> dict:
    """fp32, bf16 and int8 matmul ops/s of this machine (torch.mm; torch._int_mm for int8,
    int8 x int8 -> int32), each the ceiling for backends computing in that precision.
    A precision torch cannot multiply here is {"skipped": reason}."""
    import torch
    out = {"fp32": gemm_flops(threads, n, repeats)}
    torch.set_num_threads(threads)
    gen = torch.Generator().manual_seed(0)
    tries = {
        "bf16": lambda: (torch.randn(n, n, generator=gen).bfloat16(),
                         torch.randn(n, n, generator=gen).bfloat16(), torch.mm),
        "int8": lambda: (torch.randint(-128, 128, (n, n), dtype=torch.int8, generator=gen),
                         torch.randint(-128, 128, (n, n), dtype=torch.int8, generator=gen),
                         torch._int_mm),
    }
    for name, make in tries.items():
        try:
            a, b, mm = make()
            times = time_calls(lambda: mm(a, b), repeats, warmup=2)
        except (RuntimeError, AttributeError, NotImplementedError) as exc:
            out[name] = {"skipped": f"{type(exc).__name__}: {str(exc).splitlines()[0][:120]}"}
            continue
        op = 2.0 * n ** 3
        out[name] = {"n": n, "threads": threads, "flops_median": op / statistics.median(times),
                     "flops_best": op / min(times)}
    return out


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


def _measure(fn, batch: int, repeats: int, min_seconds: float) -> dict:
    fn()  # warm-up (allocations, kernel selection)
    times, t_end = [], time.perf_counter() + min_seconds
    while len(times) < repeats or time.perf_counter() < t_end:
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
        if len(times) >= 10 * repeats:
            break
    pct = percentiles(times)
    return {"batch": batch, "images_per_s": batch / pct["p50"], "calls": len(times),
            "latency_ms": {k: v * 1000 for k, v in pct.items()}}


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
            export_onnx(model_path, folder, precision=precision, force=True)
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


def bench_upsampler(artifact, note: str, threads: int, batches, repeats: int,
                    min_seconds: float, gemm: dict) -> dict:
    """onnxruntime fp32 images/s of the 4x upsampler (RAW_IMAGE -> RAW_IMAGE_256) and its
    FLOP/s against the GEMM ceiling measured in the same run."""
    manifest = json.loads((artifact.folder / "manifest.json").read_text())
    flops = manifest.get("flops_per_image")
    if not flops:  # an older export: the formula of adgen.training.upsampler.Upsampler
        c, n = manifest["model"]["width"], manifest["model"]["n_blocks"]
        flops = 2 * (9 * 3 * c + n * 2 * 9 * c * c + 9 * c * 48) * 64 * 64
    from adgen.serving.runtime.backend import UPSAMPLER_FILE
    sess = ort_session(artifact.folder / UPSAMPLER_FILE, threads)
    rows = []
    for b in batches:
        x = np.random.default_rng(b).uniform(-1, 1, (b, 3, 64, 64)).astype(np.float32)
        row = _measure(lambda: sess.run(None, {"RAW_IMAGE": x}), b, repeats, min_seconds)
        row["gflops_per_s"] = row["images_per_s"] * flops / 1e9
        row["gemm_efficiency"] = row["images_per_s"] * flops / gemm["flops_median"]
        rows.append(row)
    return {"note": note, "name": artifact.name, "sha256": artifact.sha256,
            "model": manifest.get("model"), "flops_per_image": float(flops),
            "backend": "onnxruntime-fp32", "threads": threads, "rows": rows}


def bench_text_encoder(batches: list[int], repeats: int, min_seconds: float, threads: int):
    from benchmarks.text_encoder import make_prompts
    from adgen.export.text_encoder import export_text_encoder
    from adgen.serving.runtime.text import TextEncoder
    enc = TextEncoder(export_text_encoder(), threads=threads, batch_size=max(batches))
    rows = []
    for b in batches:
        prompts = make_prompts(b)
        r = _measure(lambda: enc.encode(prompts), b, repeats, min_seconds)
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


def run(model=None, batches=(1, 16, 64, 256), repeats=10, min_seconds=1.0, threads=0,
        precisions=("fp32", "int8"), quick=False, upsampler=None,
        upsampler_batches=UPSAMPLER_BATCHES) -> dict:
    """upsampler: None = the release upsampler when it exists, False = none, or a path."""
    import os
    import torch
    from adgen.paths import release_model_dir
    threads = threads or os.cpu_count() or 1
    torch.set_num_threads(threads)
    model = Path(model) if model else release_model_dir()
    with tempfile.TemporaryDirectory(prefix="adgen-bench-") as tmp:
        loaded, found = backends(model, Path(tmp), threads, list(precisions))
        z_dim = loaded.z_dim
        flops_per_image = count_generator_flops(loaded.module, z_dim)
        ceilings = gemm_ceilings(threads, n=1024 if quick else 2048)
        gemm = ceilings["fp32"]
        results = {name: [] for name in found}
        parity = {}
        for b in batches:
            emb, z = _inputs(b, z_dim)
            ref = found["pytorch-eager"](emb, z)
            for name, fn in found.items():
                parity.setdefault(name, 0.0)
                parity[name] = max(parity[name], float(np.abs(fn(emb, z) - ref).max()))
                row = _measure(lambda: fn(emb, z), b, repeats, min_seconds)
                row["gflops_per_s"] = row["images_per_s"] * flops_per_image / 1e9
                row["gemm_efficiency"] = row["images_per_s"] * flops_per_image / gemm["flops_median"]
                prec = BACKEND_PRECISION.get(name, "fp32")
                own = ceilings.get(prec, {}).get("flops_median")
                row["ceiling_precision"] = prec
                row["own_ceiling_efficiency"] = (row["images_per_s"] * flops_per_image / own
                                                 if own else None)
                results[name].append(row)
        artifact, up_note = resolve_bench_upsampler(upsampler)
        up = bench_upsampler(artifact, up_note, threads, upsampler_batches, repeats, min_seconds,
                             gemm) if artifact else {"skipped": up_note}
        text = bench_text_encoder(list(batches), repeats, min_seconds, threads)
    by_batch = {name: {r["batch"]: r for r in rows} for name, rows in results.items()}
    ref_b = 64 if 64 in batches else batches[-1]
    ratios = {f"{name}_vs_eager_b{ref_b}": by_batch[name][ref_b]["images_per_s"]
              / by_batch["pytorch-eager"][ref_b]["images_per_s"] for name in by_batch}
    best = max(by_batch, key=lambda n: by_batch[n][ref_b]["images_per_s"])
    payload = {
        "machine": machine_info(), "threads": threads, "model": str(model),
        "arch": loaded.arch, "z_dim": z_dim, "checkpoint_sha256": loaded.sha256,
        "generator_flops_per_image": flops_per_image, "gemm": gemm, "ceilings": ceilings,
        "isa": machine_info()["isa"],
        "generator": results, "upsampler": up, "text_encoder": text,
        "max_abs_diff_vs_eager": parity, "ratios": ratios,
        "ort_vs_eager_b64": ratios.get(f"onnxruntime-fp32_vs_eager_b{ref_b}"),
        "gemm_efficiency": by_batch[best][ref_b]["gemm_efficiency"], "best_backend": best,
    }
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
             f"{p['gemm']['n']}² torch.mm).", ""] + ceilings_markdown(p)
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
              "", f"Command: `{command}`"]
    return "\n".join(lines)


SPEED_COLUMNS = ["batch", "images/s", "p50 ms", "p95 ms", "p99 ms", "GFLOP/s"]


def _speed_cells(r: dict) -> list:
    """A generator or upsampler row under SPEED_COLUMNS, then its share of the GEMM ceiling."""
    lat = r["latency_ms"]
    return [r["batch"], f"{r['images_per_s']:.1f}", f"{lat['p50']:.2f}", f"{lat['p95']:.2f}",
            f"{lat['p99']:.2f}", f"{r['gflops_per_s']:.1f}", f"{r['gemm_efficiency']:.2f}"]


def _own_ceiling(r: dict) -> str:
    own = r.get("own_ceiling_efficiency")
    return f"{own:.2f} ({r['ceiling_precision']})" if own is not None else "–"


def upsampler_markdown(up: dict | None) -> list[str]:
    if not up:
        return []
    if "skipped" in up:
        return [f"Upsampler (64 → 256 px, `adgen_256`): not measured: {up['skipped']}."]
    m = up.get("model") or {}
    lines = [f"Upsampler (64 → 256 px, `adgen_256`): {up['note']} ({up['name']}, width "
             f"{m.get('width')}, {m.get('n_blocks')} blocks); {up['flops_per_image'] / 1e9:.2f} "
             f"GFLOP per image (convolutions); {up['backend']}, {up['threads']} threads, the "
             "same GEMM ceiling.", ""]
    lines += md_table(["backend", *SPEED_COLUMNS, "of GEMM"],
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
    ap.add_argument("--batches", default="1,16,64,256")
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--min-seconds", type=float, default=1.0)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--precisions", default="fp32,int8")
    ap.add_argument("--quick", action="store_true", help="smoke run: batches 1,4; 2 repeats")
    ap.add_argument("--out-subdir", default=None, help="results subfolder (default: machine)")
    ap.add_argument("--upsampler", default=None, help="upsampler checkpoint or export folder "
                    "(default: models/adgen-up256 when it exists; 'none' skips its rows)")
    args = ap.parse_args(argv)
    batches = [1, 4] if args.quick else [int(b) for b in args.batches.split(",")]
    payload = run(args.model, batches, 2 if args.quick else args.repeats,
                  0.0 if args.quick else args.min_seconds, args.threads,
                  args.precisions.split(","), args.quick,
                  upsampler=False if args.upsampler == "none" else args.upsampler,
                  upsampler_batches=(1, 4) if args.quick else UPSAMPLER_BATCHES)
    command = command_line("backends", argv)
    payload["command"] = command
    md = markdown(payload, command)
    path = write_results("backends", payload, md, args.out_subdir)
    plot(payload, path.with_suffix(".png"))
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
