"""Smoke tests: every benchmark script runs end to end on a tiny model and writes results."""
import json

import pytest


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    from training.checkpoint import save_generator
    from training.networks import build_generator
    return save_generator(build_generator("film", ngf=4), {}, tmp_path_factory.mktemp("ckpt") / "g")


def test_backends_benchmark_smoke(tiny_checkpoint, tmp_path, text_encoder_dir):
    from benchmarks import backends
    assert backends.main(["--model", str(tiny_checkpoint), "--quick", "--precisions", "fp32",
                          "--out-subdir", str(tmp_path)]) == 0
    payload = json.loads((tmp_path / "backends.json").read_text())
    assert set(payload["generator"]) >= {"pytorch-eager", "onnxruntime-fp32"}
    assert payload["generator_flops_per_image"] > 1e6
    assert payload["gemm"]["flops_median"] > 1e9
    assert payload["max_abs_diff_vs_eager"]["onnxruntime-fp32"] < 1e-4
    assert (tmp_path / "backends.md").read_text().startswith("# Generator backends")
    assert (tmp_path / "backends.png").stat().st_size > 1000


def test_text_encoder_benchmark_smoke(tmp_path, monkeypatch, text_encoder_dir):
    from benchmarks import common, text_encoder
    monkeypatch.setattr(common, "RESULTS_DIR", tmp_path)
    assert text_encoder.main(["--prompts", "8", "--batch", "4", "--repeats", "1"]) == 0
    (result,) = tmp_path.glob("*/text_encoder.json")
    payload = json.loads(result.read_text())
    assert payload["min_cosine"] > 0.999
    assert payload["results"]["onnxruntime"]["prompts_per_s"] > 0


def test_command_line_hides_absolute_paths_and_quotes():
    from benchmarks.common import command_line
    cmd = command_line("backends", ["--model", "/somewhere/deep/ckpt", "--note", "two words"])
    assert cmd == "python -m benchmarks.backends --model '<abs>/ckpt' --note 'two words'"
    assert command_line("job", []) == "python -m benchmarks.job"
