"""`adgen repo build --variant onnxruntime|tensorrt`: NVIDIA-container repositories.

The native onnxruntime/TensorRT backends are not in the CPU tritonserver here, so these
repositories are checked structurally: every config.pbtxt parses with Triton's ModelConfig
protobuf and matches adgen.contract, the model files are the exported artifacts, and the
ensembles are wired consistently. The python `tokenizer` model they add runs for real.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from adgen.export.repo import build_repository, check_against_contract
from adgen.export.repo_native import MINILM_MODEL, TOKENIZER_MODEL
from adgen.paths import sha256_file
from adgen.contract import all_specs

CONTRACT_MODELS = ("adgen", "text_encoder", "latents", "generator", "postprocess")


def parse(path: Path):
    return text_format.Parse(path.read_text(), model_config_pb2.ModelConfig())


def configs(repo: Path) -> dict:
    return {p.parent.name: parse(p) for p in sorted(repo.glob("*/config.pbtxt"))}


def check_ensembles(cfgs: dict) -> None:
    """Each step names a model of the repository, maps only its real inputs/outputs with
    matching dtypes, and every tensor it consumes was produced earlier (or is an input)."""
    dtype = lambda ts: {t.name: t.data_type for t in ts}  # noqa: E731
    for name, cfg in cfgs.items():
        if cfg.platform != "ensemble":
            continue
        available = dtype(cfg.input)
        for step in cfg.ensemble_scheduling.step:
            assert step.model_name in cfgs, f"{name}: step {step.model_name} missing"
            model = cfgs[step.model_name]
            ins, outs = dtype(model.input), dtype(model.output)
            assert set(step.input_map) == set(ins), f"{name} -> {step.model_name} inputs"
            for key, tensor in step.input_map.items():
                assert tensor in available, f"{name}: {tensor} used before it is produced"
                assert available[tensor] == ins[key], f"{name}: {tensor} dtype"
            for key, tensor in step.output_map.items():
                assert key in outs, f"{name}: {step.model_name} has no output {key}"
                available[tensor] = outs[key]
        for t in cfg.output:
            assert available.get(t.name) == t.data_type, f"{name}: output {t.name} not produced"


@pytest.fixture(scope="module")
def ort_repo(film_onnx, text_encoder_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("native") / "repo"
    return build_repository(out, variant="onnxruntime", model=film_onnx,
                            text_encoder=text_encoder_dir, progress=False)


def test_onnxruntime_repo_configs_parse_and_match_contract(ort_repo, film_onnx,
                                                           text_encoder_dir):
    cfgs = configs(ort_repo)
    assert set(cfgs) == set(CONTRACT_MODELS) | {TOKENIZER_MODEL, MINILM_MODEL}
    z_dim = json.loads((film_onnx / "manifest.json").read_text())["z_dim"]
    for name in CONTRACT_MODELS:
        assert check_against_contract(cfgs[name], z_dim=z_dim) == [], name
        assert cfgs[name].name == name
    assert cfgs["adgen"].platform == cfgs["text_encoder"].platform == "ensemble"
    for name in ("generator", MINILM_MODEL):
        assert cfgs[name].platform == "onnxruntime_onnx"
        assert cfgs[name].max_batch_size == all_specs()["generator"].max_batch_size
        assert cfgs[name].dynamic_batching.max_queue_delay_microseconds > 0
    assert sha256_file(ort_repo / "generator" / "1" / "model.onnx") == \
        sha256_file(film_onnx / "generator.onnx")
    assert sha256_file(ort_repo / MINILM_MODEL / "1" / "model.onnx") == \
        sha256_file(text_encoder_dir / "model.onnx")
    assert [t.name for t in cfgs[MINILM_MODEL].input] == \
        ["input_ids", "attention_mask", "token_type_ids"]
    assert (ort_repo / TOKENIZER_MODEL / "1" / "model.py").is_file()
    assert (ort_repo / TOKENIZER_MODEL / "1" / "adgen" / "serving" / "runtime" / "backend.py").is_file()
    check_ensembles(cfgs)


def test_check_ensembles_notices_a_broken_wire(ort_repo):
    cfgs = configs(ort_repo)
    step = cfgs["adgen"].ensemble_scheduling.step[2]  # generator
    step.input_map["Z"] = "nonexistent"
    with pytest.raises(AssertionError, match="used before it is produced"):
        check_ensembles(cfgs)


def test_mock_tensorrt_repo_uses_engines_on_gpu(mock_trt, film_onnx, text_encoder_dir,
                                                tmp_path, monkeypatch):
    monkeypatch.setenv("ADGEN_ARTIFACTS", str(tmp_path / "artifacts"))  # engine cache here
    repo = build_repository(tmp_path / "repo", variant="tensorrt", model=film_onnx,
                            text_encoder=text_encoder_dir, progress=False)
    cfgs = configs(repo)
    for name in ("generator", MINILM_MODEL):
        assert cfgs[name].platform == "tensorrt_plan"
        assert cfgs[name].instance_group[0].kind == model_config_pb2.ModelInstanceGroup.KIND_GPU
        assert (repo / name / "1" / "model.plan").read_bytes() == b"FAKE-PLAN"
    for name in CONTRACT_MODELS:
        assert check_against_contract(cfgs[name], z_dim=32) == [], name
    check_ensembles(cfgs)
    engines = sorted(p.name for p in (tmp_path / "artifacts" / "tensorrt").iterdir())
    assert len(engines) == 2 and engines[1].startswith("text_encoder-")


def test_tensorrt_variant_without_gpu_is_one_line_error(film_onnx, text_encoder_dir, tmp_path,
                                                        monkeypatch, capsys):
    import sys

    from adgen.cli import main
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    monkeypatch.setenv("ADGEN_ARTIFACTS", str(tmp_path / "artifacts"))
    out = tmp_path / "repo"
    assert main(["repo", "build", "-o", str(out), "--variant", "tensorrt", "--model",
                 str(film_onnx), "--text-encoder", str(text_encoder_dir)]) == 2
    err = capsys.readouterr().err.strip()
    assert "pip install 'adgen[tensorrt]'" in err and "\n" not in err
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


@pytest.mark.parametrize("variant", ["python-ort", "onnxruntime"])
def test_generator_onnx_with_wrong_inputs_is_refused(variant, film_onnx, text_encoder_dir,
                                                     tmp_path, capsys):
    import onnx

    from adgen.cli import main
    bad = tmp_path / "bad"
    bad.mkdir()
    model = onnx.load(str(film_onnx / "generator.onnx"))
    model.graph.input[0].type.tensor_type.shape.dim[1].dim_value = 512  # EMBEDDING [B,512]
    onnx.save(model, str(bad / "generator.onnx"))
    (bad / "manifest.json").write_text((film_onnx / "manifest.json").read_text())
    out = tmp_path / "repo"
    assert main(["repo", "build", "-o", str(out), "--variant", variant, "--model",
                 str(bad), "--text-encoder", str(text_encoder_dir)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "error: generator.onnx: EMBEDDING has shape ['batch', 512], " \
                  "expected [batch, 384]"
    assert not out.exists() and [p.name for p in tmp_path.iterdir()] == ["bad"]


@pytest.mark.triton
def test_tokenizer_model_runs_in_real_tritonserver(ort_repo, text_encoder, tmp_path):
    """The python half of the native text encoder, in the bundled tritonserver: its tokens
    through the MiniLM ONNX give exactly TextEncoder's embeddings."""
    import onnxruntime as ort
    import tritonclient.grpc as grpcclient
    from tritonclient.utils import InferenceServerException

    from adgen.serving.jobs.triton_server import ServerConfig, TritonServer, free_port
    prompts = ["a red apple, flat sticker style, on a teal background", "gift box",
               "Weihnachtsmarkt Glühwein " * 3, "🎁 sale"]
    cfg = ServerConfig(str(ort_repo), grpc_port=free_port(), http_port=free_port(),
                       metrics_port=free_port(), log_file=str(tmp_path / "server.log"),
                       model_control="explicit")
    with TritonServer(cfg) as server:
        client = grpcclient.InferenceServerClient(server.grpc_url)
        client.load_model(TOKENIZER_MODEL)
        inp = grpcclient.InferInput("PROMPT", [len(prompts), 1], "BYTES")
        inp.set_data_from_numpy(np.array([[p.encode()] for p in prompts], dtype=object))
        res = client.infer(TOKENIZER_MODEL, [inp])
        feeds = {n: res.as_numpy(n) for n in ("input_ids", "attention_mask", "token_type_ids")}
        too_long = grpcclient.InferInput("PROMPT", [1, 1], "BYTES")
        too_long.set_data_from_numpy(np.array([[b"x" * 2001]], dtype=object))
        with pytest.raises(InferenceServerException, match="2000-byte limit"):
            client.infer(TOKENIZER_MODEL, [too_long])
        client.close()
    assert feeds["input_ids"].shape[1] % 16 == 0 and feeds["input_ids"].dtype == np.int64
    sess = ort.InferenceSession(str(ort_repo / MINILM_MODEL / "1" / "model.onnx"),
                                providers=["CPUExecutionProvider"])
    emb = sess.run(["EMBEDDING"], feeds)[0]
    np.testing.assert_allclose(emb, text_encoder.encode(prompts), atol=1e-5)


