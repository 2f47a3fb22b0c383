"""adgen bench: backends -> serving -> job in ONE run, result files and a summary.

Usage:
  adgen bench                                  # full run on the release model (<= 10 min, 2 cores)
  adgen bench --quick                          # smoke run (< 90 s), results in artifacts/bench-quick
  adgen bench --model runs/00004-film/checkpoints/latest --only backends,serving
  adgen bench --dry-run                        # print the resolved config and the plan
  adgen bench --only backends,job256 --upsampler path/to/upsampler   # 256 px figures only

Parts (each writes <results>/<machine>/<part>.{json,md,png}):
  backends  benchmarks/backends.py: onnxruntime fp32/int8 (+TensorRT) at batch 1/16/64/256,
            PyTorch eager at 1 and 64, text encoder, counted FLOPs, the GEMM ceilings sampled
            between the rows (each efficiency divides by the ceiling next to it)
  serving   benchmarks/serving.py: local Triton, in-process vs Triton, perf_analyzer sweeps,
            dynamic-batching sweep
  job       benchmarks/job.py: `adgen generate` of 2,000 images vs the job's requests alone
            (same dispatcher, client, batch, concurrency and server; no files)
  job256    benchmarks/job256.py: `adgen generate --size 256` (PNG, WebP, JPEG) beside the
            64 px job on the same prompts, Triton alone at 256, the in-process stage split,
            bytes and encode time per format; the >= 50 images/s bar and what limits it
The 256 px rows (upsampler in backends, job256) use --upsampler, else the release upsampler
models/adgen-up256 when it exists, else they are skipped with the reason written down.
Then <results>/summary.json (the ratios of this run, the machine, the command, each part's
wall seconds beside its budget: PART_BUDGET_S) and <results>/<machine>/summary.{md,png}.
Serving, job and job256 share one server. Each row is repeated until its last calls are flat
(or capped); a ratio physics forbids (a share of a ceiling above 1, a job faster than its
requests alone) is reported as a measurement error, never as a result.
"""
from __future__ import annotations

import json
import shlex
import time
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

import click

from benchmarks.common import GOALS, PHYSICAL_LIMITS, RESULTS_DIR, machine_name, scrub, \
    write_part
from benchmarks.summary import PART_BUDGET_S, PARTS, README_BEGIN, README_END, \
    estimate_seconds, impossible, propose_readme, summarize, summary_markdown, write_summary
from benchmarks.prompt_pool import PromptPool
from benchmarks.triton_local import BenchError, scratch_triton

QUICK_RESULTS = "artifacts/bench-quick"
# re-exported: the tests and other scripts name them through this module
__all__ = ["GOALS", "PHYSICAL_LIMITS", "PART_BUDGET_S", "PARTS", "README_BEGIN", "README_END",
           "impossible", "propose_readme", "summarize", "summary_markdown", "bench"]
EPILOG = """Examples:

  adgen bench

  adgen bench --quick

  adgen bench --model runs/00004-film/checkpoints/latest --only serving,job

  adgen bench --dry-run

The full run takes at most 10 minutes on 2 cores (`--dry-run` prints the budget of each
part; summary.json records what each took) and prints each step. Without a release model
(models/adgen-emoji64) an untrained generator of the release architecture is used (same
FLOPs) and the results say so. GPU machines: benchmarks/gpu.sh.
"""


@dataclass(frozen=True)
class BenchConfig:
    model: str | None = None  # checkpoint folder; None = release model (or untrained stand-in)
    quick: bool = False
    parts: tuple[str, ...] = PARTS
    results_dir: str = str(RESULTS_DIR)
    threads: int = 0
    upsampler: str | None = None  # None = the release upsampler when it exists


def parse_parts(value: str | None) -> tuple[str, ...]:
    if not value:
        return PARTS
    parts = tuple(p.strip() for p in value.split(",") if p.strip())
    bad = [p for p in parts if p not in PARTS]
    if bad or not parts:
        raise BenchError(f"--only takes a comma list of {', '.join(PARTS)}; got {value!r}")
    return tuple(p for p in PARTS if p in parts)  # always in pipeline order


