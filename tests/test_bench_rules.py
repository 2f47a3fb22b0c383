"""The benchmark's measurement rules on synthetic timings (no real benchmark runs here): when
a row stops repeating, which ceiling a row is divided by, and which ratios are reported as
measurement errors instead of results."""
from __future__ import annotations

import itertools

import pytest

from benchmarks.ceilings import CeilingTrack, GemmTimer, alternate, pick_n
from benchmarks.common import RepeatRule, repeat_until_flat, spread


def _calls(seconds):
    """A timed call that returns the next of `seconds` each time, and how often it ran."""
    it = iter(seconds)
    ran = []

    def timed():
        ran.append(1)
        return next(it)
    return timed, ran


RULE = RepeatRule(k=4, tol=0.05, min_calls=4, max_calls=30, max_seconds=100.0)


def test_spread_is_the_range_over_the_median():
    assert spread([1.0, 1.0, 1.0]) == 0
    assert spread([0.9, 1.0, 1.2]) == pytest.approx(0.3)


def test_a_flat_series_stops_after_k_calls():
    timed, ran = _calls(itertools.repeat(0.010))
    times = repeat_until_flat(timed, RULE)
    assert len(times) == len(ran) == 4 and RULE.stop(times) == "flat"


def test_a_noisy_series_keeps_repeating_until_its_last_k_settle():
    noisy = [0.010, 0.020, 0.011, 0.019, 0.012, 0.018]  # every window of 4 spreads > 5%
    timed, ran = _calls(noisy + [0.015] * 100)
    times = repeat_until_flat(timed, RULE)
    # it ran past the noise and stopped on the first 4 settled calls
    assert times == noisy + [0.015] * 4 and RULE.stop(times) == "flat"
    assert RULE.stop(noisy) is None


def test_a_series_that_never_settles_stops_at_the_call_cap():
    timed, ran = _calls(itertools.cycle([0.010, 0.020]))
    times = repeat_until_flat(timed, RULE)
    assert len(times) == RULE.max_calls and RULE.stop(times) == "cap"


def test_slow_calls_stop_at_the_seconds_cap_even_before_k_calls():
    rule = RepeatRule(k=5, tol=0.05, min_calls=5, max_calls=40, max_seconds=3.0)
    timed, ran = _calls(itertools.repeat(1.4))  # a 1.4 s call: 3 calls pass 3 s
    assert repeat_until_flat(timed, rule) == [1.4, 1.4, 1.4]
    assert rule.stop([1.4, 1.4, 1.4]) == "cap"


def test_a_flat_series_of_short_calls_waits_for_min_seconds():
    rule = RepeatRule(k=3, tol=0.05, min_calls=3, min_seconds=0.05, max_calls=100)
    timed, ran = _calls(itertools.repeat(0.002))
    times = repeat_until_flat(timed, rule)
    assert len(times) == 25 and rule.stop(times) == "flat"  # 25 x 2 ms = the 50 ms floor


def _track(fp32_times, int8_times=None):
    """A CeilingTrack whose GEMM calls (1 GOP each) take the given seconds (a list a sample)."""
    timers = {"fp32": GemmTimer(iter(t for s in fp32_times for t in s).__next__, 1e9, 1000)}
    if int8_times:
        timers["int8"] = GemmTimer(iter(t for s in int8_times for t in s).__next__, 1e9, 1000)
    return CeilingTrack(timers, calls=len(fp32_times[0]))


def test_each_row_is_divided_by_the_ceiling_sampled_around_it():
    # 1 GOP per call: samples at 100, 50 and 20 GOP/s (best call of each), i.e. the machine
    # gets slower during the run; rows at 10 GFLOP/s between samples 0-1 and 1-2
    track = _track([[0.012, 0.010, 0.011], [0.020, 0.021, 0.030], [0.050, 0.060, 0.055]])
    track.sample()
    row_a = {"images_per_s": 10.0}
    track.sample()
    track.attach(row_a, flops_per_image=1e9, precision="fp32")
    row_b = {"images_per_s": 10.0}
    track.sample()
    track.attach(row_b, flops_per_image=1e9, precision="fp32")
    # row a: best of samples 0 and 1 = 100 GOP/s; row b: best of samples 1 and 2 = 50
    assert row_a["ceiling_flops"] == pytest.approx(100e9)
    assert row_a["gemm_efficiency"] == pytest.approx(0.10)
    assert row_b["ceiling_flops"] == pytest.approx(50e9)
    assert row_b["gemm_efficiency"] == pytest.approx(0.20)
    summary = track.summary("fp32", threads=2)
    assert summary["flops_best_per_sample"] == pytest.approx([100e9, 50e9, 20e9])
    assert summary["flops_best"] == pytest.approx(100e9) and summary["calls"] == 9


def test_a_slow_precision_samples_a_smaller_matrix():
    # int8 at ~160 GOP/s: 13 ms at 1024 -> 2048 predicted 0.11 s; kept even 5x slowed down
    assert pick_n(0.013, 1024, 2048, call_s=0.8) == 2048
    assert pick_n(5 * 0.013, 1024, 2048, call_s=0.8) == 2048
    # an emulated kernel 50x slower: 2048 would take 5.2 s a call, 1024 0.65 s
    assert pick_n(50 * 0.013, 1024, 2048, call_s=0.8) == 1024
    assert pick_n(5.0, 1024, 2048, call_s=0.8) == 512  # never below 512
    assert pick_n(0.013, 1024, 1024, call_s=0.8) == 1024  # never above the largest asked


