"""adgen train: train a text-conditioned GAN on the Twemoji dataset.

Usage:
  adgen train --max-minutes 60                       FiLM generator (default), 60 min budget
  adgen train --arch dcgan --max-minutes 60          the seed DCGAN baseline, same budget
  adgen train --fake-data --max-steps 2              smoke test: random data, seconds
  adgen train --max-steps 100 --dry-run              print the resolved config and exit
  adgen train --resume runs/00003-film --max-minutes 90

Options map 1:1 onto adgen.training.train.TrainConfig; unset options take the arch's preset
(`--arch dcgan` = BCE, Adam 2e-4 beta1 0.5, no EMA/DiffAugment/MA-GP/mismatched pairs).
"""
from __future__ import annotations

import json
from dataclasses import asdict

import click

EPILOG = """Examples:

\b
  adgen train --fake-data --max-steps 2
  adgen train --max-minutes 60 --threads 1 --desc film-release
  adgen train --arch dcgan --max-minutes 60 --threads 1
  adgen train --arch layered --max-minutes 30 --desc layered-release
  adgen train --resume runs/00003-film --max-minutes 90
  adgen train --max-steps 100 --no-ema --diffaug "" --dry-run
"""


def _flag(name: str, help_text: str):
    return click.option(f"--{name}/--no-{name}", default=None, help=help_text)


@click.command("train", epilog=EPILOG)
@click.option("--arch", type=click.Choice(["film", "dcgan", "layered"]), default="film",
              show_default=True, help="Generator architecture (layered: the v2 release model).")
@click.option("--z-dim", type=int, default=None, help="Latent size (film 128, dcgan 100).")
@click.option("--ngf", type=int, default=None, help="Generator base width.")
@click.option("--ndf", type=int, default=None, help="Discriminator base width.")
@_flag("cond-aug", "Conditioning augmentation (film).")
@click.option("--loss", type=click.Choice(["hinge", "bce"]), default=None, help="Adversarial loss.")
@_flag("mismatch", "Matching-aware mismatched pairs (rolled batch).")
@click.option("--magp-every", type=int, default=None, help="MA-GP every k steps (0 = off).")
@click.option("--magp-weight", type=float, default=None, help="MA-GP weight.")
@click.option("--diffaug", default=None, help='DiffAugment ops: "translation,cutout" or "".')
@_flag("ema", "Keep an EMA generator (used for samples and checkpoints).")
@click.option("--ema-beta", type=float, default=None, help="EMA decay per step.")
@click.option("--kl-weight", type=float, default=None, help="Conditioning-augmentation KL weight.")
@click.option("--lr-g", type=float, default=None, help="Generator learning rate.")
@click.option("--lr-d", type=float, default=None, help="Discriminator learning rate (TTUR).")
@click.option("--beta1", type=float, default=None, help="Adam beta1.")
@click.option("--beta2", type=float, default=None, help="Adam beta2.")
@click.option("--lr-decay", type=click.Choice(["none", "linear"]), default=None,
              help="LR schedule: linear decay to 0 after --decay-start of the budget.")
@click.option("--decay-start", type=float, default=None, help="Budget fraction where decay starts.")
@click.option("--batch-size", type=int, default=None, help="Batch size (default 64).")
@click.option("--max-steps", type=int, default=None, help="Stop after this many steps.")
@click.option("--max-minutes", type=float, default=None, help="Wall budget of training time.")
@click.option("--log-every", type=int, default=None, help="Steps per metrics.jsonl line.")
@click.option("--sample-every", type=int, default=None, help="Steps per sample grid.")
@click.option("--ckpt-every", type=int, default=None, help="Steps per checkpoint.")
@click.option("--seed", type=int, default=None, help="Seed (deterministic on CPU).")
@click.option("--threads", type=int, default=None, help="torch threads (0 = all cores).")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default=None,
              help="auto uses CUDA when present.")
@click.option("--data", default=None, help="Dataset folder (default data/twemoji64).")
@click.option("--fake-data", is_flag=True, default=None,
              help="Random images and embeddings (no dataset or text encoder needed).")
@click.option("--runs-dir", default=None, help="Where run folders go (default runs/).")
@click.option("--desc", default=None, help="Run name suffix: runs/<nnnnn>-<desc>.")
@click.option("--resume", default=None, help="Continue a run folder from checkpoints/latest.")
@click.option("--gan-weight", type=float, default=None,
              help="layered: adversarial weight in the shape stage (0 = L1 only).")
@click.option("--noise", type=float, default=None,
              help="layered: latent noise std (what the seed varies).")
@click.option("--map-steps", type=int, default=None, help="layered: text-head steps (stage 2).")
@click.option("--map-captions", type=int, default=None,
              help="layered: extra captions per concept for the text heads.")
@click.option("--map-noise", type=float, default=None,
              help="layered: noise std on the standardised caption embedding.")
@click.option("--precision", type=click.Choice(["auto", "fp32", "bf16"]), default=None,
              help="layered: bf16 autocast where the CPU/GPU has bf16 units (auto).")
@click.option("--shift-px", type=float, default=None,
              help="layered: the seed moves the object by up to this many pixels.")
@click.option("--shrink", type=float, default=None,
              help="layered: the seed shrinks the object by up to this fraction.")
@_flag("progress", "Show the progress bar.")
@click.option("--dry-run", is_flag=True, help="Print the resolved config and exit.")
def train(arch, dry_run, **options):
    """Train a generator into runs/<nnnnn>-<desc>/ (metrics, sample grids, checkpoints)."""
    from adgen.training.train import resolve_config
    from adgen.training.train import train as run_training
    cfg = resolve_config(arch, **options)
    if dry_run:
        click.echo(json.dumps(asdict(cfg), indent=2, sort_keys=True))
        return
    final = run_training(cfg)
    click.echo(f"final checkpoint: {final}")