def resolve_model(model: str | None) -> tuple[Path, str]:
    """(checkpoint path, note) — the release model, or an untrained release-architecture one."""
    from adgen.paths import artifacts_dir, release_model_dir
    if model:
        path = Path(model)
        if not path.exists():
            raise BenchError(f"--model {model}: no such checkpoint")
        return path, f"given: {model}"
    if (release_model_dir() / "generator.safetensors").is_file():
        return release_model_dir(), "release model models/adgen-emoji64"
    stand_in = artifacts_dir() / "bench" / "untrained-film"
    if not (stand_in / "generator.safetensors").is_file():
        import torch

        from adgen.training.checkpoint import save_generator
        from adgen.training.networks import build_generator
        torch.manual_seed(0)
        save_generator(build_generator("film").eval(), {}, stand_in)
    return stand_in, ("untrained FiLM generator with the release architecture "
                      "(no release model yet: speed only, same FLOPs)")


class Laps:
    """Wall seconds per named step, each from the end of the previous one."""

    def __init__(self):
        self.seconds: dict[str, float] = {}
        self._t = time.perf_counter()

    def __call__(self, name: str) -> None:
        now = time.perf_counter()
        self.seconds[name] = round(self.seconds.get(name, 0.0) + now - self._t, 1)
        self._t = now


def run_bench(cfg: BenchConfig, command: str, log) -> dict:
    from benchmarks import backends, job, job256, serving
    started, t0 = datetime.now(timezone.utc), time.perf_counter()
    if "serving" in cfg.parts:
        serving.check_perf_analyzer()  # fail in seconds, not after the backends part
    model, note = resolve_model(cfg.model)
    results = Path(cfg.results_dir)
    parts: dict[str, dict] = {}
    files: dict[str, str] = {}
    lap = Laps()
    lap("setup")
    if "backends" in cfg.parts:
        log("backends: eager vs onnxruntime (+TensorRT) at each batch, GEMM ceilings between "
            "the rows")
        bcfg = dict(batches=[1, 4], rule=backends.QUICK_RULE, precisions=("fp32",),
                    eager_batches=None) if cfg.quick else \
            dict(batches=[1, 16, 64, 256], rule=backends.FULL_RULE, precisions=("fp32", "int8"))
        p = backends.run(str(model), threads=cfg.threads, quick=cfg.quick,
                         upsampler=cfg.upsampler,
                         upsampler_batches=(1, 4) if cfg.quick else backends.UPSAMPLER_BATCHES,
                         log=log, **bcfg)
        p["model_note"] = note
        path = write_part("backends", p, command, results, backends.markdown, backends.plot)
        parts["backends"], files["backends"] = p, str(path.relative_to(results))
        lap("backends")
    up, up_note = None, ""
    if "job256" in cfg.parts:
        up, up_note = backends.resolve_bench_upsampler(cfg.upsampler)
        if up is None:
            log(f"job256: skipped: {up_note}")
            p = job256.skipped(up_note)
            p["model"] = note
            path = job256.write(p, command, results)
            parts["job256"], files["job256"] = p, str(path.relative_to(results))
        lap("job256")
    if "serving" in cfg.parts or "job" in cfg.parts or up is not None:
        pool = PromptPool()
        with scratch_triton(model, "adgen-bench-", log,
                            upsampler=up.folder if up else False) as triton:
            lap("server_start")
            if "serving" in cfg.parts:
                log("serving: in-process vs Triton, perf_analyzer, dynamic batching")
                scfg = serving.ServingConfig.quick_config(str(model)) if cfg.quick else \
                    serving.ServingConfig(str(model), threads=cfg.threads)
                p = serving.run(scfg, triton, pool, log)
                p["model"] = note
                path = serving.write(p, command, results)
                parts["serving"], files["serving"] = p, str(path.relative_to(results))
                lap("serving")
            if "job" in cfg.parts:
                log("job: `adgen generate` end to end vs the job's requests alone")
                jcfg = job.JobBenchConfig.quick_config(str(model)) if cfg.quick else \
                    job.JobBenchConfig(str(model))
                p = job.run(jcfg, triton, log=log)  # prompts of its own
                p["model"] = note
                path = job.write(p, command, results)
                parts["job"], files["job"] = p, str(path.relative_to(results))
                lap("job")
            if up is not None:
                log("job256: `adgen generate --size 256` (png, webp, jpeg) beside 64 px, "
                    "Triton alone, in-process split, encode costs")
                j2 = job256.Job256Config.quick_config(str(model)) if cfg.quick else \
                    job256.Job256Config(str(model), threads=cfg.threads)
                p = job256.run(j2, triton, pool, log, upsampler_note=up_note)
                p["model"] = note
                path = job256.write(p, command, results)
                parts["job256"], files["job256"] = p, str(path.relative_to(results))
                lap("job256")
        lap("server_stop")
    summary = summarize(parts, cfg, note, command, started, time.perf_counter() - t0, files,
                        lap.seconds)
    write_summary(summary, parts, results)
    return summary


