"""256 px jobs: `adgen generate --size 256` end to end through a local Triton, beside 64 px.

Usage:
  python -m benchmarks.job256 --upsampler path/to/upsampler         # full: 1,000 images a job
  python -m benchmarks.job256 --quick --upsampler path/to/tiny-up --results-dir out/bench
  (in `adgen bench` this is the part `job256`; the upsampler is models/adgen-up256 when it
  exists, else --upsampler, else the part is skipped with the reason in its result files)

In one run, against one server (fused `adgen` and `adgen_256`, committed configs):
  jobs        the real CLI `adgen generate prompts.txt -o OUT -n 4 ...` in a subprocess:
              64 px PNG and 256 px PNG on the same prompts and seed (the same RAW_IMAGE),
              interleaved in `pairs` pairs (64, 256 | 256, 64 | ..., fresh prompts per pair),
              then 256 px WebP and JPEG (default quality) on fresh prompts (every job meets
              a cold text-embedding cache, as a real job does); images/s from each job's
              summary.json, client and server CPU seconds per image. The ratio
              `generate_256_png_vs_64_png` (under "ratios") is the median 256 px PNG images/s
              over the median 64 px PNG images/s of those pairs; `..._cpu` the same from
              CPU seconds (client + server) per image, which other load on the machine skews
              less than images/s
  client      the adgen gRPC client alone against adgen_256 (same batch, concurrency and
              image count, no files): what Triton delivers at 256 px
  in-process  the `--engine local` pipeline of the same repository (adgen.serving.runtime.backend.Pipeline,
              adgen_256's artifacts) without writing: ms per image for text encoder,
              latents, generator, upsampler and uint8 rounding
  encode      the 256 px PNG job's images (decoded, lossless) encoded again as PNG, WebP and
              JPEG with the job's own metadata: bytes and encode ms per image, same images
Verdict: each 256 px job against the bar (>= 50 images/s) and, when short, which side limits
it: compute (Triton alone is below the bar) or the job's encode/write side (named format).
The served upsampler's precision (its export manifest) is in the payload ("upsampler_precision").
Sized to take under 2 minutes on 2 cores (seconds per step under "seconds").
Writes <results>/<machine>/job256.{json,md,png}.
"""
from __future__ import annotations

import json
import os
import shutil
import statistics
import sys
import time
from collections import defaultdict
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from benchmarks.common import command_line, machine_info, part_parser, run_header, show, \
    write_part
from benchmarks.plots import figure
from benchmarks.prompt_pool import PromptPool
from benchmarks.triton_local import BenchError, JobLoad, LocalTriton, client_alone, client_rate, \
    run_generate, scratch_triton
from adgen.serving.jobs.images import image_suffix

BAR_IMAGES_PER_S = 50.0  # the bar for `adgen generate --size 256` on 2 cores through Triton
FORMATS = ("png", "webp", "jpeg")
MODEL_64, MODEL_256 = "adgen", "adgen_256"


@dataclass(frozen=True)
class Job256Config(JobLoad):
    prompts: int = 160  # x n = 640 images in each job of the 64/256 px PNG pairs: at 320
    # a 64 px job lasted under a second, and its fixed costs (server check, grounder load,
    # first request) moved the ratio by up to 0.13 between pairs of one run
    format_prompts: int = 32  # x n = 128 images in the WebP and JPEG jobs and client alone
    pairs: int = 3  # 64/256 px PNG pairs, alternating which size goes first
    rounds: int = 1  # 2: the WebP/JPEG/client jobs again in reverse order, medians reported
    split_images: int = 64  # in-process stage split
    encode_images: int = 32  # encode table
    threads: int = 0  # in-process pipeline threads (0 = onnxruntime's default: every core)
    bar: float = BAR_IMAGES_PER_S
    quick: bool = False

    @classmethod
    def quick_config(cls, model=None) -> "Job256Config":
        return cls(model=model, prompts=4, format_prompts=4, n=4, batch=8, concurrency=2,
                   pairs=1, rounds=1, split_images=16, encode_images=16, quick=True)


