"""`adgen bench`: the quick run end to end on a tiny checkpoint (real tritonserver, real
perf_analyzer, real `adgen generate`), its result files, option errors, the sweep's pick rule,
and the GPU script's CPU smoke path / clear failure without a GPU."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from adgen.cli import main

ROOT = Path(__file__).resolve().parents[1]


def _has_libb64() -> bool:
    try:
        out = subprocess.run(["ldconfig", "-p"], capture_output=True, text=True).stdout
    except OSError:
        return False
    return "libb64.so.0d" in out


needs_perf_analyzer = pytest.mark.skipif(
    not _has_libb64(), reason="perf_analyzer needs Debian's libb64-0d (`make sysdeps` as root)")


@pytest.fixture(scope="module")
def quick_bench(tiny_checkpoint, tiny_upsampler, text_encoder_dir, tmp_path_factory):
    """`adgen bench --quick`, all four parts, run once for the tests below (1-2 min on two
    cores: three scratch tritonservers, perf_analyzer, the batching sweep): the results
    folder, its summary, the machine's folder and what the command printed."""
    import contextlib
    import io
    from unittest import mock

    from benchmarks.common import machine_name
    tmp = tmp_path_factory.mktemp("bench")
    out = tmp / "results"
    printed = io.StringIO()
    # exports of the tiny checkpoints go to this run's folder, not the project's artifacts/
    with mock.patch("adgen.export.repo.artifacts_dir", lambda: tmp / "artifacts"), \
            contextlib.redirect_stdout(printed):
        code = main(["bench", "--quick", "--model", str(tiny_checkpoint), "--upsampler",
                     str(tiny_upsampler), "--results-dir", str(out)])
    assert code == 0, printed.getvalue()[-2000:]
    return {"out": out, "summary": json.loads((out / "summary.json").read_text()),
            "folder": out / machine_name(), "printed": printed.getvalue(), "tmp": tmp}


@pytest.mark.slow
@pytest.mark.triton
@needs_perf_analyzer
def test_bench_quick_summary_has_every_part_ratio_and_the_served_precision(quick_bench):
    from benchmarks.common import machine_name
    summary = quick_bench["summary"]
    assert summary["parts"] == ["backends", "serving", "job", "job256"]
    assert summary["quick"] is True and summary["command"].startswith("adgen bench --quick")
    assert set(summary["ratios"]) == {"ort_vs_eager_b64", "gemm_efficiency",
                                      "triton_vs_inprocess", "e2e_vs_triton",
                                      "p99_over_p50_b1_c1", "generate_256_png_vs_64_png",
                                      "release_vs_previous_release"}
    errors = summary["measurement_errors"]
    for name, value in summary["ratios"].items():
        assert summary[name] == value  # also at the top level of summary.json
        if name in errors:  # past its physical limit: reported as an error, never a value
            assert value is None and summary["met"][name] is None
            assert errors[name]["value"] > errors[name]["limit"]
            continue
        if name == "release_vs_previous_release":  # --model is not the release: no pair
            assert value is None and summary["met"][name] is None
            continue
        assert isinstance(value, float) and value > 0, name
        assert summary["met"][name] in (True, False)
    assert set(summary["part_seconds"]) >= {"backends", "server_start", "serving", "job",
                                            "job256"}
    assert summary["part_budget_s"] == {}  # a quick run has no budget to be held to
    assert summary["machine"]["name"] == machine_name()
    # the tiny checkpoint ships no int8 export: fp32 is served, and the summary says why
    assert summary["headline"]["served_precision"] == "fp32: the model ships no int8 export"
    printed = quick_bench["printed"]
    assert "e2e_vs_triton" in printed and "README" not in printed  # quick runs leave it be


@pytest.mark.slow
@pytest.mark.triton
@needs_perf_analyzer
def test_bench_quick_writes_json_markdown_and_plot_per_part(quick_bench):
    folder = quick_bench["folder"]
    for part in ("backends", "serving", "job", "job256", "summary"):
        assert json.loads((folder / f"{part}.json").read_text())
        assert (folder / f"{part}.md").read_text().startswith("# ")
        assert (folder / f"{part}.png").stat().st_size > 5000


