"""The dynamic-batching sweep of the serving benchmark, and the rule that picks a setting.

Not a CLI: `benchmarks/serving.py` runs it; `python -m benchmarks.serving --apply-pick`
writes its pick into triton_models/adgen/config.pbtxt.

Rows: the served config (what the repository under test was built with), the tuned one
(`adgen repo build --tune`'s cache for this host and generator, else a quick calibration,
adgen.export.served_config), the committed one, and SWEEP's few alternatives. Each setting
first gets the job-shaped load (the adgen client at the served batch and concurrency); a
setting below `early_stop` x the best client rate so far stops there (its batch-1 loads
are not measured), as it cannot win the pick's geometric mean by much.
"""
from __future__ import annotations

import math
import statistics
import subprocess
from dataclasses import asdict
from pathlib import Path

from benchmarks.serving import (ServingConfig, client_rate, pa_data_adgen, perf_analyzer,
                                prompts_repeat)
from benchmarks.prompt_pool import PromptPool
from benchmarks.triton_local import BenchError, LocalTriton, committed_setting, served_setting
from adgen.errors import AdgenError
from adgen.export.served_config import calibrate, cache_path, read_cache
from adgen.serving.jobs.served import ServedConfig

PICK_RULE = ("keep the settings whose batch-1 concurrency-1 p99 is <= 3x its p50 (all, if none "
             "is), then those whose p50 is <= 1.25x the best p50 among them; pick the highest "
             "geometric mean of (images/s at batch 1 concurrency 16, images/s of the adgen "
             "client at the job's batch and concurrency); the served config stays the pick "
             "unless another eligible setting's score beats its own by more than 10% (one "
             "pass on a shared machine cannot tell smaller differences apart)")
MARGIN = 1.10
LOADS = ("job_shape", "b1_c1", "b1_c16")


def _measure_setting(cfg, triton, pool, tmp: Path, tag: str, stop_below: float) -> dict:
    """The job-shaped load, then (unless it is below `stop_below` images/s) the two batch-1
    perf_analyzer loads, on whatever `adgen` config is loaded now."""
    client_rate(triton, pool, cfg.batch, cfg.concurrency, cfg.n_per_prompt,
                min(1.0, cfg.sweep_seconds))  # warm-up: fresh stubs, sessions
    out = {"job_shape": client_rate(triton, pool, cfg.batch, cfg.concurrency, cfg.n_per_prompt,
                                    cfg.sweep_seconds)}
    if out["job_shape"]["images_per_s"] < stop_below:
        out["stopped"] = (f"client {out['job_shape']['images_per_s']:.0f} < "
                          f"{stop_below:.0f} images/s")
        return out
    for key, (b, c) in (("b1_c1", (1, 1)), ("b1_c16", (1, 16))):
        data = pa_data_adgen(tmp / f"sweep-{tag}-{key}.json", pool, 3000, prompts_repeat(b, cfg))
        out[key] = perf_analyzer(triton, "adgen", b, c, data, cfg.sweep_window_s,
                                 tmp / f"sweep-{tag}-{key}.csv")
        out[key].pop("csv_row", None)
        if "error" in out[key]:
            raise BenchError(f"perf_analyzer batch {b} concurrency {c}: {out[key]['error']}")
    return out


def _combine(passes: list[dict]) -> dict:
    """Median over passes of images/s and of each latency percentile; spread kept."""
    out = {}
    for key in LOADS:
        xs = [p[key] for p in passes if key in p]
        if not xs:
            continue
        rates = [x["images_per_s"] for x in xs]
        out[key] = {"images_per_s": statistics.median(rates), "images_per_s_passes": rates,
                    "latency_ms": {k: statistics.median(x["latency_ms"][k] for x in xs)
                                   for k in xs[0]["latency_ms"] if k in ("p50", "p95", "p99")}}
        batches = [b for x in xs if (b := (x.get("metrics") or {}).get("mean_batch"))]
        if batches:  # what the dynamic batcher formed (Triton's metrics)
            out[key]["mean_batch"] = statistics.median(batches)
    stopped = [p["stopped"] for p in passes if p.get("stopped")]
    if stopped:
        out["stopped"] = stopped[-1]
    return out


def tuned_config(cfg: ServingConfig, triton: LocalTriton,
                 log) -> tuple[ServedConfig | None, str]:
    """This host's cached tune for the served generator, else a quick calibration now."""
    sha = (triton.committed["adgen"].get("parameters") or {}).get(
        "generator_sha256", {}).get("string_value", "")
    path = cache_path(sha) if sha else None
    try:
        cached = read_cache(path) if path else None
        if cached is not None:
            return cached, f"cached calibration {path.name}"
        log("  quick calibration (no tune cached for this host and generator)")
        tuned, _ = calibrate(triton.text_encoder_dir, triton.generator_dir,
                             seconds=cfg.tune_seconds, rounds=2)
        return tuned, f"calibrated now (2 rounds of {cfg.tune_seconds:g} s per cell, not cached)"
    except AdgenError as exc:  # a malformed cache, a calibration that failed: no row
        return None, f"none: {exc}"