# ----------------------------------------------------------------------------- jobs

def generate_job(triton: LocalTriton, prompt_file: Path, out: Path, seed: int, size: int,
                 fmt: str, cfg: Job256Config) -> dict:
    """`adgen generate --size SIZE --format FMT` in a subprocess; its summary, CPU, bytes."""
    model = MODEL_256 if size == 256 else MODEL_64
    lines = sum(1 for ln in prompt_file.read_text().splitlines() if ln.strip())
    expected = lines * cfg.n
    row = run_generate(triton, [str(prompt_file), "-n", str(cfg.n), "--seed", str(seed),
                                "--batch-size", str(cfg.batch), "--concurrency",
                                str(cfg.concurrency), "--size", str(size), "--format", fmt],
                       out, model, expected)
    files = [p for p in (out / "images").rglob("*" + image_suffix(size, fmt))]
    if len(files) != expected:
        raise BenchError(f"adgen generate --size {size} --format {fmt}: {len(files)} files, "
                         f"expected {expected}")
    return {"size": size, "format": fmt, **row,
            "bytes_per_image": sum(p.stat().st_size for p in files) / expected,
            "client_cpu_ms_per_image": row["client_cpu_s"] * 1000 / expected,
            "server_cpu_ms_per_image": row["server_cpu_s"] * 1000 / expected}


# ----------------------------------------------------------------------------- split

def inprocess_split(repo: Path, pool: PromptPool, cfg: Job256Config) -> dict:
    """adgen_256's pipeline in this process (what `--engine local --size 256` runs), no
    files: seconds per stage over split_images fresh images in batches of cfg.batch."""
    from adgen.serving.runtime.backend import Pipeline, latents
    from adgen.serving.runtime.backend import to_uint8
    vdir = Path(repo) / MODEL_256 / "1"
    pipe = Pipeline(vdir / "text_encoder", vdir / "generator", threads=cfg.threads,
                    upsampler_dir=vdir / "upsampler")
    pipe.run(*pool.images(min(cfg.batch, cfg.split_images), cfg.n))  # warm-up
    prompts, seeds = pool.images(cfg.split_images, cfg.n)
    spent: dict[str, float] = defaultdict(float)

    def timed(key, fn, *args):
        t = time.perf_counter()
        out = fn(*args)
        spent[key] += time.perf_counter() - t
        return out
    t_all = time.perf_counter()
    for lo in range(0, len(prompts), cfg.batch):
        p, s = prompts[lo:lo + cfg.batch], np.asarray(seeds[lo:lo + cfg.batch], dtype=np.int64)
        emb = timed("text encoder (cached per prompt)", pipe.encode, p)
        z = timed("latents", latents, s, pipe.z_dim)
        raw = timed("generator (64 px)", pipe.generate, emb, z)
        big = timed("upsampler (64 -> 256 px)", pipe.upsample, raw)
        timed("uint8 rounding", to_uint8, big)
    wall = time.perf_counter() - t_all
    n = len(prompts)
    return {"images": n, "batch": cfg.batch, "threads": cfg.threads or None,
            "images_per_s": n / wall,
            "stages_ms_per_image": {k: v * 1000 / n for k, v in spent.items()}}


# ----------------------------------------------------------------------------- encode

