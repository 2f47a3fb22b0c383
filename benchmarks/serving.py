"""Serving benchmarks on a local Triton: in-process vs Triton, perf_analyzer sweeps, batching.

Usage:
  python -m benchmarks.serving                          # release model, full run (~3 min, 2 cores)
  python -m benchmarks.serving --model runs/00004-film/checkpoints/latest
  python -m benchmarks.serving --quick --results-dir out/bench   # smoke run, < 1 min
  python -m benchmarks.serving --apply-pick benchmarks/results/<machine>/serving.json

One run, one server (explicit model control), in this order:
  1. the fused Triton model `adgen` through the adgen asyncio gRPC client at the served batch
     and concurrency (the repository's served config, adgen.serving.jobs.served, as `adgen
     generate` sends by default) vs in-process `adgen.serving.runtime.backend.Pipeline` at
     the same batch: one Pipeline on every core, and the served split (one Pipeline per
     instance with its threads, driven by as many threads); same workload (fresh prompts,
     each x4 as `generate -n 4` sends, fresh seeds), interleaved rounds, medians; server
     queue/compute times from the metrics endpoint.
  2. perf_analyzer (gRPC, --input-data JSON with string PROMPTs) concurrency sweep on `adgen` and
     on `generator`; one CSV per model kept beside the JSON (`serving_pa_<model>.csv`).
  3. a short dynamic-batching sweep: the served config, the tuned one (`adgen repo build
     --tune`'s cache, else a quick calibration), and the few alternatives the last full sweep
     did not show dominated, each loaded with a config override; a setting whose client rate
     is clearly below the best so far stops early; the rule in benchmarks/batching.py picks.
Writes <results>/<machine>/serving.{json,md,png}.
"""
from __future__ import annotations

import asyncio
import csv
import json
import math
import os
import shlex
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from benchmarks.common import RESULTS_DIR, command_line, machine_name, part_parser, percentiles, \
    run_header, show, write_part
from benchmarks.prompt_pool import PromptPool
from benchmarks.triton_local import SWEEP, BatchSetting, BenchError, LocalTriton, apply_pick, \
    scratch_triton
from adgen.export.served_config import run_split
from adgen.serving.jobs.served import ServedConfig

@dataclass(frozen=True)
class ServingConfig:
    model: str | None = None  # checkpoint or ONNX export folder; None = release model
    # images per client request and requests in flight; None: the served config of the
    # repository under test (what `adgen generate` sends by default)
    batch: int | None = None
    concurrency: int | None = None
    n_per_prompt: int = 4  # each fresh prompt is sent n times, like `adgen generate -n 4`
    seconds: float = 3.0  # per in-process / client measurement
    rounds: int = 3
    pa_window_s: float = 1.5  # perf_analyzer measurement window (3 windows per point)
    pa_adgen: tuple = ((1, 1), (1, 16))  # plus (batch, concurrency) at run time
    pa_generator: tuple = ((1, 1), (64, 1))
    sweep: tuple = SWEEP
    sweep_window_s: float = 0.8
    sweep_seconds: float = 3.0
    sweep_passes: int = 1
    early_stop: float = 0.8  # client rate below this share of the best so far: stop there
    tune_seconds: float = 0.5  # the quick calibration when no tune is cached (2 rounds)
    threads: int = 0  # in-process onnxruntime threads (0 = every core, as the server)
    # The release before this one (a name under models/, or a checkpoint folder), run as the
    # served split beside the model's own split in the same rounds: what the new model costs
    # in served images/s. A name runs only when the release model is under test; "" skips.
    previous_release: str = "adgen-emoji64-v2"
    quick: bool = False

    @classmethod
    def quick_config(cls, model=None) -> "ServingConfig":
        return cls(model=model, batch=8, concurrency=2, seconds=0.5, rounds=1, pa_window_s=0.5,
                   pa_adgen=((1, 1), (1, 4)), pa_generator=((4, 1),),
                   sweep=(BatchSetting(1, 0, 0),), sweep_window_s=0.4, sweep_seconds=0.5,
                   tune_seconds=0.05, quick=True)

    def served(self, served: ServedConfig) -> "ServingConfig":
        """This config with batch and concurrency taken from `served` where not given."""
        return replace(self, batch=self.batch or served.batch,
                       concurrency=self.concurrency or served.concurrency)


