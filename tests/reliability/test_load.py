"""Sustained load against a local tritonserver on 127.0.0.1: concurrency 16,
zero errors, request latency p50/p95/p99 and the server's memory (RSS of tritonserver + its
python-backend stubs) over time.

    ADGEN_LOAD_SECONDS=300 ADGEN_LOAD_REPORT=load.json \\
        python -m pytest -m slow tests/reliability/test_load.py -s   # the 5-minute run

The default suite runs a 4-second version against the session server; the sustained one
(marked slow) starts its own server so its memory figures start from a fresh process.
Every request is made with retries disabled, so any failure counts as an error.
"""
from __future__ import annotations

import asyncio
import json
import os
import random
import time
from pathlib import Path

import numpy as np
import pytest

from reliability_helpers import rss_bytes, session_pids, start_server

CONCURRENCY = 16
BATCH = 4  # images per request, like `adgen generate`'s batches
DISTINCT_PROMPTS = 512  # well under the server's 4096-entry embedding cache


def _prompts() -> list[str]:
    colours = ["red", "blue", "green", "yellow", "purple", "orange", "teal", "pink"]
    things = ["apple", "sneaker", "gift box", "rocket", "guitar", "pizza", "umbrella", "car"]
    return [f"a {colours[i % 8]} {things[(i // 8) % 8]} {i // 64}, flat sticker style"
            for i in range(DISTINCT_PROMPTS)]


def _stats(url: str) -> tuple[int, int]:
    import tritonclient.grpc as grpcclient
    with grpcclient.InferenceServerClient(url) as c:
        s = c.get_inference_statistics("adgen", as_json=True)["model_stats"][0]
    return int(s.get("inference_count", 0)), int(s.get("execution_count", 0))


def run_load(server, seconds: float, warmup_s: float, sample_s: float = 2.0) -> dict:
    """CONCURRENCY workers send BATCH-image requests for `seconds`; returns the figures."""
    from adgen.serving.jobs.client import AdgenClient, ClientConfig
    prompts = _prompts()
    url = server.grpc_url
    pid = server.process.pid
    latencies, errors, samples = [], [], []
    before = _stats(url)

    async def main():
        cfg = ClientConfig(urls=(url,), timeout_s=60, retries=0)
        async with AdgenClient(cfg) as client:
            t0 = time.monotonic()
            end = t0 + seconds

            async def worker(w: int):
                rng = random.Random(w)
                while time.monotonic() < end:
                    batch = rng.sample(prompts, BATCH)
                    seeds = [rng.randrange(2**63) for _ in range(BATCH)]
                    start = time.perf_counter()
                    try:
                        images, _ = await client.infer(batch, seeds)
                        assert images.shape == (BATCH, 64, 64, 3)
                    except Exception as exc:  # noqa: BLE001  (every failure is counted)
                        errors.append(f"{type(exc).__name__}: {exc}"[:300])
                        continue
                    latencies.append((time.perf_counter() - start) * 1000.0)

            async def sampler():
                while time.monotonic() < end:
                    samples.append((round(time.monotonic() - t0, 1),
                                    rss_bytes(session_pids(pid))))
                    await asyncio.sleep(sample_s)
            await asyncio.gather(sampler(), *(worker(w) for w in range(CONCURRENCY)))
            return time.monotonic() - t0

    rss_start = rss_bytes(session_pids(pid))
    wall = asyncio.run(main())
    rss_end = rss_bytes(session_pids(pid))
    after = _stats(url)
    warm = [rss for t, rss in samples if t >= warmup_s] or [rss_end]
    arr = np.asarray(latencies) if latencies else np.asarray([np.nan])
    mib = 1 << 20
    return {
        "seconds": round(wall, 1), "concurrency": CONCURRENCY, "batch": BATCH,
        "requests": len(latencies), "errors": len(errors), "error_examples": errors[:5],
        "images_per_s": round(len(latencies) * BATCH / wall, 1),
        "latency_ms": {q: round(float(np.percentile(arr, int(q[1:]))), 1)
                       for q in ("p50", "p95", "p99")} | {"max": round(float(arr.max()), 1)},
        "server_rss_mib": {"before": round(rss_start / mib, 1),
                           "after_warmup": round(warm[0] / mib, 1),
                           "end": round(rss_end / mib, 1),
                           "peak": round(max(r for _, r in samples) / mib, 1) if samples else None,
                           "growth_after_warmup": round((rss_end - warm[0]) / mib, 1)},
        "server_processes": len(session_pids(pid)),
        "avg_server_batch": round((after[0] - before[0]) / max(1, after[1] - before[1]), 2),
        "rss_samples_mib": [(t, round(r / mib, 1)) for t, r in samples],
        "machine": f"{os.cpu_count()} CPUs",
    }


def _report(result: dict) -> None:
    text = json.dumps(result, indent=2)
    print(text)
    target = os.environ.get("ADGEN_LOAD_REPORT")
    if target:
        Path(target).write_text(text + "\n")


@pytest.mark.triton
def test_short_load_at_concurrency_16_has_no_errors(triton):
    result = run_load(triton, seconds=4.0, warmup_s=1.5)  # tens of requests on 2 busy cores
    _report(result)
    assert result["errors"] == 0, result["error_examples"]
    assert result["requests"] >= CONCURRENCY
    assert result["avg_server_batch"] > 1.0  # concurrent requests were batched together
    assert triton.is_running()


@pytest.mark.slow
@pytest.mark.triton
def test_sustained_load_at_concurrency_16(model_repo, tmp_path):
    seconds = float(os.environ.get("ADGEN_LOAD_SECONDS", "300"))
    server = start_server(model_repo, tmp_path / "server.log")
    try:
        result = run_load(server, seconds=seconds, warmup_s=min(60.0, seconds / 5),
                          sample_s=5.0)
        result["command"] = ("ADGEN_LOAD_SECONDS=%g python -m pytest -m slow -s "
                             "tests/reliability/test_load.py" % seconds)
        _report(result)
        assert result["errors"] == 0, result["error_examples"]
        rss = result["server_rss_mib"]
        # A leak shows as steady growth after warm-up; allow allocator noise.
        assert rss["growth_after_warmup"] < max(64.0, 0.2 * rss["after_warmup"]), rss
        assert server.is_running()
    finally:
        assert server.stop() == 0
