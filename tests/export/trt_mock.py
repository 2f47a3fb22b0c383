"""A recording fake of the tensorrt Python API for tests on machines without a GPU.

Only adgen's own decisions are checked with it (which inputs get which profile, flags,
timing cache, parity plumbing, file layout); the "engine" is run with onnxruntime on the
ONNX it was built from, rounded through float16 like an FP16 engine's output.
"""
from __future__ import annotations

import sys
import types

import numpy as np

from export import tensorrt as ET
from export.onnx_export import ort_session


class _Recorder:
    def __init__(self):
        self.flags_set, self.flags_cleared, self.shapes = [], [], {}
        self.cache_in = None
        self.parsed = None


def _fake_tensorrt(rec: _Recorder, plan: bytes = b"FAKE-PLAN") -> types.ModuleType:
    """Just enough of the tensorrt 10 Python API for build_serialized(), recording calls."""
    trt = types.ModuleType("tensorrt")
    trt.__version__ = "10.0.0-mock"
    trt.Logger = type("Logger", (), {"WARNING": 2, "__init__": lambda self, level: None})
    trt.BuilderFlag = types.SimpleNamespace(FP16="FP16", TF32="TF32")
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
            return True

    trt.Builder, trt.OnnxParser = Builder, OnnxParser
    return trt


def install_mock_trt(monkeypatch) -> _Recorder:
    """A recording fake tensorrt; the engine is "run" by onnxruntime on the source ONNX."""
    rec = _Recorder()
    monkeypatch.setitem(sys.modules, "tensorrt", _fake_tensorrt(rec))
    monkeypatch.setattr(ET, "require_polygraphy", lambda: (None, None))
    rec.onnx = None  # the ONNX the fake engine stands for; None: the one being built

    def run_with_ort(engine_bytes, feeds_list):
        assert engine_bytes == b"FAKE-PLAN"
        sess = ort_session(rec.onnx or rec.parsed)
        # FP16-like rounding of the result, as an FP16 engine would return
        return [sess.run(None, f)[0].astype(np.float16).astype(np.float32) for f in feeds_list]

    monkeypatch.setattr(ET, "run_engine", run_with_ort)
    return rec
