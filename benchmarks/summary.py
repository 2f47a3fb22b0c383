"""adgen bench's summary: the ratios of one run against their goals and physics' limits, each
part's wall seconds beside its budget, what each change bought, summary.{json,md,png} and the
README block a full run proposes."""
from __future__ import annotations

import difflib
import json
import subprocess
from pathlib import Path

from adgen.errors import AdgenError
from benchmarks.plots import plot_summary
from benchmarks.precision_served import choice_here
from benchmarks.common import GOALS, PHYSICAL_LIMITS, machine_info, machine_name, scrub, \
    write_results

PARTS = ("backends", "serving", "job", "job256")
# Wall seconds each part may take on a 2-core machine (the full run <= 10 min with the
# scratch server's start); `--dry-run` estimates from these, summary.json has part_seconds.
PART_BUDGET_S = {"backends": 120, "serving": 180, "job": 110, "job256": 120}
SERVER_START_S = 30  # the scratch tritonserver the serving/job/job256 parts share
README_BEGIN = "<!-- adgen bench results: begin (a full `adgen bench` proposes it as README.patch) -->"
README_END = "<!-- adgen bench results: end -->"


def _git_commit() -> str | None:
    from benchmarks.common import ROOT
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                              capture_output=True, text=True, timeout=10).stdout.strip()
        # the code that ran: not the result files this run itself has just written
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "benchmarks", "adgen",
                                "serving", "prompting", "training", "export",
                                "triton_models", ":(exclude)benchmarks/results"], cwd=ROOT,
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return None
    return (head + ("+uncommitted" if dirty else "")) or None


def estimate_seconds(parts) -> dict:
    """A full run's seconds per part on 2 cores (PART_BUDGET_S), with the shared server's
    start when a part needs it: what `--dry-run` prints and summary.json sets part_seconds
    beside."""
    est = {p: PART_BUDGET_S[p] for p in parts}
    if set(parts) & {"serving", "job", "job256"}:
        est["server_start"] = SERVER_START_S
    return est


def served_precision(model) -> str:
    """The generator precision `adgen repo build` picks on this host for `model`, and why."""
    try:
        c = choice_here(model)
    except (AdgenError, OSError) as exc:  # an ONNX folder or a model without weights here
        return f"fp32 (the given model is served as it is: {exc})"
    return c["reason"]


def summarize(parts, cfg, note, command, started, seconds, files, part_seconds=None) -> dict:
    b, s, j = parts.get("backends"), parts.get("serving"), parts.get("job")
    ratios = {
        "ort_vs_eager_b64": b and b.get("ort_vs_eager_b64"),
        "gemm_efficiency": b and b.get("gemm_efficiency"),
        "triton_vs_inprocess": s and s["ratios"]["triton_vs_inprocess"],
        "e2e_vs_triton": j and j["ratios"]["e2e_vs_triton"],
        "generate_256_png_vs_64_png": (parts.get("job256") or {}).get("ratios", {}).get(
            "generate_256_png_vs_64_png"),
        "p99_over_p50_b1_c1": s and s["ratios"]["p99_over_p50_b1_c1"],
        "release_vs_previous_release": s and s["ratios"].get("release_vs_previous_release"),
    }
    errors = impossible(ratios)
    for k, e in ((b or {}).get("measurement_errors") or {}).items():  # rows past a ceiling
        errors[f"backends: {k}"] = e
    ratios = {k: (None if k in errors else v) for k, v in ratios.items()}
    met = {k: (None if v is None else (v >= GOALS[k][1] if GOALS[k][0] == ">=" else
                                       v <= GOALS[k][1])) for k, v in ratios.items()}
    headline = {"served_precision": served_precision(cfg.model)}
    if b:
        ref = 64 if 64 in [r["batch"] for r in b["generator"]["pytorch-eager"]] else \
            b["generator"]["pytorch-eager"][-1]["batch"]
        headline["backends_reference_batch"] = ref
        headline["best_backend"] = b.get("best_backend")
        headline["gemm_efficiency_backend"] = b.get("gemm_efficiency_backend")
        headline["gemm_fp32_gflops"] = b["gemm"]["flops_median"] / 1e9
    if s:
        headline.update({f"{k}_images_per_s": v for k, v in
                         s["inprocess_vs_triton"]["median_images_per_s"].items()})
        headline["batching_pick"] = s["dynamic_batching"]["pick"]
        headline["batching_committed_is_pick"] = s["dynamic_batching"]["committed_is_pick"]
    if j:
        headline["adgen_generate_images_per_s"] = j["median_images_per_s"]["adgen_generate"]
        if "e2e_own_words_vs_triton" in j["ratios"]:  # every subject through the encoder
            headline["e2e_own_words_vs_triton"] = j["ratios"]["e2e_own_words_vs_triton"]
        headline["job_images"] = j["images_per_job"]
    up = (b or {}).get("upsampler") or {}
    if up.get("rows"):
        top = max(up["rows"], key=lambda r: r["batch"])
        headline[f"upsampler_images_per_s_b{top['batch']}"] = top["images_per_s"]
        headline["upsampler_backend"] = up.get("backend", "onnxruntime-fp32")
        # its share of the GEMM ceiling of its own precision (int8 where served int8)
        eff_key = f"upsampler_gemm_efficiency_b{top['batch']}"
        headline[eff_key] = top.get("own_ceiling_efficiency", top["gemm_efficiency"])
        if (headline[eff_key] or 0) > 1.0:  # in errors from the backends part already
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
            "part_seconds": part_seconds or {},
            "part_budget_s": {} if cfg.quick else estimate_seconds(list(parts)),
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
        if "shipped" in levels and "6" in levels:
            add("the job's PNG writer (encode ms/image; lower is better)", "Pillow zlib level 6",
                levels["shipped"]["ms_per_image"], levels["6"]["ms_per_image"], unit="ms/image")
            add("the job's PNG writer (bytes/image)", "Pillow zlib level 6",
                levels["shipped"]["bytes_per_image"], levels["6"]["bytes_per_image"],
                unit="bytes")
    return out


