"""`adgen export tensorrt`: lazy TensorRT, one-line errors, profiles, timing cache, parity.

This machine has no GPU and no TensorRT. Tests named *mock* replace the `tensorrt` module
with a recording fake (and run the "engine" with onnxruntime) to check everything adgen
itself decides: input recognition, the 1/64/256 profile, the FP16 flag, the timing cache,
the parity rule and atomic output. The real build is the `tensorrt`-marked test at the end.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from adgen.export import tensorrt as ET
from adgen.errors import ExportError
from adgen.export.onnx_files import GENERATOR_ONNX, ort_session
from adgen.errors import AdgenError

# the `mock_trt` fixture (a recording fake tensorrt) lives in conftest.py / trt_mock.py


def _hidden(folder):
    return [p.name for p in folder.iterdir() if p.name.startswith(".")]


def test_missing_tensorrt_is_one_line_error_without_gpu(film_onnx, tmp_path, monkeypatch,
                                                        capsys):
    from adgen.cli import main
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # import tensorrt -> ImportError
    out = tmp_path / "trt"
    assert main(["export", "tensorrt", str(film_onnx / GENERATOR_ONNX), "-o", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == ("error: TensorRT is not installed: pip install 'adgen[tensorrt]' "
                   "(needs an NVIDIA GPU with a CUDA driver)")
    assert not out.exists() and _hidden(tmp_path) == []


def test_old_tensorrt_is_one_line_error_mock(monkeypatch):
    import types
    monkeypatch.setitem(sys.modules, "tensorrt", types.SimpleNamespace(__version__="8.6.1"))
    with pytest.raises(ET.TensorRTUnavailable, match=r"TensorRT 8.6.1 is too old; adgen needs >= 10"):
        ET.require_tensorrt()


@pytest.mark.parametrize("version,words", [
    ("9.3.0", "TensorRT 9.3.0 is too old; adgen needs >= 10.0, < 12.0"),
    ("12.0.1", "TensorRT 12.0.1 is newer than adgen supports (>= 10.0, < 12.0)")])
def test_tensorrt_outside_supported_range_is_one_line_cli_error_mock(
        version, words, film_onnx, tmp_path, monkeypatch, capsys):
    import types

    from adgen.cli import main
    monkeypatch.setitem(sys.modules, "tensorrt", types.SimpleNamespace(__version__=version))
    out = tmp_path / "trt"
    assert main(["export", "tensorrt", str(film_onnx / GENERATOR_ONNX), "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.strip().startswith(f"error: {words}") and err.count("\n") == 1  # no traceback
    assert "Traceback" not in err and not out.exists()


def test_supported_versions_pass_the_check_mock(monkeypatch):
    import types
    for version in ("10.0.1", "10.5.0.18", "10.13.3.9", "11.0.0", "11.4.1.3"):
        monkeypatch.setitem(sys.modules, "tensorrt", types.SimpleNamespace(__version__=version))
        assert ET.require_tensorrt().__version__ == version


def test_mock_tensorrt10_fp16_is_the_builder_flag_on_the_source_onnx(mock_trt, film_onnx,
                                                                     tmp_path):
    onnx_path = film_onnx / GENERATOR_ONNX
    out = ET.build_engine(ET.TensorRTConfig(onnx=str(onnx_path), out=str(tmp_path / "t"),
                                            parity_batches=(1, 4)), progress=False)
    assert mock_trt.flags_set == ["FP16"] and mock_trt.network_flags == 0
    assert mock_trt.parsed == str(onnx_path)  # TensorRT 10 parses the fp32 ONNX itself
    m = json.loads((out / "manifest.json").read_text())
    assert m["precision"] == "fp16-builder-flag" and m["tensorrt"].startswith("10.")
    assert m["compute_capability"] == "9.0" and "-trt10.5.0.18-mock-sm90-fp16-" in m["cache_key"]


def _is_fp16_graph_with_fp32_io(data: bytes) -> bool:
    import onnx
    model = onnx.load_from_string(data)
    io = [v.type.tensor_type.elem_type for v in [*model.graph.input, *model.graph.output]]
    floats = io.count(onnx.TensorProto.FLOAT)  # token ids stay int64
    fp16_weights = sum(t.data_type == onnx.TensorProto.FLOAT16 for t in model.graph.initializer)
    casts = sum(n.op_type == "Cast" for n in model.graph.node)
    return onnx.TensorProto.FLOAT16 not in io and floats and fp16_weights and casts >= floats


def test_mock_tensorrt11_generator_fp16_is_a_strongly_typed_fp16_onnx(mock_trt11, film_onnx,
                                                                       tmp_path):
    """TensorRT 11 has no BuilderFlag.FP16 (the mock raises AttributeError for it, as 11 does):
    the parsed ONNX is an FP16 conversion with fp32 I/O, built strongly typed, and the parity
    check runs that FP16 graph (onnxruntime CPU) against the fp32 one with the usual rule."""
    onnx_path = film_onnx / GENERATOR_ONNX
    mock_trt11.onnx = onnx_path
    out = ET.build_engine(ET.TensorRTConfig(onnx=str(onnx_path), out=str(tmp_path / "t")),
                          progress=False)
    assert mock_trt11.flags_set == [] and mock_trt11.flags_cleared == []
    assert mock_trt11.network_flags == 1 << 0  # STRONGLY_TYPED (accepted by 11, ignored)
    assert mock_trt11.parsed != str(onnx_path) and not Path(mock_trt11.parsed).exists()
    assert _is_fp16_graph_with_fp32_io(mock_trt11.parsed_bytes)
    m = json.loads((out / "manifest.json").read_text())
    assert m["precision"] == "fp16-strongly-typed" and m["tensorrt"].startswith("11.")
    assert all(f["ok"] for f in m["parity"]["batches"].values()), m["parity"]
    assert _hidden(tmp_path) == []


def test_mock_tensorrt11_text_encoder_fp16_keeps_cosine(mock_trt11, text_encoder_dir, tmp_path):
    mock_trt11.onnx = text_encoder_dir / "model.onnx"
    out = ET.build_engine(ET.TensorRTConfig(onnx=str(mock_trt11.onnx), out=str(tmp_path / "te"),
                                            parity_batches=(1, 8)), progress=False)
    assert _is_fp16_graph_with_fp32_io(mock_trt11.parsed_bytes)
    m = json.loads((out / "manifest.json").read_text())
    assert all(f["min_cosine"] >= ET.TEXT_MIN_COSINE for f in m["parity"]["batches"].values())


def test_mock_tensorrt11_fp32_parses_the_source_and_clears_tf32(mock_trt11, film_onnx,
                                                                tmp_path):
    onnx_path = film_onnx / GENERATOR_ONNX
    mock_trt11.onnx = onnx_path
    out = ET.build_engine(ET.TensorRTConfig(onnx=str(onnx_path), out=str(tmp_path / "t"),
                                            fp16=False, parity_batches=(1,)), progress=False)
    assert mock_trt11.parsed == str(onnx_path) and mock_trt11.flags_cleared == ["TF32"]
    assert json.loads((out / "manifest.json").read_text())["precision"] == "fp32"


def test_parity_copies_polygraphy_outputs(monkeypatch):
    """Polygraphy's TrtRunner hands back the same host buffer on every infer(): without a
    copy, every batch's result would be the last batch's values."""
    class ReusingRunner:
        def __init__(self, engine):
            self.buffer = np.zeros((2, 3), np.float32)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def infer(self, feed_dict):
            self.buffer[:] = feed_dict["EMBEDDING"][0, 0]
            return {"RAW_IMAGE": self.buffer}

    monkeypatch.setattr(ET, "require_polygraphy", lambda: (lambda b: b, ReusingRunner))
    feeds = [{"EMBEDDING": np.full((1, 1), v, np.float32)} for v in (1.0, 2.0, 3.0)]
    outs = ET.run_engine(b"plan", feeds)
    assert [float(o[0, 0]) for o in outs] == [1.0, 2.0, 3.0]


def test_wrong_inputs_rejected_before_tensorrt_without_gpu(tmp_path, capsys):
    import torch

    class Other(torch.nn.Module):
        def forward(self, image):
            return image * 2

    path = tmp_path / "other.onnx"
    torch.onnx.export(Other(), (torch.zeros(1, 3, 8, 8),), str(path), input_names=["IMAGE_IN"],
                      output_names=["OUT"], opset_version=17, dynamo=False)
    from adgen.cli import main
    assert main(["export", "tensorrt", str(path), "-o", str(tmp_path / "trt")]) == 2
    err = capsys.readouterr().err.strip()
    assert "has inputs ['IMAGE_IN']: neither the generator's" in err and "\n" not in err
    assert main(["export", "tensorrt", str(tmp_path / "none.onnx"), "-o",
                 str(tmp_path / "trt")]) == 2
    assert "ONNX model not found" in capsys.readouterr().err
    assert not (tmp_path / "trt").exists()


def test_mock_tensorrt_generator_profile_fp16_cache_and_manifest(mock_trt, film_onnx, tmp_path):
    onnx_path = film_onnx / GENERATOR_ONNX
    mock_trt.onnx = onnx_path
    out = ET.build_engine(ET.TensorRTConfig(onnx=str(onnx_path), out=str(tmp_path / "trt")),
                          progress=False)
    assert mock_trt.shapes == {"EMBEDDING": ((1, 384), (64, 384), (256, 384)),
                               "Z": ((1, 32), (64, 32), (256, 32))}
    assert mock_trt.flags_set == ["FP16"] and mock_trt.cache_in == b""
    assert (out / ET.PLAN_NAME).read_bytes() == b"FAKE-PLAN"
    assert (out / ET.TIMING_CACHE).read_bytes() == b"+timings"
    m = json.loads((out / "manifest.json").read_text())
    assert m["model"] == "generator" and m["fp16"] is True
    assert m["inputs"]["Z"] == {"min": [1, 32], "opt": [64, 32], "max": [256, 32]}
    assert set(m["parity"]["batches"]) == {"1", "64", "256"}
    assert all(f["ok"] and f["within_one_level"] == 1.0 for f in m["parity"]["batches"].values())
    # A rebuild reuses the folder's timing cache.
    ET.build_engine(ET.TensorRTConfig(onnx=str(onnx_path), out=str(out), force=True),
                    progress=False)
    assert mock_trt.cache_in == b"+timings"
    assert (out / ET.TIMING_CACHE).read_bytes() == b"+timings+timings"
    assert _hidden(tmp_path) == []


def test_mock_tensorrt_no_fp16_clears_tf32_and_custom_profile(mock_trt, film_onnx, tmp_path):
    mock_trt.onnx = film_onnx / GENERATOR_ONNX
    ET.build_engine(ET.TensorRTConfig(onnx=str(mock_trt.onnx), out=str(tmp_path / "t"),
                                      fp16=False, profile=(2, 8, 16), parity_batches=(2, 16)),
                    progress=False)
    assert mock_trt.flags_set == [] and mock_trt.flags_cleared == ["TF32"]
    assert mock_trt.shapes["EMBEDDING"] == ((2, 384), (8, 384), (16, 384))
    with pytest.raises(ExportError, match="outside the profile"):
        ET.build_engine(ET.TensorRTConfig(onnx=str(mock_trt.onnx), out=str(tmp_path / "u"),
                                          profile=(2, 8, 16)), progress=False)
    with pytest.raises(ExportError, match="min <= opt <= max"):
        ET.profile_shapes("generator", {"z_dim": 4}, (64, 8, 256))


def test_mock_tensorrt_parity_failure_leaves_nothing(mock_trt, film_onnx, tmp_path,
                                                     monkeypatch):
    mock_trt.onnx = film_onnx / GENERATOR_ONNX

    def broken_engine(engine_bytes, feeds_list):
        outs = [ort_session(mock_trt.onnx).run(None, f)[0] for f in feeds_list]
        for o in outs:
            o[:, 0, :8, :8] += 0.2  # a visible defect in one corner
        return outs

    monkeypatch.setattr(ET, "run_engine", broken_engine)
    with pytest.raises(AdgenError, match="parity failed at batch 1: max_abs=0.2"):
        ET.build_engine(ET.TensorRTConfig(onnx=str(mock_trt.onnx), out=str(tmp_path / "trt")),
                        progress=False)
    assert not (tmp_path / "trt").exists() and _hidden(tmp_path) == []


def test_mock_tensorrt_text_encoder_profile_and_cosine(mock_trt, text_encoder_dir, tmp_path):
    mock_trt.onnx = text_encoder_dir / "model.onnx"
    out = ET.build_engine(ET.TensorRTConfig(onnx=str(mock_trt.onnx), out=str(tmp_path / "te"),
                                            parity_batches=(1, 8)), progress=False)
    want = ((1, 1), (64, 32), (256, 256))
    assert mock_trt.shapes == {"input_ids": want, "attention_mask": want,
                               "token_type_ids": want}
    m = json.loads((out / "manifest.json").read_text())
    assert m["model"] == "text_encoder"
    assert all(f["min_cosine"] >= 0.999 for f in m["parity"]["batches"].values())


def test_fp16_tolerance_accepts_rounding_and_rejects_defects():
    rng = np.random.default_rng(0)
    ref = np.tanh(rng.standard_normal((4, 3, 64, 64))).astype(np.float32)
    assert ET.compare("generator", ref, ref.astype(np.float16))["ok"]
    noisy = ref + rng.normal(0, 1e-3, ref.shape).astype(np.float32)  # ~FP16 accumulation
    assert ET.compare("generator", ref, noisy)["ok"]
    shifted = ref + 3 * ET.ONE_LEVEL  # every pixel 3 uint8 levels off
    assert not ET.compare("generator", ref, shifted)["ok"]
    emb = rng.standard_normal((5, 384)).astype(np.float32)
    assert ET.compare("text_encoder", emb, emb.astype(np.float16))["ok"]
    assert not ET.compare("text_encoder", emb, emb + rng.standard_normal(emb.shape) * 0.1)["ok"]


def _tensorrt_reason():
    try:
        ET.require_tensorrt()
        ET.require_polygraphy()
    except ET.TensorRTUnavailable as exc:
        return str(exc)
    if ET.gpu_name() is None:
        return "no NVIDIA GPU visible (nvidia-smi)"
    return None


@pytest.mark.tensorrt
@pytest.mark.gpu
def test_real_tensorrt_engines_match_onnxruntime(film_onnx, text_encoder_dir, tmp_path):
    reason = _tensorrt_reason()
    if reason:
        pytest.skip(reason)
    for onnx_path, name in ((film_onnx / GENERATOR_ONNX, "gen"),
                            (text_encoder_dir / "model.onnx", "te")):
        out = ET.build_engine(ET.TensorRTConfig(onnx=str(onnx_path), out=str(tmp_path / name)),
                              progress=False)
        m = json.loads((out / "manifest.json").read_text())
        assert all(f["ok"] for f in m["parity"]["batches"].values())
        assert (out / ET.PLAN_NAME).stat().st_size > 0
