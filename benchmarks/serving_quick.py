"""Serving throughput, side by side in one run: in-process onnxruntime vs Triton vs the job.

    python -m benchmarks.serving_quick                     # release model if present
    python -m benchmarks.serving_quick --model artifacts/generator/x --images 256

Rows (images/s; the same workload of P prompts x N images with fresh seeds everywhere):
  generator   in-process onnxruntime session.run at batch B
  generator   Triton python model, perf_analyzer (gRPC, batch B)
  adgen       in-process adgen.serving.runtime.backend.Pipeline (text enc. + latents + generator + post)
  adgen       Triton fused python model: perf_analyzer and the adgen asyncio gRPC client
  adgen       Triton ensemble of the four python stage models: adgen client
  job         `adgen generate` end to end (PNG files, manifest) through the fused model
plus the fp32 GEMM FLOP/s of this machine (docs/design.md §8). Measurements are interleaved in
rounds so background load hits every row alike; medians over rounds are reported.
Results: benchmarks/results/<machine>/serving_quick.{json,md}.
"""
from __future__ import annotations

import argparse
import asyncio
import csv
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.common import GOALS, command_line, machine_info, write_results
from benchmarks.triton_local import client_rate
from adgen.serving.jobs.served import from_pbtxt

PROMPTS = [
    "a red apple, flat sticker style, on a teal background",
    "a running shoe, flat sticker style, on a yellow background",
    "a chocolate bar, flat sticker style, on a pink background",
    "a hot beverage, flat sticker style, on a beige background",
    "a backpack, flat sticker style, on a sky blue background",
    "a pizza, flat sticker style, on a white background",
    "a jack-o-lantern, flat sticker style, on a purple background",
    "a mobile phone, flat sticker style, on a navy background",
]


def gemm_gflops(n: int = 1024, repeats: int = 5) -> float:
    a = np.random.default_rng(0).standard_normal((n, n)).astype(np.float32)
    a @ a
    best = min(_timed(lambda: a @ a) for _ in range(repeats))
    return 2 * n ** 3 / best / 1e9


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def resolve_model(arg: str | None, work: Path) -> tuple[Path, str]:
    """An ONNX export folder and a note saying which generator it is."""
    from adgen.export.repo import resolve_generator
    from adgen.paths import release_model_dir
    if arg:
        return resolve_generator(arg).folder, f"given: {arg}"
    if (release_model_dir() / "generator.safetensors").is_file():
        return resolve_generator(None).folder, "release model models/adgen-emoji64"
    # No release model yet: the release architecture, randomly initialised (same FLOPs).
    import torch

    from adgen.export.onnx_export import export_onnx
    from adgen.training.checkpoint import save_generator
    from adgen.training.networks import build_generator
    torch.manual_seed(0)
    ckpt = save_generator(build_generator("film").eval(), {}, work / "film-untrained")
    out = export_onnx(ckpt, work / "film-untrained-onnx", parity_batches=(1,), progress=False)
    return out, "untrained FiLM generator with the release architecture (no release model yet)"


def workload(images: int, rnd: int) -> tuple[list[str], list[int]]:
    prompts = [PROMPTS[i % len(PROMPTS)] for i in range(images)]
    seeds = [rnd * 1_000_003 + i for i in range(images)]
    return prompts, seeds