@pytest.mark.slow
@pytest.mark.triton
@needs_perf_analyzer
def test_bench_quick_serving_ran_perf_analyzer_and_the_batching_sweep(quick_bench):
    folder = quick_bench["folder"]
    serving = json.loads((folder / "serving.json").read_text())
    # perf_analyzer really ran against the server: its CSV rows and the metrics agree
    for model in ("adgen", "generator"):
        rows = (folder / f"serving_pa_{model}.csv").read_text().splitlines()
        assert rows[0].startswith("Batch,Concurrency,Inferences/Second")
        assert len(rows) == 1 + len(serving["perf_analyzer"][model])
    for r in serving["perf_analyzer"]["adgen"]:
        assert r["images_per_s"] > 0 and r["metrics"]["requests"] > 0
        assert r["latency_ms"]["p50"] <= r["latency_ms"]["p99"]
    client = serving["inprocess_vs_triton"]["rounds"]["adgen_triton_client"][0]
    assert client["metrics"]["inferences"] == client["images"]
    sweep = serving["dynamic_batching"]
    assert sweep["pick"] in [r["label"] for r in sweep["rows"]]
    assert any(r["committed"] for r in sweep["rows"])


@pytest.mark.slow
@pytest.mark.triton
@needs_perf_analyzer
def test_bench_quick_job_writes_every_png_and_profiles_the_stages(quick_bench):
    job = json.loads((quick_bench["folder"] / "job.json").read_text())
    assert job["jobs"][0]["png_files"] == job["images_per_job"] == 64
    assert job["profile"]["stages_s"]["PNG encode (the job's writer, iTXt chunks)"] > 0
    levels = job["profile"]["png_levels"]                  # the job's writer beside Pillow's
    assert set(levels) == {"shipped", "0", "1", "6"} and levels["shipped"]["bytes_per_image"] > 0


@pytest.mark.slow
@pytest.mark.triton
@needs_perf_analyzer
def test_bench_quick_256_px_rows_upsampler_and_verdicts(quick_bench):
    """The upsampler beside the generator (same GEMM ceiling), and the job256 part: every
    format served by the right model, encoders measured, a verdict per format."""
    folder, summary = quick_bench["folder"], quick_bench["summary"]
    up = json.loads((folder / "backends.json").read_text())["upsampler"]
    assert [r["batch"] for r in up["rows"]] == [1, 4] and up["flops_per_image"] > 1e6
    assert all(r["images_per_s"] > 0 and 0 < r["gemm_efficiency"] for r in up["rows"])
    assert "Upsampler (64 → 256 px" in (folder / "backends.md").read_text()
    j2 = json.loads((folder / "job256.json").read_text())
    assert set(j2["jobs"]) == {"64 px png", "256 px png", "256 px webp", "256 px jpeg"}
    for label, (row,) in j2["jobs"].items():
        assert row["images"] == j2["images_per_job"] == 16 and row["images_per_s"] > 0
        assert row["metrics"]["inferences"] == 16, label  # the right model served them
    assert j2["jobs"]["256 px png"][0]["metrics"]["requests"] > 0
    assert set(j2["encode"]) == {"png 256 px", "webp 256 px", "jpeg 256 px", "png 64 px"}
    assert all(e["bytes_per_image"] > 0 and e["ms_per_image"] > 0
               for e in j2["encode"].values())
    assert j2["inprocess_256"]["stages_ms_per_image"]["upsampler (64 -> 256 px)"] > 0
    for fmt, v in j2["verdict"].items():
        assert v["met"] == (v["images_per_s"] >= 50) and (v["met"] or v["limit"]), fmt
    assert set(summary["bars"]) == {f"generate_256_{f}_images_per_s" for f in
                                    ("png", "webp", "jpeg")}
    assert "generate_256_png_images_per_s" in summary["headline"]


