"""Fixtures for the export tests: small real checkpoints written with save_generator."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))  # trt_mock, ckpt_factory


@pytest.fixture(scope="session")
def film_ckpt(generator_factory, tmp_path_factory) -> Path:
    """A small FiLM checkpoint (ngf 4: ~0.2 M parameters, exports in seconds)."""
    return generator_factory(tmp_path_factory.mktemp("ckpt") / "film", "film", ngf=4, z_dim=32)


@pytest.fixture(scope="session")
def film_onnx(tmp_path_factory, film_ckpt) -> Path:
    """export_onnx(film_ckpt) once per session; returns the output folder."""
    from adgen.export.onnx_export import export_onnx
    return export_onnx(film_ckpt, tmp_path_factory.mktemp("onnx") / "generator", progress=False)


@pytest.fixture
def mock_trt(monkeypatch):
    """A recording fake `tensorrt` (see trt_mock.py); tests using it say "mock" in their name."""
    from trt_mock import install_mock_trt
    return install_mock_trt(monkeypatch)


@pytest.fixture
def mock_trt11(monkeypatch):
    """The TensorRT 11 API shape of the fake: no BuilderFlag.FP16 (see trt_mock.py)."""
    from trt_mock import install_mock_trt
    return install_mock_trt(monkeypatch, major=11)
