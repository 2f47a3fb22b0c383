"""Served precision, before and after in one run: the fp32 repository against the one
`adgen repo build` serves by default on this host (--precision auto, export/precision.py).

Usage:
  python -m benchmarks.precision_served                          # release model, ~4 min
  python -m benchmarks.precision_served --rounds 3 --results-dir out/bench

What it measures, side by side on one machine:
  ceilings   fp32 / bf16 / int8 matmul ops/s (benchmarks.backends.gemm_ceilings), the CPU's
             ISA flags, and the precision `--precision auto` picks here with its reason
  generator  onnxruntime in process at batch 64 (the served batch): the fp32 export vs the
             model's int8 export, interleaved rounds; images/s and each one's ops/s as a
             fraction of its own precision's ceiling
  job        `adgen generate` (PNGs on disk, manifest) of fresh prompts through a local
             Triton serving the fp32 repository and one serving the default repository, both
             up at once and used in turn, `--rounds` jobs each; images/s, client and server
             CPU per image
Writes <results>/<machine>/precision_served.{json,md}; never touches tracked files.
"""
from __future__ import annotations

import json
import os
import shutil
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path

from benchmarks.common import command_line, md_table, part_parser, run_header, show, \
    write_part

BATCH = 64  # the served batch: the job's requests are grouped to it by Triton


@dataclass(frozen=True)
class PrecisionConfig:
    model: str | None = None  # a checkpoint folder shipping int8/; None: the release model
    rounds: int = 2           # jobs per repository, alternating
    prompts: int = 500        # fresh prompts per job, x n images
    n: int = 4
    generator_rounds: int = 10
    threads: int = 0          # 0: every core


def choice_here(model: str | None) -> dict:
    """What --precision auto picks on this host for `model`, and why."""
    from adgen.export.precision import choose_precision, int8_units
    from adgen.paths import release_model_dir, sha256_file
    folder = Path(model) if model else release_model_dir()
    choice = choose_precision("auto", folder, sha256_file(folder / "generator.safetensors"))
    return {"precision": choice.precision, "reason": choice.reason,
            "int8_units": int8_units()}


def generator_rows(model: str | None, threads: int, rounds: int) -> dict:
    """images/s of the fp32 and int8 generator exports at BATCH, interleaved rounds
    (benchmarks.export_variants' timing loop, onnxruntime only)."""
    from adgen.export.repo import resolve_generator
    from adgen.paths import release_model_dir
    from benchmarks.export_variants import backends, measure
    ckpt = Path(model) if model else release_model_dir()
    fp32 = resolve_generator(model, progress=False)
    fns, _ = backends(ckpt, {"fp32": fp32.folder, "int8": ckpt / "int8"}, threads)
    rows = measure({k: fns[f"onnxruntime-{k}"] for k in ("fp32", "int8")}, (BATCH,),
                   {BATCH: rounds}, fp32.z_dim)[str(BATCH)]
    return {k: {"p50_ms": r["p50_ms"], "images_per_s": r["images_per_s"]}
            for k, r in rows.items()}


def job_rows(cfg: PrecisionConfig, log) -> list[dict]:
    """`adgen generate` through the fp32 and the default repository, alternating."""
    from contextlib import ExitStack

    from benchmarks.prompt_pool import PromptPool
    from benchmarks.triton_local import run_generate, scratch_triton, work_dir
    pool, rows, out = PromptPool(), [], work_dir("adgen-precision-jobs-")
    with ExitStack() as stack:
        servers = {p: stack.enter_context(scratch_triton(cfg.model, f"adgen-precision-{p}-",
                                                         log, precision=p))
                   for p in ("fp32", "auto")}
        for r in range(cfg.rounds):
            for p in (("fp32", "auto") if r % 2 == 0 else ("auto", "fp32")):
                prompts = out / f"prompts-{p}-{r}.txt"
                prompts.write_text("\n".join(pool.take(cfg.prompts)) + "\n")
                log(f"round {r + 1}: adgen generate through the {p} repository")
                row = run_generate(servers[p], [str(prompts), "-n", str(cfg.n)],
                                   out / f"job-{p}-{r}", "adgen", cfg.prompts * cfg.n)
                info = servers[p].repo / "adgen_repository.json"
                served = json.loads(info.read_text())["precision"]["served"]
                rows.append({"repository": p, "served": served, "round": r,
                             "images_per_s": row["images_per_s"],
                             "client_cpu_ms_per_image": 1000 * row["client_cpu_s"] / row["images"],
                             "server_cpu_ms_per_image": 1000 * row["server_cpu_s"] / row["images"],
                             "latency_ms": row["latency_ms"]})
    shutil.rmtree(out, ignore_errors=True)
    return rows