def perf_analyzer(model: str, url: str, batch: int, concurrency: int, data: Path | None,
                  seconds: float) -> dict:
    """Throughput (items/s) and latency percentiles (ms) from the tritonclient wheel's binary."""
    binary = Path(sys.executable).parent / "perf_analyzer"
    try:
        import nvidia.cuda_runtime
        lib = Path(list(nvidia.cuda_runtime.__path__)[0]) / "lib"
    except ImportError:
        return {"error": "nvidia-cuda-runtime-cu12 not installed (perf_analyzer needs it)"}
    if not binary.is_file():
        return {"error": f"perf_analyzer not found beside {sys.executable}"}
    csv_path = Path(tempfile.mkstemp(suffix=".csv")[1])
    cmd = [str(binary), "-m", model, "-u", url, "-i", "grpc", "-b", str(batch),
           f"--concurrency-range={concurrency}", "--measurement-mode=time_windows",
           f"--measurement-interval={int(seconds * 1000)}", "--stability-percentage=60",
           "--max-trials=4", "-f", str(csv_path)]
    if data:
        cmd += ["--input-data", str(data)]
    else:  # random FP32 bytes include NaN, which the models reject
        cmd += ["--input-data", "zero"]
    env = {**os.environ, "LD_LIBRARY_PATH": f"{lib}:{os.environ.get('LD_LIBRARY_PATH', '')}"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    if proc.returncode != 0 or not csv_path.stat().st_size:
        return {"error": (proc.stdout + proc.stderr).strip().splitlines()[-1:]}
    row = next(csv.DictReader(csv_path.open()))
    csv_path.unlink()
    us = {k: float(row[f"p{k} latency"]) / 1000 for k in (50, 95, 99)}
    return {"images_per_s": float(row["Inferences/Second"]),
            "latency_ms": {f"p{k}": v for k, v in us.items()},
            "command": " ".join(["perf_analyzer"] + cmd[1:4] + ["URL"] + cmd[5:])
            .replace(str(csv_path), "RESULT.csv").replace(str(data), "pa_input.json")}


async def client_latency(url: str, model: str, calls: int, rnd: int) -> list[float]:
    """Milliseconds per single-image request, one at a time (no batching to hide hops)."""
    from adgen.serving.jobs.client import AdgenClient, ClientConfig
    prompts, seeds = workload(calls, rnd)
    out = []
    async with AdgenClient(ClientConfig(urls=(url,), model=model)) as client:
        for p, s in zip(prompts, seeds):
            t0 = time.perf_counter()
            await client.infer([p], [s])
            out.append((time.perf_counter() - t0) * 1000)
    return out


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=None, help="checkpoint or ONNX export folder")
    ap.add_argument("--images", type=int, default=512, help="images per round")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--batch", type=int, default=None,
                    help="client batch (default: the built repository's served config)")
    ap.add_argument("--concurrency", type=int, default=None,
                    help="client requests in flight (default: the served config's)")
    ap.add_argument("--pa-seconds", type=float, default=8.0, help="perf_analyzer window")
    ap.add_argument("--latency-calls", type=int, default=40,
                    help="single-image requests per round for the latency rows")
    ap.add_argument("--no-write", action="store_true", help="print only")
    args = ap.parse_args(argv)

    from adgen.export.repo import build_repository
    from adgen.serving.runtime.backend import Pipeline
    from adgen.serving.jobs.job import JobConfig, run_job
    from adgen.paths import text_encoder_dir
    from adgen.serving.jobs.triton_server import ServerConfig, TritonServer, free_port

    work = Path(tempfile.mkdtemp(prefix="adgen-serving-bench-"))
    try:
        gen_dir, note = resolve_model(args.model, work)
        # 64 px only: adgen_256 would load a second pipeline into the server being measured
        fused = build_repository(work / "fused", model=gen_dir, extra_models=("generator",),
                                 progress=False, upsampler=False)
        served = from_pbtxt(fused / "adgen" / "config.pbtxt")
        args.batch, args.concurrency = (args.batch or served.batch,
                                        args.concurrency or served.concurrency)
        ens = build_repository(work / "ensemble", variant="python-ensemble", model=gen_dir,
                               progress=False, upsampler=False)
        pipe = Pipeline(text_encoder_dir(), gen_dir)
        z_dim = pipe.z_dim
        pa_data = work / "pa_input.json"
        pa_data.write_text(json.dumps({"data": [{"PROMPT": [p], "SEED": [i]}
                                                for i, p in enumerate(PROMPTS)]}))
        prompts_file = work / "prompts.txt"
        per_prompt = args.images // len(PROMPTS)
        prompts_file.write_text("\n".join(PROMPTS) + "\n")
        rows: dict[str, list[float]] = {}
        pa: dict[str, list[dict]] = {"generator": [], "adgen": []}
        lat: dict[str, list[float]] = {}

        def add(name, value):
            rows.setdefault(name, []).append(value)

        def ports():
            return dict(grpc_port=free_port(), http_port=free_port(), metrics_port=free_port())

        servers = [TritonServer(ServerConfig(str(fused), log_file=str(work / "fused.log"),
                                             **ports())),
                   TritonServer(ServerConfig(str(ens), log_file=str(work / "ens.log"),
                                             **ports()))]
        for s in servers:
            s.start()
        f_url, e_url = servers[0].grpc_url, servers[1].grpc_url
        try:
            # warm-up: sessions, embedding caches (a job's prompts repeat n times)
            pipe.run(*workload(args.batch, 0))
            for url in (f_url, e_url):
                client_rate(url, "adgen", *workload(args.batch * 2, 0), args.batch, 2)
            emb = np.repeat(pipe.encode(PROMPTS[:1]), args.batch, axis=0)
            for rnd in range(1, args.rounds + 1):
                print(f"round {rnd}/{args.rounds}", file=sys.stderr)
                # generator alone, in-process (the pipeline's own session), >= window seconds
                t0, done = time.perf_counter(), 0
                while done < args.images or time.perf_counter() - t0 < args.pa_seconds:
                    z = np.random.default_rng(rnd + done).standard_normal(
                        (args.batch, z_dim)).astype(np.float32)
                    pipe.generate(emb, z)
                    done += args.batch
                add("generator_inprocess", done / (time.perf_counter() - t0))
                # ... and at the batch Triton's dynamic batcher can form from the
                # `concurrency` requests in flight (batch x concurrency items)
                big = args.batch * args.concurrency
                emb_big = np.repeat(emb[:1], big, axis=0)
                t0, done = time.perf_counter(), 0
                while done < args.images or time.perf_counter() - t0 < args.pa_seconds:
                    z = np.random.default_rng(rnd + done).standard_normal(
                        (big, z_dim)).astype(np.float32)
                    pipe.generate(emb_big, z)
                    done += big
                add(f"generator_inprocess_b{big}", done / (time.perf_counter() - t0))
                # whole pipeline in-process, >= window seconds of fresh seeds
                t0, done = time.perf_counter(), 0
                while done < args.images or time.perf_counter() - t0 < args.pa_seconds:
                    prompts, seeds = workload(args.batch, rnd * 1000 + done)
                    pipe.run(prompts, seeds)
                    done += args.batch
                add("adgen_inprocess", done / (time.perf_counter() - t0))
                # through Triton with the adgen client
                for name, url in (("fused", f_url), ("ensemble", e_url)):
                    add(f"adgen_triton_{name}_client", client_rate(
                        url, "adgen", *workload(args.images, rnd), args.batch,
                        args.concurrency))
                # single-image latency: where the ensemble's extra hops show
                for name, url in (("fused", f_url), ("ensemble", e_url)):
                    lat.setdefault(name, []).extend(asyncio.run(client_latency(
                        url, "adgen", args.latency_calls, rnd)))
                # the whole job: PNGs, manifest, summary
                r = run_job(JobConfig(prompts=(str(prompts_file),), out=str(work / f"job{rnd}"),
                                      n=per_prompt, seed=rnd, batch_size=args.batch,
                                      concurrency=args.concurrency, urls=(f_url,),
                                      progress=False, contact_sheet_max=0))
                add("job_triton_fused", r.summary["images_per_s"])
                # perf_analyzer on the fused model and on the generator stage
                pa["adgen"].append(perf_analyzer("adgen", f_url, args.batch, args.concurrency,
                                                 pa_data, args.pa_seconds))
                pa["generator"].append(perf_analyzer("generator", f_url, args.batch,
                                                     args.concurrency, None, args.pa_seconds))
                for k in pa:
                    if "images_per_s" in pa[k][-1]:
                        add(f"{k}_triton_perf_analyzer", pa[k][-1]["images_per_s"])
        finally:
            for s in servers:
                s.stop()
        gflops = gemm_gflops()
        med = {k: statistics.median(v) for k, v in rows.items()}
        ratios = {
            "triton_vs_inprocess_adgen_client": med["adgen_triton_fused_client"]
            / med["adgen_inprocess"],
            "job_vs_triton_client": med["job_triton_fused"] / med["adgen_triton_fused_client"],
            "ensemble_vs_fused_client": med["adgen_triton_ensemble_client"]
            / med["adgen_triton_fused_client"],
        }
        if "adgen_triton_perf_analyzer" in med:
            ratios["triton_vs_inprocess_adgen_perf_analyzer"] = \
                med["adgen_triton_perf_analyzer"] / med["adgen_inprocess"]
            ratios["job_vs_triton_perf_analyzer"] = \
                med["job_triton_fused"] / med["adgen_triton_perf_analyzer"]
        if "generator_triton_perf_analyzer" in med:
            ratios["triton_vs_inprocess_generator_perf_analyzer"] = \
                med["generator_triton_perf_analyzer"] / med["generator_inprocess"]
        payload = {
            "command": command_line("serving_quick", argv),
            "machine": machine_info(), "load_average_at_end": os.getloadavg(),
            "generator": note, "z_dim": z_dim,
            "workload": {"images_per_round": args.images, "rounds": args.rounds,
                         "batch": args.batch, "concurrency": args.concurrency,
                         "distinct_prompts": len(PROMPTS)},
            "gemm_fp32_gflops": gflops, "images_per_s_median": med, "images_per_s_rounds": rows,
            "ratios": ratios, "perf_analyzer": pa,
            "batch1_latency_ms": {k: {q: float(np.percentile(v, int(q[1:])))
                                      for q in ("p50", "p95", "p99")} for k, v in lat.items()},
            "goals": {"triton_vs_inprocess": GOALS["triton_vs_inprocess"][1],
                      "job_vs_triton": GOALS["e2e_vs_triton"][1]},
        }
    finally:
        shutil.rmtree(work, ignore_errors=True)
    md = render(payload)
    print(md)
    if not args.no_write:
        print(write_results("serving_quick", payload, md), file=sys.stderr)
    return payload