@click.command("bench", epilog=EPILOG)
@click.option("--quick", is_flag=True, help="Smoke run on tiny settings (< 90 s); results go to "
              f"{QUICK_RESULTS} unless --results-dir is given.")
@click.option("--model", default=None, help="Generator checkpoint folder (default: the release "
              "model, else an untrained stand-in of the same architecture).")
@click.option("--only", default=None, help="Comma list of parts: backends,serving,job,job256.")
@click.option("--upsampler", default=None, help="Upsampler checkpoint or export folder for the "
              "256 px rows (default: models/adgen-up256 when it exists, else those rows are "
              "skipped).")
@click.option("--results-dir", default=None, help="Where result files go (default: "
              "benchmarks/results, or artifacts/bench-quick with --quick).")
@click.option("--threads", default=0, type=int, help="onnxruntime/torch threads in this "
              "process (0 = every core).")
@click.option("--dry-run", is_flag=True, help="Print the resolved config and plan; run nothing.")
def bench(quick, model, only, results_dir, threads, upsampler, dry_run):
    """Latency and throughput: backends, Triton serving and the whole job, in one run."""
    from benchmarks.common import ROOT
    results_given = results_dir
    if results_dir is None:
        results_dir = str(ROOT / QUICK_RESULTS) if quick else str(RESULTS_DIR)
    results_dir = str(Path(results_dir).resolve())
    cfg = BenchConfig(model=model, quick=quick, parts=parse_parts(only),
                      results_dir=results_dir, threads=threads, upsampler=upsampler)
    if dry_run:
        from adgen.paths import release_model_dir, release_upsampler_dir
        released = (release_model_dir() / "generator.safetensors").is_file()
        est = {"quick run": 90} if quick else estimate_seconds(cfg.parts)
        click.echo(json.dumps({"config": asdict(cfg), "machine": machine_name(),
                               "model": model or ("release model models/adgen-emoji64"
                                                  if released else "untrained stand-in of the "
                                                  "release architecture (no release model)"),
                               "upsampler": upsampler or (
                                   "release upsampler models/adgen-up256"
                                   if any((release_upsampler_dir() / f).is_file() for f in
                                          ("upsampler.safetensors", "upsampler.onnx"))
                                   else "none: the 256 px rows are skipped"),
                               "writes": [f"{results_dir}/{machine_name()}/{p}.json|md|png"
                                          for p in cfg.parts] + [f"{results_dir}/summary.json"],
                               "estimated_seconds": est,
                               "estimated_minutes": round(sum(est.values()) / 60, 1)},
                              indent=2))
        return
    if threads < 0:
        raise BenchError("--threads must be >= 0")
    given = [("--quick", quick), ("--model", model), ("--only", only),
             ("--upsampler", upsampler),
             ("--results-dir", results_given), ("--threads", threads or None)]
    command = " ".join(["adgen bench"] + [
        flag if value is True else f"{flag} {shlex.quote(str(value))}"
        for flag, value in given if value])
    t0 = time.perf_counter()

    def log(msg: str) -> None:
        click.echo(f"[bench {time.perf_counter() - t0:6.0f}s] {msg}", err=True)

    log(f"parts: {', '.join(cfg.parts)}; results in {results_dir}" + (
        "" if quick else f"; about {sum(estimate_seconds(cfg.parts).values()) / 60:.0f} min "
        "on 2 cores"))
    summary = run_bench(cfg, command, log)
    click.echo(summary_markdown(summary))
    click.echo(f"\nwrote {Path(results_dir) / 'summary.json'}")
    # Only a full run of every part speaks for the README, and only as a proposal: benchmarks
    # never rewrite tracked files; a person reads the patch and applies it.
    if not quick and cfg.parts == PARTS:
        patch = propose_readme(scrub(summary), Path(results_dir))
        if patch is not None:
            click.echo(f"proposed README results block: {patch} (apply: git apply {patch})")