def run(cfg: PrecisionConfig, log=print) -> dict:
    from benchmarks.backends import count_generator_flops, gemm_ceilings
    from adgen.training.checkpoint import load_generator
    from adgen.paths import release_model_dir
    threads = cfg.threads or os.cpu_count() or 1
    log("measuring the matmul ceilings")
    ceilings = gemm_ceilings(threads)
    loaded = load_generator(cfg.model or release_model_dir())
    ops = count_generator_flops(loaded.module, loaded.z_dim)
    log("generator exports in process, batch 64")
    gen = generator_rows(cfg.model, cfg.threads, cfg.generator_rounds)
    for name, row in gen.items():
        ceiling = ceilings[name].get("flops_median") if isinstance(ceilings[name], dict) else None
        row["ops_per_s"] = row["images_per_s"] * ops
        row["of_own_ceiling"] = row["ops_per_s"] / ceiling if ceiling else None
    jobs = job_rows(cfg, log)
    med = {p: statistics.median(r["images_per_s"] for r in jobs if r["repository"] == p)
           for p in ("fp32", "auto")}
    return {**run_header(cfg), "choice": choice_here(cfg.model), "ceilings": ceilings,
            "ops_per_image": ops, "generator_batch": BATCH, "generator": gen,
            "generator_ratio": gen["int8"]["images_per_s"] / gen["fp32"]["images_per_s"],
            "jobs": jobs, "job_images_per_s": med, "job_ratio": med["auto"] / med["fp32"]}


def markdown(p: dict, command: str) -> str:
    c, ce = p["choice"], p["ceilings"]
    lines = [f"# Served precision: fp32 vs this host's default ({p['machine']['name']})", "",
             f"Command: `{command}`  ", f"ISA: {', '.join(p['machine']['isa']) or 'unknown'}; "
             f"load average at the end {p['load_average_at_end'][0]:.2f}.", "",
             f"`adgen repo build` (--precision auto) serves **{c['precision']}** here: "
             f"{c['reason']}.", "",
             "Matmul ceilings of this machine (torch, same run): " + ", ".join(
                 f"{k} {v['flops_median'] / 1e9:.0f} G ops/s" if "flops_median" in v
                 else f"{k} skipped ({v.get('skipped')})" for k, v in ce.items()) + ".", "",
             f"## Generator alone: onnxruntime in process, batch {p['generator_batch']}", ""]
    lines += md_table(["export", "p50 ms", "images/s", "G ops/s", "of its own ceiling"],
                      [[k, f"{r['p50_ms']:.1f}", f"{r['images_per_s']:.0f}",
                        f"{r['ops_per_s'] / 1e9:.0f}",
                        "-" if r["of_own_ceiling"] is None else f"{r['of_own_ceiling']:.2f}"]
                       for k, r in p["generator"].items()], "-rrrr")
    lines += ["", f"int8 / fp32: **{p['generator_ratio']:.2f}×** images/s "
              f"({p['ops_per_image'] / 1e6:.0f} M ops per image).", "",
              "## The job: `adgen generate` through a local Triton, PNGs on disk", ""]
    lines += md_table(["repository", "served", "round", "images/s", "client CPU ms/image",
                       "server CPU ms/image"],
                      [[r["repository"], r["served"], r["round"] + 1,
                        f"{r['images_per_s']:.1f}", f"{r['client_cpu_ms_per_image']:.2f}",
                        f"{r['server_cpu_ms_per_image']:.2f}"] for r in p["jobs"]], "---rrr")
    j = p["job_images_per_s"]
    lines += ["", f"Median images/s: fp32 {j['fp32']:.1f}, default ({c['precision']}) "
              f"{j['auto']:.1f}: **{p['job_ratio']:.2f}×**."]
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = part_parser(__doc__, "checkpoint folder shipping int8/ (default: the release model)")
    ap.add_argument("--rounds", type=int, default=PrecisionConfig.rounds)
    ap.add_argument("--prompts", type=int, default=PrecisionConfig.prompts)
    ap.add_argument("--threads", type=int, default=0)
    a = ap.parse_args(argv)
    cfg = PrecisionConfig(model=a.model, rounds=a.rounds, prompts=a.prompts, threads=a.threads)
    path = write_part("precision_served", run(cfg), command_line("precision_served", argv),
                      a.results_dir, markdown)
    return show(path)


if __name__ == "__main__":
    sys.exit(main())
