"""End-to-end job benchmark: `adgen generate` against a local Triton, PNGs on disk included.

Usage:
  python -m benchmarks.job                     # release model: 500 prompts x 4 = 2,000 images
  python -m benchmarks.job --model runs/00004-film/checkpoints/latest --rounds 3
  python -m benchmarks.job --quick --results-dir out/bench      # smoke run, ~64 images

In one run, against one server (the fused `adgen` model, committed config), interleaved:
  reference   the adgen asyncio gRPC client alone, the same images (fresh prompts x n, the
              same batch and concurrency), no files: what Triton delivers to a client
  job         the real CLI `adgen generate prompts.txt -o OUT -n 4 ...` in a subprocess,
              images/s from its summary.json (PNG encoding, atomic writes, manifest with
              fsync included); process wall and CPU seconds of client and server
  profile     one more job in-process with timers around each stage (request wait, PNG
              encode, file write, pixel hash, manifest/metadata, plan, contact sheet): where
              the time goes
  settings    one job per extra (batch, concurrency) pair: what the client settings buy
  png levels  zlib level 0/1/6 on the generated images: encode ms and bytes per image
Writes <results>/<machine>/job.{json,md,png}.
"""
from __future__ import annotations

import shutil
import statistics
import sys
import threading
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from benchmarks.common import command_line, md_table, part_parser, run_header, show, \
    write_part
from benchmarks.triton_local import JobLoad, LocalTriton, PromptPool, client_alone, \
    client_rate, run_generate, scratch_triton, tree_cpu_seconds


@dataclass(frozen=True)
class JobBenchConfig(JobLoad):
    """JobLoad's defaults: 500 prompts x 4 = 2,000 images a job, two rounds."""
    profile: bool = True
    settings: tuple = ((16, 4), (64, 4), (32, 8))  # extra (batch, concurrency), one job each
    quick: bool = False

    @classmethod
    def quick_config(cls, model=None) -> "JobBenchConfig":
        return cls(model=model, prompts=16, n=4, batch=8, concurrency=2, rounds=1,
                   settings=(), quick=True)


# ----------------------------------------------------------------------------- reference

# ----------------------------------------------------------------------------- the real CLI

def cli_job(triton: LocalTriton, pool: PromptPool, folder: Path, seed: int, batch: int,
            concurrency: int, cfg: JobBenchConfig) -> dict:
    """`adgen generate` over a fresh prompt file; its summary plus process/CPU figures."""
    folder.mkdir(parents=True, exist_ok=True)
    prompt_file = folder / "prompts.txt"
    prompt_file.write_text("\n".join(pool.take(cfg.prompts)) + "\n")
    out = folder / "out"
    row = run_generate(triton, [str(prompt_file), "-n", str(cfg.n), "--seed", str(seed),
                                "--batch-size", str(batch), "--concurrency", str(concurrency)],
                       out, "adgen", cfg.prompts * cfg.n, timeout_s=900)
    pngs = sum(1 for _ in (out / "images").rglob("*.png"))
    return {"batch": batch, "concurrency": concurrency, "png_files": pngs, **row}


# ----------------------------------------------------------------------------- profile

def _union(intervals: list[tuple[float, float]]) -> float:
    total, end = 0.0, float("-inf")
    for a, b in sorted(intervals):
        if b > end:
            total += b - max(a, end)
            end = b
    return total


class StageTimer:
    """Seconds spent per stage, summed over threads: wrap a function (call) or a generator
    function (steps: every next() is timed, as run_job plans lazily, a window at a time,
    interleaved with the requests)."""

    def __init__(self):
        self.spent: dict[str, float] = defaultdict(float)
        self.steps_taken: dict[str, int] = defaultdict(int)
        self._lock = threading.Lock()

    def _add(self, key: str, seconds: float, steps: int = 0) -> None:
        with self._lock:
            self.spent[key] += seconds
            self.steps_taken[key] += steps

    def call(self, fn, key: str):
        def wrapper(*a, **k):
            t = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                self._add(key, time.perf_counter() - t)
        return wrapper

    def steps(self, fn, key: str):
        def wrapper(*a, **k):
            it = iter(fn(*a, **k))
            while True:
                t = time.perf_counter()
                try:
                    x = next(it)
                except StopIteration:
                    return
                finally:
                    self._add(key, time.perf_counter() - t, 1)
                yield x
        return wrapper