# ----------------------------------------------------------------------------- perf_analyzer

def perf_analyzer_command() -> tuple[Path, dict]:
    """The tritonclient wheel's perf_analyzer and the environment it needs."""
    binary = Path(sys.executable).parent / "perf_analyzer"
    if not binary.is_file():
        raise BenchError(f"perf_analyzer not found beside {sys.executable}: "
                         "pip install 'tritonclient[all]==2.51.0'")
    try:
        import nvidia.cuda_runtime
        lib = Path(list(nvidia.cuda_runtime.__path__)[0]) / "lib"
    except ImportError:
        raise BenchError("perf_analyzer needs libcudart.so.12: pip install "
                         "nvidia-cuda-runtime-cu12 (and apt-get install libb64-0d)") from None
    env = {**os.environ, "LD_LIBRARY_PATH": f"{lib}:{os.environ.get('LD_LIBRARY_PATH', '')}"}
    return binary, env


def check_perf_analyzer() -> str:
    """Fails fast, in one line, when perf_analyzer cannot start (missing shared libraries)."""
    binary, env = perf_analyzer_command()
    proc = subprocess.run([str(binary), "--version"], capture_output=True, text=True, env=env,
                          timeout=30)
    text = (proc.stdout + proc.stderr).strip()
    if proc.returncode != 0 or "error while loading shared libraries" in text:
        line = next((ln for ln in text.splitlines() if "error" in ln), text[-200:])
        raise BenchError(f"perf_analyzer cannot start: {line} (it needs Debian's libb64-0d: "
                         "apt-get install libb64-0d)")
    return text.splitlines()[-1] if text else "perf_analyzer"


def pa_data_adgen(path: Path, pool: PromptPool, entries: int, n: int) -> Path:
    """perf_analyzer input for `adgen`: fresh prompts, each repeated n times in a row."""
    prompts, seeds = pool.images(entries, n)
    path.write_text(json.dumps({"data": [{"PROMPT": [p], "SEED": [s]}
                                         for p, s in zip(prompts, seeds)]}))
    return path


def pa_data_generator(path: Path, z_dim: int, entries: int = 64) -> Path:
    rng = np.random.default_rng(0)
    emb = rng.standard_normal((entries, 384)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    z = rng.standard_normal((entries, z_dim)).astype(np.float32)
    path.write_text(json.dumps({"data": [{"EMBEDDING": e.round(6).tolist(),
                                          "Z": v.round(6).tolist()} for e, v in zip(emb, z)]}))
    return path


def perf_analyzer(triton: LocalTriton, model: str, batch: int, concurrency: int, data: Path,
                  window_s: float, csv_path: Path) -> dict:
    """One sweep point: 3 time windows (stability not required on a shared machine); a
    window too short to see one response is retried once, 4x longer."""
    row = _perf_analyzer(triton, model, batch, concurrency, data, window_s, csv_path)
    if "No valid requests recorded" in row.get("error", ""):
        row = _perf_analyzer(triton, model, batch, concurrency, data, 4 * window_s, csv_path)
    return row


def _perf_analyzer(triton, model, batch, concurrency, data, window_s, csv_path) -> dict:
    binary, env = perf_analyzer_command()
    cmd = [str(binary), "-m", model, "-u", triton.grpc_url, "-i", "grpc", "-b", str(batch),
           f"--concurrency-range={concurrency}:{concurrency}", "--measurement-mode=time_windows",
           f"--measurement-interval={int(window_s * 1000)}", "--stability-percentage=999",
           "--max-trials=3", "--input-data", str(data), "-f", str(csv_path)]
    before = triton.metrics.snapshot(0.2)  # the previous run's responses booked first
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env,
                          timeout=60 + 10 * window_s)
    after = triton.metrics.snapshot(0.2)
    shown = " ".join(["perf_analyzer"] + [shlex.quote(c) for c in cmd[1:]])
    if proc.returncode != 0 or not csv_path.is_file():
        tail = (proc.stdout + proc.stderr).strip().splitlines()[-1:] or ["no output"]
        return {"batch": batch, "concurrency": concurrency, "error": tail[0][:300],
                "command": shown}
    with csv_path.open() as f:
        row = next(csv.DictReader(f))
    us = lambda k: float(row.get(k) or 0.0)  # noqa: E731  (PA reports µs)
    return {"batch": batch, "concurrency": concurrency,
            "images_per_s": float(row["Inferences/Second"]),
            "latency_ms": {p: us(f"{p} latency") / 1000 for p in ("p50", "p90", "p95", "p99")},
            "server_us": {"queue": us("Server Queue"),
                          "compute_input": us("Server Compute Input"),
                          "compute_infer": us("Server Compute Infer"),
                          "compute_output": us("Server Compute Output")},
            "client_us": {"send": us("Client Send"), "recv": us("Client Recv")},
            "metrics": triton.metrics.diff(before, after, model), "csv_row": row,
            "command": shown}


