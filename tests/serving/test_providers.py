"""onnxruntime provider choice: TensorRT EP > CUDA EP > CPU, configurable, checked, recorded.

This machine has only the CPU provider, so what onnxruntime-gpu would report is faked:
`get_available_providers()` returns a chosen list and InferenceSession is wrapped so that its
`get_providers()` says what a GPU install would (the graphs still run on the CPU).
"""
from __future__ import annotations

import logging

import numpy as np
import pytest

from adgen.serving.runtime import providers as P
ALL = [P.TENSORRT_EP, P.CUDA_EP, P.CPU_EP]


@pytest.mark.parametrize("available,want", [
    (ALL, ALL),
    ([P.CUDA_EP, P.CPU_EP], [P.CUDA_EP, P.CPU_EP]),
    (["AzureExecutionProvider", P.CPU_EP], [P.CPU_EP]),
    ([P.TENSORRT_EP, P.CPU_EP], [P.TENSORRT_EP, P.CPU_EP]),
])
def test_auto_takes_the_best_available_first(available, want, monkeypatch):
    monkeypatch.delenv(P.ENV, raising=False)
    assert P.choose_providers(available) == want


def test_setting_and_env_choose_exactly(monkeypatch):
    monkeypatch.setenv(P.ENV, "cuda, cpu")
    assert P.choose_providers(ALL) == [P.CUDA_EP, P.CPU_EP]
    assert P.choose_providers(ALL, setting="cpu") == [P.CPU_EP]  # argument beats env
    assert P.choose_providers(ALL, setting="auto") == ALL
    monkeypatch.setenv(P.ENV, "CPUExecutionProvider")
    assert P.choose_providers(ALL) == [P.CPU_EP]


def test_unavailable_or_unknown_provider_is_one_line_error(monkeypatch):
    monkeypatch.setenv(P.ENV, "tensorrt,cuda")
    with pytest.raises(P.ProviderError) as exc:
        P.choose_providers([P.CPU_EP])
    msg = str(exc.value)
    assert "asks for TensorrtExecutionProvider, CUDAExecutionProvider" in msg
    assert "pip install 'adgen[gpu]'" in msg and "\n" not in msg
    with pytest.raises(P.ProviderError, match="unknown provider 'rocm'"):
        P.choose_providers(ALL, setting="rocm")


def test_options_carry_device_and_one_tensorrt_profile(monkeypatch, tmp_path):
    monkeypatch.setenv(P.TRT_CACHE_ENV, str(tmp_path))
    calls = []

    def profile():
        calls.append(1)
        return {"EMBEDDING": ((1, 384), (64, 384), (256, 384)), "Z": ((1, 8), (64, 8), (256, 8))}
    trt, cuda, cpu = P.provider_options(ALL, device_id=1, trt_profile=profile)
    assert trt["trt_profile_min_shapes"] == "EMBEDDING:1x384,Z:1x8"
    assert trt["trt_profile_max_shapes"] == "EMBEDDING:256x384,Z:256x8"
    assert trt["device_id"] == cuda["device_id"] == "1" and cpu == {}
    assert trt["trt_engine_cache_path"] == str(tmp_path)
    P.provider_options([P.CUDA_EP, P.CPU_EP], trt_profile=profile)
    assert calls == [1]  # the profile is only worked out when TensorRT EP is used


class FakeGpuOrt:
    """onnxruntime-gpu as seen from Python: what it lists, and what sessions end up using."""

    def __init__(self, monkeypatch, available, loads=None):
        import onnxruntime as ort
        self.calls = []
        real = ort.InferenceSession
        loads = set(available if loads is None else loads)  # providers that really load
        calls = self.calls

        class Session(real):
            def __init__(self, path, sess_options=None, providers=None, provider_options=None):
                calls.append({"path": str(path), "providers": list(providers or []),
                              "options": provider_options})
                super().__init__(path, sess_options, providers=[P.CPU_EP])
                self._fake = [p for p in (providers or [P.CPU_EP]) if p in loads] or [P.CPU_EP]

            def get_providers(self):
                return list(self._fake)

        monkeypatch.setattr(ort, "get_available_providers", lambda: list(available))
        monkeypatch.setattr(ort, "InferenceSession", Session)