def ratio_rows(sm: dict, code: bool = False, bold: bool = True) -> list[str]:
    """One Markdown row per ratio: value, goal, met (or the measurement error instead)."""
    errors, rows = sm.get("measurement_errors") or {}, []
    for k, v in sm["ratios"].items():
        met = {True: "yes", False: "**no**", None: "not measured"}[sm["met"][k]]
        if k in errors:
            err = f"measurement error ({errors[k]['value']:.2f}: {errors[k]['why']})"
            met = f"**{err}**" if bold else err
        name = f"`{k}`" if code else k
        rows.append(f"| {name} | {'—' if v is None else f'{v:.2f}'} | {sm['goals'][k]} | {met} |")
    return rows


def summary_markdown(sm: dict) -> str:
    lines = [f"# Benchmark summary ({sm['machine']['name']})", "",
             f"Command: `{sm['command']}` (commit {sm['git_commit']}, {sm['started_at']}, "
             f"{sm['duration_s'] / 60:.1f} min)  ", f"Model: {sm['model']}", "",
             "All ratios below come from this one run on this machine.", "",
             "| ratio | value | goal | met |", "|---|---:|---:|---|"]
    errors = sm.get("measurement_errors") or {}
    lines += ratio_rows(sm)
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
    lines += part_seconds_markdown(sm)
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


def part_seconds_markdown(sm: dict) -> list[str]:
    """Wall seconds of each part of this run beside its budget on 2 cores."""
    took, budget = sm.get("part_seconds") or {}, sm.get("part_budget_s") or {}
    if not took:
        return []
    lines = ["", "| part | wall s (this run) | budget s (2 cores) |", "|---|---:|---:|"]
    for k, v in took.items():
        lines.append(f"| {k} | {v:.0f} | {budget[k] if k in budget else '—'} |")
    return lines


def write_summary(summary: dict, parts: dict, results: Path) -> None:
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
    lines += ratio_rows(sm, code=True, bold=False)
    if sm.get("part_seconds"):
        lines += ["", "Wall seconds per part: " + ", ".join(
            f"{k} {v:.0f}" for k, v in sm["part_seconds"].items()) + "."]
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
        backend = h.get("upsampler_backend", "onnxruntime-fp32")
        lines.append(f"Upsampler (64 → 256 px, {backend}, batch {batch}): {v:.0f} "
                     f"images/s" + (f", {eff:.2f} of its precision's GEMM ceiling." if eff
                                    else "."))
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
