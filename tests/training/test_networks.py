"""Network shapes, ranges and ONNX export parity (opset 17, dynamic batch, onnxruntime)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from adgen.training.networks import (EmbedNorm, NetworkError, build_discriminator, build_generator,
                               default_model_kwargs, set_embedding_stats)


@pytest.mark.parametrize("arch", ["film", "dcgan"])
def test_generator_shapes_and_range(arch):
    torch.manual_seed(0)
    g = build_generator(arch).eval()
    z_dim = default_model_kwargs(arch)["z_dim"]
    assert g.z_dim == z_dim == (128 if arch == "film" else 100)
    with torch.no_grad():
        out = g(torch.randn(5, 384), torch.randn(5, z_dim) * 3)
    assert out.shape == (5, 3, 64, 64) and out.dtype == torch.float32
    assert out.abs().max() <= 1.0


@pytest.mark.parametrize("arch", ["film", "dcgan"])
def test_discriminator_scores_each_pair(arch):
    d = build_discriminator(arch)
    logits = d(torch.rand(4, 3, 64, 64) * 2 - 1, torch.randn(4, 384))
    assert logits.shape == (4,)


def test_film_generator_follows_the_text():
    torch.manual_seed(0)
    g = build_generator("film", cond_dim=32).eval()
    with torch.no_grad():
        for p in g.parameters():
            p.add_(torch.randn_like(p) * 0.05)
        z = torch.randn(1, 128).repeat(2, 1)
        out = g(torch.randn(2, 384), z)
    assert (out[0] - out[1]).abs().mean() > 1e-3


def test_unknown_options_are_rejected():
    with pytest.raises(NetworkError):
        build_generator("stylegan")
    with pytest.raises(NetworkError):
        build_generator("film", width=3)


@pytest.mark.parametrize("arch", ["film", "dcgan"])
def test_onnx_export_matches_onnxruntime(tmp_path, arch):
    import onnxruntime as ort
    torch.manual_seed(1)
    g = build_generator(arch).eval()
    set_embedding_stats(g, torch.randn(50, 384) * 0.05 + 0.1)  # EmbedNorm buffers in the graph
    with torch.no_grad():
        for p in g.parameters():  # non-trivial FiLM weights (they start at zero)
            p.add_(torch.randn_like(p) * 0.02)
    z_dim = g.z_dim
    path = tmp_path / "g.onnx"
    torch.onnx.export(g, (torch.randn(2, 384), torch.randn(2, z_dim)), str(path),
                      input_names=["EMBEDDING", "Z"], output_names=["RAW_IMAGE"],
                      dynamic_axes={"EMBEDDING": {0: "b"}, "Z": {0: "b"}, "RAW_IMAGE": {0: "b"}},
                      opset_version=17, dynamo=False)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    for batch in (1, 7):
        # In the distribution the EmbedNorm stats describe (like real caption embeddings).
        e = (rng.standard_normal((batch, 384)) * 0.05 + 0.1).astype(np.float32)
        z = rng.standard_normal((batch, z_dim)).astype(np.float32)
        (onnx_out,) = sess.run(None, {"EMBEDDING": e, "Z": z})
        with torch.no_grad():
            ref = g(torch.from_numpy(e), torch.from_numpy(z)).numpy()
        assert onnx_out.shape == (batch, 3, 64, 64)
        np.testing.assert_allclose(onnx_out, ref, atol=1e-5)


def test_embed_norm_standardises_and_is_saved():
    e = torch.randn(200, 384) * 0.03 + torch.linspace(-1, 1, 384)
    norm = EmbedNorm()
    assert torch.equal(norm(e), e)  # identity until stats are set
    norm.set_stats(e)
    out = norm(e)
    assert out.mean(0).abs().max() < 1e-4
    assert out.std(0).mean().item() == pytest.approx(1.0, rel=1e-3)
    g = build_generator("film")
    set_embedding_stats(g, e)
    assert "embed_norm.mean" in g.state_dict() and "embed_norm.scale" in g.state_dict()