def pa_sweep(triton, model, points, data_for, window_s, tmp: Path, log) -> list[dict]:
    rows = []
    for b, c in points:
        log(f"  perf_analyzer {model} batch {b} concurrency {c}")
        rows.append(perf_analyzer(triton, model, b, c, data_for(b, c), window_s,
                                  tmp / f"pa-{model}-b{b}-c{c}.csv"))
    return rows


def write_pa_csv(rows: list[dict], path: Path) -> None:
    """perf_analyzer's own CSV rows for every point, with the batch size in front."""
    good = [r for r in rows if "csv_row" in r]
    if not good:
        return
    fields = ["Batch"] + list(good[0]["csv_row"])
    tmp = path.with_suffix(".csv.tmp")
    with tmp.open("w", newline="") as f:
        w = csv.DictWriter(f, fields, extrasaction="ignore")
        w.writeheader()
        for r in good:
            w.writerow({"Batch": r["batch"], **r["csv_row"]})
    os.replace(tmp, path)


# ----------------------------------------------------------------------------- rates

async def _client_rate(url: str, source, concurrency: int, seconds: float) -> dict:
    """Keeps `concurrency` requests in flight for `seconds` (at least one each)."""
    from adgen.serving.jobs.client import AdgenClient, ClientConfig
    latencies: list[float] = []
    images = 0
    async with AdgenClient(ClientConfig(urls=(url,))) as client:
        t0 = time.perf_counter()
        deadline = t0 + seconds

        async def worker():
            nonlocal images
            while True:
                prompts, seeds = source()
                t = time.perf_counter()
                await client.infer(prompts, seeds)
                latencies.append(time.perf_counter() - t)
                images += len(prompts)
                if time.perf_counter() >= deadline:
                    return
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall = time.perf_counter() - t0
    return {"images_per_s": images / wall, "images": images, "wall_s": wall,
            "latency_ms": {k: v * 1000 for k, v in percentiles(latencies).items()}}


def client_rate(triton: LocalTriton, pool: PromptPool, batch: int, concurrency: int, n: int,
                seconds: float) -> dict:
    before = triton.metrics.snapshot(0.2)  # the previous run's responses booked first
    out = asyncio.run(_client_rate(triton.grpc_url, lambda: pool.images(batch, n), concurrency,
                                   seconds))
    out["metrics"] = triton.metrics.diff(before, triton.metrics.snapshot(0.2), "adgen")
    return out


def inprocess_rate(pipe, pool: PromptPool, batch: int, n: int, seconds: float) -> dict:
    times, images = [], 0
    t0 = time.perf_counter()
    while not times or time.perf_counter() - t0 < seconds:
        prompts, seeds = pool.images(batch, n)
        t = time.perf_counter()
        pipe.run(prompts, seeds)
        times.append(time.perf_counter() - t)
        images += batch
    wall = time.perf_counter() - t0
    return {"images_per_s": images / wall, "images": images, "wall_s": wall,
            "latency_ms": {k: v * 1000 for k, v in percentiles(times).items()}}


