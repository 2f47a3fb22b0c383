"""The dynamic-batching sweep of the serving benchmark, and the rule that picks a setting.

Not a CLI: `benchmarks/serving.py` runs it; `python -m benchmarks.serving --apply-pick`
writes its pick into triton_models/adgen/config.pbtxt.
"""
from __future__ import annotations

import math
import statistics
import subprocess
from dataclasses import asdict
from pathlib import Path

from benchmarks.serving import (ServingConfig, client_rate, pa_data_adgen, perf_analyzer,
                                prompts_repeat)
from benchmarks.triton_local import BenchError, LocalTriton, PromptPool, committed_setting
from adgen.errors import AdgenError

PICK_RULE = ("keep the settings whose batch-1 concurrency-1 p99 is <= 3x its p50 (all, if none "
             "is), then those whose p50 is <= 1.25x the best p50 among them; pick the highest "
             "geometric mean of (images/s at batch 1 concurrency 16, images/s of the adgen "
             "client at the job's batch and concurrency)")


def _measure_setting(cfg, triton, pool, tmp: Path, tag: str) -> dict:
    """The three sweep loads on whatever `adgen` config is loaded now."""
    client_rate(triton, pool, cfg.batch, cfg.concurrency, cfg.n_per_prompt,
                min(1.0, cfg.sweep_seconds))  # warm-up: fresh stubs, sessions
    out = {}
    for key, (b, c) in (("b1_c1", (1, 1)), ("b1_c16", (1, 16))):
        data = pa_data_adgen(tmp / f"sweep-{tag}-{key}.json", pool, 3000, prompts_repeat(b, cfg))
        out[key] = perf_analyzer(triton, "adgen", b, c, data, cfg.sweep_window_s,
                                 tmp / f"sweep-{tag}-{key}.csv")
        out[key].pop("csv_row", None)
        if "error" in out[key]:
            raise BenchError(f"perf_analyzer batch {b} concurrency {c}: {out[key]['error']}")
    out["job_shape"] = client_rate(triton, pool, cfg.batch, cfg.concurrency, cfg.n_per_prompt,
                                   cfg.sweep_seconds)
    return out


def _combine(passes: list[dict]) -> dict:
    """Median over passes of images/s and of each latency percentile; spread kept."""
    out = {}
    for key in ("b1_c1", "b1_c16", "job_shape"):
        xs = [p[key] for p in passes]
        rates = [x["images_per_s"] for x in xs]
        out[key] = {"images_per_s": statistics.median(rates), "images_per_s_passes": rates,
                    "latency_ms": {k: statistics.median(x["latency_ms"][k] for x in xs)
                                   for k in xs[0]["latency_ms"] if k in ("p50", "p95", "p99")}}
    return out


def batching_sweep(cfg: ServingConfig, triton: LocalTriton, pool: PromptPool, tmp: Path,
                   log) -> dict:
    """Every setting measured in each pass (pass 2 runs in reverse order, so drift on a shared
    machine does not favour the settings measured first); medians over passes."""
    committed = committed_setting("adgen")
    settings = list(cfg.sweep)
    if committed not in settings:
        settings.insert(0, committed)
    base = triton.committed["adgen"]
    passes: dict[int, list] = {i: [] for i in range(len(settings))}
    errors: dict[int, str] = {}
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
                    passes[i].append({"reload_s": reload_s,
                                      **_measure_setting(cfg, triton, pool, tmp, f"{n}-{i}")})
                except (AdgenError, subprocess.TimeoutExpired) as exc:  # BenchError, ClientError
                    errors[i] = str(exc)
    finally:
        triton.reload("adgen")  # back to the committed config for whatever runs next
    rows = []
    for i, s in enumerate(settings):
        row = {"setting": asdict(s), "label": s.label, "committed": s == committed}
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
    """PICK_RULE; marks each row's tail ratio, score and eligibility in place."""
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
    return max((r for r in ok if r["eligible"]), key=lambda r: r["score"])