@pytest.mark.parametrize("variant", ["onnxruntime", "python-ort"])
def test_gpu_repo_puts_onnxruntime_models_on_kind_gpu(variant, film_onnx, text_encoder_dir,
                                                      tmp_path, monkeypatch, tiny_upsampler):
    """--gpu (or auto-detect): models holding onnxruntime sessions get KIND_GPU instances;
    tokenizer/latents/postprocess are CPU work and stay KIND_CPU. No GPU: unchanged."""
    from adgen.export import repo as R
    gpu_kind = model_config_pb2.ModelInstanceGroup.KIND_GPU
    monkeypatch.setattr(R, "artifacts_dir", lambda: tmp_path / "artifacts")
    repo = build_repository(tmp_path / "gpu", variant=variant, model=film_onnx,
                            text_encoder=text_encoder_dir, progress=False, gpu=True,
                            upsampler=tiny_upsampler)
    cfgs = configs(repo)
    want_gpu = {"generator", MINILM_MODEL} if variant == "onnxruntime" else {"adgen",
                                                                            "adgen_256"}
    for name, cfg in cfgs.items():
        kinds = {g.kind for g in cfg.instance_group}
        assert (kinds == {gpu_kind}) == (name in want_gpu), (name, kinds)
    info = json.loads((repo / "adgen_repository.json").read_text())
    assert sorted(info["gpu_instances"]) == sorted(want_gpu)
    assert all((repo / n / "config.pbtxt").read_text().startswith("# built by") for n in want_gpu)
    monkeypatch.setattr(R, "gpu_present", lambda: False)  # auto on a CPU machine
    cpu = build_repository(tmp_path / "cpu", variant=variant, model=film_onnx,
                           text_encoder=text_encoder_dir, progress=False,
                           upsampler=tiny_upsampler)
    assert all(g.kind != gpu_kind for c in configs(cpu).values() for g in c.instance_group)
    monkeypatch.setattr(R, "gpu_present", lambda: True)  # auto on a GPU machine
    auto = build_repository(tmp_path / "auto", variant=variant, model=film_onnx,
                            text_encoder=text_encoder_dir, progress=False,
                            upsampler=tiny_upsampler)
    assert json.loads((auto / "adgen_repository.json").read_text())["gpu_instances"]
