"""Smoke tests: every benchmark script runs end to end on a tiny model and writes results
(tiny_checkpoint and tiny_upsampler: tests/conftest.py)."""
import json

import pytest


def test_backends_benchmark_smoke(tiny_checkpoint, tiny_upsampler, tmp_path, text_encoder_dir,
                                  monkeypatch):
    from benchmarks import backends
    # the tiny upsampler's export goes to this test's folder, not the project's artifacts/
    monkeypatch.setattr("adgen.export.repo.artifacts_dir", lambda: tmp_path / "artifacts")
    assert backends.main(["--model", str(tiny_checkpoint), "--quick", "--precisions", "fp32",
                          "--out-subdir", str(tmp_path), "--upsampler", str(tiny_upsampler)]) == 0
    payload = json.loads((tmp_path / "backends.json").read_text())
    up = payload["upsampler"]  # beside the generator: same threads, the ceiling next to it
    assert up["threads"] == payload["threads"] and up["backend"] == "onnxruntime-fp32"
    assert [r["batch"] for r in up["rows"]] == [1, 4]
    per_sample = payload["gemm"]["flops_best_per_sample"]
    # one ceiling sample before the generator rows, one after each batch's rows and after each
    # upsampler row; every row divided by the best of the two samples around it
    assert len(per_sample) == 1 + 2 + 2
    for i, r in enumerate(up["rows"]):
        assert r["ceiling_flops"] == pytest.approx(max(per_sample[2 + i: 4 + i]))
        assert r["gemm_efficiency"] == pytest.approx(
            r["images_per_s"] * up["flops_per_image"] / r["ceiling_flops"])
    assert 0 < up["share_of_256px_compute"]["upsampler_share"] < 1
    assert set(payload["generator"]) >= {"pytorch-eager", "onnxruntime-fp32"}
    assert payload["generator_flops_per_image"] > 1e6
    assert payload["gemm"]["flops_median"] > 1e9
    # every precision's ceiling measured (or skipped with a reason), fp32 rows against fp32's
    ceilings = payload["ceilings"]
    assert set(ceilings) == {"fp32", "bf16", "int8"} and ceilings["fp32"] == payload["gemm"]
    assert all(v.get("flops_median", 0) > 0 or v["skipped"] for v in ceilings.values())
    for rows in payload["generator"].values():
        assert [r["batch"] for r in rows] == [1, 4]  # --quick: eager at every batch too
        for i, r in enumerate(rows):
            assert r["ceiling_precision"] == "fp32" and r["calls"] == 2
            assert r["ceiling_flops"] == pytest.approx(max(per_sample[i: i + 2]))
            assert r["own_ceiling_efficiency"] == pytest.approx(r["gemm_efficiency"])
    assert isinstance(payload["isa"], list) and "matmul precision" in \
        (tmp_path / "backends.md").read_text()
    assert payload["max_abs_diff_vs_eager"]["onnxruntime-fp32"] < 1e-4
    assert (tmp_path / "backends.md").read_text().startswith("# Generator backends")
    assert (tmp_path / "backends.png").stat().st_size > 1000


def test_backends_upsampler_rows_skip_with_a_reason_without_the_release_one(tmp_path,
                                                                           monkeypatch):
    import adgen.paths
    from benchmarks.backends import resolve_bench_upsampler, upsampler_markdown
    monkeypatch.setattr(adgen.paths, "release_upsampler_dir", lambda: tmp_path / "absent")
    artifact, reason = resolve_bench_upsampler(None)
    assert artifact is None and "no release upsampler at models/adgen-up256" in reason
    assert "not measured: no release upsampler" in upsampler_markdown({"skipped": reason})[0]
    assert resolve_bench_upsampler(False)[0] is None


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


def test_cpu_isa_reads_the_matrix_features_from_cpuinfo():
    from benchmarks.common import cpu_isa
    amx = "processor : 0\nflags : fpu avx2 fma avx512f avx512_bf16 amx_tile amx_bf16 amx_int8\n"
    assert cpu_isa(amx) == ["avx2", "fma", "avx512f", "avx512_bf16", "amx_tile", "amx_bf16",
                            "amx_int8"]
    epyc = "flags\t\t: fpu avx2 avx512f avx512_vnni avx512_bf16 sse4_2\nflags : amx_bf16\n"
    assert cpu_isa(epyc) == ["avx2", "avx512f", "avx512_vnni", "avx512_bf16"]  # first CPU only
    assert cpu_isa("no flags here") == []


def test_previous_release_row_runs_a_folder_beside_any_model_and_a_name_only_for_the_release(
        tiny_checkpoint, tmp_path, text_encoder_dir, monkeypatch):
    """The serving benchmark's previous-release row: a checkpoint folder is exported and run
    as the served split (images come out); a release name is skipped when another model is
    under test, and said so when that release is not shipped."""
    from types import SimpleNamespace

    from benchmarks.serving import ServingConfig, previous_split, split_rate
    from benchmarks.prompt_pool import PromptPool
    from adgen.serving.jobs.served import ServedConfig
    monkeypatch.setattr("adgen.export.repo.artifacts_dir", lambda: tmp_path / "artifacts")
    served = ServedConfig(instances=2, threads=1, preferred=(8,), delay_us=0, batch=8,
                          concurrency=2)
    triton = SimpleNamespace(text_encoder_dir=text_encoder_dir)
    said = []
    prev = previous_split(ServingConfig(model=str(tiny_checkpoint),
                                        previous_release=str(tiny_checkpoint)),
                          triton, served, said.append)
    assert prev["model"] == str(tiny_checkpoint) and len(prev["pipes"]) == 2
    assert prev["precision"] == "fp32"  # served as repo build would: it ships no int8/
    rate = split_rate(prev["pipes"], PromptPool(), 8, 4, 0.2)
    assert rate["images_per_s"] > 0
    assert previous_split(ServingConfig(model=str(tiny_checkpoint)), triton, served,
                          said.append) is None  # a release name, another model under test
    assert previous_split(ServingConfig(previous_release=""), triton, served,
                          said.append) is None
    said.clear()
    assert previous_split(ServingConfig(previous_release="no-such-release"), triton, served,
                          said.append) is None
    assert said == ["previous release models/no-such-release: not shipped here, row skipped"]


def test_held_out_baselines_read_copies_as_the_concept_never_as_the_family(tmp_path):
    """benchmarks.held_out_baselines on a tiny family dataset (noto and fluent draw squares):
    the real held-out drawing is read as its family, a copy of the concept's twemoji drawing is always read as the concept and
    never as the asked family, and the run writes its result files."""
    from benchmarks.held_out_baselines import Baselines, main
    from tests.training.family_factory import family_dataset
    data = family_dataset(tmp_path, n=40)
    b = Baselines(str(data))
    assert len(b.c) >= 2 and set(b.f) <= {1, 2}  # only noto and fluent cells are held out
    rows = {r["candidate"]: r for r in b.rows()}
    assert rows["real drawing (ceiling)"]["family"] == 1.0
    assert rows["twemoji drawing of the concept"]["family"] == 0.0
    assert rows["twemoji drawing of the concept"]["identity"] == 1.0
    assert main(["--data", str(data), "--results-dir", str(tmp_path / "res")]) == 0
    written = list((tmp_path / "res").rglob("held_out_baselines.*"))
    assert sorted(p.suffix for p in written) == [".json", ".md"]
