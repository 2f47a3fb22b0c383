"""adgen generate: images from a prompt file, through Triton (gRPC) or in-process.

Usage:
  adgen generate examples/prompts.txt -o out/ -n 4
  adgen generate prompts.jsonl -o out/ --url 10.0.0.5:8001 --url 10.0.0.6:8001 --concurrency 16
  adgen generate prompts.csv -o out/shard-1 --shard 1/4 --seed 7
  adgen generate prompts.txt -o out/ --engine local --model model_repository
  adgen generate prompts.txt -o out/ --size 256 --format webp --quality 85
  adgen generate prompts.txt -o out/ --style noto
  adgen generate prompts.txt -o out/ --dry-run

Rerunning the same command resumes. Exit code 1 when any prompt line or image failed
(see errors.jsonl); every good line is still generated. Prompts that name nothing the model
knows are drawn as the nearest known concept: one warning line says how many (not an error).
"""
from __future__ import annotations

import json
import re
from dataclasses import asdict

import click

from adgen.captions import FAMILIES
from adgen.latents import check_seed
from adgen.memory import keep_freed_memory
from adgen.serving.jobs.client import served_for_job
from adgen.serving.jobs.creatives import parse_sizes
from adgen.serving.jobs.grounding import THRESHOLD
from adgen.serving.jobs.job import ENGINES, JobConfig, JobError, count_plan, run_job
from adgen.serving.jobs.served import ServedConfigError

EPILOG = """Examples:

  adgen generate examples/prompts.txt -o out/ -n 4

  adgen generate prompts.jsonl -o out/ --url 127.0.0.1:8001 --url 127.0.0.1:9001

  adgen generate prompts.csv -o out/shard-0 --shard 0/2 --seed 7

  adgen generate prompts.txt -o out/ --engine local --model model_repository

  adgen generate prompts.txt -o out256/ --size 256 --format jpeg --quality 90

  adgen generate prompts.txt -o out-noto/ --style noto

  adgen generate prompts.jsonl -o out/ --creatives 300x250,728x90,160x600,320x50,1080x1080

Outputs: images/<id>/<id>-<k>-s<seed>.png (--size 256: -256px.png; --format webp/jpeg:
.webp/.jpg with the metadata as XMP), manifest.jsonl, errors.jsonl, summary.json,
contact_sheet.png; with --creatives also creatives/<id>/<id>-<k>-<W>x<H>.png and
creatives/contact_sheet_<W>x<H>.png. Rerunning the same command skips work already done.

Every manifest line has "grounding": {"concept", "score", "grounded"}: the known concept
the prompt is drawn as and how close it is (cosine similarity; grounded when >= %.2f).
""" % THRESHOLD


def _sizes(value: str | None) -> tuple:
    if not value:
        return ()
    return parse_sizes(value)


def parse_shard(value: str) -> tuple[int, int]:
    m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", value or "")
    if not m:
        raise JobError(f"--shard must look like i/n (e.g. 0/4), got {value!r}")
    i, n = int(m.group(1)), int(m.group(2))
    if not (n >= 1 and 0 <= i < n):
        raise JobError(f"--shard {value}: need 0 <= i < n")
    return i, n


@click.command("generate", epilog=EPILOG)
@click.argument("prompts", nargs=-1, required=True)
@click.option("-o", "--out", required=True, help="Output folder (created; reruns resume).")
@click.option("-n", "n", default=1, show_default=True, type=int,
              help="Images per prompt (a line's own `n` wins).")
@click.option("--seed", default=0, show_default=True, type=int,
              help="Base seed; each image's seed is derived from it, the id and k.")
@click.option("--batch-size", default=None, type=int,
              help="Images per request [default: the server's served config: its largest "
                   "preferred batch size (32 as `adgen repo build` writes it)].")
@click.option("--concurrency", default=None, type=int,
              help="Requests in flight [default: two per instance of the served model].")
@click.option("--url", "urls", multiple=True, default=("127.0.0.1:8001",), show_default=True,
              help="Triton gRPC endpoint; repeat for several servers (shared, failover).")
@click.option("--engine", type=click.Choice(ENGINES), default="triton", show_default=True,
              help="triton: a server over gRPC; local: onnxruntime in this process.")
@click.option("--model", default=None,
              help="--engine local: a model repository (adgen repo build) or export folder.")
@click.option("--model-name", default="adgen", show_default=True,
              help="Triton model to call (the default means adgen_256 with --size 256).")