@pytest.mark.slow
@pytest.mark.triton
@needs_perf_analyzer
def test_bench_quick_results_name_no_folder_of_this_machine(quick_bench):
    for f in quick_bench["folder"].iterdir():
        if f.suffix in (".json", ".md", ".csv"):
            text = f.read_text()
            assert str(ROOT) not in text and str(Path.home()) + "/" not in text, f.name


@pytest.mark.slow
@pytest.mark.triton
@needs_perf_analyzer
def test_bench_readme_proposal_is_a_patch_of_the_marked_block_only(quick_bench, tmp_path,
                                                                    monkeypatch):
    """The README change a full run proposes: a patch touching only the block between the
    markers, from the summary; the README itself is never written."""
    import benchmarks.common
    from benchmarks.cli import README_BEGIN, README_END, propose_readme
    from benchmarks.common import machine_name
    fake = tmp_path / "repo"
    fake.mkdir()
    original = f"# x\n{README_BEGIN}\nold\n{README_END}\ntail\n"
    (fake / "README.md").write_text(original)
    monkeypatch.setattr(benchmarks.common, "ROOT", fake)
    proposal = tmp_path / "proposal"
    proposal.mkdir()
    patch = propose_readme(quick_bench["summary"], proposal)
    assert (fake / "README.md").read_text() == original
    subprocess.run(["git", "apply", str(patch)], cwd=fake, check=True)
    text = (fake / "README.md").read_text()
    assert text.startswith("# x\n") and text.endswith(f"{README_END}\ntail\n")
    assert "old" not in text and "| `e2e_vs_triton` |" in text
    assert (proposal / "README.block.md").read_text().strip() in text
    assert "`adgen generate --size 256` through Triton" in text and "Upsampler (64 → 256" in text
    assert f"benchmarks/results/{machine_name()}/summary.png" in text


