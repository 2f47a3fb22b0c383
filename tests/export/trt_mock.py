"""A recording fake of the tensorrt Python API for tests on machines without a GPU.

Two API shapes, as the real packages have them:
  10  BuilderFlag.FP16 and TF32; NetworkDefinitionCreationFlag.STRONGLY_TYPED (opt-in)
  11  no BuilderFlag.FP16 (weak typing removed): reaching for it raises AttributeError, as
      the real 11.x does; STRONGLY_TYPED still accepted
Only adgen's own decisions are checked with it (which inputs get which profile, flags,
network creation flags, which ONNX is parsed, timing cache, parity plumbing, file layout);
the "engine" is run with onnxruntime on the ONNX that was parsed (for TensorRT 11 that is the
FP16-converted graph, so its numerics are really checked), rounded through float16.
"""
from __future__ import annotations

import sys
import types
from pathlib import Path

import numpy as np

from adgen.export import tensorrt as ET
from adgen.export.onnx_files import ort_session


class _Recorder:
    def __init__(self):
        self.flags_set, self.flags_cleared, self.shapes = [], [], {}
        self.cache_in = None
        self.parsed = None
        self.parsed_bytes = None  # the parsed file lives in a temporary folder: keep its bytes
        self.network_flags = None


VERSIONS = {10: "10.5.0.18-mock", 11: "11.1.0.10-mock"}


def _fake_tensorrt(rec: _Recorder, plan: bytes = b"FAKE-PLAN", major: int = 10
                   ) -> types.ModuleType:
    """Just enough of the tensorrt 10 / 11 Python API for build_serialized(), recording calls."""
    trt = types.ModuleType("tensorrt")
    trt.__version__ = VERSIONS[major]
    trt.Logger = type("Logger", (), {"WARNING": 2, "__init__": lambda self, level: None})
    if major == 10:
        trt.BuilderFlag = types.SimpleNamespace(FP16="FP16", TF32="TF32")
    else:
        trt.BuilderFlag = types.SimpleNamespace(TF32="TF32")  # FP16, INT8, ... are gone
    trt.NetworkDefinitionCreationFlag = types.SimpleNamespace(STRONGLY_TYPED=5 if major == 10
                                                              else 0)
    trt.MemoryPoolType = types.SimpleNamespace(WORKSPACE="WORKSPACE")

    class Cache:
        def __init__(self, data):
            self.data = bytes(data)

        def serialize(self):
            return self.data + b"+timings"

    class Config:
        def set_memory_pool_limit(self, pool, size):
            rec.workspace = size

        def set_flag(self, flag):
            rec.flags_set.append(flag)

        def clear_flag(self, flag):
            rec.flags_cleared.append(flag)

        def create_timing_cache(self, data):
            rec.cache_in = bytes(data)
            return Cache(data)

        def set_timing_cache(self, cache, ignore_mismatch):
            self.cache = cache

        def get_timing_cache(self):
            return self.cache

        def add_optimization_profile(self, profile):
            rec.shapes = dict(profile.shapes)

    class Profile:
        def __init__(self):
            self.shapes = {}

        def set_shape(self, name, lo, opt, hi):
            self.shapes[name] = (tuple(lo), tuple(opt), tuple(hi))

    class Builder:
        def __init__(self, logger):
            pass

        def create_network(self, flags):
            rec.network_flags = flags
            return object()

        def create_builder_config(self):
            return Config()

        def create_optimization_profile(self):
            return Profile()

        def build_serialized_network(self, network, config):
            return plan

    class OnnxParser:
        def __init__(self, network, logger):
            self.num_errors = 0

        def parse_from_file(self, path):
            rec.parsed = path
            rec.parsed_bytes = Path(path).read_bytes()
            return True

    trt.Builder, trt.OnnxParser = Builder, OnnxParser
    return trt


def install_mock_trt(monkeypatch, major: int = 10) -> _Recorder:
    """A recording fake tensorrt `major`; the engine is "run" by onnxruntime on the parsed ONNX."""
    rec = _Recorder()
    rec.major = major
    monkeypatch.setitem(sys.modules, "tensorrt", _fake_tensorrt(rec, major=major))
    monkeypatch.setattr(ET, "require_polygraphy", lambda: (None, None))
    monkeypatch.setattr(ET, "compute_capability", lambda: "9.0")  # an H100/H200
    rec.onnx = None  # the ONNX the fake engine stands for; None: the one parsed

    def run_with_ort(engine_bytes, feeds_list):
        assert engine_bytes == b"FAKE-PLAN"
        if rec.onnx is None or major >= 11:  # 11: the FP16 graph really parsed
            import onnxruntime as ort
            sess = ort.InferenceSession(rec.parsed_bytes, providers=["CPUExecutionProvider"])
        else:
            sess = ort_session(rec.onnx)
        # FP16-like rounding of the result, as an FP16 engine would return
        return [sess.run(None, f)[0].astype(np.float16).astype(np.float32) for f in feeds_list]

    monkeypatch.setattr(ET, "run_engine", run_with_ort)
    return rec
