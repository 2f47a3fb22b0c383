"""adgen bench: backends -> serving -> job in ONE run, result files and a summary.

Usage:
  adgen bench                                  # full run on the release model (~15 min + job256)
  adgen bench --quick                          # smoke run (< 90 s), results in artifacts/bench-quick
  adgen bench --model runs/00004-film/checkpoints/latest --only backends,serving
  adgen bench --dry-run                        # print the resolved config and the plan
  adgen bench --only backends,job256 --upsampler path/to/upsampler   # 256 px figures only

Parts (each writes <results>/<machine>/<part>.{json,md,png}):
  backends  benchmarks/backends.py: PyTorch eager vs onnxruntime fp32/int8 (+TensorRT), batch
            1/16/64/256, text encoder, fp32 GEMM ceiling, counted FLOPs
  serving   benchmarks/serving.py: local Triton, in-process vs Triton, perf_analyzer sweeps,
            dynamic-batching sweep
  job       benchmarks/job.py: `adgen generate` of 2,000 images vs the client alone
  job256    benchmarks/job256.py: `adgen generate --size 256` (PNG, WebP, JPEG) beside the
            64 px job on the same prompts, Triton alone at 256, the in-process stage split,
            bytes and encode time per format; the >= 50 images/s bar and what limits it
The 256 px rows (upsampler in backends, job256) use --upsampler, else the release upsampler
models/adgen-up256 when it exists, else they are skipped with the reason written down.
Then <results>/summary.json (the ratios of this run, the machine and the command) and
<results>/<machine>/summary.{md,png}. Serving, job and job256 share one server.
"""
from __future__ import annotations

import json
import shlex
import subprocess
import time
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

import click

from benchmarks.common import RESULTS_DIR, machine_info, machine_name, scrub, write_part, \
    write_results
from benchmarks.triton_local import BenchError, PromptPool, scratch_triton

PARTS = ("backends", "serving", "job", "job256")
GOALS = {"ort_vs_eager_b64": (">=", 2.0), "gemm_efficiency": (">=", 0.5),
         "triton_vs_inprocess": (">=", 0.85), "e2e_vs_triton": (">=", 0.7),
         "p99_over_p50_b1_c1": ("<=", 3.0)}
# Ratios physics bounds: a share of a measured ceiling cannot pass 1, and a job cannot outrun
# the server it calls. A value past its limit is a measurement error (a ceiling measured
# under noise, unlike configurations), reported as such and never as a result.
PHYSICAL_LIMITS = {"gemm_efficiency": 1.0, "e2e_vs_triton": 1.0}
QUICK_RESULTS = "artifacts/bench-quick"
README_BEGIN = "<!-- adgen bench results: begin (a full `adgen bench` proposes it as README.patch) -->"
README_END = "<!-- adgen bench results: end -->"

