"""Serving fixtures: a small real checkpoint, its ONNX export, a model repository built from
it, and one real tritonserver for the whole session (free loopback ports). Tests that kill,
restart or own a server start it on `lean_repo` (the `adgen` model alone)."""
from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def small_checkpoint(generator_factory, tmp_path_factory) -> Path:
    """The served model of these tests: the shipped architecture at test size."""
    from tests.conftest import TINY_LAYERED
    return generator_factory(tmp_path_factory.mktemp("ckpt") / "small", "layered",
                             **TINY_LAYERED)


@pytest.fixture(scope="session")
def small_onnx(small_checkpoint, tmp_path_factory) -> Path:
    """The checkpoint through the real exporter: generator.onnx + manifest.json."""
    from adgen.export.onnx_export import export_onnx
    out = tmp_path_factory.mktemp("onnx") / "small"
    return export_onnx(small_checkpoint, out, parity_batches=(1, 4), progress=False)


@pytest.fixture(scope="session")
def model_repo(small_onnx, text_encoder_dir, tiny_upsampler_onnx, tmp_path_factory) -> Path:
    """adgen, adgen_256 (tiny upsampler) and the generator stage."""
    from adgen.export.repo import build_repository
    out = tmp_path_factory.mktemp("repo") / "model_repository"
    return build_repository(out, model=small_onnx, text_encoder=text_encoder_dir,
                            extra_models=("generator",), progress=False,
                            upsampler=tiny_upsampler_onnx)


@pytest.fixture(scope="session")
def lean_repo(small_onnx, text_encoder_dir, tmp_path_factory) -> Path:
    """`adgen` alone (no adgen_256, no generator stage): 2 python-backend stubs instead of
    model_repo's 5, so a server a test starts, kills or restarts itself is ready in about
    half the time and with a third of the CPU."""
    from adgen.export.repo import build_repository
    out = tmp_path_factory.mktemp("lean-repo") / "model_repository"
    repo = build_repository(out, model=small_onnx, text_encoder=text_encoder_dir,
                            progress=False, upsampler=False)
    assert sorted(p.name for p in repo.iterdir() if p.is_dir()) == ["adgen"]
    return repo


@pytest.fixture(scope="session")
def triton(model_repo, tmp_path_factory):
    """One tritonserver for the session, on free 127.0.0.1 ports; stopped at the end."""
    from adgen.serving.jobs.triton_server import ServerConfig, TritonServer, free_port
    log = tmp_path_factory.mktemp("triton") / "server.log"
    server = TritonServer(ServerConfig(str(model_repo), grpc_port=free_port(),
                                       http_port=free_port(), metrics_port=free_port(),
                                       log_file=str(log)))
    server.start()
    try:
        yield server
    finally:
        code = server.stop()
        assert code == 0, f"tritonserver exited with {code}; log {log}"
