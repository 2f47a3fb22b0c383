"""Generator on an NVIDIA GPU: eager fp32/fp16, torch.compile, CUDA graphs, onnxruntime, TensorRT.

Usage:
  bash benchmarks/gpu.sh                                   # NVIDIA machine, < 8 min
  bash benchmarks/gpu.sh --model runs/00004-film/checkpoints/latest
  python -m benchmarks.gpu --device cpu --quick --model CKPT --results-dir /tmp/r   # CPU smoke

One run, one machine: the GEMM ceiling (fp32 with TF32 off, and fp16), the generator's FLOPs
per image (counted by FlopCounterMode), then images/s and latency p50/p95/p99 per call at
batch 1..4096 for every backend that exists here:
  pytorch-eager-fp32   TF32 off: the honest fp32 row
  pytorch-eager-fp16   module.half() (bf16 on CPU)
  torch-compile-fp16   inductor, one compile per batch size (dynamic=False)
  cuda-graphs-fp16     one captured graph per batch size, replayed
  onnxruntime          CUDAExecutionProvider with I/O binding (onnxruntime-gpu), else CPU
  tensorrt-fp16        export.tensorrt.tensorrt_runner, when TensorRT is installed
A time budget (default 420 s) skips what is left, and says so, so the script ends < 8 min.
Writes <results>/<machine>/gpu.{json,md,png} and <results>/<machine>/summary.json.
"""
from __future__ import annotations

import argparse
import copy
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.common import RESULTS_DIR, command_line, machine_info, machine_name, percentiles


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


def gemm(torch, device: str, dtype, n: int) -> float:
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    times = _timed_calls(torch, device, lambda: a @ b, calls=10, seconds=2.0)
    return 2.0 * n ** 3 / float(np.median(times))


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


def make_backends(torch, module, z_dim: int, onnx_path: Path | None, device: str, quick: bool,
                  log):
    """name -> factory(batch) -> callable() running one batch on fixed inputs."""
    half = torch.float16 if device == "cuda" else torch.bfloat16
    m32 = module.to(device).eval()
    m16 = copy.deepcopy(m32).to(dtype=half).eval()

    def feeds(batch, dtype):
        g = torch.Generator(device="cpu").manual_seed(batch)
        emb = torch.nn.functional.normalize(torch.randn(batch, 384, generator=g), dim=1)
        z = torch.randn(batch, z_dim, generator=g)
        return emb.to(device, dtype), z.to(device, dtype)

    def eager(mod, dtype):
        def factory(batch):
            emb, z = feeds(batch, dtype)
            return lambda: mod(emb, z)
        return factory

    found = {"pytorch-eager-fp32": eager(m32, torch.float32),
             f"pytorch-eager-{'fp16' if device == 'cuda' else 'bf16'}": eager(m16, half)}
    if device == "cuda":
        def graphed(batch):
            emb, z = feeds(batch, half)
            stream = torch.cuda.Stream()
            stream.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(stream):  # warm-up outside the capture (allocator, cuDNN)
                for _ in range(3):
                    m16(emb, z)
            torch.cuda.current_stream().wait_stream(stream)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                out = m16(emb, z)
            return lambda: (graph.replay(), out)[1]
        found["cuda-graphs-fp16"] = graphed
    if onnx_path is not None:
        found.update(_onnxruntime(onnx_path, device, z_dim, log))
        if device == "cuda":
            try:
                from export.tensorrt import tensorrt_runner
                run = tensorrt_runner(onnx_path, onnx_path.parent / "trt")

                def trt(batch):
                    emb, z = (t.cpu().numpy() for t in feeds(batch, torch.float32))
                    return lambda: run(emb, z)
                found["tensorrt-fp16"] = trt
            except Exception as exc:  # no TensorRT here: reported, not fatal
                log(f"skip tensorrt: {type(exc).__name__}: {exc}")
    if device == "cuda" or not quick:
        # last: one compile per batch size (dynamic=False) is the slowest thing here, and the
        # time budget should cut it rather than the rows after it
        compiled_module = torch.compile(m16, dynamic=False)

        def compiled(batch):
            emb, z = feeds(batch, half)
            return lambda: compiled_module(emb, z)
        found["torch-compile-fp16" if device == "cuda" else "torch-compile-bf16"] = compiled
    return found


def _onnxruntime(onnx_path: Path, device: str, z_dim: int, log) -> dict:
    import onnxruntime as ort
    providers = ort.get_available_providers()
    if device == "cuda" and "CUDAExecutionProvider" not in providers:
        log("skip onnxruntime: no CUDAExecutionProvider (pip install onnxruntime-gpu)")
        return {}
    use = ["CUDAExecutionProvider"] if device == "cuda" else ["CPUExecutionProvider"]
    sess = ort.InferenceSession(str(onnx_path), providers=use)

    def factory(batch):
        rng = np.random.default_rng(batch)
        emb = rng.standard_normal((batch, 384)).astype(np.float32)
        emb /= np.linalg.norm(emb, axis=1, keepdims=True)
        z = rng.standard_normal((batch, z_dim)).astype(np.float32)
        if device != "cuda":
            return lambda: sess.run(["RAW_IMAGE"], {"EMBEDDING": emb, "Z": z})
        # I/O binding: inputs copied to the GPU once, output left there (no host copies timed)
        binding = sess.io_binding()
        binding.bind_ortvalue_input("EMBEDDING", ort.OrtValue.ortvalue_from_numpy(emb, "cuda", 0))
        binding.bind_ortvalue_input("Z", ort.OrtValue.ortvalue_from_numpy(z, "cuda", 0))
        binding.bind_output("RAW_IMAGE", "cuda")

        def call():
            sess.run_with_iobinding(binding)
            binding.synchronize_outputs()
        return call
    return {"onnxruntime": factory}