EPILOG = """Examples:

  adgen bench

  adgen bench --quick

  adgen bench --model runs/00004-film/checkpoints/latest --only serving,job

  adgen bench --dry-run

The full run takes about 15 minutes on 2 cores before job256 (four 1,000-image jobs, 256 px
and 64 px, when an upsampler is there) and prints each step. Without a release model
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


def _git_commit() -> str | None:
    from benchmarks.common import ROOT
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                              capture_output=True, text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "benchmarks", "adgen",
                                "serving", "prompting", "training", "export",
                                "triton_models"], cwd=ROOT,
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return None
    return (head + ("+uncommitted" if dirty else "")) or None


def run_bench(cfg: BenchConfig, command: str, log) -> dict:
    from benchmarks import backends, job, job256, serving
    started, t0 = datetime.now(timezone.utc), time.perf_counter()
    if "serving" in cfg.parts:
        serving.check_perf_analyzer()  # fail in seconds, not after the backends part
    model, note = resolve_model(cfg.model)
    results = Path(cfg.results_dir)
    parts: dict[str, dict] = {}
    files: dict[str, str] = {}
    if "backends" in cfg.parts:
        log("backends: eager vs onnxruntime (+TensorRT) at each batch, GEMM ceiling")
        bcfg = dict(batches=[1, 4], repeats=2, min_seconds=0.0, precisions=("fp32",)) \
            if cfg.quick else dict(batches=[1, 16, 64, 256], repeats=10, min_seconds=1.0,
                                   precisions=("fp32", "int8"))
        p = backends.run(str(model), threads=cfg.threads, quick=cfg.quick,
                         upsampler=cfg.upsampler,
                         upsampler_batches=(1, 4) if cfg.quick else backends.UPSAMPLER_BATCHES,
                         **bcfg)
        p["model_note"] = note
        path = write_part("backends", p, command, results, backends.markdown, backends.plot)
        parts["backends"], files["backends"] = p, str(path.relative_to(results))
    up, up_note = None, ""
    if "job256" in cfg.parts:
        up, up_note = backends.resolve_bench_upsampler(cfg.upsampler)
        if up is None:
            log(f"job256: skipped: {up_note}")
            p = job256.skipped(up_note)
            p["model"] = note
            path = job256.write(p, command, results)
            parts["job256"], files["job256"] = p, str(path.relative_to(results))
    if "serving" in cfg.parts or "job" in cfg.parts or up is not None:
        pool = PromptPool()
        with scratch_triton(model, "adgen-bench-", log,
                            upsampler=up.folder if up else False) as triton:
            if "serving" in cfg.parts:
                log("serving: in-process vs Triton, perf_analyzer, dynamic batching")
                scfg = serving.ServingConfig.quick_config(str(model)) if cfg.quick else \
                    serving.ServingConfig(str(model), threads=cfg.threads)
                p = serving.run(scfg, triton, pool, log)
                p["model"] = note
                path = serving.write(p, command, results)
                parts["serving"], files["serving"] = p, str(path.relative_to(results))
            if "job" in cfg.parts:
                log("job: `adgen generate` end to end vs the client alone")
                jcfg = job.JobBenchConfig.quick_config(str(model)) if cfg.quick else \
                    job.JobBenchConfig(str(model))
                p = job.run(jcfg, triton, pool, log)
                p["model"] = note
                path = job.write(p, command, results)
                parts["job"], files["job"] = p, str(path.relative_to(results))
            if up is not None:
                log("job256: `adgen generate --size 256` (png, webp, jpeg) beside 64 px, "
                    "Triton alone, in-process split, encode costs")
                j2 = job256.Job256Config.quick_config(str(model)) if cfg.quick else \
                    job256.Job256Config(str(model), threads=cfg.threads)
                p = job256.run(j2, triton, pool, log, upsampler_note=up_note)
                p["model"] = note
                path = job256.write(p, command, results)
                parts["job256"], files["job256"] = p, str(path.relative_to(results))
    summary = summarize(parts, cfg, note, command, started, time.perf_counter() - t0, files)
    write_summary(summary, parts, results)
    return summary


def served_precision(model) -> str:
    """The generator precision `adgen repo build` picks on this host for `model`, and why."""
    from adgen.errors import AdgenError
    from benchmarks.precision_served import choice_here
    try:
        c = choice_here(model)
    except (AdgenError, OSError) as exc:  # an ONNX folder or a model without weights here
        return f"fp32 (the given model is served as it is: {exc})"
    return c["reason"]


def summarize(parts, cfg, note, command, started, seconds, files) -> dict:
    b, s, j = parts.get("backends"), parts.get("serving"), parts.get("job")
    ratios = {
        "ort_vs_eager_b64": b and b.get("ort_vs_eager_b64"),
        "gemm_efficiency": b and b.get("gemm_efficiency"),
        "triton_vs_inprocess": s and s["ratios"]["triton_vs_inprocess"],
        "e2e_vs_triton": j and j["ratios"]["e2e_vs_triton"],
        "p99_over_p50_b1_c1": s and s["ratios"]["p99_over_p50_b1_c1"],
    }
    errors = impossible(ratios)
    ratios = {k: (None if k in errors else v) for k, v in ratios.items()}
    met = {k: (None if v is None else (v >= GOALS[k][1] if GOALS[k][0] == ">=" else
                                       v <= GOALS[k][1])) for k, v in ratios.items()}
    headline = {"served_precision": served_precision(cfg.model)}
    if b:
        ref = 64 if 64 in [r["batch"] for r in b["generator"]["pytorch-eager"]] else \
            b["generator"]["pytorch-eager"][-1]["batch"]
        headline["backends_reference_batch"] = ref
        headline["best_backend"] = b.get("best_backend")
        headline["gemm_fp32_gflops"] = b["gemm"]["flops_median"] / 1e9
    if s:
        headline.update({f"{k}_images_per_s": v for k, v in
                         s["inprocess_vs_triton"]["median_images_per_s"].items()})
        headline["batching_pick"] = s["dynamic_batching"]["pick"]
        headline["batching_committed_is_pick"] = s["dynamic_batching"]["committed_is_pick"]
    if j:
        headline["adgen_generate_images_per_s"] = j["median_images_per_s"]["adgen_generate"]
        headline["job_images"] = j["images_per_job"]
    up = (b or {}).get("upsampler") or {}
    if up.get("rows"):
        top = max(up["rows"], key=lambda r: r["batch"])
        headline[f"upsampler_images_per_s_b{top['batch']}"] = top["images_per_s"]
        headline[f"upsampler_gemm_efficiency_b{top['batch']}"] = top["gemm_efficiency"]
        eff_key = f"upsampler_gemm_efficiency_b{top['batch']}"
        if top["gemm_efficiency"] > 1.0:
            errors[eff_key] = {"value": top["gemm_efficiency"], "limit": 1.0,
                               "why": "share of the fp32 GEMM ceiling above 1"}
            headline[eff_key] = None
    elif up.get("skipped"):
        headline["upsampler"] = f"not measured: {up['skipped']}"
    j2 = parts.get("job256")
    bars = {}
    if j2 and "skipped" not in j2:
        m = j2["median_images_per_s"]
        headline["generate_64_png_same_prompts_images_per_s"] = m["64 px png"]
        for fmt, v in j2["verdict"].items():
            headline[f"generate_256_{fmt}_images_per_s"] = v["images_per_s"]
            bars[f"generate_256_{fmt}_images_per_s"] = {
                "value": v["images_per_s"], "goal": f">= {v['bar']:g}", "met": v["met"],
                "limit": v.get("limit"), "why": v.get("why")}
        headline["triton_256_client_images_per_s"] = m["triton client alone 256 px"]
    elif j2:
        headline["job256"] = f"not measured: {j2['skipped']}"
    return {"machine": machine_info(), "command": command, "git_commit": _git_commit(),
            "started_at": started.isoformat(timespec="seconds"), "duration_s": round(seconds, 1),
            "quick": cfg.quick, "model": note, "parts": list(parts), **ratios, "ratios": ratios,
            "goals": {k: f"{op} {v}" for k, (op, v) in GOALS.items()}, "met": met,
            "bars": bars, "headline": headline, "measurement_errors": errors,
            "what_each_change_bought": changes(parts),
            "files": files}


def impossible(ratios: dict) -> dict[str, dict]:
    """The ratios past their PHYSICAL_LIMITS: name -> {value, limit, why}."""
    return {k: {"value": v, "limit": PHYSICAL_LIMITS[k],
                "why": "share of a ceiling above 1" if k.endswith("efficiency")
                else "faster than the server it calls"}
            for k, v in ratios.items()
            if v is not None and k in PHYSICAL_LIMITS and v > PHYSICAL_LIMITS[k]}


def changes(parts: dict) -> list[dict]:
    """Each optimisation knob of this run next to its baseline, both measured in this run."""
    out = []

    def add(change, baseline, new, old, unit="images/s"):
        if new and old:
            out.append({"change": change, "baseline": baseline, "value": new, "baseline_value": old,
                        "unit": unit, "ratio": new / old})
    b, s, j = parts.get("backends"), parts.get("serving"), parts.get("job")
    j2 = parts.get("job256")
    if j2 and "skipped" not in j2:
        m = j2["median_images_per_s"]
        for fmt in ("webp", "jpeg"):
            add(f"256 px job as {fmt} (default quality)", "as png", m.get(f"256 px {fmt}"),
                m.get("256 px png"))
        enc = j2["encode"]
        for fmt in ("webp", "jpeg"):
            add(f"256 px {fmt} encode (ms/image; lower is better)", "png",
                enc[f"{fmt} 256 px"]["ms_per_image"], enc["png 256 px"]["ms_per_image"],
                unit="ms/image")
            add(f"256 px {fmt} (bytes/image)", "png", enc[f"{fmt} 256 px"]["bytes_per_image"],
                enc["png 256 px"]["bytes_per_image"], unit="bytes")
    if b:
        ref = 64 if any(r["batch"] == 64 for r in b["generator"]["pytorch-eager"]) else \
            b["generator"]["pytorch-eager"][-1]["batch"]
        rate = {n: next((r["images_per_s"] for r in rows if r["batch"] == ref), None)
                for n, rows in b["generator"].items()}
        for name in rate:
            if name != "pytorch-eager":
                add(f"generator on {name} (batch {ref})", "PyTorch eager", rate[name],
                    rate["pytorch-eager"])
    if s:
        iv = s["inprocess_vs_triton"]["median_images_per_s"]
        add(f"in-process at the merged batch {s['inprocess_vs_triton']['merged_batch']}",
            f"in-process at batch {s['inprocess_vs_triton']['batch']}",
            iv.get("adgen_inprocess_merged"), iv["adgen_inprocess"])
        rows = {r["label"]: r for r in s["dynamic_batching"]["rows"] if "error" not in r}
        off = next((r for r in rows.values() if r["setting"]["delay_us"] is None), None)
        committed = next((r for r in rows.values() if r["committed"]), None)
        for r in rows.values():
            if off and r is not off and r.get("b1_c16", {}).get("images_per_s"):
                add(f"batching: {r['label']} (batch 1, concurrency 16)", "no dynamic batching",
                    r["b1_c16"]["images_per_s"], off.get("b1_c16", {}).get("images_per_s"))
        pick = rows.get(s["dynamic_batching"]["pick"])
        if pick and committed and pick is not committed:
            add(f"batching pick: {pick['label']} (score)", f"committed: {committed['label']}",
                pick.get("score"), committed.get("score"), unit="score")
    if j:
        base = j["jobs"][0]
        for x in j.get("settings") or []:
            add(f"job with batch {x['batch']}, concurrency {x['concurrency']}",
                f"batch {base['batch']}, concurrency {base['concurrency']}", x["images_per_s"],
                base["images_per_s"])
        levels = (j.get("profile") or {}).get("png_levels") or {}
        if "1" in levels and "6" in levels:
            add("PNG zlib level 1 (encode ms/image; lower is better)", "level 6 (shipped)",
                levels["1"]["ms_per_image"], levels["6"]["ms_per_image"], unit="ms/image")
            add("PNG zlib level 1 (bytes/image)", "level 6 (shipped)",
                levels["1"]["bytes_per_image"], levels["6"]["bytes_per_image"], unit="bytes")
    return out


def summary_markdown(sm: dict) -> str:
    lines = [f"# Benchmark summary ({sm['machine']['name']})", "",
             f"Command: `{sm['command']}` (commit {sm['git_commit']}, {sm['started_at']}, "
             f"{sm['duration_s'] / 60:.1f} min)  ", f"Model: {sm['model']}", "",
             "All ratios below come from this one run on this machine.", "",
             "| ratio | value | goal | met |", "|---|---:|---:|---|"]
    errors = sm.get("measurement_errors") or {}
    for k, v in sm["ratios"].items():
        met = {True: "yes", False: "**no**", None: "not measured"}[sm["met"][k]]
        if k in errors:
            met = f"**measurement error** ({errors[k]['value']:.2f}: {errors[k]['why']})"
        lines.append(f"| {k} | {'—' if v is None else f'{v:.2f}'} | {sm['goals'][k]} | {met} |")
    for k, e in errors.items():
        if k not in sm["ratios"]:
            lines.append(f"| {k} | — | ≤ {e['limit']:g} | **measurement error** "
                         f"({e['value']:.2f}: {e['why']}) |")
    if sm.get("bars"):
        lines += ["", "| bar (absolute, this machine) | value | goal | met | limit |",
                  "|---|---:|---:|---|---|"]
        for k, v in sm["bars"].items():
            lines.append(f"| {k} | {v['value']:.1f} | {v['goal']} | "
                         f"{'yes' if v['met'] else '**no**'} | {v.get('why') or '—'} |")
    lines += ["", "| headline | value |", "|---|---|"]
    for k, v in sm["headline"].items():
        lines.append(f"| {k} | {f'{v:.1f}' if isinstance(v, float) else v} |")
    if sm.get("what_each_change_bought"):
        lines += ["", "## What each change bought (both sides measured in this run)", "",
                  "| change | baseline | value | baseline value | ratio |",
                  "|---|---|---:|---:|---:|"]
        for c in sm["what_each_change_bought"]:
            lines.append(f"| {c['change']} | {c['baseline']} | {c['value']:.2f} {c['unit']} | "
                         f"{c['baseline_value']:.2f} | {c['ratio']:.2f}× |")
    lines += ["", "Part results: " + ", ".join(f"`{v}`" for v in sm["files"].values())]
    return "\n".join(lines)


def write_summary(summary: dict, parts: dict, results: Path) -> None:
    from benchmarks.plots import plot_summary
    folder = results / machine_name()
    summary = scrub(summary)
    write_results("summary", summary, summary_markdown(summary), subdir=str(folder))
    plot_summary(parts, folder / "summary.png")
    summary = {**summary, "files": {**summary["files"],
                                    "summary": f"{machine_name()}/summary.md",
                                    "plot": f"{machine_name()}/summary.png"}}
    tmp = results / "summary.json.tmp"
    tmp.write_text(json.dumps(summary, indent=2) + "\n")
    tmp.replace(results / "summary.json")


def readme_block(sm: dict) -> str:
    """The README's results block: this run's ratios, headline figures and plot."""
    machine = sm["machine"]["name"]
    lines = [f"Last full run: `{sm['command']}` on {machine} ({sm['machine']['cpus']} CPUs), "
             f"commit {sm['git_commit']}, {sm['started_at']}, {sm['duration_s'] / 60:.1f} min; "
             f"model: {sm['model']}.", "",
             "| ratio (one run) | value | goal | met |", "|---|---:|---:|---|"]
    for k, v in sm["ratios"].items():
        met = {True: "yes", False: "**no**", None: "not measured"}[sm["met"][k]]
        lines.append(f"| `{k}` | {'—' if v is None else f'{v:.2f}'} | {sm['goals'][k]} | {met} |")
    h = sm["headline"]
    figures = [("adgen_inprocess_images_per_s", "in-process pipeline"),
               ("adgen_triton_client_images_per_s", "through Triton (adgen client)"),
               ("adgen_generate_images_per_s", "`adgen generate`, PNGs on disk")]
    got = [f"{label} {h[k]:.0f}" for k, label in figures if isinstance(h.get(k), float)]
    if got:
        lines += ["", "Images/s: " + ", ".join(got) + "."]
    lines.append(f"Served generator precision on this host "
                 f"({', '.join(sm['machine'].get('isa') or []) or 'ISA unknown'}): "
                 f"{h['served_precision']} (`python -m benchmarks.precision_served`: fp32 "
                 "vs that default, side by side).")
    if h.get("batching_pick"):
        lines.append(f"Dynamic batching: the sweep picks *{h['batching_pick']}* (committed "
                     f"config is the pick: {'yes' if h['batching_committed_is_pick'] else 'no'}).")
    up = [(k, v) for k, v in h.items() if k.startswith("upsampler_images_per_s_b")]
    bars = sm.get("bars") or {}
    if up or bars:
        lines.append("")
    if up:
        k, v = up[0]
        batch = k.rsplit("_b", 1)[1]
        eff = h.get(f"upsampler_gemm_efficiency_b{batch}")
        lines.append(f"Upsampler (64 → 256 px, onnxruntime fp32, batch {batch}): {v:.0f} "
                     f"images/s" + (f", {eff:.2f} of the GEMM ceiling." if eff else "."))
    if bars:
        got = ", ".join(f"{k.split('_')[2]} {v['value']:.0f} ({'met' if v['met'] else 'not met'}"
                        + (f": {v['limit']}" if v.get("limit") else "") + ")"
                        for k, v in bars.items())
        ref = h.get("generate_64_png_same_prompts_images_per_s")
        lines.append(f"`adgen generate --size 256` through Triton, images/s (bar ≥ 50): {got}"
                     + (f"; 64 px PNG on the same prompts {ref:.0f}." if ref else "."))
    if sm.get("what_each_change_bought"):
        lines += ["", "| what each change bought (same run) | baseline | ratio |",
                  "|---|---|---:|"]
        lines += [f"| {c['change']} | {c['baseline']} | {c['ratio']:.2f}× |"
                  for c in sm["what_each_change_bought"]]
    lines += ["", f"![benchmark summary](benchmarks/results/{machine}/summary.png)", "",
              "Tables: " + ", ".join(f"[{Path(v).stem}](benchmarks/results/{Path(v).with_suffix('.md')})"
                                     for k, v in sm["files"].items() if k in PARTS) + "."]
    return "\n".join(lines)


def propose_readme(sm: dict, results_dir: Path) -> Path | None:
    """Writes the README change this run proposes, never the README itself: results_dir/
    README.block.md (the new text between the markers) and README.patch (a unified diff
    against the README as it is; apply with `git apply`). None if the markers are gone."""
    import difflib

    from benchmarks.common import ROOT
    readme = ROOT / "README.md"
    text = readme.read_text(encoding="utf-8")
    lo, hi = text.find(README_BEGIN), text.find(README_END)
    if lo < 0 or hi < lo:
        return None
    block = readme_block(sm)
    new = text[:lo + len(README_BEGIN)] + "\n" + block + "\n" + text[hi:]
    results_dir = Path(results_dir)
    (results_dir / "README.block.md").write_text(block + "\n", encoding="utf-8")
    patch = results_dir / "README.patch"
    patch.write_text("".join(difflib.unified_diff(
        text.splitlines(keepends=True), new.splitlines(keepends=True),
        fromfile="a/README.md", tofile="b/README.md")), encoding="utf-8")
    return patch


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
                               "estimated_minutes": 1.5 if quick else
                               {"backends": 3, "serving": 9, "job": 3, "job256": 5}},
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

    log(f"parts: {', '.join(cfg.parts)}; results in {results_dir}"
        + ("" if quick else "; about 15 min on 2 cores, plus job256"))
    summary = run_bench(cfg, command, log)
    click.echo(summary_markdown(summary))
    click.echo(f"\nwrote {Path(results_dir) / 'summary.json'}")
    # Only a full run of every part speaks for the README, and only as a proposal: benchmarks
    # never rewrite tracked files; a person reads the patch and applies it.
    if not quick and cfg.parts == PARTS:
        patch = propose_readme(scrub(summary), Path(results_dir))
        if patch is not None:
            click.echo(f"proposed README results block: {patch} (apply: git apply {patch})")