def test_session_reports_a_silent_fallback(monkeypatch, small_onnx, caplog):
    monkeypatch.delenv(P.ENV, raising=False)
    fake = FakeGpuOrt(monkeypatch, [P.CUDA_EP, P.CPU_EP], loads=[P.CPU_EP])  # CUDA libs broken
    with caplog.at_level(logging.INFO, logger="adgen.providers"):
        sess = P.ort_session(small_onnx / "generator.onnx")
    assert fake.calls[0]["providers"] == [P.CUDA_EP, P.CPU_EP]
    assert P.used_provider(sess) == P.CPU_EP
    assert "asked onnxruntime for CUDAExecutionProvider, it runs on CPUExecutionProvider" \
        in caplog.text


def test_pipeline_and_text_encoder_use_the_gpu_and_record_it(monkeypatch, small_onnx,
                                                            text_encoder_dir):
    from adgen.serving.runtime.backend import Pipeline
    monkeypatch.delenv(P.ENV, raising=False)
    fake = FakeGpuOrt(monkeypatch, ALL)
    pipe = Pipeline(text_encoder_dir, small_onnx, threads=1, device_id=2)
    by_file = {c["path"].rsplit("/", 1)[-1]: c for c in fake.calls}
    gen, te = by_file["generator.onnx"], by_file["model.onnx"]
    assert gen["providers"] == te["providers"] == ALL
    assert gen["options"][0]["trt_profile_opt_shapes"] == "EMBEDDING:64x384,Z:64x48"
    assert te["options"][0]["trt_profile_max_shapes"].startswith("input_ids:256x256")
    assert {o["device_id"] for c in (gen, te) for o in c["options"][:2]} == {"2"}
    assert pipe.info.provider == P.TENSORRT_EP == pipe.encoder.provider
    assert pipe.info.to_json()["provider"] == P.TENSORRT_EP  # in every image's metadata
    img = pipe.run(["a red apple"], [7])
    assert img.shape == (1, 64, 64, 3) and img.dtype == np.uint8


def test_cpu_install_is_unchanged(monkeypatch, small_onnx, text_encoder_dir):
    from adgen.serving.runtime.backend import Pipeline
    monkeypatch.delenv(P.ENV, raising=False)
    fake = FakeGpuOrt(monkeypatch, [P.CPU_EP])
    pipe = Pipeline(text_encoder_dir, small_onnx, threads=1)
    assert all(c["providers"] == [P.CPU_EP] for c in fake.calls)
    assert pipe.info.to_json()["provider"] == P.CPU_EP


def test_triton_gpu_instance_passes_its_device(monkeypatch, small_onnx):
    from adgen.serving.runtime import backend as B
    seen = {}
    monkeypatch.setattr(B, "_GeneratorOnly", lambda d, t, device_id, z_dim: seen.update(
        device_id=device_id, z_dim=z_dim))
    args = {"model_config": '{"output": [{"name": "RAW_IMAGE", "data_type": "TYPE_FP32"}],'
                            ' "parameters": {"z_dim": {"string_value": "48"}}}',
            "model_repository": str(small_onnx), "model_version": "1",
            "model_instance_kind": "GPU", "model_instance_device_id": "3"}

    class PB:
        @staticmethod
        def triton_string_to_numpy(name):
            return np.float32
    B.TritonModel("generator", args, PB)
    assert seen == {"device_id": 3, "z_dim": 48}
    B.TritonModel("generator", {**args, "model_instance_kind": "CPU"}, PB)
    assert seen["device_id"] == 0