def test_the_fp32_ceiling_is_the_faster_library_taking_turns():
    # torch.mm 20 ms, onnxruntime MatMul 16 ms a call: a sample of 4 calls times each twice
    calls = {"torch": 0, "ort": 0}

    def lib(name, seconds):
        def timed():
            calls[name] += 1
            return seconds
        return timed
    track = CeilingTrack({"fp32": GemmTimer(alternate([lib("torch", 0.020), lib("ort", 0.016)]),
                                            1e9, 1000)}, calls=4)
    track.sample()
    assert calls == {"torch": 2, "ort": 2}
    assert track.around("fp32") == pytest.approx(1e9 / 0.016)


def test_other_precisions_take_half_the_calls_of_fp32():
    track = _track([[0.01] * 4], int8_times=[[0.004] * 2])
    track.sample()
    assert [len(s[0]) for s in track.samples.values()] == [4, 2]


def test_an_int8_row_is_held_against_the_int8_ceiling_only():
    track = _track([[0.010], [0.010]], int8_times=[[0.004], [0.005]])
    track.sample()
    track.sample()
    row = track.attach({"images_per_s": 150.0}, flops_per_image=1e9, precision="int8")
    assert row["own_ceiling_efficiency"] == pytest.approx(150e9 / 250e9)
    assert row["gemm_efficiency"] is None  # int8 FLOP/s over the fp32 ceiling: unlike
    gpu = track.attach({"images_per_s": 1e4}, flops_per_image=1e9, precision=None)
    assert gpu["gemm_efficiency"] is None and gpu["own_ceiling_efficiency"] is None


def test_rows_past_their_ceiling_are_measurement_errors_in_the_backends_part():
    from benchmarks.backends import past_ceiling, share
    ok = {"batch": 64, "ceiling_precision": "fp32", "own_ceiling_efficiency": 0.93,
          "gemm_efficiency": 0.93}
    bad = {"batch": 16, "ceiling_precision": "int8", "own_ceiling_efficiency": 1.4,
           "gemm_efficiency": None}
    payload = {"generator": {"onnxruntime-fp32": [ok], "onnxruntime-int8": [bad]},
               "upsampler": {"rows": [{**ok, "batch": 1, "own_ceiling_efficiency": 1.2}]}}
    errors = past_ceiling(payload)
    assert set(errors) == {"onnxruntime-int8 b16 of int8 GEMM", "upsampler b1 of fp32 GEMM"}
    assert errors["onnxruntime-int8 b16 of int8 GEMM"]["value"] == 1.4
    assert share(0.93) == "0.93" and share(None) == "–"
    assert share(1.4).startswith("measurement error")


def _summarize(parts):
    from benchmarks.cli import BenchConfig, summarize
    from datetime import datetime, timezone
    return summarize(parts, BenchConfig(quick=True), "model", "adgen bench",
                     datetime.now(timezone.utc), 1.0, {}, {"backends": 5.0})


def _backends_part(eff, errors=None):
    row = {"batch": 64, "images_per_s": 100.0}
    return {"generator": {"pytorch-eager": [row], "onnxruntime-fp32": [row]},
            "ort_vs_eager_b64": 2.5, "gemm_efficiency": eff, "gemm": {"flops_median": 1e11},
            "best_backend": "onnxruntime-fp32", "measurement_errors": errors or {},
            "upsampler": {"skipped": "none"}}


def test_the_summary_reports_an_impossible_ratio_as_an_error_not_a_result(monkeypatch):
    import benchmarks.summary
    monkeypatch.setattr(benchmarks.summary, "served_precision", lambda model: "fp32")
    monkeypatch.setattr(benchmarks.summary, "_git_commit", lambda: "x")
    job = {"ratios": {"e2e_vs_triton": 1.12}, "median_images_per_s": {"adgen_generate": 300.0},
           "images_per_job": 2000, "jobs": [{"images_per_s": 300.0}], "settings": []}
    row_err = {"onnxruntime-fp32 b16 of fp32 GEMM": {"value": 1.3, "limit": 1.0, "why": "x"}}
    sm = _summarize({"backends": _backends_part(1.3, row_err), "job": job})
    assert sm["gemm_efficiency"] is None and sm["e2e_vs_triton"] is None
    assert sm["met"]["e2e_vs_triton"] is None and sm["ratios"]["ort_vs_eager_b64"] == 2.5
    assert set(sm["measurement_errors"]) == {"gemm_efficiency", "e2e_vs_triton",
                                             "backends: onnxruntime-fp32 b16 of fp32 GEMM"}
    assert sm["part_seconds"] == {"backends": 5.0}
    fine = _summarize({"backends": _backends_part(0.8),
                       "job": {**job, "ratios": {"e2e_vs_triton": 0.95}}})
    assert fine["gemm_efficiency"] == 0.8 and fine["e2e_vs_triton"] == 0.95
    assert fine["met"]["e2e_vs_triton"] is True and fine["measurement_errors"] == {}


def test_gemm_ceilings_sample_a_smaller_matrix_where_a_precision_is_slow():
    """bf16 and int8 are emulated on CPUs without their units (10-100x slower): a ceiling
    whose call would take longer than call_s is measured on a smaller matrix, fp32 never."""
    from benchmarks.ceilings import gemm_ceilings
    slow = gemm_ceilings(1, n=1024, repeats=1, precisions=("fp32", "bf16"), call_s=1e-9)
    assert slow["fp32"]["n"] == 1024 and slow["bf16"]["n"] == 512
    fast = gemm_ceilings(1, n=1024, repeats=1, precisions=("int8",), call_s=1e9)
    assert fast["int8"]["n"] == 1024 and fast["int8"]["flops_median"] > 0