def run(args, log=print) -> dict:
    import torch

    from benchmarks.backends import count_generator_flops
    from training.checkpoint import load_generator
    device = args.device
    if device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("error: torch sees no CUDA device (CPU-only torch, or no GPU)")
    budget = Budget(args.budget_s)
    torch.backends.cuda.matmul.allow_tf32 = False  # fp32 rows are real fp32
    torch.backends.cudnn.allow_tf32 = False
    loaded = load_generator(args.model)
    flops = count_generator_flops(loaded.module, loaded.z_dim)
    n = 1024 if args.quick or device == "cpu" else 8192
    ceilings = {"fp32": gemm(torch, device, torch.float32, n),
                "half": gemm(torch, device, torch.float16 if device == "cuda" else torch.bfloat16,
                             n)}
    log(f"GEMM: fp32 {ceilings['fp32'] / 1e12:.2f} TFLOP/s, half {ceilings['half'] / 1e12:.2f}")
    batches = [1, 4] if args.quick else [1, 16, 64, 256, 1024, 4096]
    results, skipped = {}, []
    with tempfile.TemporaryDirectory(prefix="adgen-gpu-") as tmp:
        onnx_path = None
        try:
            from export.onnx_export import export_onnx
            onnx_path = export_onnx(args.model, Path(tmp) / "onnx", parity_batches=(1,),
                                    progress=False) / "generator.onnx"
        except Exception as exc:  # reported; the PyTorch rows still run
            log(f"skip onnxruntime: export failed: {exc}")
        backends = make_backends(torch, loaded.module, loaded.z_dim, onnx_path, device,
                                 args.quick, log)
        with torch.inference_mode():
            for name, factory in backends.items():
                rows = []
                # a compile can take a minute: start one only with room left before the
                # script's hard stop (gpu.sh: 480 s), or nothing would be written at all
                need = 90 if "compile" in name else 20
                for b in batches:
                    if budget.left() < need:
                        skipped.append(f"{name} b{b} (time budget)")
                        continue
                    log(f"{name} batch {b}")
                    try:
                        fn = factory(b)
                        times = _timed_calls(torch, device, fn, calls=5 if args.quick else 20,
                                             seconds=0.2 if args.quick else 1.5)
                    except Exception as exc:  # e.g. out of memory at 4096: recorded
                        skipped.append(f"{name} b{b}: {type(exc).__name__}: {str(exc)[:200]}")
                        continue
                    pct = percentiles(times)
                    ceiling = ceilings["fp32" if name.endswith("fp32") or name == "onnxruntime"
                                       else "half"]
                    ips = b / pct["p50"]
                    rows.append({"batch": b, "images_per_s": ips, "calls": len(times),
                                 "latency_ms": {k: v * 1000 for k, v in pct.items()},
                                 "gemm_efficiency": ips * flops / ceiling})
                results[name] = rows
    return {"machine": machine_info(), "device": device, "model": str(args.model),
            "arch": loaded.arch, "z_dim": loaded.z_dim, "generator_flops_per_image": flops,
            "gemm_flops": ceilings, "generator": results, "skipped": skipped,
            "ratios": ratios(results)}


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


def markdown(p: dict, command: str) -> str:
    g = p["gemm_flops"]
    lines = [f"# Generator on {p['machine'].get('gpu', p['device'])} ({p['device']})", "",
             f"Command: `{command}`  ", f"Model: `{p['model']}` ({p['arch']}, z={p['z_dim']}); "
             f"{p['generator_flops_per_image'] / 1e6:.1f} MFLOP per image (counted); GEMM "
             f"fp32 {g['fp32'] / 1e12:.2f} TFLOP/s, half {g['half'] / 1e12:.2f} TFLOP/s.", "",
             "| backend | batch | images/s | p50 ms | p95 ms | p99 ms | of GEMM |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for name, rows in p["generator"].items():
        for r in rows:
            lat = r["latency_ms"]
            lines.append(f"| {name} | {r['batch']} | {r['images_per_s']:.0f} | {lat['p50']:.3f} | "
                         f"{lat['p95']:.3f} | {lat['p99']:.3f} | {r['gemm_efficiency']:.3f} |")
    if p["skipped"]:
        lines += ["", "Skipped: " + "; ".join(p["skipped"])]
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
    ap.add_argument("--results-dir", default=None, help=f"default {RESULTS_DIR}")
    args = ap.parse_args(argv)
    if args.model is None:
        from serving.paths import release_model_dir
        args.model = str(release_model_dir())
    payload = run(args, log=lambda m: print(m, file=sys.stderr, flush=True))
    command = command_line("gpu", argv)
    payload["command"] = command
    from benchmarks.common import write_results
    from benchmarks.plots import plot_gpu
    from benchmarks.triton_local import scrub
    payload = scrub(payload)
    folder = Path(args.results_dir or RESULTS_DIR).resolve() / result_folder_name(args.device)
    path = write_results("gpu", payload, markdown(payload, command), subdir=str(folder))
    plot_gpu(payload, path.with_suffix(".png"))
    summary = {"machine": payload["machine"], "command": command, "device": args.device,
               "ratios": payload["ratios"], "files": {"gpu": f"{folder.name}/gpu.json"}}
    (folder / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(path.with_suffix(".md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