def profiled_job(triton: LocalTriton, pool: PromptPool, folder: Path, cfg: JobBenchConfig) -> dict:
    """run_job in-process with timers around each stage (summed over writer threads)."""
    import adgen.serving.jobs.images as images
    import adgen.serving.jobs.job as job
    import adgen.serving.jobs.manifest as manifest
    from adgen.serving.jobs.client import AdgenClient
    timer = StageTimer()
    spent, timed, timed_iter = timer.spent, timer.call, timer.steps
    in_flight: list[tuple[float, float]] = []

    orig_infer = AdgenClient.infer

    async def infer(self, prompts, seeds):
        t = time.perf_counter()
        try:
            return await orig_infer(self, prompts, seeds)
        finally:
            in_flight.append((t, time.perf_counter()))

    patches = [(images, "png_bytes", timed(images.png_bytes, "png_encode")),
               (images, "atomic_write_bytes", timed(images.atomic_write_bytes, "file_write")),
               (manifest, "pixels_sha256", timed(manifest.pixels_sha256, "pixel_hash")),
               (manifest.Writer, "write", timed(manifest.Writer.write, "writer_total")),
               (job, "check_prompt_files", timed(job.check_prompt_files, "plan")),
               (job, "todo_tasks", timed_iter(job.todo_tasks, "plan")),
               (job, "write_contact_sheet", timed(job.write_contact_sheet, "contact_sheet")),
               (AdgenClient, "infer", infer)]
    saved = [(obj, name, getattr(obj, name)) for obj, name, _ in patches]
    folder.mkdir(parents=True, exist_ok=True)
    prompt_file = folder / "prompts.txt"
    prompt_file.write_text("\n".join(pool.take(cfg.prompts)) + "\n")
    jc = job.JobConfig(prompts=(str(prompt_file),), out=str(folder / "out"), n=cfg.n, seed=99,
                       batch_size=cfg.batch, concurrency=cfg.concurrency,
                       urls=(triton.grpc_url,), progress=False)
    cpu0, srv0 = time.process_time(), tree_cpu_seconds(triton.pid)
    try:
        for obj, name, fn in patches:
            setattr(obj, name, fn)
        t0 = time.perf_counter()
        result = job.run_job(jc)
        wall = time.perf_counter() - t0
    finally:
        for obj, name, fn in saved:
            setattr(obj, name, fn)
    client_cpu, server_cpu = time.process_time() - cpu0, tree_cpu_seconds(triton.pid) - srv0
    n = result.summary["images_generated"] or 1
    writer_other = spent["writer_total"] - spent["png_encode"] - spent["file_write"] \
        - spent["pixel_hash"]
    stages = {"request wait (summed over requests in flight)": sum(b - a for a, b in in_flight),
              "PNG encode (zlib level 6, iTXt chunks)": spent["png_encode"],
              "PNG file write (temp + rename)": spent["file_write"],
              "pixel sha256": spent["pixel_hash"],
              "manifest line + fsync + metadata": writer_other,
              "plan (stream prompt file, skip done images)": spent["plan"],
              "contact sheet": spent["contact_sheet"]}
    return {"images": n, "wall_s": wall, "images_per_s_summary": result.summary["images_per_s"],
            "wall_with_request_in_flight_s": _union(in_flight),
            "stages_s": stages, "stages_ms_per_image": {k: v * 1000 / n for k, v in stages.items()},
            "writer_threads_busy_mean": spent["writer_total"] / wall if wall else None,
            "client_cpu_s": client_cpu, "server_cpu_s": server_cpu,
            "client_cpu_ms_per_image": client_cpu * 1000 / n,
            "server_cpu_ms_per_image": server_cpu * 1000 / n}


def png_levels(folder: Path, limit: int = 64) -> dict:
    """zlib level vs encode time and size on real generated images (what a change would buy)."""
    import io

    from PIL import Image
    imgs = [Image.open(p).convert("RGB") for p in sorted(folder.rglob("*.png"))[:limit]]
    out = {}
    for level in (0, 1, 6):
        t0, size = time.perf_counter(), 0
        for im in imgs:
            buf = io.BytesIO()
            im.save(buf, format="PNG", compress_level=level)
            size += buf.tell()
        dt = time.perf_counter() - t0
        out[str(level)] = {"ms_per_image": dt * 1000 / max(1, len(imgs)),
                           "bytes_per_image": size / max(1, len(imgs))}
    return out


