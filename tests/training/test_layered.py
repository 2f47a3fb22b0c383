"""The layered generator: shapes stage, words stage, exact colour, seeds, resume, export."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from adgen.captions import COLOR_NAMES, PALETTE
from adgen.training.checkpoint import load_generator
from adgen.training.layered import LayeredGenerator, composite
from adgen.serving.runtime.providers import CPU_FLAGS_ENV
from adgen.training.stages import (cpu_has_bf16, mapping_captions, normalise_latent,
                                   train_mapping, use_bf16)
from adgen.training.run import train
from adgen.training.train import TrainError, resolve_config

TINY = dict(fake_data=True, batch_size=4, threads=1, progress=False, log_every=1,
            ckpt_every=1, ngf=2, map_steps=3)


def tiny_generator(n_concepts: int = 5) -> LayeredGenerator:
    torch.manual_seed(0)
    return LayeredGenerator(n_concepts=n_concepts, latent_ch=2, dec_width=2, hidden=16).eval()


def test_background_is_the_predicted_palette_colour_exactly():
    g = tiny_generator()
    k = COLOR_NAMES.index("teal")
    with torch.no_grad():
        g.color_head.weight.zero_()
        g.color_head.bias.fill_(-1e4)
        g.color_head.bias[k] = 1e4
        g.decoder.out.bias[3] = -1e4    # alpha 0: nothing but background
        img = g(torch.randn(3, 384), torch.randn(3, g.z_dim))
    want = torch.tensor(PALETTE["teal"], dtype=torch.float32) / 127.5 - 1.0
    assert torch.allclose(img, want[None, :, None, None].expand_as(img), atol=1e-6)


def test_confident_concept_decodes_its_codebook_latent_and_z_moves_it():
    g = tiny_generator()
    with torch.no_grad():
        g.codebook.normal_()
        g.concept_head.weight.zero_()
        g.concept_head.bias.fill_(-1e4)
        g.concept_head.bias[3] = 1e4
        z0 = torch.zeros(1, g.z_dim)
        lat = g.latent(g.heads(torch.randn(1, 384))[0], z0)
        assert torch.allclose(lat.flatten(1), g.codebook[3:4])
        moved = g.latent(g.heads(torch.randn(1, 384))[0], torch.randn(1, g.z_dim))
    # The z offset has the trained noise std per latent dim on average.
    assert 0.3 * g.noise < (moved - lat).std().item() < 3 * g.noise


def test_seed_layout_moves_the_object_and_no_shift_is_the_identity():
    g = tiny_generator()
    fg, alpha = torch.rand(2, 3, 64, 64), torch.zeros(2, 1, 64, 64)
    alpha[:, :, 20:40, 20:40] = 1.0
    z = torch.randn(2, g.z_dim, generator=torch.Generator().manual_seed(3))
    same_fg, same_alpha = g.layout(fg, alpha, z)          # shift_px = shrink = 0
    assert torch.allclose(same_alpha, alpha, atol=1e-5)
    assert torch.allclose(same_fg, fg * alpha, atol=1e-5)
    g.shift_px = 4.0
    _, moved = g.layout(fg, alpha, z)
    assert not torch.allclose(moved, alpha, atol=1e-3)
    # Mass is kept (a shift inside the frame), and the object stays within 4 px.
    assert moved.sum().item() == pytest.approx(alpha.sum().item(), rel=1e-3)
    ys, xs = torch.nonzero(moved[0, 0] > 0.5, as_tuple=True)
    assert 16 <= int(ys.min()) and int(ys.max()) <= 43 and 16 <= int(xs.min()) <= int(xs.max()) <= 43


def test_composite_and_latent_normalisation():
    fg = torch.ones(1, 3, 2, 2)
    alpha = torch.tensor([[[[1.0, 0.0], [0.5, 0.0]]]])
    out = composite(fg, alpha, torch.zeros(1, 3))
    assert out[0, 0].tolist() == [[1.0, -1.0], [0.0, -1.0]]
    lat = normalise_latent(torch.randn(4, 2, 8, 8) * 7.0)
    assert torch.allclose(lat.pow(2).mean((1, 2, 3)), torch.ones(4), atol=1e-4)


def test_mapping_learns_concepts_and_colours():
    g = tiny_generator(n_concepts=4)
    gen = torch.Generator().manual_seed(0)
    emb = torch.nn.functional.normalize(torch.randn(4 * 3, 384, generator=gen), dim=1)
    concept = torch.arange(4).repeat_interleave(3)
    color = torch.arange(3).repeat(4)
    g.embed_norm.set_stats(emb)
    stats = train_mapping(g, emb, concept, color, steps=150, gen=gen, batch=12,
                          lr=3e-3, input_noise=0.1)
    assert stats["acc_concept"] == 1.0 and stats["acc_color"] == 1.0
    with torch.no_grad():
        lc, lk = g.heads(emb)
    assert torch.equal(lc.argmax(1), concept) and torch.equal(lk.argmax(1), color)


def test_mapping_captions_use_names_aliases_and_every_colour_index():
    recs = [{"name": "red apple", "aliases": ["apple_red"]}, {"name": "cat"}]
    texts, concept, color = mapping_captions(recs, per_concept=40, seed=1)
    assert len(texts) == 80 and concept.tolist() == [0] * 40 + [1] * 40
    assert any("apple red" in t for t in texts[:40]) and all("_" not in t for t in texts)
    for t, k in zip(texts, color):
        assert COLOR_NAMES[k] in t


def test_two_stage_run_resumes_and_loads(tmp_path):
    final = train(resolve_config("layered", max_steps=2, runs_dir=str(tmp_path), **TINY))
    run = final.parent.parent
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert rows[0]["step"] == 1 and "l1" in rows[0] and rows[0]["images_per_s"] > 0
    assert any("acc_concept" in r for r in rows) and any(r.get("stage") == "words" for r in rows)
    loaded = load_generator(final)
    assert loaded.arch == "layered" and loaded.config["training"]["stage"] == "final"
    # precision auto: bf16 autocast only where this CPU multiplies bf16 natively
    case = "bf16 (AVX512-BF16/AMX here)" if cpu_has_bf16() else "fp32 (no bf16 unit here)"
    assert loaded.config["training"]["bf16"] is cpu_has_bf16(), case
    with torch.no_grad():
        out = loaded.module(torch.zeros(2, 384), torch.zeros(2, loaded.z_dim))
    assert out.shape == (2, 3, 64, 64) and float(out.abs().max()) <= 1.0
    # The codebook was filled from the encoder (stage 2 ran).
    assert float(loaded.module.codebook.abs().sum()) > 0
    again = train(resolve_config("layered", resume=str(run), max_steps=3, progress=False))
    assert load_generator(again).config["training"]["step"] == 3


@pytest.mark.parametrize("flags, native", [("avx2 fma", False), ("avx2 avx512_bf16", True),
                                           ("amx_tile amx_bf16", True)])
def test_auto_precision_is_bf16_only_on_cpus_that_multiply_it(monkeypatch, flags, native):
    """Zen 3, Zen 4 and Sapphire Rapids flags (ADGEN_CPU_FLAGS stands for them): elsewhere
    torch emulates bf16, slower than fp32."""
    cpu = torch.device("cpu")
    monkeypatch.setenv(CPU_FLAGS_ENV, flags)
    assert cpu_has_bf16() is native and use_bf16("auto", cpu) is native
    assert use_bf16("fp32", cpu) is False and use_bf16("bf16", cpu) is True


def test_layered_options_are_checked():
    for bad in ({"precision": "fp8"}, {"gan_weight": -1.0}, {"map_steps": 0}):
        with pytest.raises(TrainError):
            resolve_config("layered", max_steps=1, **bad)
    # explicit option > arch preset > dataclass default
    layered, film = resolve_config("layered", max_steps=1), resolve_config("film", max_steps=1)
    assert layered.lr_g != film.lr_g and not layered.ema  # the layered preset applies
    assert resolve_config("layered", max_steps=1, lr_g=5e-4).lr_g == 5e-4


def test_onnx_export_of_layered_matches_torch(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    from adgen.training.checkpoint import save_generator
    from adgen.training.networks import build_generator
    g = build_generator("layered", n_concepts=6, latent_ch=2, dec_width=2, hidden=16,
                        shift_px=2.0, shrink=0.1).eval()
    with torch.no_grad():
        g.codebook.normal_()
    ckpt = save_generator(g, {"arch": "layered", "model": g.model_kwargs}, tmp_path / "ckpt")
    from adgen.export.onnx_export import export_onnx
    out = export_onnx(ckpt, tmp_path / "onnx", parity_batches=(1, 4))
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["parity"]["max_abs"] <= 1e-4
    sess = ort.InferenceSession(str(out / "generator.onnx"), providers=["CPUExecutionProvider"])
    e = np.random.default_rng(0).standard_normal((3, 384)).astype(np.float32)
    z = np.random.default_rng(1).standard_normal((3, g.z_dim)).astype(np.float32)
    (img,) = sess.run(None, {"EMBEDDING": e, "Z": z})
    with torch.no_grad():
        ref = g(torch.from_numpy(e), torch.from_numpy(z)).numpy()
    assert np.abs(img - ref).max() <= 1e-4
