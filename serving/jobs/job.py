"""Bulk generation: prompt files in, PNGs + manifest + contact sheet out (docs/design.md §5).

    result = run_job(JobConfig(prompts=("examples/prompts.txt",), out="out", n=4))

Output folder:
    images/<id>/<id>-<k>-s<seed>.png   atomic; `parameters` + `adgen` metadata (PNG text chunks;
                                        256 px: -256px.png; webp/jpeg: XMP, adgen.serving.jobs.images)
    manifest.jsonl                      one line per image, appended after its PNG exists,
                                        with its prompt's "grounding" (adgen.serving.jobs.grounding)
    errors.jsonl                        bad prompt lines and failed images of this run
    summary.json                        counts, images/s, request latency p50/p95/p99, the
                                        prompts drawn in this run that are not grounded
    contact_sheet.png                   the first images with their ids and prompts

Resume: images already in the manifest whose file still has the recorded sha256 (and the
same prompt and seed) are skipped, so a rerun writes nothing twice and a killed run loses at
most the batches in flight. A rerun resumes only with the model that drew the folder
(check_same_model), also when nothing is left to do. Any size in bounded memory: prompt
files are read as a stream (adgen.serving.jobs.prompt_stream), images are planned, checked against an on-disk index of the
manifest (adgen.serving.jobs.job_index, adgen.serving.jobs.job_resume) and dispatched a window at a time;
errors.jsonl is written as it goes. `shard=(i, n)` keeps the prompts whose id hashes to
i mod n (stable when the file is edited or reordered); give each shard its own output folder.
`style` (a design family) appends its phrase to every prompt (prompt_stream.styled).

Requests: `batch_size` images per request, `concurrency` requests in flight (asyncio). A
request the server rejects (INVALID_ARGUMENT) is retried image by image so one bad image
cannot fail its neighbours.
"""
from __future__ import annotations

import asyncio
import hashlib
import itertools
import json
import sqlite3
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from adgen.captions import FAMILIES
from adgen.contract import PUBLIC_MODEL, SIZES, public_spec_for_size
from adgen.errors import AdgenError
from adgen.serving.jobs.images import atomic_write_bytes, check_format, contact_sheet, has_symlink, \
    image_suffix, png_bytes, read_png
from adgen.serving.jobs.client import AdgenClient, ClientConfig, RequestError
from adgen.serving.jobs.creatives import CreativeSpec, job_images, parse_sizes, run_creatives
from adgen.serving.jobs.grounding import Tally, grounded_tasks, load_grounder
from adgen.serving.jobs.job_index import ErrorLog, ManifestIndex, Reservoir
from adgen.serving.jobs.job_resume import WINDOW, ImageTask, is_done, manifest_model, \
    read_manifest, remove_stale_temp_files, todo_tasks  # noqa: F401  (is_done, read_manifest: public)
from adgen.serving.jobs.prompt_stream import shard_of, stream_plan  # noqa: F401  (shard_of: public)
from adgen.serving.jobs.local_engine import LocalEngine
from adgen.serving.jobs.manifest import JobError, ModelChangedError, Writer, utc_now
from adgen.serving.jobs.prompts import MAX_N, LineError, PromptItem, iter_records, open_prompt_file

ENGINES = ("triton", "local")
ALL_DONE_PROBE_S = 5.0  # a rerun with every image done waits this long for a server


