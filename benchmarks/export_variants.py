"""Generator export variants side by side: PyTorch eager vs onnxruntime fp32 vs INT8.

Usage:
  python -m benchmarks.export_variants                        # the release model
  python -m benchmarks.export_variants --model runs/00004-film/checkpoints/latest
  python -m benchmarks.export_variants --random-init film     # architecture only: speed, no quality
  python -m benchmarks.export_variants --eval                 # + R-precision of each variant
  python -m benchmarks.export_variants --quality quality.json # quality figures from elsewhere
  python -m benchmarks.export_variants --quick                # smoke: batches 1,4, 2 rounds
  python -m benchmarks.export_variants --text-encoder         # MiniLM fp32 vs INT8

One run, one machine: each variant is exported with `export_onnx` (parity vs PyTorch at
1/64/256 recorded), then at every batch size the backends are called in interleaved rounds
(the order rotates each round) so a noisy neighbour slows all of them alike (onnxruntime's
pool threads do not spin between calls, so they do not steal the next backend's cores); the
results are the median and p95 per call, images/s and the ratios to eager and to ORT fp32.
The keep rule for a reduced-precision variant (adgen.export.precision.keep_decision): faster
than fp32 at every serving batch (>= 64) AND it keeps the picture: R-precision and identity
top-1 within 0.01 of the fp32 export and mean |Δ| from it <= 2 uint8 levels (--eval scores
all three on the eval set); without those figures the decision is recorded as pending. A
variant folder whose decision says keep is what `adgen repo build` serves by default on CPUs
with int8 dot-product units. Figures are written into each variant's
manifest ("measurements") and to benchmarks/results/<machine>/export_variants.{json,md}.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import command_line, machine_info, percentiles, write_results

VARIANTS = ("fp32", "int8")


def _checkpoint(args, workdir: Path) -> tuple[Path, str]:
    """(checkpoint folder, label): --model, a random-init architecture, or the release model."""
    from adgen.paths import release_model_dir
    if args.random_init:
        import torch

        from adgen.training.checkpoint import save_generator
        from adgen.training.networks import build_generator
        torch.manual_seed(0)
        module = build_generator(args.random_init).eval()
        with torch.no_grad():  # zero-initialised FiLM/gates would skip work a trained model does
            for name, p in module.named_parameters():
                if ".film" in name or name.endswith("gate"):
                    p.normal_(0.0, 0.3 if name.endswith("gate") else 0.05)
        return save_generator(module, {}, workdir / f"random-{args.random_init}"), \
            f"random-init {args.random_init} (default size)"
    path = Path(args.model) if args.model else release_model_dir()
    if not path.exists():
        sys.exit(f"error: no checkpoint at {path}; pass --model or --random-init film")
    return path, path.name


def _step(config_path: Path):
    try:
        return json.loads(config_path.read_text()).get("training", {}).get("step")
    except (OSError, ValueError):
        return None


def export_all(ckpt: Path, out_root: Path, quick: bool, calibration_data) -> dict[str, Path]:
    from adgen.export.onnx_export import export_onnx
    batches = (1, 4) if quick else (1, 64, 256)
    folders = {}
    for precision in VARIANTS:
        folders[precision] = export_onnx(
            ckpt, out_root / precision, precision=precision, force=True, parity_batches=batches,
            calibration_size=64 if quick else 512, calibration_data=calibration_data,
            progress=False)
    return folders


def backends(ckpt: Path, folders: dict[str, Path], threads: int) -> dict:
    """name -> callable(feeds) for PyTorch eager and each ONNX variant."""
    import torch

    from adgen.export.onnx_files import ort_session
    from adgen.training.checkpoint import load_generator
    if threads:
        torch.set_num_threads(threads)
    module = load_generator(ckpt).module.eval()

    def eager(feeds):
        with torch.inference_mode():
            return module(torch.from_numpy(feeds["EMBEDDING"]), torch.from_numpy(feeds["Z"]))

    found = {"pytorch-eager-fp32": eager}
    for precision, folder in folders.items():
        sess = ort_session(folder / "generator.onnx", threads=threads, spin=False)
        found[f"onnxruntime-{precision}"] = lambda feeds, s=sess: s.run(["RAW_IMAGE"], feeds)
    return found, module


def measure(fns: dict, batches, rounds: dict[int, int], z_dim: int) -> dict:
    """{batch: {backend: {p50_ms, p95_ms, images_per_s, ...}}} from interleaved rounds."""
    from adgen.export.onnx_files import parity_inputs
    from tqdm import tqdm
    names = list(fns)
    out = {}
    total = sum(rounds[b] for b in batches)
    with tqdm(total=total, desc="rounds", unit="round") as bar:
        for b in batches:
            feeds = parity_inputs(b, z_dim, seed=3)
            for fn in fns.values():  # warm-up: first calls allocate and pick kernels
                for _ in range(3):
                    fn(feeds)
            samples = {n: [] for n in names}
            # Small batches: one untimed call after each switch absorbs the previous backend's
            # idle threads still spinning (OpenMP in torch); then a block of timed calls.
            settle, block = (1, 5) if b < 64 else (0, 1)
            for r in range(rounds[b]):
                for n in names[r % len(names):] + names[:r % len(names)]:
                    for _ in range(settle):
                        fns[n](feeds)
                    for _ in range(block):
                        t0 = time.perf_counter()
                        fns[n](feeds)
                        samples[n].append(time.perf_counter() - t0)
                bar.update()
            rows = {}
            for n in names:
                pct = percentiles(samples[n])
                rows[n] = {"p50_ms": pct["p50"] * 1e3, "p95_ms": pct["p95"] * 1e3,
                           "p99_ms": pct["p99"] * 1e3, "images_per_s": b / pct["p50"],
                           "calls": len(samples[n])}
            for ref, key in (("pytorch-eager-fp32", "speedup_vs_eager"),
                             ("onnxruntime-fp32", "speedup_vs_onnxruntime_fp32")):
                if ref in rows:  # callers may time a subset (precision_served: ORT only)
                    for n in names:
                        rows[n][key] = rows[ref]["p50_ms"] / rows[n]["p50_ms"]
            out[str(b)] = rows
    return out


def decide(results: dict, quality: dict, batches) -> dict:
    """keep_decision per reduced-precision variant, speed judged at the serving batches;
    quality: {precision: {r_precision, identity_top1, mean_abs_levels}}."""
    from adgen.export.precision import keep_decision
    serving = [str(b) for b in batches if b >= 64] or [str(b) for b in batches]
    return {precision: keep_decision(
        quality.get("fp32"), quality.get(precision),
        {b: results[b]["onnxruntime-fp32"]["p50_ms"] for b in serving},
        {b: results[b][f"onnxruntime-{precision}"]["p50_ms"] for b in serving})
        for precision in VARIANTS[1:]}


def markdown(p: dict) -> str:
    step = p.get("checkpoint_step")
    lines = [f"# Generator export variants ({p['label']}"
             + (f", training step {step})" if step is not None else ")"), "",
             f"Machine: {p['machine']['name']} ({p['machine']['cpus']} CPUs), "
             f"load average at start {p['loadavg_start']}, at end {p['loadavg_end']}.",
             f"Command: `{p['command']}`", "",
             "| batch | backend | p50 ms | p95 ms | images/s | × eager | × ort fp32 |",
             "|---:|---|---:|---:|---:|---:|---:|"]
    for b, rows in p["speed"].items():
        for n, r in rows.items():
            lines.append(f"| {b} | {n} | {r['p50_ms']:.2f} | {r['p95_ms']:.2f} | "
                         f"{r['images_per_s']:.1f} | {r['speedup_vs_eager']:.2f} | "
                         f"{r['speedup_vs_onnxruntime_fp32']:.2f} |")
    lines += ["", "| variant | generator.onnx bytes | max abs Δ vs PyTorch, random unit "
              "embeddings (1/64/256) | mean abs Δ, held-out captions |", "|---|---:|---:|---:|"]
    for v, s in p["variants"].items():
        held = s.get("heldout_mean_abs")
        lines.append(f"| {v} | {s['size_bytes']:,} | {s['parity_max_abs']:.3g} | "
                     f"{'-' if held is None else f'{held:.3g}'} |")
    lines += ["", f"Checkpoint weights: {p['checkpoint_bytes']:,} bytes.", ""]
    for v, d in p["decisions"].items():
        lines.append(f"- **{v}**: keep = {d['keep']} ({d['reason']}; faster at "
                     f"{d['faster_at_batches']})")
    if p.get("eval"):
        e = p["eval"]["_eval"]
        lines += ["", f"Scored like `adgen eval` ({e['items']} items, 1 vs {e['candidates'] - 1} "
                  f"captions, matcher {e['matcher']}):", "",
                  "| backend | R-precision | identity top-1 | colour accuracy | "
                  "mean abs Δ from fp32 (uint8 levels) |", "|---|---:|---:|---:|---:|"]
        for n, r in p["eval"].items():
            if not n.startswith("_"):
                lines.append(f"| {n} | {r['r_precision']:.4f} | {r['identity_top1']:.4f} | "
                             f"{r['color_accuracy']:.4f} | {r['mean_abs_levels']:.3f} |")
        lines.append("")
    q = p["quality"]
    lines.append(f"- Quality: {json.dumps(q) if q else 'pending (no eval figures given)'}")
    return "\n".join(lines) + "\n"


def run(args) -> dict:
    work = Path(tempfile.mkdtemp(prefix="adgen-export-variants-"))
    try:
        return _run(args, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _run(args, work: Path) -> dict:
    from adgen.export.quantize import record_measurements
    from adgen.paths import artifacts_dir, sha256_file
    ckpt, label = _checkpoint(args, work)
    out_root = Path(args.out) if args.out else artifacts_dir() / "export_variants" / \
        (ckpt.name if not args.random_init else f"random-{args.random_init}")
    load0 = os.getloadavg()[0]
    folders = export_all(ckpt, out_root, args.quick, args.calibration_data)
    fns, module = backends(ckpt, folders, args.threads)
    batches = (1, 4) if args.quick else tuple(int(b) for b in args.batches.split(","))
    rounds = {b: (2 if args.quick else max(args.rounds, int(args.rounds * 64 / max(b, 16))))
              for b in batches}
    z_dim = json.loads((folders["fp32"] / "manifest.json").read_text())["z_dim"]
    speed = measure(fns, batches, rounds, z_dim)
    quality = json.loads(Path(args.quality).read_text()) if args.quality else {}
    eval_figures = None
    if args.eval and not args.random_init:
        from adgen.export.variant_eval import evaluate_variants
        eval_figures = evaluate_variants(ckpt, folders, args.calibration_data or "data/twemoji64",
                                         items=args.eval_items)
        quality = {p: {k: eval_figures[p][k] for k in
                       ("r_precision", "identity_top1", "mean_abs_levels")} for p in folders}
    decisions = decide(speed, quality, batches)
    variants = {}
    for precision, folder in folders.items():
        m = json.loads((folder / "manifest.json").read_text())
        variants[precision] = {"size_bytes": (folder / "generator.onnx").stat().st_size,
                               "parity_max_abs": m["parity"]["max_abs"],
                               "heldout_mean_abs": m.get("heldout_captions_vs_pytorch",
                                                         {}).get("mean_abs"),
                               "sha256": m["files"]["generator.onnx"]["sha256"]}
        mine = f"onnxruntime-{precision}"
        record_measurements(folder, "speed", {
            "machine": machine_info()["name"], "command": "python -m benchmarks.export_variants",
            "p50_ms": {b: rows[mine]["p50_ms"] for b, rows in speed.items()},
            "fp32_p50_ms": {b: rows["onnxruntime-fp32"]["p50_ms"] for b, rows in speed.items()},
            "eager_p50_ms": {b: rows["pytorch-eager-fp32"]["p50_ms"] for b, rows in speed.items()}})
        record_measurements(folder, "quality", {"variant": quality.get(precision),
                                                "fp32": quality.get("fp32")}
                            if quality else {"status": "pending"})
        if precision in decisions:
            record_measurements(folder, "decision", decisions[precision])
    weights = ckpt / "generator.safetensors" if ckpt.is_dir() else ckpt
    payload = {"label": label, "machine": machine_info(), "command": args.command,
               "loadavg_start": round(load0, 2), "loadavg_end": round(os.getloadavg()[0], 2),
               "threads": args.threads or "default", "batches": list(batches),
               "rounds": {str(b): r for b, r in rounds.items()}, "z_dim": z_dim,
               "checkpoint_sha256": sha256_file(weights), "checkpoint_bytes": weights.stat().st_size,
               "checkpoint_step": _step(weights.parent / "config.json"),
               "speed": speed, "variants": variants, "quality": quality, "decisions": decisions,
               "eval": eval_figures,
               "exports": str(out_root)}
    if not args.quick:
        path = write_results(args.name, {**payload, "exports": out_root.name}, markdown(payload))
        print(f"results: {path} and {path.with_suffix('.md')}")
    return payload


def text_encoder_variants(args) -> dict:
    """MiniLM fp32 vs INT8 (export_text_encoder(int8=True) into a temp folder): parity vs
    sentence-transformers, cosine of INT8 to fp32, latency at batch 64, sizes."""
    from adgen.export.text_encoder import export_text_encoder
    work = Path(tempfile.mkdtemp(prefix="adgen-te-variants-"))
    try:
        load0 = os.getloadavg()[0]
        m = json.loads((export_text_encoder(work / "te", int8=True) / "manifest.json").read_text())
    finally:
        shutil.rmtree(work, ignore_errors=True)
    v = m["variants"]["int8"]
    payload = {"machine": machine_info(), "command": args.command, "loadavg_start": round(load0, 2),
               "parity": m["parity"], "int8": v}
    ms = v["ms_batch64"]
    md = "\n".join([
        "# Text encoder (all-MiniLM-L6-v2) export variants", "",
        f"Machine: {payload['machine']['name']}, load average at start {payload['loadavg_start']}.",
        f"Command: `{args.command}`", "",
        f"- fp32 ONNX vs sentence-transformers on {m['parity'].get('texts')} prompts: min cosine "
        f"{m['parity'].get('min_cosine', float('nan')):.6f}, max abs {m['parity'].get('max_abs', 0):.2g}",
        f"- INT8 ({v['method']}): min cosine to fp32 {v['min_cosine']:.4f}, mean "
        f"{v['mean_cosine']:.4f}, {v['below_threshold']} of {v['texts']} prompts below "
        f"{v['threshold']} (worst: {v['worst_text']!r})",
        f"- batch 64 latency: fp32 {ms['fp32']:.1f} ms, INT8 {ms['int8']:.1f} ms "
        f"({ms['fp32'] / ms['int8']:.2f}x)",
        f"- size: fp32 {v['fp32_size_bytes']:,} bytes, INT8 {v['size_bytes']:,} bytes",
        f"- kept: **{v['kept']}** (rule: cosine >= {v['threshold']} on every prompt)", ""])
    path = write_results("text_encoder_variants", payload, md)
    print(f"results: {path}")
    return payload


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=__doc__.split("\n\n", 1)[1])
    ap.add_argument("--model", help="checkpoint folder (default: models/adgen-emoji64)")
    ap.add_argument("--random-init", choices=("film", "dcgan"),
                    help="benchmark a randomly initialised default-size network (speed only)")
    ap.add_argument("--batches", default="1,64,256")
    ap.add_argument("--rounds", type=int, default=8, help="rounds at batch 64 (more at small)")
    ap.add_argument("--threads", type=int, default=0, help="0: library defaults (all cores)")
    ap.add_argument("--quality", help="JSON {precision: {r_precision, identity_top1, "
                    "mean_abs_levels}} measured elsewhere")
    ap.add_argument("--eval", action="store_true",
                    help="score every variant like `adgen eval` (R-precision, identity, colour "
                    "accuracy) and its mean |Δ| from the fp32 export")
    ap.add_argument("--eval-items", type=int, default=1000)
    ap.add_argument("--calibration-data", help="dataset folder for INT8 calibration")
    ap.add_argument("--out", help="export folder (default artifacts/export_variants/<model>)")
    ap.add_argument("--name", default="export_variants", help="results file name")
    ap.add_argument("--quick", action="store_true", help="smoke run; writes no results file")
    ap.add_argument("--text-encoder", action="store_true",
                    help="instead: MiniLM fp32 vs INT8 (cosine, latency, size)")
    args = ap.parse_args(argv)
    args.command = command_line("export_variants", argv)
    if args.text_encoder:
        text_encoder_variants(args)
        return 0
    payload = run(args)
    for b, rows in payload["speed"].items():
        print(f"batch {b}: " + ", ".join(f"{n} {r['p50_ms']:.1f} ms" for n, r in rows.items()))
    print(json.dumps(payload["decisions"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
