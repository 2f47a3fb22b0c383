"""Where an end-to-end job's time goes (benchmarks.job's profile step): `adgen generate`'s
run_job in-process with timers around each stage, the job's PNG writer beside Pillow's zlib
levels on the generated images, and `adgen compose` over the first images of the job.
"""
from __future__ import annotations

import os
import threading
import time
from collections import defaultdict
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from benchmarks.common import md_table
from benchmarks.prompt_pool import PromptPool
from benchmarks.triton_local import LocalTriton, tree_cpu_seconds

if TYPE_CHECKING:
    from benchmarks.job import JobBenchConfig


@contextmanager
def grounding_cache_at(path: Path):
    """ADGEN_GROUNDING_CACHE=path in this process for the block (jobs run in-process)."""
    before = os.environ.get("ADGEN_GROUNDING_CACHE")
    os.environ["ADGEN_GROUNDING_CACHE"] = str(path)
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("ADGEN_GROUNDING_CACHE", None)
        else:
            os.environ["ADGEN_GROUNDING_CACHE"] = before


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
               (manifest, "atomic_write_many", timed(manifest.atomic_write_many, "file_write")),
               (manifest, "pixels_sha256", timed(manifest.pixels_sha256, "pixel_hash")),
               (manifest.Writer, "write", timed(manifest.Writer.write, "writer_total")),
               (job, "check_prompt_files", timed(job.check_prompt_files, "plan")),
               (job, "todo_tasks", timed_iter(job.todo_tasks, "plan")),
               (job, "write_contact_sheet", timed(job.write_contact_sheet, "contact_sheet")),
               (AdgenClient, "infer", infer)]
    saved = [(obj, name, getattr(obj, name)) for obj, name, _ in patches]
    folder.mkdir(parents=True, exist_ok=True)
    prompt_file = folder / "prompts.txt"
    prompt_file.write_text("\n".join(pool.take(cfg.profile_prompts)) + "\n")
    jc = job.JobConfig(prompts=(str(prompt_file),), out=str(folder / "out"), n=cfg.n, seed=99,
                       batch_size=cfg.batch, concurrency=cfg.concurrency,
                       urls=(triton.grpc_url,), progress=False)
    cpu0, srv0 = time.process_time(), tree_cpu_seconds(triton.pid)
    try:
        for obj, name, fn in patches:
            setattr(obj, name, fn)
        t0 = time.perf_counter()
        with grounding_cache_at(folder / "grounding.sqlite"):  # cold, as the jobs
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
              "PNG encode (the job's writer, iTXt chunks)": spent["png_encode"],
              "PNG file write (temp + rename, a batch's folders opened once)": spent["file_write"],
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
    """Encode time and size on real generated images: the job's own writer
    (adgen.serving.jobs.images.png_bytes, "shipped") beside Pillow at zlib level 0/1/6."""
    import io

    import numpy as np
    from PIL import Image

    from adgen.serving.jobs.images import png_bytes
    imgs = [Image.open(p).convert("RGB") for p in sorted(folder.rglob("*.png"))[:limit]]
    arrays = [np.asarray(im) for im in imgs]
    out = {}
    for level in ("shipped", 0, 1, 6):
        t0, size = time.perf_counter(), 0
        for im, arr in zip(imgs, arrays):
            if level == "shipped":
                size += len(png_bytes(arr))
                continue
            buf = io.BytesIO()
            im.save(buf, format="PNG", compress_level=level)
            size += buf.tell()
        dt = time.perf_counter() - t0
        out[str(level)] = {"ms_per_image": dt * 1000 / max(1, len(imgs)),
                           "bytes_per_image": size / max(1, len(imgs))}
    return out


CREATIVE_SIZES = "300x250,728x90,160x600,320x50,1080x1080"  # the IAB-style set of the issue


def creatives_cost(out: Path, sizes: str = CREATIVE_SIZES, limit: int = 64) -> dict:
    """`adgen compose` over the first `limit` images of a finished job folder: per-creative
    layout/draw time (the compose timer of adgen.serving.jobs.creatives), whole-step wall and
    CPU per creative, bytes per size (per-creative figures: more images would only repeat
    them)."""
    import itertools

    from adgen.serving.jobs.creatives import CreativeSpec, folder_images, parse_sizes, \
        run_creatives
    from adgen.serving.jobs.job_index import ManifestIndex
    spec = CreativeSpec(parse_sizes(sizes)).check()
    index = ManifestIndex(out)
    try:
        index.sync()
        images = list(itertools.islice(folder_images(out, index), limit))
        t0, c0 = time.perf_counter(), time.process_time()
        result = run_creatives(out, spec, images, index=index)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    finally:
        index.close()
    made = result.made or 1
    by_size: dict[str, list[int]] = defaultdict(list)
    for png in (out / "creatives").rglob("*.png"):
        if not png.name.startswith("contact_sheet"):
            by_size[png.stem.rsplit("-", 1)[-1]].append(png.stat().st_size)
    return {"sizes": sizes, "images": len(images), "creatives": result.made,
            "failed": len(result.errors),
            "compose_ms_mean": result.summary()["compose_ms_mean"],
            "compose_ms_p50": result.summary()["compose_ms_p50"],
            "wall_ms_per_creative": wall * 1000 / made, "cpu_ms_per_creative": cpu * 1000 / made,
            "bytes_per_creative": {k: sum(v) / len(v) for k, v in sorted(by_size.items())}}



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
    lines += [""] + md_table(["PNG encoder (shipped, or Pillow at a zlib level)",
                              "encode ms/image", "bytes/image"],
                             [[lvl, f"{v['ms_per_image']:.3f}", f"{v['bytes_per_image']:.0f}"]
                              for lvl, v in prof["png_levels"].items()], "rrr")
    cr = prof.get("creatives")
    if cr:
        lines += ["", f"Creatives ({cr['sizes']}) for the first {cr.get('images', 'all')} images"
                  f" of that job: {cr['creatives']} made, {cr['failed']} failed; layout + drawing "
                  f"{cr['compose_ms_mean']} ms mean / {cr['compose_ms_p50']} ms p50 per "
                  f"creative; the whole step (PNG encode, atomic write, manifest) "
                  f"{cr['wall_ms_per_creative']:.2f} ms wall, {cr['cpu_ms_per_creative']:.2f}"
                  " ms CPU per creative.", ""]
        lines += md_table(["size", "bytes per creative"],
                          [[k, f"{v:.0f}"] for k, v in cr["bytes_per_creative"].items()], "-r")
    return lines