@dataclass(frozen=True)
class JobConfig:
    prompts: tuple[str, ...]
    out: str
    n: int = 1  # images per prompt unless the line says otherwise
    seed: int = 0  # base seed: image k of prompt id gets derive_seed(seed, id, k)
    batch_size: int = 16
    concurrency: int = 4
    urls: tuple[str, ...] = ("127.0.0.1:8001",)
    engine: str = "triton"
    model: str | None = None  # local engine: a model repository or generator export folder
    model_name: str = "adgen"  # the Triton model to call
    shard: tuple[int, int] = (0, 1)
    timeout_s: float = 120.0
    retries: int = 6
    threads: int = 0  # local engine onnxruntime threads (0 = all cores)
    contact_sheet_max: int = 128
    progress: bool = True
    # Finished creatives (adgen.serving.jobs.creatives): sizes like ((300, 250),), brand colour, logo.
    creatives: tuple = ()
    brand_color: str | None = None
    logo: str | None = None
    size: int = 64  # 256: model adgen_256 (upsampled); files <id>-<k>-s<seed>-256px.<ext>
    format: str = "png"  # adgen.serving.jobs.images.FORMATS; quality for webp/jpeg (None: default)
    quality: int | None = None
    style: str | None = None  # a design family (adgen.captions.FAMILIES) for every prompt
    concepts: str | None = None  # the concept list prompts are grounded in (None: release's)

    def check(self) -> None:
        if self.engine not in ENGINES:
            raise JobError(f"unknown engine {self.engine!r}; choose {' or '.join(ENGINES)}")
        if self.engine == "local" and not self.model:
            raise JobError("--engine local needs --model (a model repository or an export)")
        i, n = self.shard
        if not (n >= 1 and 0 <= i < n):
            raise JobError(f"shard {i}/{n} is invalid: need 0 <= i < n")
        for name, lo in (("n", 1), ("batch_size", 1), ("concurrency", 1)):
            if getattr(self, name) < lo:
                raise JobError(f"{name} must be >= {lo}")
        if self.n > MAX_N:
            raise JobError(f"n must be <= {MAX_N} images per prompt")
        if self.batch_size > 256:
            raise JobError("batch_size must be <= 256 (the server's max_batch_size)")
        if not self.prompts:
            raise JobError("no prompt file given")
        if self.size not in SIZES:
            raise JobError(f"size must be {' or '.join(map(str, SIZES))}, got {self.size}")
        check_format(self.format, self.quality)
        if self.style is not None and self.style not in FAMILIES:
            raise JobError(f"unknown style {self.style!r}; choose one of {', '.join(FAMILIES)}")
        if self.creatives:
            self.creative_spec()

    def creative_spec(self):
        return CreativeSpec(parse_sizes(self.creatives), self.brand_color, self.logo).check()


@dataclass
class JobResult:
    out: Path
    summary: dict
    errors: list = field(default_factory=list)
    warning: str | None = None  # one line for the user (prompts not grounded), not an error

    @property
    def ok(self) -> bool:
        return not self.errors


def check_prompt_files(cfg: JobConfig) -> None:
    """Every file opens (and a CSV has its header) before anything is written; JobError if
    no file has a single prompt line."""
    found = False
    for path in cfg.prompts:
        with open_prompt_file(path) as f:
            found = found or next(iter(iter_records(path, f)), None) is not None
    if not found:
        raise JobError(f"no prompts in {', '.join(cfg.prompts)}: every line is blank or a "
                       "comment")


def plan(cfg: JobConfig) -> tuple[list[PromptItem], list[ImageTask], list[dict]]:
    """This shard's items, image tasks and bad lines as lists (small jobs and tests; a job
    streams them, see run_job and count_plan)."""
    check_prompt_files(cfg)
    items, errors = [], []
    for x in stream_plan(cfg.prompts, cfg.n, cfg.shard, style=cfg.style):
        if isinstance(x, LineError):
            errors.append({"kind": "prompt", **x.to_json()})
        else:
            items.append(x)
    suffix = image_suffix(cfg.size, cfg.format)
    tasks = [ImageTask(it, k, it.seed_for(k, cfg.seed), suffix) for it in items
             for k in range(it.n)]
    return items, tasks, errors


def count_plan(cfg: JobConfig) -> dict:
    """The dry run: prompts, images and bad lines of this shard, streamed."""
    check_prompt_files(cfg)
    prompts = images = bad = 0
    for x in stream_plan(cfg.prompts, cfg.n, cfg.shard, style=cfg.style):
        if isinstance(x, LineError):
            bad += 1
        else:
            prompts += 1
            images += x.n
    return {"prompts": prompts, "images": images, "bad_lines": bad}


