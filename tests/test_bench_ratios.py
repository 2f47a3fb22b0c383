"""Ratios physics forbids are reported as measurement errors, never as results."""
from __future__ import annotations

import pytest

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


def _job_payload(ref_rate: float, job_rate: float) -> dict:
    row = {"images_per_s": 0.0, "server_cpu_s": 9.0, "client_cpu_s": 1.0,
           "metrics": {"queue_us_per_request": 1000.0, "compute_infer_us_per_request": 9000.0}}
    return {"machine": {"name": "m"}, "model": "release", "images_per_job": 2000,
            "config": {"prompts": 500, "n": 4, "batch": 32, "concurrency": 4},
            "load_average_at_end": [1.0, 1.0, 1.0],
            "reference_client": [{**row, "images_per_s": ref_rate}],
            "jobs": [{**row, "images_per_s": job_rate, "process_wall_s": 8.0}],
            "median_images_per_s": {"adgen_generate": job_rate, "triton_client": ref_rate},
            "ratios": {"e2e_vs_triton": job_rate / ref_rate}, "profile": None, "settings": []}


def test_the_job_page_prints_a_job_faster_than_its_requests_alone_as_an_error():
    from benchmarks.job import markdown
    page = markdown(_job_payload(300.0, 330.0), "adgen bench --only job")
    median = next(x for x in page.splitlines() if x.startswith("Median:"))
    assert "measurement error" in median and "1.10" in median and "goal" not in median
    page = markdown(_job_payload(300.0, 285.0), "adgen bench --only job")
    median = next(x for x in page.splitlines() if x.startswith("Median:"))
    assert "**e2e_vs_triton 0.95** (goal >= 0.90)" in median


def test_the_backends_table_prints_a_share_above_one_as_an_error():
    from benchmarks.backends import _own_ceiling, _speed_cells
    row = {"batch": 64, "images_per_s": 600.0, "gflops_per_s": 166.0, "calls": 7,
           "latency_ms": {"p50": 100.0, "p95": 101.0, "p99": 102.0},
           "gemm_efficiency": 1.12, "own_ceiling_efficiency": 1.12, "ceiling_precision": "fp32"}
    assert _speed_cells(row)[-1] == "measurement error (1.12 > 1)"
    assert _own_ceiling(row).startswith("measurement error (1.12 > 1)")
    assert _speed_cells({**row, "gemm_efficiency": 0.87})[-1] == "0.87"


def test_dry_run_estimates_are_the_budgets_the_summary_shows(capsys):
    import json

    from adgen.cli import main
    from benchmarks.cli import PART_BUDGET_S
    from benchmarks.summary import estimate_seconds
    assert main(["bench", "--dry-run"]) == 0
    plan = json.loads(capsys.readouterr().out)
    est = plan["estimated_seconds"]
    assert est == estimate_seconds(plan["config"]["parts"])
    assert {k: est[k] for k in PART_BUDGET_S} == PART_BUDGET_S
    assert sum(est.values()) <= 600  # the full run fits in 10 minutes on 2 cores
    assert plan["estimated_minutes"] == round(sum(est.values()) / 60, 1)
    # a part that needs no server is estimated without the server's start
    assert estimate_seconds(["backends"]) == {"backends": PART_BUDGET_S["backends"]}


def test_part_seconds_are_listed_beside_their_budget():
    from benchmarks.summary import part_seconds_markdown
    lines = part_seconds_markdown({"part_seconds": {"backends": 71.4, "setup": 0.2},
                                   "part_budget_s": {"backends": 120}})
    assert "| backends | 71 | 120 |" in lines and "| setup | 0 | — |" in lines
    assert part_seconds_markdown({"part_seconds": {}}) == []


@pytest.mark.parametrize("argv, message", [
    (["--eager-batches", "1,x"], "--eager-batches: want a comma list of batch sizes >= 1, "
                                 "got '1,x'"),
    (["--batches", "0,16"], "--batches: want a comma list of batch sizes >= 1, got '0,16'"),
    (["--batches", "all"], "--batches: want a comma list of batch sizes >= 1, got 'all'"),
    (["--tol", "-0.1"], "--tol: want a number > 0, got '-0.1'"),
    (["--max-calls", "many"], "--max-calls: want a number > 0, got 'many'"),
])
def test_backends_options_reject_malformed_values_in_one_line(argv, message, capsys):
    from benchmarks.backends import main
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1].endswith(message)


def test_the_readme_block_never_shows_an_impossible_ratio_as_a_value():
    from benchmarks.summary import readme_block
    sm = {"machine": {"name": "m", "cpus": 2, "isa": ["avx2"]}, "command": "adgen bench",
          "git_commit": "x", "started_at": "t", "duration_s": 540, "model": "release",
          "ratios": {"e2e_vs_triton": None, "gemm_efficiency": 0.8},
          "met": {"e2e_vs_triton": None, "gemm_efficiency": True},
          "goals": {"e2e_vs_triton": ">= 0.9", "gemm_efficiency": ">= 0.5"},
          "measurement_errors": {"e2e_vs_triton": {"value": 1.45, "limit": 1.0,
                                                   "why": "faster than the server it calls"}},
          "part_seconds": {"backends": 80.0, "job": 70.4}, "headline": {"served_precision": "fp32"},
          "bars": {}, "what_each_change_bought": [], "files": {}}
    block = readme_block(sm)
    line = next(x for x in block.splitlines() if x.startswith("| `e2e_vs_triton`"))
    assert "| — |" in line and "measurement error (1.45" in line
    assert "| `gemm_efficiency` | 0.80 | >= 0.5 | yes |" in block
    assert "Wall seconds per part: backends 80, job 70." in block