@pytest.mark.triton
def test_bench_quick_job_part_runs_end_to_end(tiny_checkpoint, tmp_path, capsys):
    """The one part of `adgen bench --quick` that make test runs (one scratch tritonserver,
    ~20 s): the command's wiring and the job benchmark's timers stay working; the other parts
    run in the slow tests above."""
    from benchmarks.common import machine_name
    out = tmp_path / "r"
    assert main(["bench", "--quick", "--only", "job", "--model", str(tiny_checkpoint),
                 "--results-dir", str(out)]) == 0, capsys.readouterr().err[-2000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["parts"] == ["job"] and summary["quick"] is True
    folder = out / machine_name()
    job = json.loads((folder / "job.json").read_text())
    assert job["jobs"][0]["png_files"] == job["images_per_job"] == 64
    assert job["profile"]["stages_s"]["PNG encode (the job's writer, iTXt chunks)"] > 0
    levels = job["profile"]["png_levels"]                  # the job's writer beside Pillow's
    assert set(levels) == {"shipped", "0", "1", "6"} and levels["shipped"]["bytes_per_image"] > 0
    # the reference is the same job's requests through the same server, writing nothing
    ref, run = job["reference_client"][0], job["jobs"][0]
    assert ref["images"] == ref["metrics"]["inferences"] == 64
    assert (ref["batch"], ref["concurrency"]) == (run["batch"], run["concurrency"])
    assert ref["metrics"]["requests"] == run["metrics"]["requests"] == 8  # 64 / batch 8
    # the job's subjects are concept names (no encoder); the own-words job embeds each one
    [own] = job["own_words_jobs"]
    assert (run["subjects_named"], run["subjects_embedded"], run["subjects_cached"]) == \
        (16, 0, 0)
    assert (own["subjects_named"], own["subjects_embedded"], own["subjects_cached"]) == \
        (0, 16, 0)
    assert 0 < job["ratios"]["e2e_own_words_vs_triton"] == \
        summary["headline"]["e2e_own_words_vs_triton"]
    assert job["file_create_ms"] > 0 and "A file create in the job's scratch folder took" in \
        (folder / "job.md").read_text()
    assert set(summary["part_seconds"]) == {"setup", "server_start", "job", "server_stop"}
    assert (folder / "job.md").read_text().startswith("# ")
    assert (folder / "job.png").stat().st_size > 5000


def test_bench_rejects_unknown_part_in_one_line(capsys):
    assert main(["bench", "--only", "serving,gpu"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: --only takes a comma list of backends, serving, job, job256; got "
                   "'serving,gpu'"]


def test_bench_rejects_missing_model(tmp_path, capsys):
    assert main(["bench", "--model", str(tmp_path / "nope"), "--only", "job",
                 "--results-dir", str(tmp_path / "r")]) == 2
    assert "no such checkpoint" in capsys.readouterr().err
    assert not (tmp_path / "r" / "summary.json").exists()


def test_bench_dry_run_prints_plan_and_writes_nothing(tmp_path, capsys):
    assert main(["bench", "--dry-run", "--only", "job,backends",
                 "--results-dir", str(tmp_path / "r")]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["config"]["parts"] == ["backends", "job"]  # pipeline order
    assert not (tmp_path / "r").exists()


def test_bench_job256_without_an_upsampler_is_skipped_with_its_reason(
        tiny_checkpoint, tmp_path, monkeypatch, capsys):
    """No --upsampler and no models/adgen-up256: the part says so, no server is started."""
    import adgen.paths
    from benchmarks.common import machine_name
    monkeypatch.setattr(adgen.paths, "release_upsampler_dir", lambda: tmp_path / "none")
    out = tmp_path / "r"
    assert main(["bench", "--quick", "--only", "job256", "--model", str(tiny_checkpoint),
                 "--results-dir", str(out)]) == 0
    j2 = json.loads((out / machine_name() / "job256.json").read_text())
    assert "no release upsampler at models/adgen-up256" in j2["skipped"]
    assert "Not measured: no release upsampler" in (out / machine_name() / "job256.md").read_text()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["parts"] == ["job256"] and summary["bars"] == {}
    assert summary["headline"]["job256"].startswith("not measured: no release upsampler")
    assert "building the model repository" not in capsys.readouterr().err


def test_job256_verdict_names_the_limiting_side():
    from benchmarks.job256 import verdict
    job = {"format": "webp", "images_per_s": 30.0, "server_cpu_ms_per_image": 20.0,
           "client_cpu_ms_per_image": 30.0}
    v = verdict(job, triton_256=80.0, encode_ms=12.0, bar=50, cores=2)
    assert not v["met"] and v["limit"] == "encode/write (webp)" and "12.0 ms" in v["why"]
    assert v["cpu_budget_ms_per_image_at_bar"] == 40.0
    v = verdict(job, triton_256=35.0, encode_ms=12.0, bar=50, cores=2)
    assert v["limit"] == "compute" and "35.0 images/s" in v["why"]
    v = verdict({**job, "images_per_s": 60.0}, triton_256=80.0, encode_ms=1.0, bar=50, cores=2)
    assert v["met"] and v["limit"] is None


def _row(label, p50, p99, c16, job, committed=False):
    return {"label": label, "committed": committed,
            "b1_c1": {"latency_ms": {"p50": p50, "p99": p99}},
            "b1_c16": {"images_per_s": c16}, "job_shape": {"images_per_s": job}}


def test_batching_pick_prefers_throughput_within_latency_bounds():
    from benchmarks.batching import pick_setting
    rows = [_row("fast but slow tail", 4.0, 40.0, 400, 400),  # p99 > 3x p50: ineligible
            _row("slow p50", 9.0, 10.0, 300, 300),  # p50 > 1.25x best: ineligible
            _row("balanced", 4.5, 9.0, 200, 250, committed=True),
            _row("lower throughput", 4.2, 8.0, 150, 250)]
    assert pick_setting(rows)["label"] == "balanced"
    assert [r["eligible"] for r in rows] == [False, False, True, True]


def test_batching_setting_applies_to_a_triton_config():
    from benchmarks.triton_local import BatchSetting
    base = {"name": "adgen", "instance_group": [{"name": "adgen_0", "count": 1,
                                                 "kind": "KIND_CPU"}],
            "dynamic_batching": {"max_queue_delay_microseconds": 2000},
            "parameters": {"intra_op_threads": {"string_value": "0"}}}
    c = BatchSetting(2, 1, 10000, (16, 32)).apply(base)
    assert c["instance_group"] == [{"count": 2, "kind": "KIND_CPU"}]
    assert c["parameters"]["intra_op_threads"] == {"string_value": "1"}
    assert c["dynamic_batching"] == {"max_queue_delay_microseconds": 10000,
                                     "preferred_batch_size": [16, 32]}
    assert "dynamic_batching" not in BatchSetting(1, 0, None).apply(base)
    assert base["instance_group"][0]["count"] == 1  # the base config is not modified


def test_gpu_script_fails_clearly_without_a_gpu(tmp_path):
    if shutil.which("nvidia-smi"):
        pytest.skip("this machine has nvidia-smi; the no-GPU path cannot be shown here")
    proc = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu.sh")], capture_output=True,
                          text=True, timeout=60, env={**os.environ, "RESULTS_DIR": str(tmp_path)})
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("error: no NVIDIA GPU")
    assert not any(tmp_path.iterdir())


def test_gpu_benchmark_cpu_smoke_path(tiny_checkpoint, tmp_path):
    proc = subprocess.run([sys.executable, "-m", "benchmarks.gpu", "--device", "cpu", "--quick",
                           "--model", str(tiny_checkpoint), "--results-dir", str(tmp_path)],
                          capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    (result,) = tmp_path.glob("*/gpu.json")
    payload = json.loads(result.read_text())
    assert payload["device"] == "cpu"
    assert {"pytorch-eager-fp32", "onnxruntime"} <= set(payload["generator"])
    for rows in payload["generator"].values():
        assert all(r["images_per_s"] > 0 for r in rows)
    assert payload["generator"]["onnxruntime"][0]["provider"].endswith("CPUExecutionProvider")
    assert payload["complete"] is True and payload["gemm_flops"]["fp32"] > 0
    assert result.with_suffix(".md").is_file() and result.with_suffix(".png").is_file()


def _rows(folder):
    from benchmarks.gpu import ROWS_FILE, read_rows
    paths = list(folder.glob(f"*/{ROWS_FILE}"))
    return (read_rows(paths[0]), paths[0]) if paths else ([], None)


def test_gpu_benchmark_killed_run_keeps_its_rows(tiny_checkpoint, tmp_path):
    """SIGKILL the run (what gpu.sh's timeout or an OOM killer does) after its first row:
    every row measured so far is on disk, whole, and its step process died with it."""
    import signal
    import time
    results, scratch = tmp_path / "results", tmp_path / "tmp"
    scratch.mkdir()
    proc = subprocess.Popen([sys.executable, "-m", "benchmarks.gpu", "--device", "cpu",
                             "--quick", "--model", str(tiny_checkpoint), "--results-dir",
                             str(results)], cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True,
                            # the killed run cannot remove its temporary folder: keep it here
                            env={**os.environ, "TMPDIR": str(scratch)})
    try:
        deadline = time.monotonic() + 540  # slow on a loaded CI machine: torch imports
        while time.monotonic() < deadline and proc.poll() is None:
            if any(r["kind"] == "row" for r in _rows(results)[0]):
                break
            time.sleep(0.2)
        assert proc.poll() is None, "the run ended before it could be killed"
        os.killpg(proc.pid, signal.SIGKILL)  # the group this test started: the run only
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    rows, path = _rows(results)
    measured = [r for r in rows if r["kind"] == "row"]
    assert measured and all(r["images_per_s"] > 0 and r["provider"] for r in measured)
    assert len(rows) == len(path.read_text().splitlines())  # no half-written line
    time.sleep(3)
    assert _rows(results)[0] == rows  # the step's process did not outlive the run
    partial = path.with_name("gpu.json")
    if partial.is_file():  # written after each finished step
        assert json.loads(partial.read_text())["complete"] is False


def test_gpu_benchmark_step_time_limit_kills_and_records(tiny_checkpoint, tmp_path):
    """A step past its limit (the test-hang backend never ends) is killed with its process
    group and recorded as skipped, in the rows and in the Markdown. run_step itself, with a
    1 s limit: the CLI's smoke run above covers the rest of the run around it."""
    import argparse
    import time

    from benchmarks.gpu import assemble, markdown, read_rows, run_step
    from benchmarks.gpu_backends import TEST_HANG
    args = argparse.Namespace(device="cpu", model=str(tiny_checkpoint), quick=True)
    rows_path = tmp_path / "rows.jsonl"
    said = []
    t0 = time.monotonic()
    run_step(args, TEST_HANG, rows_path, None, [1], limit_s=1.0, log=said.append)
    assert time.monotonic() - t0 < 60
    rows = read_rows(rows_path)
    assert rows == [{"kind": "skip", "backend": TEST_HANG,
                     "reason": "step time limit: killed after 1 s"}]
    assert said == [f"{TEST_HANG}: killed at its 1 s limit; rows so far kept"]
    header = {"machine": {}, "device": "cpu", "model": "tiny", "arch": "film", "z_dim": 32,
              "generator_flops_per_image": 1e6, "complete": True}
    md = markdown(assemble(header, rows), "python -m benchmarks.gpu")
    assert f"- {TEST_HANG}: step time limit: killed after 1 s" in md


def test_gpu_backends_say_why_they_cannot_run():
    """No TensorRT / no onnxruntime-gpu: the reason a GPU row is missing is in the results."""
    import torch

    from benchmarks import gpu_backends as GB
    from adgen.training.networks import build_generator
    module = build_generator("film", ngf=4)
    with pytest.raises(GB.Skip, match="no ONNX export"):
        GB.make("onnxruntime", torch, module, 128, None, "cuda", 4096)
    with pytest.raises(GB.Skip, match=r"onnxruntime has no CUDAExecutionProvider .*adgen\[gpu\]"):
        GB.make("onnxruntime", torch, module, 128, Path(__file__), "cuda", 4096)
    with pytest.raises(GB.Skip, match=r"TensorRT is not installed: pip install 'adgen\[tensorrt\]'"):
        GB.make("tensorrt-fp16", torch, module, 128, Path(__file__), "cuda", 4096)
    with pytest.raises(GB.Skip, match="needs CUDA"):
        GB.make("cuda-graphs-fp16", torch, module, 128, None, "cpu", 4)


@pytest.mark.parametrize("setting", [
    {"instances": 2, "threads": 1, "delay_us": 10000, "preferred": [16, 32]},
    {"instances": 1, "threads": 0, "delay_us": None, "preferred": []},
])
def test_apply_pick_rewrites_only_the_batching_lines(tmp_path, setting):
    from benchmarks.triton_local import BatchSetting, apply_pick, setting_of
    from adgen.export.repo import SOURCES, check_against_contract, load_config
    pick = BatchSetting(**{**setting, "preferred": tuple(setting["preferred"])})
    result = tmp_path / "serving.json"
    result.write_text(json.dumps({"dynamic_batching": {
        "pick": pick.label, "rows": [{"label": pick.label, "setting": setting}]}}))
    cfg = tmp_path / "config.pbtxt"
    original = (SOURCES / "adgen" / "config.pbtxt").read_text()
    cfg.write_text(original)
    assert apply_pick(result, cfg) == pick
    text = cfg.read_text()
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2
    parsed = text_format.Parse(text, model_config_pb2.ModelConfig())
    assert setting_of(parsed) == pick and not check_against_contract(parsed)
    # comments and the contract lines survive untouched
    keep = [ln for ln in original.splitlines() if ln.startswith("#") or "name:" in ln]
    assert all(ln in text.splitlines() for ln in keep)
    assert load_config("adgen").max_batch_size == parsed.max_batch_size


def test_apply_pick_without_a_pick_is_one_clear_error(tmp_path):
    from benchmarks.triton_local import BenchError, apply_pick
    result = tmp_path / "serving.json"
    result.write_text(json.dumps({"dynamic_batching": {"pick": None, "rows": []}}))
    with pytest.raises(BenchError, match="records no pick"):
        apply_pick(result, tmp_path / "config.pbtxt")