def make_engine(cfg: JobConfig):
    if cfg.engine == "local":
        return LocalEngine(cfg.model, threads=cfg.threads, size=cfg.size)
    name = public_spec_for_size(cfg.size).name if cfg.model_name == PUBLIC_MODEL \
        else cfg.model_name  # the default `adgen` means "the public model of that size"
    return AdgenClient(ClientConfig(urls=tuple(cfg.urls), model=name,
                                    timeout_s=cfg.timeout_s, retries=cfg.retries))


def _drawn_by(model: dict) -> tuple[tuple[str, str], tuple[str, str]]:
    """((generator sha256, its 'name (sha12)'), the same for the upsampler: ('', '') when
    there is none): what made a picture."""
    up = model.get("upsampler") or {}
    return ((str(model.get("sha256")), f"{model.get('name')} ({str(model.get('sha256'))[:12]})"),
            (str(up.get("sha256") or ""),
             f"{up.get('name')} ({str(up.get('sha256'))[:12]})" if up.get("sha256") else ""))


def check_same_model(out: Path, model: dict) -> None:
    """A rerun resumes only with the models that made the folder's images (the generator,
    and the upsampler when both runs are at 256 px): the same ids and seeds would otherwise
    keep the old pictures and add the new ones beside them. Another size is not another
    model: its images have their own paths (a 64 px folder may go on at 256 px)."""
    before = manifest_model(out)
    if before is None or not model.get("sha256"):
        return
    for (was, was_shown), (now, now_shown) in zip(_drawn_by(before), _drawn_by(model)):
        if was and now and was != now:
            raise ModelChangedError(
                f"{out} holds images of {was_shown} and this run's server serves "
                f"{now_shown}: write the new model's images to a new -o folder (a rerun only "
                "resumes with the same model)", before, model)


async def _generate(cfg: JobConfig, engine, todo: list[ImageTask], writer_factory, errors,
                    latencies, progress) -> dict:
    await engine.wait_ready(timeout_s=min(cfg.timeout_s, 60.0))
    model = await engine.model_info()
    check_same_model(Path(cfg.out), model)
    writer = writer_factory(model)
    sem = asyncio.Semaphore(cfg.concurrency)
    counts = {"generated": 0, "failed": 0, "unreachable": ""}

    async def run_batch(batch: list[ImageTask]) -> None:
        async with sem:
            if counts["unreachable"]:  # no server answered a whole retry cycle: fail fast;
                _fail(batch, counts["unreachable"], "UNAVAILABLE")  # a rerun resumes
                return
            t0 = time.perf_counter()
            try:
                images, url = await engine.infer([t.item.prompt for t in batch],
                                                 [t.seed for t in batch])
            except RequestError as exc:
                if len(batch) > 1:  # isolate the bad image(s); the others still succeed
                    for t in batch:
                        await run_batch_unlocked([t])
                    return
                _fail(batch, str(exc), getattr(exc, "status", ""))
                return
            except AdgenError as exc:  # ClientError: retries and failover exhausted
                counts["unreachable"] = str(exc)
                _fail(batch, str(exc), "UNAVAILABLE")
                return
            latency = (time.perf_counter() - t0) * 1000.0
        latencies.append(latency)
        await asyncio.to_thread(writer.write, batch, images, latency, url)
        counts["generated"] += len(batch)
        progress.update(len(batch))

    async def run_batch_unlocked(batch):
        t0 = time.perf_counter()
        try:
            images, url = await engine.infer([batch[0].item.prompt], [batch[0].seed])
        except AdgenError as exc:
            _fail(batch, str(exc), getattr(exc, "status", ""))
            return
        latency = (time.perf_counter() - t0) * 1000.0
        latencies.append(latency)
        await asyncio.to_thread(writer.write, batch, images, latency, url)
        counts["generated"] += 1
        progress.update(1)

    def _fail(batch, reason, status):
        for t in batch:
            errors.append({"kind": "image", "custom_id": t.custom_id, "id": t.item.id,
                           "k": t.k, "seed": t.seed, "file": t.item.source,
                           "line": t.item.line, "status": status, "reason": reason})
        counts["failed"] += len(batch)
        progress.update(len(batch))

    in_flight: set = set()
    try:  # batches are made as they are sent: bounded memory for a plan of any size
        for batch in _batches(todo, cfg.batch_size):
            while len(in_flight) >= 2 * cfg.concurrency:
                done, in_flight = await asyncio.wait(in_flight,
                                                     return_when=asyncio.FIRST_COMPLETED)
                for d in done:
                    d.result()
            in_flight.add(asyncio.ensure_future(run_batch(batch)))
            await asyncio.sleep(0)
        if in_flight:
            await asyncio.gather(*in_flight)
    finally:
        writer.close()
    return {"model": model, "generated": counts["generated"], "failed": counts["failed"]}