def batching_sweep(cfg: ServingConfig, triton: LocalTriton, pool: PromptPool, tmp: Path,
                   log, served: ServedConfig | None = None) -> dict:
    """Each setting measured in each pass (pass 2, if any, in reverse order, so drift on a
    shared machine does not favour the settings measured first); medians over passes."""
    committed = committed_setting("adgen")
    served = served or ServedConfig.from_model_config(triton.committed["adgen"])
    tuned, tuned_from = tuned_config(cfg, triton, log)
    first = [served_setting(served)] + ([served_setting(tuned)] if tuned else []) + [committed]
    settings = list(dict.fromkeys(first + list(cfg.sweep)))
    base = triton.committed["adgen"]
    passes: dict[int, list] = {i: [] for i in range(len(settings))}
    errors: dict[int, str] = {}
    best = 0.0
    try:
        for n in range(cfg.sweep_passes):
            order = list(range(len(settings)))[::1 if n % 2 == 0 else -1]
            for step, i in enumerate(order, 1):
                if i in errors:
                    continue
                s = settings[i]
                log(f"  batching pass {n + 1}/{cfg.sweep_passes}, {step}/{len(settings)}: "
                    f"{s.label}")
                try:
                    reload_s = triton.reload("adgen", s.apply(base))
                    got = _measure_setting(cfg, triton, pool, tmp, f"{n}-{i}",
                                           cfg.early_stop * best)
                    best = max(best, got["job_shape"]["images_per_s"])
                    passes[i].append({"reload_s": reload_s, **got})
                except (AdgenError, subprocess.TimeoutExpired) as exc:  # BenchError, ClientError
                    errors[i] = str(exc)
    finally:
        triton.reload("adgen")  # back to the served config for whatever runs next
    rows = []
    for i, s in enumerate(settings):
        row = {"setting": asdict(s), "label": s.label, "committed": s == committed,
               "served": s == served_setting(served),
               "tuned": bool(tuned and s == served_setting(tuned))}
        if i in errors:
            row["error"] = errors[i]
        else:
            row.update(_combine(passes[i]))
            row["reload_s"] = [p["reload_s"] for p in passes[i]]
        rows.append(row)
    pick = pick_setting(rows)
    return {"rule": PICK_RULE, "passes": cfg.sweep_passes, "rows": rows,
            "committed": committed.label, "pick": pick["label"] if pick else None,
            "committed_is_pick": bool(pick and pick["committed"]),
            "served": served.label, "served_is_pick": bool(pick and pick["served"]),
            "tuned": tuned.label if tuned else None, "tuned_from": tuned_from,
            "early_stop": f"A setting whose client rate is below {cfg.early_stop:g}x the best "
                          "so far stops early (batch-1 loads not measured).",
            "load_b1_c1": "perf_analyzer batch 1 concurrency 1 (new prompt per request)",
            "load_b1_c16": "perf_analyzer batch 1 concurrency 16 (new prompt per request)",
            "load_job_shape": f"adgen client batch {cfg.batch} concurrency {cfg.concurrency}"}


def _score(row: dict) -> float | None:
    try:
        a, b = row["b1_c16"]["images_per_s"], row["job_shape"]["images_per_s"]
    except (KeyError, TypeError):
        return None
    return math.sqrt(a * b)


def pick_setting(rows: list[dict]) -> dict | None:
    """PICK_RULE; marks each row's tail ratio, score and eligibility in place (rows stopped
    early have no batch-1 loads and are not eligible)."""
    ok = [r for r in rows if "error" not in r and _score(r) is not None
          and "latency_ms" in r.get("b1_c1", {})]
    if not ok:
        return None
    for r in ok:
        lat = r["b1_c1"]["latency_ms"]
        r["tail_ratio_b1_c1"] = lat["p99"] / lat["p50"]
        r["score"] = _score(r)
    steady = [r for r in ok if r["tail_ratio_b1_c1"] <= 3.0] or ok
    best_p50 = min(r["b1_c1"]["latency_ms"]["p50"] for r in steady)
    for r in ok:
        r["eligible"] = r in steady and r["b1_c1"]["latency_ms"]["p50"] <= 1.25 * best_p50
    best = max((r for r in ok if r["eligible"]), key=lambda r: r["score"])
    served = next((r for r in ok if r.get("served") and r["eligible"]), None)
    return served if served and best["score"] <= MARGIN * served["score"] else best


def sweep_markdown(sw: dict, batch: int, concurrency: int, fmt, spread) -> list[str]:
    """The sweep's section of serving.md (fmt/spread: serving.py's number formatters)."""
    lines = ["## Dynamic-batching sweep (`adgen`)", "",
             f"{sw['passes']} pass(es), the second (if any) in reverse order; medians (pass "
             f"values). Loads: {sw['load_job_shape']} first, then {sw['load_b1_c1']}; "
             f"{sw['load_b1_c16']}. {sw.get('early_stop', '')} Tuned: "
             f"{sw.get('tuned') or '—'} ({sw.get('tuned_from', '—')}).", "",
             f"Rule: {sw['rule']}.", "",
             "| setting | b1 c1 p50 ms | p99/p50 | b1 c16 images/s | b1 c16 p99 ms | "
             f"client b{batch} c{concurrency} images/s | its mean executed batch | score | |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in sw["rows"]:
        if "error" in r:
            lines.append(f"| {r['label']} | error: {r['error']} | | | | | | | |")
            continue
        a, b, j = r.get("b1_c1", {}), r.get("b1_c16", {}), r.get("job_shape", {})
        marks = (("**pick**" if r["label"] == sw["pick"] else ""),
                 ("served" if r.get("served") else ""), ("tuned" if r.get("tuned") else ""),
                 ("committed" if r["committed"] else ""),
                 (f"stopped early: {r['stopped']}" if r.get("stopped") else ""),
                 ("" if r.get("eligible", True) or r.get("stopped") else "ineligible"))
        lines.append(f"| {r['label']} | {fmt(a.get('latency_ms', {}).get('p50'), '.2f')} | "
                     f"{fmt(r.get('tail_ratio_b1_c1'), '.2f')} | "
                     f"{spread(b) if b else '—'} | "
                     f"{fmt(b.get('latency_ms', {}).get('p99'), '.1f')} | "
                     f"{spread(j)} | {fmt(j.get('mean_batch'))} | {fmt(r.get('score'))} | "
                     f"{' '.join(x for x in marks if x)} |")
    return lines