@click.option("--size", default=64, show_default=True, type=int,
              help="Image size: 64, or 256 (the 64 px image upsampled 4x by adgen_256).")
@click.option("--format", "fmt", default="png", show_default=True,
              help="png (lossless, metadata in text chunks), webp or jpeg (lossy, metadata "
                   "as XMP; smaller and faster to write for large jobs).")
@click.option("--quality", default=None, type=int,
              help="webp/jpeg quality 1-100 (default 90).")
@click.option("--style", default=None, metavar="|".join(FAMILIES),
              help="Design family for every prompt: appends e.g. \", in noto emoji style\".")
@click.option("--concepts", default=None, metavar="FILE",
              help="Concept list prompts are grounded in [default: the release model's "
                   "concepts.jsonl].")
@click.option("--shard", default="0/1", show_default=True, help="Generate only shard i of n.")
@click.option("--timeout", "timeout_s", default=120.0, show_default=True, type=float,
              help="Seconds per request before it is retried.")
@click.option("--retries", default=6, show_default=True, type=int,
              help="Retries on UNAVAILABLE / DEADLINE_EXCEEDED.")
@click.option("--threads", default=0, type=int, help="--engine local: onnxruntime threads.")
@click.option("--creatives", default=None, metavar="SIZES",
              help="Also render finished creatives (headline + CTA) in these sizes, e.g. "
                   "300x250,728x90 (see `adgen compose`).")
@click.option("--brand-color", default=None, help="--creatives: CTA button colour (#1a2b3c).")
@click.option("--logo", default=None, type=click.Path(dir_okay=False),
              help="--creatives: a logo image (PNG with transparency) placed on each.")
@click.option("--no-progress", is_flag=True, help="No progress bar.")
@click.option("--dry-run", is_flag=True, help="Print the resolved config and the plan; "
              "generate nothing.")
def generate(prompts, out, n, seed, batch_size, concurrency, urls, engine, model, model_name,
             size, fmt, quality, style, concepts, shard, timeout_s, retries, threads, creatives, brand_color,
             logo, no_progress, dry_run):
    """Generate N images per prompt from .txt/.jsonl/.csv prompt files."""
    check_seed(seed)
    keep_freed_memory()  # this process is the job: its buffers are reused (adgen.memory)
    served_from = None
    if batch_size is None or concurrency is None:
        try:
            served, served_from = served_for_job(engine, urls, model, model_name, size)
        except ServedConfigError as exc:
            raise JobError(str(exc)) from None
        batch_size = served.batch if batch_size is None else batch_size
        concurrency = served.concurrency if concurrency is None else concurrency
    cfg = JobConfig(prompts=tuple(prompts), out=out, n=n, seed=seed, batch_size=batch_size,
                    concurrency=concurrency, urls=tuple(urls), engine=engine, model=model,
                    model_name=model_name, shard=parse_shard(shard), timeout_s=timeout_s,
                    retries=retries, threads=threads, progress=not no_progress,
                    creatives=_sizes(creatives), brand_color=brand_color, logo=logo,
                    size=size, format={"jpg": "jpeg"}.get(fmt.lower(), fmt.lower()),
                    quality=quality, style=style, concepts=concepts)
    cfg.check()
    if dry_run:
        click.echo(json.dumps({"config": {**asdict(cfg), "shard": list(cfg.shard)},
                               "batch_and_concurrency_from": served_from or "options",
                               **count_plan(cfg)}, indent=2))
        return
    result = run_job(cfg)
    s = result.summary
    click.echo(f"{s['images_generated']} images generated, {s['images_skipped_resume']} "
               f"already done, {s['images_failed']} failed, {s['prompt_lines_failed']} bad "
               f"prompt lines; {s['images_per_s']} images/s; results in {result.out}")
    if s.get("creatives"):
        c = s["creatives"]
        click.echo(f"{c['creatives_made']} creatives made, {c['creatives_skipped_resume']} "
                   f"already done, {c['creatives_failed']} failed; contact sheets: "
                   f"{', '.join(c['contact_sheets']) or 'none'}")
    if result.warning:  # prompts drawn as a concept they do not name: the exit code stays
        click.echo(result.warning, err=True)
    if not result.ok:
        click.echo(f"errors: {result.out / 'errors.jsonl'}", err=True)
        raise SystemExit(1)  # adgen.cli.main drops click Exit codes in non-standalone mode