async def _served_if_reachable(cfg: JobConfig, out: Path) -> dict | None:
    """A rerun with nothing left to do: the served model (ModelChangedError if it is not
    the one that drew the folder, as for a rerun with work to do), or None when no server
    answers within a few seconds (there is nothing to draw, so the rerun still succeeds)."""
    engine = make_engine(cfg)
    try:
        async with engine:
            await engine.wait_ready(timeout_s=min(cfg.timeout_s, ALL_DONE_PROBE_S))
            model = await engine.model_info()
    except AdgenError:
        return None
    check_same_model(out, model)
    return model


def _batches(tasks, size: int):
    batch = []
    for t in tasks:
        batch.append(t)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def run_job(cfg: JobConfig) -> JobResult:
    """Runs (or resumes) a job; never raises for bad lines or failed images (see errors)."""
    cfg.check()
    started = utc_now()
    out = Path(cfg.out)
    if out.exists() and not out.is_dir():
        raise JobError(f"output {out} exists and is not a folder")
    check_prompt_files(cfg)
    try:
        return _run(cfg, out, started)
    except (OSError, sqlite3.Error) as exc:  # disk full, read-only, quota: one clear line
        what = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
        where = f" ({exc.filename})" if getattr(exc, "filename", None) else ""
        raise JobError(f"writing to {out} failed: {what}{where}; every image listed in "
                       "manifest.jsonl is complete - free space and rerun the same command "
                       "to resume") from None