def generator_inprocess(pipe, batch: int, seconds: float) -> dict:
    rng = np.random.default_rng(1)
    emb = rng.standard_normal((batch, 384)).astype(np.float32)
    z = rng.standard_normal((batch, pipe.z_dim)).astype(np.float32)
    pipe.generate(emb, z)  # warm-up
    times, t0 = [], time.perf_counter()
    while not times or time.perf_counter() - t0 < seconds:
        t = time.perf_counter()
        pipe.generate(emb, z)
        times.append(time.perf_counter() - t)
    pct = percentiles(times)
    return {"batch": batch, "images_per_s": batch / pct["p50"],
            "latency_ms": {k: v * 1000 for k, v in pct.items()}}


# ----------------------------------------------------------------------------- sweep

def previous_split(cfg: ServingConfig, triton, served: ServedConfig, log) -> dict | None:
    """The previous release as the served split ({"model", "sha256", "pipes"}), or None when
    the row is off, that release is not shipped, or another model is under test while the
    previous release is named as a release (a folder path is run beside any model)."""
    from adgen.export.precision import choose_precision
    from adgen.export.repo import resolve_generator
    from adgen.paths import release_model_dir, sha256_file
    from adgen.serving.runtime.backend import Pipeline
    name = cfg.previous_release
    if not name:
        return None
    folder = Path(name)
    shown = name
    if not folder.is_dir():  # a release's name under models/: only beside the release
        if cfg.model and Path(cfg.model).resolve() != release_model_dir().resolve():
            return None
        folder, shown = release_model_dir().parent / name, f"models/{name}"
    if not (folder / "generator.safetensors").is_file():
        log(f"previous release {shown}: not shipped here, row skipped")
        return None
    art = resolve_generator(folder, progress=False)
    # served as `adgen repo build` would serve it on this host (its int8/ where kept)
    choice = choose_precision("auto", folder, sha256_file(folder / "generator.safetensors"))
    log(f"previous release {shown} ({art.sha256[:12]}, {choice.precision}): the served split "
        "beside the model's")
    return {"model": shown, "sha256": art.sha256, "precision": choice.precision,
            "precision_reason": choice.reason,
            "pipes": [Pipeline(triton.text_encoder_dir, choice.folder or art.folder,
                               threads=served.threads) for _ in range(served.instances)]}


def prompts_repeat(batch: int, cfg: ServingConfig) -> int:
    """Batch-1 requests model interactive use: every request a new prompt (one text encoding
    each, so latency is one mode, not a mix of cache hits and misses). Larger batches model
    a job: each prompt n times in a row."""
    return 1 if batch == 1 else cfg.n_per_prompt


# ----------------------------------------------------------------------------- run

def split_rate(pipes: list, pool: PromptPool, batch: int, n: int, seconds: float) -> dict:
    """In-process as the served split runs (adgen.export.served_config.run_split), all at
    `batch`, on the pool's fresh prompts."""
    out = run_split(pipes, lambda: pool.images(batch, n), seconds)
    return {"images_per_s": out["images"] / out["wall_s"], "images": out["images"],
            "wall_s": out["wall_s"],
            "latency_ms": {k: v * 1000 for k, v in percentiles(out["times"]).items()}}