CREATIVE_SIZES = "300x250,728x90,160x600,320x50,1080x1080"  # the IAB-style set of the issue


def creatives_cost(out: Path, sizes: str = CREATIVE_SIZES) -> dict:
    """`adgen compose` over a finished job folder: per-creative layout/draw time (the compose
    timer of adgen.serving.jobs.creatives), whole-step wall and CPU per creative, bytes per size."""
    from adgen.serving.jobs.creatives import CreativeSpec, parse_sizes, run_creatives
    spec = CreativeSpec(parse_sizes(sizes)).check()
    t0, c0 = time.perf_counter(), time.process_time()
    result = run_creatives(out, spec)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    made = result.made or 1
    by_size: dict[str, list[int]] = defaultdict(list)
    for png in (out / "creatives").rglob("*.png"):
        if not png.name.startswith("contact_sheet"):
            by_size[png.stem.rsplit("-", 1)[-1]].append(png.stat().st_size)
    return {"sizes": sizes, "creatives": result.made, "failed": len(result.errors),
            "compose_ms_mean": result.summary()["compose_ms_mean"],
            "compose_ms_p50": result.summary()["compose_ms_p50"],
            "wall_ms_per_creative": wall * 1000 / made, "cpu_ms_per_creative": cpu * 1000 / made,
            "bytes_per_creative": {k: sum(v) / len(v) for k, v in sorted(by_size.items())}}


# ----------------------------------------------------------------------------- run

def run(cfg: JobBenchConfig, triton: LocalTriton | None = None, pool: PromptPool | None = None,
        log=print) -> dict:
    if triton is None:
        with scratch_triton(cfg.model, "adgen-bench-job-", log) as own:
            return run(cfg, own, pool, log)
    pool = pool or PromptPool(start=500_000)
    tmp = triton.work / "job"
    tmp.mkdir(exist_ok=True)
    images = cfg.prompts * cfg.n
    log(f"warm-up ({cfg.batch * cfg.concurrency} images)")
    client_rate(triton.grpc_url, "adgen", *pool.images(cfg.batch * cfg.concurrency, cfg.n),
                cfg.batch, cfg.concurrency)
    refs, jobs = [], []
    for r in range(cfg.rounds):
        log(f"round {r + 1}/{cfg.rounds}: adgen client alone and `adgen generate` "
            f"({images} images, batch {cfg.batch}, concurrency {cfg.concurrency})")
        steps = [lambda: refs.append(client_alone(triton, pool, "adgen", cfg)),
                 lambda: jobs.append(cli_job(triton, pool, tmp / f"round{r}", r, cfg.batch,
                                             cfg.concurrency, cfg))]
        for step in steps[::1 if r % 2 == 0 else -1]:  # alternate which goes first
            step()
        shutil.rmtree(tmp / f"round{r}" / "out" / "images", ignore_errors=True)
    profile = None
    if cfg.profile:
        log("profiled job (in-process, timers per stage)")
        profile = profiled_job(triton, pool, tmp / "profile", cfg)
        profile["png_levels"] = png_levels(tmp / "profile" / "out" / "images")
        log(f"creatives: {CREATIVE_SIZES} for every image of the profiled job")
        profile["creatives"] = creatives_cost(tmp / "profile" / "out")
    settings = []
    for b, c in cfg.settings:
        log(f"job with batch {b}, concurrency {c}")
        settings.append(cli_job(triton, pool, tmp / f"b{b}-c{c}", 7, b, c, cfg))
        shutil.rmtree(tmp / f"b{b}-c{c}", ignore_errors=True)
    med_job = statistics.median(j["images_per_s"] for j in jobs)
    med_ref = statistics.median(x["images_per_s"] for x in refs)
    return {**run_header(cfg), "images_per_job": images,
            "reference_client": refs, "jobs": jobs, "profile": profile, "settings": settings,
            "median_images_per_s": {"adgen_generate": med_job, "triton_client": med_ref},
            "ratios": {"e2e_vs_triton": med_job / med_ref}}