def _run(cfg: JobConfig, out: Path, started: str) -> JobResult:
    out.mkdir(parents=True, exist_ok=True)
    index = ManifestIndex(out)
    if not index.finished_cleanly():  # else no run since the last sweep left a temp file:
        remove_stale_temp_files(out)  # skip a walk over every image folder of the job
    index.set_finished(False)
    errors = ErrorLog(out)
    try:
        index.sync()
        stats, sheet = {"prompts": 0, "planned": 0, "skipped": 0}, []
        todo = todo_tasks(cfg, out, index, errors, stats, sheet, WINDOW)
        latencies = Reservoir()
        gen = {"model": None, "generated": 0, "failed": 0}
        calls, retried = {}, 0
        grounding = Tally()
        t0 = time.perf_counter()
        first = next(todo, None)
        if first is not None:
            todo = grounded_tasks(itertools.chain([first], todo),
                                  lambda: load_grounder(cfg.concepts, False), grounding, WINDOW)
            engine = make_engine(cfg)
            progress = tqdm(unit="img", desc="generate", disable=not cfg.progress,
                            smoothing=0.1)

            async def main():
                async with engine:
                    return await _generate(cfg, engine, todo,
                                           lambda model: Writer(out, cfg.engine, model, index,
                                                                cfg.format, cfg.quality),
                                           errors, latencies, progress)
            try:
                gen = asyncio.run(main())
            finally:
                progress.close()
            calls, retried = getattr(engine, "calls", {}), getattr(engine, "retried", 0)
        elif stats["planned"]:  # every image is there: still ask what the server serves
            gen["model"] = asyncio.run(_served_if_reachable(cfg, out))
        wall = time.perf_counter() - t0
        index.sync()  # lines the writer could not record in order (after a torn line)
        sheet_file = write_contact_sheet(out, sheet, cfg.contact_sheet_max, index)
        creatives = None
        if cfg.creatives:  # every image of the plan that exists, in every size (resumable)
            made = run_creatives(out, cfg.creative_spec(), job_images(cfg, out, index),
                                 cfg.progress, index)
            for e in made.errors:
                errors.append(e)
            creatives = made.summary()
        summary = {
            "prompt_files": list(cfg.prompts), "shard": f"{cfg.shard[0]}/{cfg.shard[1]}",
            "engine": cfg.engine, "urls": list(cfg.urls) if cfg.engine == "triton" else [],
            "model": gen["model"], "prompts": stats["prompts"],
            "prompt_lines_failed": errors.counts.get("prompt", 0),
            "images_planned": stats["planned"], "images_skipped_resume": stats["skipped"],
            "images_generated": gen["generated"], "images_failed": gen["failed"],
            "wall_s": round(wall, 3),
            "images_per_s": round(gen["generated"] / wall, 3) if gen["generated"] else 0.0,
            "requests": len(latencies), "latency_ms": percentiles(latencies),
            "calls_per_url": calls, "retries": retried, "batch_size": cfg.batch_size,
            "concurrency": cfg.concurrency, "contact_sheet": sheet_file,
            "creatives": creatives, "grounding": grounding.summary(), "started_at": started,
            "finished_at": utc_now(), "config": {**asdict(cfg), "shard": list(cfg.shard)},
        }
        errors.finish()
        atomic_write_bytes(out / "summary.json", (json.dumps(summary, indent=2,
                                                             ensure_ascii=False)
                                                  + "\n").encode("utf-8"))
        index.set_finished(True)
    except BaseException:
        errors.discard()
        raise
    finally:
        index.close()
    return JobResult(out, summary, errors.first, grounding.warning())


def percentiles(values) -> dict:
    """p50/p95/p99 of a list or a Reservoir (a uniform sample past its size; exact mean)."""
    if not len(values):
        return {"p50": None, "p95": None, "p99": None, "mean": None}
    sample = values.values if isinstance(values, Reservoir) else values
    mean = values.total / values.count if isinstance(values, Reservoir) else None
    arr = np.asarray(sample, dtype=np.float64)
    return {"p50": round(float(np.percentile(arr, 50)), 3),
            "p95": round(float(np.percentile(arr, 95)), 3),
            "p99": round(float(np.percentile(arr, 99)), 3),
            "mean": round(float(arr.mean() if mean is None else mean), 3)}


def write_contact_sheet(out: Path, candidates: list[tuple], limit: int,
                        index: ManifestIndex) -> str | None:
    """The first `limit` generated images of the plan (among its first 4 x limit images:
    (custom_id, seed, prompt) in plan order), captioned with id and prompt."""
    entries = index.lookup([c[0] for c in candidates])
    chosen = []
    for custom_id, seed, prompt in candidates:
        e = entries.get(custom_id)
        if not e or e[1] != seed or has_symlink(out, e[2]) or not (out / e[2]).is_file():
            continue
        chosen.append((custom_id, prompt, e[2], e[4]))
        if len(chosen) >= limit:
            break
    if not chosen:
        return None
    # A rerun with the same sheet (same images, files, captions) keeps the file it made:
    # drawing 128 captions costs more CPU than checking 100,000 finished images.
    key = hashlib.sha256(json.dumps(chosen).encode()).hexdigest()
    sheet_path = out / "contact_sheet.png"
    if index.state("sheet") == key and sheet_path.is_file() and not sheet_path.is_symlink():
        return "contact_sheet.png"
    images = [read_png(out / rel)[0] for _, _, rel, _ in chosen]
    captions = [f"{custom_id}: {prompt}" for custom_id, prompt, _, _ in chosen]
    sheet = contact_sheet(images, captions, columns=8, title=f"adgen - {len(images)} images")
    atomic_write_bytes(sheet_path, png_bytes(sheet))
    index.set_state("sheet", key)
    return "contact_sheet.png"
