"""The 4x upsampler: network, checkpoints, SVG renders, training (resume), eval metrics."""
import json
from dataclasses import replace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from adgen.training.checkpoint import CheckpointError
from adgen.training.train_upsampler import UpsamplerConfig, UpsamplerTrainer, gaussian_blur, holdout_mask
from adgen.training.upsampler import Upsampler, load_upsampler, save_upsampler


def _tiny_pairs(n=6, seed=0):
    """RGBA 64 px and the matching 256 px (nearest 4x) as uint8 arrays."""
    rng = np.random.default_rng(seed)
    small = np.zeros((n, 64, 64, 4), np.uint8)
    for i in range(n):
        y, x = rng.integers(4, 30, 2)
        small[i, y:y + 30, x:x + 30] = [*rng.integers(0, 255, 3), 255]
    big = small.repeat(4, 1).repeat(4, 2)
    return small, big


def test_fresh_upsampler_is_bilinear_and_4x():
    m = Upsampler(8, 1).eval()
    x = torch.rand(2, 3, 64, 64) * 2 - 1
    y = m(x)
    assert y.shape == (2, 3, 256, 256)
    ref = F.interpolate(x, scale_factor=4, mode="bilinear", align_corners=False)
    assert torch.allclose(y, ref.clamp(-1, 1), atol=1e-6)


def test_checkpoint_round_trip_and_refusals(tmp_path):
    m = Upsampler(8, 2)
    with torch.no_grad():
        m.tail.weight.normal_(0, 0.1)
    save_upsampler(m, tmp_path / "up", {"training": {"step": 3}})
    loaded = load_upsampler(tmp_path / "up")
    x = torch.rand(1, 3, 64, 64)
    assert torch.equal(loaded.module(x), m.eval()(x))
    assert loaded.config["model"] == {"width": 8, "n_blocks": 2}
    cfg = json.loads((tmp_path / "up" / "config.json").read_text())
    (tmp_path / "up" / "config.json").write_text(json.dumps({**cfg, "kind": "adgen-generator"}))
    with pytest.raises(CheckpointError, match="kind"):
        load_upsampler(tmp_path / "up")
    (tmp_path / "up" / "config.json").write_text(json.dumps({**cfg, "model": {"width": 16,
                                                                             "n_blocks": 2}}))
    with pytest.raises(CheckpointError, match="does not match"):
        load_upsampler(tmp_path / "up")
    (tmp_path / "up" / "upsampler.safetensors").write_bytes(b"\x80\x04junk")
    with pytest.raises(CheckpointError, match="pickle"):
        load_upsampler(tmp_path / "up")


def test_svg_render_dataset(tmp_path):
    from adgen.training.data import DataConfig, DataError, build_dataset, load_dataset
    path = build_dataset(DataConfig(name="svg", out=str(tmp_path), limit=3, size=96,
                                    source="svg"), progress=False)
    ds = load_dataset(path, size=96)
    assert ds.images.shape == (3, 96, 96, 4)
    assert ds.info["source"] == "svg" and ds.info["image_size"] == 96
    assert (ds.images[..., 3] == 255).any() and (ds.images[:, 0, 0, 3] == 0).all()
    with pytest.raises(DataError, match="96"):
        load_dataset(path)  # a 64 px reader refuses 96 px images
    with pytest.raises(DataError, match="--source"):
        build_dataset(DataConfig(out=str(tmp_path), source="bmp"), progress=False)


def test_training_resumes_to_the_same_weights(tmp_path):
    small, big = _tiny_pairs()
    cfg = UpsamplerConfig(width=4, n_blocks=1, batch_size=4, crop=16, steps=6, lr=1e-2,
                          mix=(0.5, 0.5, 0.0), holdout_every=3, precision="fp32")
    straight = UpsamplerTrainer(cfg, small, big, None, {})
    for _ in range(6):
        straight.train_step()
    first = UpsamplerTrainer(cfg, small, big, None, {})
    for _ in range(3):
        first.train_step()
    ckpt = first.save(tmp_path, "latest")
    resumed = UpsamplerTrainer(cfg, small, big, None, {})
    resumed.load(ckpt)
    assert resumed.step == 3
    for _ in range(3):
        resumed.train_step()
    for a, b in zip(straight.model.state_dict().values(), resumed.model.state_dict().values()):
        assert torch.equal(a, b)
    # held-out concepts never reach a batch
    assert not holdout_mask(len(small), 3)[resumed.train_ids.numpy()].any()