def encode_costs(images256: Path, images64: Path | None, limit: int) -> dict:
    """Bytes and encode ms per image, PNG / WebP / JPEG (default quality), on the same 256 px
    images (the PNG job's, decoded) with the metadata each file carries; the 64 px PNGs of
    the same prompts for reference."""
    from PIL import Image

    from adgen.serving.jobs.images import DEFAULT_QUALITY, image_bytes, read_image_meta

    def load(folder: Path, suffix: str):
        out = []
        for p in sorted(folder.rglob("*" + suffix))[:limit]:
            with Image.open(p) as im:
                out.append((np.asarray(im.convert("RGB")), read_image_meta(p)))
        return out

    def measure(imgs, fmt):
        times, sizes = [], []
        image_bytes(imgs[0][0], fmt, None, imgs[0][1])  # warm-up (codec init)
        for arr, meta in imgs:
            t0 = time.perf_counter()
            data = image_bytes(arr, fmt, None, meta)
            times.append(time.perf_counter() - t0)
            sizes.append(len(data))
        return {"format": fmt, "quality": None if fmt == "png" else DEFAULT_QUALITY,
                "images": len(imgs), "ms_per_image": 1000 * statistics.fmean(times),
                "ms_p50": 1000 * statistics.median(times),
                "bytes_per_image": statistics.fmean(sizes)}

    big = load(images256, image_suffix(256, "png"))
    if not big:
        raise BenchError(f"no 256 px PNGs under {images256} to encode")
    rows = {f"{fmt} 256 px": {"size": 256, **measure(big, fmt)} for fmt in FORMATS}
    small = load(images64, image_suffix(64, "png")) if images64 else []
    if small:
        rows["png 64 px"] = {"size": 64, **measure(small, "png")}
    return rows


# ----------------------------------------------------------------------------- verdict

def verdict(job: dict, triton_256: float, encode_ms: float | None, bar: float,
            cores: int) -> dict:
    """Whether a 256 px job meets the bar and, when not, which side limits it."""
    rate = job["images_per_s"]
    server, client = job["server_cpu_ms_per_image"], job["client_cpu_ms_per_image"]
    out = {"images_per_s": rate, "bar": bar, "met": rate >= bar,
           "cpu_budget_ms_per_image_at_bar": 1000 * cores / bar,
           "server_cpu_ms_per_image": server, "client_cpu_ms_per_image": client,
           "encode_ms_per_image": encode_ms, "triton_alone_images_per_s": triton_256}
    if rate >= bar:
        out["limit"] = None
    elif triton_256 < bar:
        out["limit"] = "compute"
        out["why"] = (f"Triton alone (client, no files) delivers {triton_256:.1f} images/s at "
                      f"256 px, below the bar: the server's compute ({server:.1f} ms CPU per "
                      f"image) limits it")
    else:
        out["limit"] = f"encode/write ({job['format']})"
        enc = f"; {job['format']} encode alone {encode_ms:.1f} ms" if encode_ms else ""
        out["why"] = (f"Triton alone reaches {triton_256:.1f} images/s but the job "
                      f"{rate:.1f}: the client's {client:.1f} ms CPU per image{enc} shares "
                      f"the {cores} cores with the server's {server:.1f} ms")
    return out


# ----------------------------------------------------------------------------- run

def skipped(reason: str) -> dict:
    return {"machine": machine_info(), "skipped": reason}


def served_precision(repo: Path) -> str:
    """The precision of adgen_256's upsampler in a built repository (its export manifest)."""
    man = Path(repo) / MODEL_256 / "1" / "upsampler" / "manifest.json"
    try:
        return str(json.loads(man.read_text(encoding="utf-8")).get("precision") or "fp32")
    except (OSError, ValueError):
        return "unknown"


def png_pair_plan(cfg: Job256Config, pool: PromptPool, tmp: Path) -> list[tuple]:
    """(label, prompt file, size, format) of the 64/256 px PNG pairs: fresh prompts per
    pair, both sizes on the same file, which size goes first alternating."""
    plan = []
    for k in range(cfg.pairs):
        same = tmp / f"pair{k}-prompts.txt"
        same.write_text("\n".join(pool.take(cfg.prompts)) + "\n")
        pair = [("64 px png", same, 64, "png"), ("256 px png", same, 256, "png")]
        plan += pair if k % 2 == 0 else pair[::-1]
    return plan