def render(p: dict) -> str:
    m = p["images_per_s_median"]
    lines = [
        "# Serving throughput (benchmarks/serving_quick.py)", "",
        f"Command: `{p['command']}`  ",
        f"Machine: {p['machine']['name']} ({p['machine']['cpus']} CPUs); load average at end "
        f"{', '.join(f'{x:.1f}' for x in p['load_average_at_end'])}; fp32 GEMM "
        f"{p['gemm_fp32_gflops']:.0f} GFLOP/s  ",
        f"Generator: {p['generator']} (z_dim {p['z_dim']})  ",
        f"Workload: {p['workload']['images_per_round']} images/round x "
        f"{p['workload']['rounds']} rounds, batch {p['workload']['batch']}, concurrency "
        f"{p['workload']['concurrency']}, {p['workload']['distinct_prompts']} distinct prompts",
        "", "| path | images/s (median) | rounds |", "|---|---:|---|"]
    for k, v in m.items():
        rounds = ", ".join(f"{x:.1f}" for x in p["images_per_s_rounds"][k])
        lines.append(f"| {k} | {v:.1f} | {rounds} |")
    lines += ["", "| single-image latency through Triton (adgen client) | p50 ms | p95 ms | p99 ms |",
              "|---|---:|---:|---:|"]
    for k, v in p["batch1_latency_ms"].items():
        lines.append(f"| {k} | {v['p50']:.1f} | {v['p95']:.1f} | {v['p99']:.1f} |")
    lines += ["", "| ratio | value | goal |", "|---|---:|---:|"]
    for k, v in p["ratios"].items():
        goal = (p["goals"]["triton_vs_inprocess"] if k.startswith("triton_vs")
                else p["goals"]["job_vs_triton"] if k.startswith("job_vs") else None)
        lines.append(f"| {k} | {v:.2f} | {'' if goal is None else f'>= {goal}'} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
