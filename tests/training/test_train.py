"""Training loop on fake data, the tricks on tiny tensors, resume and determinism."""
from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner

from adgen.errors import AdgenError
from training import augment, losses
from adgen.training.checkpoint import load_generator
from adgen.training.run import train
from adgen.training.train import TrainError, resolve_config

TINY = dict(fake_data=True, batch_size=4, threads=1, progress=False, log_every=1,
            sample_every=1, ckpt_every=1, ngf=4, ndf=4)


def test_mismatched_rolls_the_batch():
    e = torch.arange(12.0).view(4, 3)
    wrong = losses.mismatched(e)
    assert torch.equal(wrong[0], e[3]) and torch.equal(wrong[1], e[0])
    assert all(not torch.equal(wrong[i], e[i]) for i in range(4))


def test_hinge_d_loss_counts_mismatched_pairs_as_fake():
    real = torch.tensor([2.0, 2.0])
    fake = torch.tensor([-2.0, -2.0])
    assert losses.d_loss("hinge", real, fake, None).item() == 0.0
    # A real image with the wrong caption scored as real is penalised.
    mis_wrong = torch.tensor([1.0, 1.0])
    assert losses.d_loss("hinge", real, fake, mis_wrong).item() == pytest.approx(1.0)
    assert losses.d_loss("hinge", real, fake, -mis_wrong * 2).item() == 0.0
    assert losses.g_loss("hinge", torch.tensor([0.5, 1.5])).item() == pytest.approx(-1.0)


def test_ema_update_on_tiny_tensors():
    ema, model = torch.nn.Linear(2, 1), torch.nn.Linear(2, 1)
    with torch.no_grad():
        ema.weight.fill_(1.0), ema.bias.fill_(0.0)
        model.weight.fill_(3.0), model.bias.fill_(2.0)
    losses.ema_update(ema, model, beta=0.75)
    assert torch.allclose(ema.weight, torch.full((1, 2), 1.5))  # 0.75*1 + 0.25*3
    assert torch.allclose(ema.bias, torch.full((1,), 0.5))
    losses.ema_update(ema, model, beta=0.0)
    assert torch.equal(ema.weight, model.weight)


def test_ma_gp_is_positive_and_differentiable():
    d = torch.nn.Module()
    lin = torch.nn.Linear(3 * 64 * 64 + 384, 1)
    d.forward = lambda x, e: lin(torch.cat([x.flatten(1), e], 1)).view(-1)
    gp = losses.ma_gp(d, torch.randn(2, 3, 64, 64), torch.randn(2, 384), power=2.0, weight=1.0)
    # For a linear D the gradient norm is |w| for every sample.
    assert gp.item() == pytest.approx(lin.weight.pow(2).sum().item(), rel=1e-4)
    gp.backward()
    assert lin.weight.grad is not None


def test_diffaugment_keeps_colour_and_border():
    g = torch.Generator().manual_seed(0)
    x = torch.full((3, 3, 64, 64), 0.25)
    x[:, :, 20:40, 20:40] = -0.5
    t = augment.translate(x, generator=g)
    assert t.shape == x.shape
    assert torch.allclose(t[:, :, 0, :], torch.full_like(t[:, :, 0, :], 0.25))  # border kept
    assert set(t.unique().tolist()) <= {0.25, -0.5}  # no new colours
    c = augment.cutout(x, generator=g)
    assert set(c.unique().tolist()) <= {0.25, -0.5, 0.0}
    assert (c == 0).any()
    with pytest.raises(ValueError, match="colour"):
        augment.diff_augment(x, "color")


def test_one_step_on_fake_data(tmp_path):
    final = train(resolve_config("film", max_steps=1, runs_dir=str(tmp_path), **TINY))
    run = final.parent.parent
    assert run.name == "00000-film-fake"
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert rows[0]["step"] == 1 and rows[0]["images_per_s"] > 0
    assert {"loss_d", "loss_g", "d_real", "d_fake", "d_mis"} <= set(rows[0])
    assert (run / "samples" / "step-0000001.png").is_file()
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["config"]["max_steps"] == 1
    loaded = load_generator(final)
    assert loaded.config["training"]["step"] == 1
    assert loaded.module(torch.zeros(1, 384), torch.zeros(1, loaded.z_dim)).shape == (1, 3, 64, 64)


def test_deterministic_and_resumable(tmp_path):
    a = train(resolve_config("dcgan", max_steps=3, runs_dir=str(tmp_path / "a"), **TINY))
    b = train(resolve_config("dcgan", max_steps=3, runs_dir=str(tmp_path / "b"), **TINY))
    c = train(resolve_config("dcgan", max_steps=2, runs_dir=str(tmp_path / "c"), **TINY))
    c = train(resolve_config("dcgan", resume=str(c.parent.parent), max_steps=3, progress=False))
    wa, wb, wc = (load_generator(p).module.state_dict() for p in (a, b, c))
    for key in wa:
        assert torch.equal(wa[key], wb[key]), key
        assert torch.equal(wa[key], wc[key]), key


def test_presets_and_bad_options():
    assert resolve_config("dcgan", max_steps=1).loss == "bce"
    assert resolve_config("dcgan", max_steps=1, loss="hinge").loss == "hinge"
    assert resolve_config("film", max_steps=1).ema is True
    for bad in ({"max_steps": 0}, {"loss": "wgan", "max_steps": 1}, {},
                {"diffaug": "brightness", "max_steps": 1}):
        with pytest.raises(AdgenError):
            resolve_config("film", **bad)
    with pytest.raises(TrainError):
        resolve_config("nope", max_steps=1)


def test_cli_dry_run_and_error_line():
    from adgen.cli import main
    from adgen.cli.train import train as train_cmd
    out = CliRunner().invoke(train_cmd, ["--arch", "dcgan", "--max-steps", "5", "--dry-run"])
    assert out.exit_code == 0
    cfg = json.loads(out.output)
    assert cfg["arch"] == "dcgan" and cfg["beta1"] == 0.5 and cfg["max_steps"] == 5
    assert main(["train", "--max-steps", "0"]) == 2