def run(cfg: Job256Config, triton: LocalTriton, pool: PromptPool | None = None, log=print,
        upsampler_note: str = "") -> dict:
    if not triton.has_model(MODEL_256):
        return skipped("the model repository has no adgen_256 (no upsampler)")
    pool = pool or PromptPool(start=700_000)
    tmp = triton.work / "job256"
    tmp.mkdir(exist_ok=True)
    lap, t_lap = {}, time.perf_counter()

    def done(step: str) -> None:
        nonlocal t_lap
        now = time.perf_counter()
        lap[step] = round(lap.get(step, 0.0) + now - t_lap, 1)
        t_lap = now
    log(f"loading {MODEL_256} ({triton.load(MODEL_256):.1f} s)")
    warm = cfg.batch * cfg.concurrency
    for model in (MODEL_64, MODEL_256):
        client_rate(triton.grpc_url, model, *pool.images(warm, cfg.n), cfg.batch,
                    cfg.concurrency)
    done("load and warm-up")
    runs: dict[str, list[dict]] = defaultdict(list)
    refs = []
    fmt_cfg = replace(cfg, prompts=cfg.format_prompts)

    def job_step(label, f, size, fmt, tag, c):
        folder = tmp / f"{tag}-{label.replace(' ', '-')}"
        return lambda: runs[label].append(generate_job(triton, f, folder / "out", 99, size,
                                                       fmt, c))
    steps = [(label, job_step(label, f, size, fmt, f"p{i // 2}", cfg), cfg.prompts)
             for i, (label, f, size, fmt) in enumerate(png_pair_plan(cfg, pool, tmp))]
    for r in range(cfg.rounds):
        others = []
        for fmt in FORMATS[1:]:
            fresh = tmp / f"r{r}-prompts-{fmt}.txt"
            fresh.write_text("\n".join(pool.take(cfg.format_prompts)) + "\n")
            others.append((f"256 px {fmt}", job_step(f"256 px {fmt}", fresh, 256, fmt,
                                                     f"r{r}", fmt_cfg), cfg.format_prompts))
        others.append(("Triton client alone, 256 px", lambda: refs.append(
            client_alone(triton, pool, MODEL_256, fmt_cfg)), cfg.format_prompts))
        steps += others[::1 if r % 2 == 0 else -1]  # alternate the order
    for label, step, prompts in steps:
        log(f"{label} ({prompts * cfg.n} images, batch {cfg.batch}, "
            f"concurrency {cfg.concurrency})")
        step()
        done("jobs" if label != "Triton client alone, 256 px" else "client alone")
    keep = tmp / f"p{cfg.pairs - 1}-256-px-png"  # encode table: the last 256 px PNG job
    log(f"encode: png/webp/jpeg on {min(cfg.prompts * cfg.n, cfg.encode_images)} of those "
        "256 px images")
    encode = encode_costs(keep / "out" / "images",
                          tmp / f"p{cfg.pairs - 1}-64-px-png" / "out" / "images",
                          cfg.encode_images)
    for folder in tmp.iterdir():
        if folder.is_dir():
            shutil.rmtree(folder, ignore_errors=True)
    done("encode")
    log(f"in-process `--engine local` pipeline at 256 px, no files ({cfg.split_images} "
        "images): time per stage")
    split = inprocess_split(triton.repo, pool, cfg)
    done("in-process split")
    jobs = {label: rows for label, rows in runs.items()}
    med = {label: statistics.median(j["images_per_s"] for j in rows)
           for label, rows in jobs.items()}
    triton_256 = statistics.median(x["images_per_s"] for x in refs)
    cores = os.cpu_count() or 1
    verdicts = {}
    for fmt in FORMATS:
        label = f"256 px {fmt}"
        row = dict(jobs[label][len(jobs[label]) // 2], images_per_s=med[label])
        verdicts[fmt] = verdict(row, triton_256, encode[f"{fmt} 256 px"]["ms_per_image"],
                                cfg.bar, cores)
    best = max(FORMATS, key=lambda f: med[f"256 px {f}"])
    ratio = med["256 px png"] / med["64 px png"]
    pair_ratios = [b["images_per_s"] / a["images_per_s"]
                   for a, b in zip(jobs["64 px png"], jobs["256 px png"])]
    cpu = {label: statistics.median(j["client_cpu_ms_per_image"] + j["server_cpu_ms_per_image"]
                                    for j in jobs[label]) for label in ("64 px png", "256 px png")}
    return {**run_header(cfg), "upsampler": upsampler_note,
            "upsampler_precision": served_precision(triton.repo),
            "images_per_job": cfg.prompts * cfg.n,
            "images_per_format_job": cfg.format_prompts * cfg.n,
            "jobs": jobs, "triton_client_256": refs,
            "median_images_per_s": {**med, "triton client alone 256 px": triton_256},
            "ratios": {"generate_256_png_vs_64_png": ratio,
                       # what the images/s ratio is when the job has the cores to itself:
                       # CPU (client + server) per 64 px image over that per 256 px image
                       "generate_256_png_vs_64_png_cpu": cpu["64 px png"] / cpu["256 px png"]},
            "cpu_ms_per_image": cpu,
            "png_pair_ratios": pair_ratios, "ratio_256_png_vs_64_png": ratio,
            "inprocess_256": split, "encode": encode, "bar": cfg.bar, "verdict": verdicts,
            "best_format": best, "bar_met_by": [f for f in FORMATS if verdicts[f]["met"]],
            "seconds": {**lap, "total": round(sum(lap.values()), 1)}}


def markdown(p: dict, command: str) -> str:
    lines = [f"# 256 px jobs ({p['machine']['name']})", "", f"Command: `{command}`  "]
    if "skipped" in p:
        return "\n".join(lines + ["", f"Not measured: {p['skipped']}."])
    c = p["config"]
    lines += [f"Model: {p['model']}; upsampler: {p['upsampler']} "
              f"({p.get('upsampler_precision', 'fp32')})  ",
              f"64/256 px PNG: {c['pairs']} pair(s) of jobs of {p['images_per_job']} images "
              f"({c['prompts']} prompts x {c['n']}), same prompts and seed within a pair, "
              f"which size goes first alternating; WebP/JPEG (default quality) and the client "
              f"alone: {p['images_per_format_job']} images on fresh prompts, {c['rounds']} "
              f"round(s); batch {c['batch']}, concurrency {c['concurrency']}; load average "
              f"at end {', '.join(f'{x:.1f}' for x in p['load_average_at_end'])}; "
              f"{p['seconds']['total']:.0f} s", "",
              "| job (`adgen generate` through Triton) | images/s | bytes/image | client CPU "
              "ms/image | server CPU ms/image | server compute ms/request |",
              "|---|---:|---:|---:|---:|---:|"]
    for label, rows in p["jobs"].items():
        j = rows[len(rows) // 2]
        lines.append(f"| {label} | {p['median_images_per_s'][label]:.1f} | "
                     f"{j['bytes_per_image']:.0f} | {j['client_cpu_ms_per_image']:.2f} | "
                     f"{j['server_cpu_ms_per_image']:.2f} | "
                     f"{j['metrics']['compute_infer_us_per_request'] / 1000:.1f} |")
    t = p["median_images_per_s"]["triton client alone 256 px"]
    lines += [f"| Triton client alone, 256 px (no files) | {t:.1f} | | | | |", "",
              f"256 px PNG vs 64 px PNG on the same prompts (`generate_256_png_vs_64_png`): "
              f"{p['ratios']['generate_256_png_vs_64_png']:.2f}× the images/s (per pair: "
              f"{', '.join(f'{r:.2f}' for r in p['png_pair_ratios'])}); by CPU "
              f"(client + server) per image, which the machine's other load does not skew: "
              f"{p['ratios']['generate_256_png_vs_64_png_cpu']:.2f} "
              f"(`generate_256_png_vs_64_png_cpu`: {p['cpu_ms_per_image']['64 px png']:.1f} vs "
              f"{p['cpu_ms_per_image']['256 px png']:.1f} ms).", "",
              f"## Bar: ≥ {p['bar']:.0f} images/s at 256 px", "",
              "| format | images/s | met | limit |", "|---|---:|---|---|"]
    for fmt, v in p["verdict"].items():
        lines.append(f"| {fmt} | {v['images_per_s']:.1f} | {'yes' if v['met'] else '**no**'} | "
                     f"{v.get('why') or '—'} |")
    budget = next(iter(p["verdict"].values()))["cpu_budget_ms_per_image_at_bar"]
    lines += ["", f"CPU budget at the bar on {p['machine']['cpus']} cores: {budget:.1f} ms "
              "per image (client + server together).", "",
              "## Where the time goes", "",
              f"`--engine local` pipeline of adgen_256 in-process, no files "
              f"({p['inprocess_256']['images']} images, batch {p['inprocess_256']['batch']}): "
              f"{p['inprocess_256']['images_per_s']:.1f} images/s.", "",
              "| stage | ms per image |", "|---|---:|"]
    lines += [f"| {k} | {v:.2f} |" for k, v in p["inprocess_256"]["stages_ms_per_image"].items()]
    lines += ["", "Encoding the same images (the job's metadata included):", "",
              "| format | quality | images | encode ms/image (mean) | p50 | bytes/image |",
              "|---|---:|---:|---:|---:|---:|"]
    for label, e in p["encode"].items():
        lines.append(f"| {label} | {e['quality'] or '—'} | {e['images']} | "
                     f"{e['ms_per_image']:.2f} | {e['ms_p50']:.2f} | "
                     f"{e['bytes_per_image']:.0f} |")
    return "\n".join(lines)


def plot(p: dict, path: Path) -> None:
    if "skipped" in p:
        return
    with figure(path, 2, (12, 4), dpi=110) as (ax1, ax2):
        names = list(p["median_images_per_s"]) + ["in-process 256 px (no files)"]
        values = list(p["median_images_per_s"].values()) + [p["inprocess_256"]["images_per_s"]]
        ax1.barh(names, values, color="tab:blue")
        ax1.axvline(p["bar"], color="tab:red", ls="--", label=f"bar {p['bar']:.0f} images/s")
        ax1.set_xlabel("images/s")
        ax1.set_title(f"256 px vs 64 px ({p['machine']['name']})")
        ax1.legend(fontsize=8)
        stages = p["inprocess_256"]["stages_ms_per_image"]
        left = 0.0
        for k, v in stages.items():
            ax2.barh(["compute (in-process)"], [v], left=left, label=k)
            left += v
        enc = {k: v["ms_per_image"] for k, v in p["encode"].items() if v["size"] == 256}
        ax2.barh(list(enc), list(enc.values()), color="tab:gray")
        ax2.set_xlabel("ms per image (256 px; encode: one core)")
        ax2.set_title("compute stages vs encode")
        ax2.legend(fontsize=7)
        for ax in (ax1, ax2):
            ax.grid(alpha=0.3, axis="x")


def write(payload: dict, command: str, results_dir: Path | None) -> Path:
    return write_part("job256", payload, command, results_dir, markdown, plot)


def main(argv=None) -> int:
    ap = part_parser(__doc__, "generator checkpoint or ONNX export folder")
    ap.add_argument("--upsampler", default=None, help="upsampler checkpoint or export folder "
                    "(default: models/adgen-up256 when it exists)")
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--quick", action="store_true", help="smoke run (16 images a job)")
    args = ap.parse_args(argv)
    from benchmarks.backends import resolve_bench_upsampler
    cfg = Job256Config.quick_config(args.model) if args.quick else \
        Job256Config(args.model, rounds=args.rounds)
    artifact, note = resolve_bench_upsampler(args.upsampler)
    if artifact is None:
        payload = skipped(note)
    else:
        with scratch_triton(cfg.model, "adgen-bench-job256-", upsampler=artifact.folder) as t:
            payload = run(cfg, t, upsampler_note=note)
    return show(write(payload, command_line("job256", argv), args.results_dir))


if __name__ == "__main__":
    sys.exit(main())
