"""The int8 generator a model ships is what `adgen repo build` serves where the rule and the
CPU allow it, and Triton serves it pixel for pixel like the local engine."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

pytestmark = pytest.mark.triton


@pytest.fixture(scope="module")
def model_with_int8(small_checkpoint, tiny_dataset, text_encoder_dir, tmp_path_factory):
    """A checkpoint folder shipping int8/ (a real static-quantized export) whose recorded
    decision says it kept the picture under the current rule."""
    from adgen.export.onnx_export import export_onnx
    from adgen.export.precision import KEEP_RULE
    from adgen.export.quantize import record_measurements
    model = tmp_path_factory.mktemp("model") / "small"
    shutil.copytree(small_checkpoint, model)
    export_onnx(model, model / "int8", precision="int8", calibration_size=32,
                calibration_data=tiny_dataset, parity_batches=(1,), progress=False)
    record_measurements(model / "int8", "decision",
                        {"keep": True, "rule": KEEP_RULE, "reason": "keeps the picture (test)"})
    return model


def _build(model, out, text_encoder_dir, monkeypatch, flags):
    import adgen.export.precision as precision
    from adgen.export.repo import build_repository
    monkeypatch.setattr(precision, "cpu_flags", lambda: frozenset(flags))
    repo = build_repository(out, model=model, text_encoder=text_encoder_dir, upsampler=False,
                            progress=False)
    return repo, json.loads((repo / "adgen_repository.json").read_text())


def test_repo_build_serves_int8_only_on_a_cpu_with_int8_units(model_with_int8, tmp_path,
                                                             text_encoder_dir, monkeypatch):
    repo, info = _build(model_with_int8, tmp_path / "vnni", text_encoder_dir, monkeypatch,
                        {"avx2", "avx512_vnni"})
    assert info["precision"]["served"] == "int8" and "avx512_vnni" in info["precision"]["reason"]
    assert info["generator"]["name"].endswith("-int8")
    served = repo / "adgen" / "1" / "generator" / "generator.onnx"
    assert served.read_bytes() == (model_with_int8 / "int8" / "generator.onnx").read_bytes()
    repo, info = _build(model_with_int8, tmp_path / "avx2", text_encoder_dir, monkeypatch,
                        {"avx2", "fma"})
    assert info["precision"]["served"] == "fp32"
    assert not info["generator"]["name"].endswith("-int8")


def test_triton_serves_the_int8_generator_like_the_local_engine(model_with_int8, tmp_path,
                                                               text_encoder_dir, monkeypatch):
    from adgen.serving.jobs.triton_server import ServerConfig, TritonServer, free_port
    repo, info = _build(model_with_int8, tmp_path / "repo", text_encoder_dir, monkeypatch,
                        {"avx512_vnni"})
    assert info["precision"]["served"] == "int8"
    prompts = tmp_path / "p.txt"
    prompts.write_text("a red apple on a teal background\nsummer sale sneakers\n")
    cfg = ServerConfig(str(repo), grpc_port=free_port(), http_port=free_port(),
                       metrics_port=free_port(), log_file=str(tmp_path / "log"))

    def generate(out, *engine):
        r = subprocess.run([sys.executable, "-m", "adgen", "generate", str(prompts), "-o",
                            str(out), "-n", "3", *engine], capture_output=True, text=True,
                           env={**os.environ, "TQDM_DISABLE": "1"}, timeout=300)
        assert r.returncode == 0, r.stderr
        return {e["custom_id"]: (e["pixels_sha256"], e["model"]["name"])
                for e in map(json.loads, (out / "manifest.jsonl").read_text().splitlines())}

    with TritonServer(cfg) as server:
        served = generate(tmp_path / "t", "--url", server.grpc_url)
    local = generate(tmp_path / "l", "--engine", "local", "--model", str(repo))
    assert len(served) == 6 and served == local
    assert all(name.endswith("-int8") for _, name in served.values())


def test_precision_benchmark_serves_both_repositories_side_by_side(model_with_int8,
                                                                    monkeypatch):
    """benchmarks/precision_served on the tiny model: the default repository here is the
    int8 one, the job rows say what each server served, the report renders."""
    import adgen.export.precision as precision
    from benchmarks.precision_served import PrecisionConfig, markdown, run
    monkeypatch.setattr(precision, "cpu_flags", lambda: frozenset({"avx512_vnni"}))
    p = run(PrecisionConfig(model=str(model_with_int8), rounds=1, prompts=3, n=2,
                            generator_rounds=2, threads=1), log=lambda *a: None)
    assert p["choice"]["precision"] == "int8" and p["choice"]["int8_units"] == ["avx512_vnni"]
    assert {(r["repository"], r["served"]) for r in p["jobs"]} == {("fp32", "fp32"),
                                                                  ("auto", "int8")}
    assert all(r["images_per_s"] > 0 for r in p["jobs"])
    assert set(p["generator"]) == {"fp32", "int8"} and p["generator_ratio"] > 0
    text = markdown(p, "python -m benchmarks.precision_served")
    assert "serves **int8** here" in text and "Median images/s" in text


def test_demo_repository_follows_the_precision_this_host_serves(model_with_int8, tmp_path,
                                                                text_encoder_dir, monkeypatch):
    """The demo builds from the release model (not its fp32 export folder), so it serves the
    int8 variant where the rule allows, and rebuilds when the choice changes."""
    import adgen.cli.demo as demo
    import adgen.export.precision as precision
    import adgen.export.repo as repo_mod
    for module in (demo, repo_mod):
        monkeypatch.setattr(module, "release_model_dir", lambda: model_with_int8)
    monkeypatch.setattr(repo_mod, "release_upsampler_dir", lambda: tmp_path / "no-up")
    repo = tmp_path / "demo-repo"

    def served(flags):
        monkeypatch.setattr(precision, "cpu_flags", lambda: frozenset(flags))
        demo.ensure_repository(repo, progress=False)
        return json.loads((repo / "adgen_repository.json").read_text())["precision"]["served"]

    assert served({"avx512_vnni"}) == "int8"
    assert served({"avx2"}) == "fp32"  # another host's choice: rebuilt, not reused


def test_demo_repository_follows_the_upsampler_it_would_serve(model_with_int8, tiny_upsampler,
                                                              tmp_path, text_encoder_dir,
                                                              monkeypatch):
    """The demo's cached repository is rebuilt when the upsampler it would serve changes
    name with the same weights (what a renamed release folder does), and reused otherwise."""
    import shutil

    import adgen.cli.demo as demo
    import adgen.export.repo as repo_mod
    up = tmp_path / "up-a"
    shutil.copytree(tiny_upsampler, up)
    for module in (demo, repo_mod):
        monkeypatch.setattr(module, "release_model_dir", lambda: model_with_int8)
    monkeypatch.setattr(repo_mod, "release_upsampler_dir", lambda: up)
    repo = tmp_path / "demo-repo"

    def built() -> tuple[str, int]:
        demo.ensure_repository(repo, progress=False)
        info = repo / "adgen_repository.json"
        return json.loads(info.read_text())["upsampler"]["name"], info.stat().st_mtime_ns

    name, first = built()
    assert name == "up-a"
    assert built() == (name, first)  # nothing changed: reused
    up = up.rename(tmp_path / "up-b")  # the same weights under another name
    assert built()[0] == "up-b"
