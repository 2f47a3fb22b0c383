"""Ratios physics forbids are reported as measurement errors, never as results."""
from __future__ import annotations

from benchmarks.cli import impossible, summary_markdown


def test_impossible_ratios_are_named_with_their_limit_and_reason():
    ratios = {"gemm_efficiency": 2.17, "e2e_vs_triton": 1.45, "triton_vs_inprocess": 1.3,
              "ort_vs_eager_b64": None}
    errors = impossible(ratios)
    assert set(errors) == {"gemm_efficiency", "e2e_vs_triton"}   # >1 is fine for a speed-up
    assert errors["gemm_efficiency"]["limit"] == 1.0 and "ceiling" in errors["gemm_efficiency"]["why"]
    assert "faster than the server" in errors["e2e_vs_triton"]["why"]
    assert impossible({"gemm_efficiency": 0.8, "e2e_vs_triton": 0.97}) == {}


def test_the_summary_page_says_measurement_error_instead_of_a_value():
    sm = {"machine": {"name": "m"}, "command": "adgen bench", "git_commit": "x",
          "started_at": "t", "duration_s": 60, "model": "release",
          "ratios": {"gemm_efficiency": None, "e2e_vs_triton": 0.9},
          "met": {"gemm_efficiency": None, "e2e_vs_triton": True},
          "goals": {"gemm_efficiency": ">= 0.5", "e2e_vs_triton": ">= 0.7"},
          "measurement_errors": {"gemm_efficiency": {"value": 2.17, "limit": 1.0,
                                                     "why": "share of a ceiling above 1"}},
          "bars": {}, "headline": {}, "what_each_change_bought": [], "files": {}}
    page = summary_markdown(sm)
    line = next(x for x in page.splitlines() if x.startswith("| gemm_efficiency"))
    assert "measurement error" in line and "2.17" in line and "| — |" in line
