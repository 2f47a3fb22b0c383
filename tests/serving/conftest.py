"""Serving fixtures: a small real checkpoint, its ONNX export, a model repository built from
it, and one real tritonserver for the whole session (free loopback ports)."""
from __future__ import annotations

from pathlib import Path

import pytest

SMALL_FILM = {"ngf": 8, "mults": [4, 4, 2, 2, 1], "cond_dim": 64, "z_dim": 48}  # z != default: dims get rewritten


def make_checkpoint(out: Path, seed: int = 0) -> Path:
    """A small randomly initialised FiLM generator saved with adgen.training.checkpoint.

    Fresh FiLM projections start at zero (text would not matter); give them small random
    values so prompts change the images, as in a trained model."""
    import torch

    from adgen.training.checkpoint import save_generator
    from adgen.training.networks import build_generator
    torch.manual_seed(seed)
    module = build_generator("film", **SMALL_FILM).eval()
    with torch.no_grad():
        for name, p in module.named_parameters():
            if ".film" in name or name.endswith("gate"):
                p.normal_(0.0, 0.3 if name.endswith("gate") else 0.05)
    return save_generator(module, {}, out)


@pytest.fixture(scope="session")
def small_checkpoint(tmp_path_factory) -> Path:
    return make_checkpoint(tmp_path_factory.mktemp("ckpt") / "small-film")


@pytest.fixture(scope="session")
def small_onnx(small_checkpoint, tmp_path_factory) -> Path:
    """The checkpoint through the real exporter: generator.onnx + manifest.json."""
    from adgen.export.onnx_export import export_onnx
    out = tmp_path_factory.mktemp("onnx") / "small-film"
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