def test_init_starts_from_a_checkpoint_of_the_same_shape_only(tmp_path):
    from adgen.training.train_upsampler import UpsamplerTrainError
    small, big = _tiny_pairs()
    cfg = UpsamplerConfig(width=4, n_blocks=1, batch_size=4, crop=16, steps=2, lr=1e-2,
                          mix=(1.0, 0.0, 0.0), holdout_every=3, precision="fp32")
    donor = UpsamplerTrainer(replace(cfg, seed=5), small, big, None, {})
    donor.train_step()
    ckpt = donor.save(tmp_path, "latest")
    fresh = UpsamplerTrainer(cfg, small, big, None, {})
    assert not torch.equal(fresh.model.head.weight, donor.model.head.weight)
    assert fresh.init_from(ckpt) == load_upsampler(ckpt).sha256
    for a, b in zip(fresh.model.state_dict().values(), donor.model.state_dict().values()):
        assert torch.equal(a, b)
    wider = UpsamplerTrainer(replace(cfg, width=8), small, big, None, {})
    with pytest.raises(UpsamplerTrainError, match="is not this run's"):
        wider.init_from(ckpt)


def test_a_composer_base_draws_the_targets_family():
    """The generated pool's latents make a composer that is told no family pick family 0."""
    from adgen.training.composer import ComposerGenerator
    from adgen.training.train_upsampler import first_family_latents
    G = ComposerGenerator(n_concepts=4, latent_ch=4, dec_width=4, hidden=16)
    z = first_family_latents(torch.randn(64, G.z_dim), G.n_families)
    none_named = torch.zeros(64, G.n_families + 1)
    none_named[:, -1] = 1.0
    rows = G.cells(torch.zeros(64, 4), none_named, z)
    assert (rows % G.n_families == 0).all()
    plain = torch.randn(8, 5)
    assert torch.equal(first_family_latents(plain, 0), plain)


def test_train_steps_learn_the_edges_bilinear_blurs():
    """Targets are 4x nearest upscales (hard edges on the 4 px grid): a fresh upsampler is
    bilinear, so its error sits on the edges; training steps must shrink it."""
    from adgen.training.train_upsampler import composite_u8
    small, big = _tiny_pairs()
    cfg = UpsamplerConfig(width=8, n_blocks=1, steps=200, lr=1e-2, mix=(1.0, 0.0, 0.0),
                          holdout_every=100, precision="fp32", edge_weight=0.0)
    t = UpsamplerTrainer(cfg, small, big, None, {})
    colors = torch.arange(len(small)) % 14
    x = composite_u8(torch.from_numpy(small), colors)[:, :, 16:48, 16:48]
    y = composite_u8(torch.from_numpy(big), colors)[:, :, 64:192, 64:192]
    t.batch = lambda: (x, y)  # one fixed batch: the loop, loss and optimiser, not sampling
    losses = [t.train_step()["l1"] for _ in range(cfg.steps)]
    assert losses[-1] < 0.6 * losses[0]


def test_eval_metrics_rank_sharp_above_blurred():
    from adgen.training.eval_upsampler import edge_strength, psnr, ssim
    _, big = _tiny_pairs(4)
    sharp = big[..., :3]
    t = torch.from_numpy(sharp).permute(0, 3, 1, 2).float() / 127.5 - 1
    blurred = ((gaussian_blur(t, 3.0) + 1) * 127.5).round().clamp(0, 255).byte()
    blurred = blurred.permute(0, 2, 3, 1).numpy()
    assert psnr(sharp, sharp) == 100.0 and ssim(sharp, sharp) == pytest.approx(1.0)
    assert psnr(blurred, sharp) < 40 and ssim(blurred, sharp) < 0.99
    assert edge_strength(blurred) < 0.8 * edge_strength(sharp)


def test_cli_rejects_bad_mix(capsys):
    from adgen.cli import main
    assert main(["train-upsampler", "--mix", "1,2", "--dry-run"]) == 2
    assert "--mix" in capsys.readouterr().err
    assert main(["train-upsampler", "--steps", "5", "--dry-run"]) == 0
    assert json.loads(capsys.readouterr().out)["steps"] == 5


def test_cli_resume_keeps_the_runs_schedule_unless_steps_is_given(capsys, tmp_path):
    """--resume without --steps asks for the run's own step count (0 here, the saved
    "steps" at load), so the cosine schedule ends where the run set it; --steps moves it."""
    from adgen.cli import main
    assert main(["train-upsampler", "--resume", str(tmp_path), "--dry-run"]) == 0
    assert json.loads(capsys.readouterr().out)["steps"] == 0
    assert main(["train-upsampler", "--resume", str(tmp_path), "--steps", "8000",
                 "--dry-run"]) == 0
    assert json.loads(capsys.readouterr().out)["steps"] == 8000