def run(cfg: ServingConfig, triton: LocalTriton | None = None, pool: PromptPool | None = None,
        log=print) -> dict:
    """The whole serving benchmark; starts its own server unless `triton` is given."""
    if triton is None:
        with scratch_triton(cfg.model, "adgen-bench-serving-", log) as own:
            return run(cfg, own, pool, log)
    from adgen.serving.runtime.backend import Pipeline
    t_start = time.perf_counter()
    pa_version = check_perf_analyzer()
    served = ServedConfig.from_model_config(triton.committed["adgen"])
    cfg = cfg.served(served)
    pool = pool or PromptPool()
    tmp = triton.work / "serving"
    tmp.mkdir(exist_ok=True)
    pipe = Pipeline(triton.text_encoder_dir, triton.generator_dir, threads=cfg.threads)
    split = [Pipeline(triton.text_encoder_dir, triton.generator_dir, threads=served.threads)
             for _ in range(served.instances)]
    previous = previous_split(cfg, triton, served, log)
    log(f"served config: {served.label}; client batch {cfg.batch}, concurrency "
        f"{cfg.concurrency}")
    log("warm-up: in-process pipelines and Triton")
    inprocess_rate(pipe, pool, cfg.batch, cfg.n_per_prompt, 0.0)
    split_rate(split, pool, cfg.batch, cfg.n_per_prompt, 0.0)
    client_rate(triton, pool, cfg.batch, cfg.concurrency, cfg.n_per_prompt, 0.5)

    # Like with like: Triton at the served batch and concurrency against the Pipeline at the
    # same batch, run the two ways a process can (one Pipeline on every core; the served
    # split of instances x threads); Triton is compared with the better of the two.
    runs = {"adgen_inprocess": lambda: inprocess_rate(pipe, pool, cfg.batch, cfg.n_per_prompt,
                                                      cfg.seconds),
            "adgen_inprocess_split": lambda: split_rate(split, pool, cfg.batch,
                                                        cfg.n_per_prompt, cfg.seconds),
            "adgen_triton_client": lambda: client_rate(triton, pool, cfg.batch, cfg.concurrency,
                                                       cfg.n_per_prompt, cfg.seconds)}
    if previous:
        split_rate(previous["pipes"], pool, cfg.batch, cfg.n_per_prompt, 0.0)  # warm-up
        runs["previous_release_inprocess_split"] = lambda: split_rate(
            previous["pipes"], pool, cfg.batch, cfg.n_per_prompt, cfg.seconds)
    rounds: dict[str, list] = {k: [] for k in runs}
    for r in range(cfg.rounds):
        log(f"round {r + 1}/{cfg.rounds}: in-process (batch {cfg.batch}: all cores, "
            f"{served.instances} x {served.threads or 'all'} threads) vs Triton (batch "
            f"{cfg.batch}, concurrency {cfg.concurrency})")
        names = list(runs)[r % len(runs):] + list(runs)[:r % len(runs)]  # rotate the order
        for name in names:
            rounds[name].append(runs[name]())
    med = {k: statistics.median(x["images_per_s"] for x in v) for k, v in rounds.items()}
    gen_b = 64 if not cfg.quick else 4
    gen_inproc = generator_inprocess(pipe, gen_b, cfg.seconds)
    z_dim = pipe.z_dim
    pipe = split = None  # frees their onnxruntime threads: they would compete with the server
    if previous:
        previous.pop("pipes")
    t_compare = time.perf_counter() - t_start

    log("perf_analyzer sweeps")
    pa_points = tuple(dict.fromkeys(cfg.pa_adgen + ((cfg.batch, cfg.concurrency),)))
    pa = {
        "adgen": pa_sweep(triton, "adgen", pa_points,
                          lambda b, c: pa_data_adgen(tmp / f"pa-adgen-b{b}-c{c}.json", pool,
                                                     3000, prompts_repeat(b, cfg)),
                          cfg.pa_window_s, tmp, log),
        "generator": pa_sweep(triton, "generator", cfg.pa_generator,
                              lambda b, c: pa_data_generator(tmp / "pa-generator.json", z_dim),
                              cfg.pa_window_s, tmp, log),
    }
    t_pa = time.perf_counter() - t_start - t_compare
    log("dynamic-batching sweep")
    from benchmarks.batching import batching_sweep
    sweep = batching_sweep(cfg, triton, pool, tmp, log, served)
    t_sweep = time.perf_counter() - t_start - t_compare - t_pa

    b1c1 = next((r for r in pa["adgen"] if r["batch"] == 1 and r["concurrency"] == 1
                 and "latency_ms" in r), None)
    gen_pa = next((r for r in pa["generator"] if r["batch"] == gen_b and "images_per_s" in r),
                  None)
    best_inproc = max(med["adgen_inprocess"], med["adgen_inprocess_split"])
    ratios = {
        "triton_vs_inprocess": med["adgen_triton_client"] / best_inproc,
        "triton_vs_inprocess_same_batch": med["adgen_triton_client"] / med["adgen_inprocess"],
        "triton_vs_inprocess_split": med["adgen_triton_client"]
        / med["adgen_inprocess_split"],
        "p99_over_p50_b1_c1": (b1c1["latency_ms"]["p99"] / b1c1["latency_ms"]["p50"]
                               if b1c1 else None),
        f"generator_triton_vs_inprocess_b{gen_b}": (
            gen_pa["images_per_s"] / gen_inproc["images_per_s"] if gen_pa else None),
        "release_vs_previous_release": (
            med["adgen_inprocess_split"] / med["previous_release_inprocess_split"]
            if previous else None),
    }
    return {**run_header(cfg),
            "workload": f"fresh caption prompts and distinct seeds; client/in-process rows and "
                        f"batch>1 perf_analyzer rows send each prompt {cfg.n_per_prompt}x in a "
                        "row (as `adgen generate -n 4`); batch-1 perf_analyzer rows send a new "
                        "prompt with every request (interactive use)",
            "served": {**served.to_json(), "label": served.label},
            "inprocess_vs_triton": {"batch": cfg.batch, "concurrency": cfg.concurrency,
                                    "merged_batch": None, "split": [served.instances,
                                                                    served.threads],
                                    "rounds": rounds, "median_images_per_s": med},
            "generator_inprocess": gen_inproc, "perf_analyzer": pa,
            "perf_analyzer_version": pa_version,
            "dynamic_batching": sweep, "ratios": ratios, "previous_release": previous,
            "seconds": {"compare": t_compare, "perf_analyzer": t_pa, "sweep": t_sweep,
                        "total": time.perf_counter() - t_start}}