def markdown(p: dict, command: str) -> str:
    c = p["config"]
    lines = [f"# End-to-end job ({p['machine']['name']})", "", f"Command: `{command}`  ",
             f"Model: {p['model']}  ",
             f"Job: {c['prompts']} fresh prompts x {c['n']} = {p['images_per_job']} images, "
             f"batch {c['batch']}, concurrency {c['concurrency']}; load average at end "
             f"{', '.join(f'{x:.1f}' for x in p['load_average_at_end'])}", ""]
    lines += md_table(["round", "adgen client alone, images/s", "`adgen generate`, images/s",
                       "process wall s", "client CPU s", "server CPU s",
                       "server queue / compute ms per request (job)"],
                      [[i, f"{r['images_per_s']:.1f}", f"{j['images_per_s']:.1f}",
                        f"{j['process_wall_s']:.1f}", f"{j['client_cpu_s']:.1f}",
                        f"{j['server_cpu_s']:.1f}",
                        f"{j['metrics']['queue_us_per_request'] / 1000:.1f} / "
                        f"{j['metrics']['compute_infer_us_per_request'] / 1000:.1f}"]
                       for i, (r, j) in enumerate(zip(p["reference_client"], p["jobs"]), 1)],
                      "rrrrrrr")
    m = p["median_images_per_s"]
    lines += ["", f"Median: job {m['adgen_generate']:.1f} images/s vs client alone "
              f"{m['triton_client']:.1f} → **e2e_vs_triton {p['ratios']['e2e_vs_triton']:.2f}**"
              " (goal ≥ 0.7).", ""]
    if p.get("profile"):
        lines += profile_markdown(p["profile"]) + [""]
    if p["settings"]:
        lines += ["## Client settings (one job each)", ""]
        lines += md_table(["batch", "concurrency", "images/s"],
                          [[j["batch"], j["concurrency"], f"{j['images_per_s']:.1f}"]
                           for j in p["jobs"][:1] + p["settings"]], "rrr")
    return "\n".join(lines)


def profile_markdown(prof: dict) -> list[str]:
    lines = ["## Where the time goes (profiled in-process job)", "",
             f"{prof['images']} images in {prof['wall_s']:.1f} s "
             f"({prof['images_per_s_summary']:.1f} images/s); a request was in flight "
             f"{100 * prof['wall_with_request_in_flight_s'] / prof['wall_s']:.0f}% of the "
             f"wall time; writer threads busy {prof['writer_threads_busy_mean']:.2f} on "
             f"average; CPU per image: client {prof['client_cpu_ms_per_image']:.2f} ms, "
             f"server {prof['server_cpu_ms_per_image']:.2f} ms.", ""]
    lines += md_table(["stage", "seconds (summed over threads)", "ms per image"],
                      [[k, f"{v:.2f}", f"{prof['stages_ms_per_image'][k]:.3f}"]
                       for k, v in prof["stages_s"].items()], "-rr")
    lines += [""] + md_table(["PNG zlib level", "encode ms/image", "bytes/image"],
                             [[lvl, f"{v['ms_per_image']:.3f}", f"{v['bytes_per_image']:.0f}"]
                              for lvl, v in prof["png_levels"].items()], "rrr")
    cr = prof.get("creatives")
    if cr:
        lines += ["", f"Creatives ({cr['sizes']}) for every image of that job: "
                  f"{cr['creatives']} made, {cr['failed']} failed; layout + drawing "
                  f"{cr['compose_ms_mean']} ms mean / {cr['compose_ms_p50']} ms p50 per "
                  f"creative; the whole step (PNG encode, atomic write, manifest) "
                  f"{cr['wall_ms_per_creative']:.2f} ms wall, {cr['cpu_ms_per_creative']:.2f}"
                  " ms CPU per creative.", ""]
        lines += md_table(["size", "bytes per creative"],
                          [[k, f"{v:.0f}"] for k, v in cr["bytes_per_creative"].items()], "-r")
    return lines


def write(payload: dict, command: str, results_dir: Path | None) -> Path:
    from benchmarks.plots import plot_job
    return write_part("job", payload, command, results_dir, markdown, plot_job)


def main(argv=None) -> int:
    ap = part_parser(__doc__)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--quick", action="store_true", help="smoke run (~64 images)")
    args = ap.parse_args(argv)
    cfg = JobBenchConfig.quick_config(args.model) if args.quick else \
        JobBenchConfig(args.model, rounds=args.rounds)
    return show(write(run(cfg), command_line("job", argv), args.results_dir))


if __name__ == "__main__":
    sys.exit(main())