# ----------------------------------------------------------------------------- report

def _f(x, fmt=".1f") -> str:
    return "—" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, fmt)


def _spread(load: dict) -> str:
    """'median (pass values)' for a sweep load."""
    xs = load.get("images_per_s_passes") or []
    tail = f" ({', '.join(format(x, '.0f') for x in xs)})" if len(xs) > 1 else ""
    return _f(load.get("images_per_s")) + tail


def markdown(p: dict, command: str) -> str:
    iv = p["inprocess_vs_triton"]
    lines = [f"# Serving on a local Triton ({p['machine']['name']})", "",
             f"Command: `{command}`  ", f"Model: {p['model']}  ",
             f"Workload: {p['workload']}; load average at end "
             f"{', '.join(f'{x:.1f}' for x in p['load_average_at_end'])}", "",
             f"## In-process vs Triton (batch {iv['batch']}, concurrency {iv['concurrency']})", "",
             f"Served config (the repository's): {p['served']['label']}; clients send batch "
             f"{iv['batch']} with {iv['concurrency']} requests in flight. In-process runs the "
             f"same batch on one Pipeline with every core (`adgen_inprocess`) and as the served "
             f"split, {iv['split'][0]} Pipelines x {iv['split'][1] or 'all'} threads driven by "
             f"as many threads (`adgen_inprocess_split`); `triton_vs_inprocess` divides by the "
             "better of the two. Rounds rotate the order.", "",
             "| path | images/s (median) | rounds | server queue µs/req | compute µs/req | "
             "mean executed batch |", "|---|---:|---|---:|---:|---:|"]
    for k, rows in iv["rounds"].items():
        m = rows[-1].get("metrics") or {}
        each = ", ".join(format(r["images_per_s"], ".1f") for r in rows)
        lines.append(f"| {k} | {iv['median_images_per_s'][k]:.1f} | {each} | "
                     f"{_f(m.get('queue_us_per_request'), '.0f')} | "
                     f"{_f(m.get('compute_infer_us_per_request'), '.0f')} | "
                     f"{_f(m.get('mean_batch'))} |")
    prev = p.get("previous_release")
    if prev:
        lines += ["", f"`previous_release_inprocess_split`: the previous release "
                  f"({prev['model']}, {prev['sha256'][:12]}, {prev['precision']} as served on "
                  f"this host) as the same served split, in the same rounds: release ÷ "
                  f"previous = "
                  f"**{p['ratios']['release_vs_previous_release']:.2f}** (goal >= 0.8)."]
    g = p["generator_inprocess"]
    lines += ["", f"Generator alone in-process at batch {g['batch']}: "
              f"{g['images_per_s']:.1f} images/s (p50 {g['latency_ms']['p50']:.2f} ms).", ""]
    for model, rows in p["perf_analyzer"].items():
        lines += [f"## perf_analyzer on `{model}` (gRPC; CSV: serving_pa_{model}.csv)", "",
                  "| batch | concurrency | images/s | p50 ms | p95 ms | p99 ms | queue µs | "
                  "compute µs | mean executed batch |", "|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for r in rows:
            if "error" in r:
                lines.append(f"| {r['batch']} | {r['concurrency']} | error: {r['error']} |"
                             " | | | | | |")
                continue
            lat, srv = r["latency_ms"], r["server_us"]
            lines.append(f"| {r['batch']} | {r['concurrency']} | {r['images_per_s']:.1f} | "
                         f"{lat['p50']:.2f} | {lat['p95']:.2f} | {lat['p99']:.2f} | "
                         f"{srv['queue']:.0f} | {srv['compute_infer']:.0f} | "
                         f"{_f(r['metrics'].get('mean_batch'))} |")
        lines.append("")
    from benchmarks.batching import sweep_markdown
    sw = p["dynamic_batching"]
    lines += sweep_markdown(sw, iv["batch"], iv["concurrency"], _f, _spread)
    lines += ["", f"Served: {p['served']['label']}; committed: {sw['committed']}; pick: "
              f"{sw['pick']}; committed is the pick: "
              f"{'yes' if sw['committed_is_pick'] else 'no'}.", "",
              f"Time: {', '.join(f'{k} {v:.0f} s' for k, v in p.get('seconds', {}).items())}.",
              "", "## Ratios (this run)", ""]
    lines += [f"- {k}: {_f(v, '.2f')}" for k, v in p["ratios"].items()]
    return "\n".join(lines)


def write(payload: dict, command: str, results_dir: Path | None) -> Path:
    from benchmarks.plots import plot_serving
    folder = Path(results_dir or RESULTS_DIR).resolve() / machine_name()
    folder.mkdir(parents=True, exist_ok=True)
    for model, rows in payload["perf_analyzer"].items():
        write_pa_csv(rows, folder / f"serving_pa_{model}.csv")
        for r in rows:
            r.pop("csv_row", None)  # kept in the CSV; the JSON stays readable
    return write_part("serving", payload, command, results_dir, markdown, plot_serving)


def main(argv=None) -> int:
    ap = part_parser(__doc__)
    ap.add_argument("--quick", action="store_true", help="smoke run (< 1 min)")
    ap.add_argument("--apply-pick", metavar="SERVING_JSON", default=None,
                    help="write the pick recorded in SERVING_JSON into "
                         "triton_models/adgen/config.pbtxt and exit (no benchmark)")
    args = ap.parse_args(argv)
    if args.apply_pick:
        from adgen.export.repo import SOURCES
        pick = apply_pick(Path(args.apply_pick), SOURCES / "adgen" / "config.pbtxt")
        print(f"triton_models/adgen/config.pbtxt now: {pick.label}")
        return 0
    cfg = ServingConfig.quick_config(args.model) if args.quick else ServingConfig(args.model)
    return show(write(run(cfg), command_line("serving", argv), args.results_dir))


if __name__ == "__main__":
    sys.exit(main())
