"""adgen train: train a text-conditioned generator.

Usage:
  adgen train                                        the release recipe: --arch composer on
                                                     data/families64, 70 min shape budget
  adgen train --arch layered --max-minutes 70        the v2 release architecture
  adgen train --arch film --max-minutes 60           the v1 FiLM GAN
  adgen train --arch dcgan --max-minutes 60          the seed DCGAN baseline, same budget
  adgen train --arch film --fake-data --max-steps 2  smoke test: random data, seconds
  adgen train --resume runs/00003-composer --translate-image-steps 3000
  adgen train --refill models/adgen-emoji64         held-out cells of a finished
                                                     checkpoint drawn again (warp)
  adgen train --retrain-words models/adgen-emoji64 --seed 1
                                                     its text heads trained further on
                                                     fresh captions

--arch composer takes its recipe from adgen.training.train_composer.ComposerConfig (its
defaults are the release's); the other archs from adgen.training.train.TrainConfig and the
arch's preset (`--arch dcgan` = BCE, Adam 2e-4 beta1 0.5, no EMA/DiffAugment/MA-GP/
mismatched pairs). An option the arch does not read is an error, never ignored.
"""
from __future__ import annotations

import json
from dataclasses import asdict, fields

import click

from adgen.paths import data_dir

EPILOG = """Examples:

\b
  adgen train
  adgen train --arch film --fake-data --max-steps 2
  adgen train --arch film --max-minutes 60 --threads 1 --desc film-release
  adgen train --arch dcgan --max-minutes 60 --threads 1
  adgen train --arch layered --max-minutes 30 --desc layered-release
  adgen train --arch composer --data data/families64 --max-minutes 60
  adgen train --refill models/adgen-emoji64 --held-out-fill analogy --analogy-k 4
  adgen train --retrain-words models/adgen-emoji64 --seed 1 --map-captions 40 --map-lr 3e-4
  adgen train --resume runs/00003-film --max-minutes 90
  adgen train --arch film --max-steps 100 --no-ema --diffaug "" --dry-run
"""


# Options that override one TrainConfig field each; unset (None) keeps the arch's preset.
# (name, type, help); bool makes a --name/--no-name switch.
OVERRIDES = (
    ("z-dim", int, "Latent size (film 128, dcgan 100)."),
    ("ngf", int, "Generator base width."),
    ("ndf", int, "Discriminator base width."),
    ("cond-aug", bool, "Conditioning augmentation (film)."),
    ("loss", click.Choice(["hinge", "bce"]), "Adversarial loss."),
    ("mismatch", bool, "Matching-aware mismatched pairs (rolled batch)."),
    ("magp-every", int, "MA-GP every k steps (0 = off)."),
    ("magp-weight", float, "MA-GP weight."),
    ("diffaug", str, 'DiffAugment ops: "translation,cutout" or "".'),
    ("ema", bool, "Keep an EMA generator (used for samples and checkpoints)."),
    ("ema-beta", float, "EMA decay per step."),
    ("kl-weight", float, "Conditioning-augmentation KL weight."),
    ("lr-g", float, "Generator learning rate."),
    ("lr-d", float, "Discriminator learning rate (TTUR)."),
    ("beta1", float, "Adam beta1."),
    ("beta2", float, "Adam beta2."),
    ("lr-decay", click.Choice(["none", "linear"]),
     "LR schedule: linear decay to 0 after --decay-start of the budget."),
    ("decay-start", float, "Budget fraction where decay starts."),
    ("batch-size", int, "Batch size (default 64)."),
    ("max-steps", int, "Stop after this many steps."),
    ("max-minutes", float, "Wall budget of training time."),
    ("log-every", int, "Steps per metrics.jsonl line."),
    ("sample-every", int, "Steps per sample grid."),
    ("ckpt-every", int, "Steps per checkpoint."),
    ("seed", int, "Seed (deterministic on CPU)."),
    ("threads", int, "torch threads (0 = all cores)."),
    ("device", click.Choice(["auto", "cpu", "cuda"]), "auto uses CUDA when present."),
    ("data", str, "Dataset folder (default data/twemoji64)."),
    ("runs-dir", str, "Where run folders go (default runs/)."),
    ("desc", str, "Run name suffix: runs/<nnnnn>-<desc>."),
    ("resume", str, "Continue a run folder from checkpoints/latest."),
    ("gan-weight", float, "layered: adversarial weight in the shape stage (0 = L1 only)."),
    ("noise", float, "layered: latent noise std (what the seed varies)."),
    ("map-steps", int, "layered: text-head steps (stage 2)."),
    ("map-captions", int, "layered: extra captions per concept for the text heads."),
    ("map-noise", float, "layered: noise std on the standardised caption embedding."),
    ("map-lr", float, "composer: text heads' peak learning rate."),
    ("map-grammar", "versions",
     "composer, --retrain-words: wording grammar versions its captions are drawn from "
     "(1: the first word rounds', 2: wider, the default; 1,2: the same labels worded by "
     "each)."),
    ("refine-steps", int, "composer: stage 3b, the heads again on fresh captions (0 = off)."),
    ("refine-captions", int, "composer: captions per concept for stage 3b."),
    ("refine-lr", float, "composer: stage 3b's peak learning rate."),
    ("refine-noise", float, "composer: stage 3b's noise on the standardised embedding."),
    ("precision", click.Choice(["auto", "fp32", "bf16"]),
     "layered: bf16 autocast where the CPU/GPU has bf16 units (auto)."),
    ("shift-px", float, "layered: the seed moves the object by up to this many pixels."),
    ("shrink", float, "layered: the seed shrinks the object by up to this fraction."),
    ("progress", bool, "Show the progress bar."),
    ("translate-steps", int, "composer: steps of the family translator (held-out cells)."),
    ("translate-image-steps", int,
     "composer: then steps with decoded-image L1 through the frozen decoder."),
    ("warm-start", bool, "composer: start the decoder from the shipped layered model's."),
    ("held-out-fill", click.Choice(["analogy", "translator", "warp"]),
     "composer: how held-out (concept, family) cells are drawn (default warp: the "
     "concept's drawing bent and recoloured as its nearest concept's drawings change)."),
    ("warp-fit-steps", int, "composer, --held-out-fill warp: Adam steps fitting each "
                            "held-out latent to its bent drawing."),
    ("analogy-k", int, "composer: nearest concepts whose family direction is averaged."),
    ("analogy-alpha", float, "composer: scale of that direction."),
    ("refill", str, "composer: rerun only the held-out stage on this finished checkpoint "
                    "(keeps its trained cells, decoder and text heads)."),
    ("retrain-words", str, "composer: train only the text heads of this finished checkpoint "
                           "further, on captions drawn with --seed (keeps cells and decoder)."),
)

# --arch composer: its config (adgen.training.train_composer.ComposerConfig) takes these
# options; the budget options name its shape stage. Any other option is an error there.
COMPOSER_RENAMES = {"max_minutes": "shape_minutes", "max_steps": "shape_steps",
                    "ngf": "dec_width"}


class Versions(click.ParamType):
    """'1,2' -> (1, 2): a comma-separated list of integers (range checked by the config)."""
    name = "N[,N...]"

    def convert(self, value, param, ctx):
        if isinstance(value, tuple):
            return value
        try:
            return tuple(int(v) for v in str(value).split(","))
        except ValueError:
            self.fail(f"{value!r} is not a comma-separated list of integers", param, ctx)


def _overrides(command):
    """OVERRIDES as click options, in that order in --help."""
    for name, kind, help_text in reversed(OVERRIDES):
        kind = Versions() if kind == "versions" else kind
        decls = [f"--{name}/--no-{name}"] if kind is bool else [f"--{name}"]
        command = click.option(*decls, type=None if kind is bool else kind, default=None,
                               help=help_text)(command)
    return command


@click.command("train", epilog=EPILOG)
@click.option("--arch", type=click.Choice(["film", "dcgan", "layered", "composer"]),
              default="composer", show_default=True,
              help="Generator architecture (layered: the v2 release model; composer: design "
                   "families, object colours, trained on a --families dataset).")
@_overrides
@click.option("--fake-data", is_flag=True, default=None,
              help="Random images and embeddings (no dataset or text encoder needed).")
@click.option("--dry-run", is_flag=True, help="Print the resolved config and exit.")
def train(arch, dry_run, **options):
    """Train a generator into runs/<nnnnn>-<desc>/ (metrics, sample grids, checkpoints)."""
    if options.get("resume") and click.get_current_context().get_parameter_source("arch") \
            == click.core.ParameterSource.DEFAULT:
        arch = _run_arch(options["resume"]) or arch   # a run resumes as what it is
    if arch == "composer":
        _train_composer(dry_run, options)
        return
    for name in ("translate_steps", "translate_image_steps", "warm_start", "held_out_fill",
                 "warp_fit_steps", "analogy_k", "analogy_alpha", "refill", "retrain_words", "map_lr", "map_grammar",
                 "refine_steps", "refine_captions", "refine_lr", "refine_noise"):
        if options.pop(name) is not None:
            raise click.UsageError(f"--{name.replace('_', '-')} needs --arch composer")
    from adgen.training.run import train as run_training  # these import torch
    from adgen.training.train import resolve_config
    cfg = resolve_config(arch, **options)
    if dry_run:
        click.echo(json.dumps(asdict(cfg), indent=2, sort_keys=True))
        return
    final = run_training(cfg)
    click.echo(f"final checkpoint: {final}")


def _train_composer(dry_run: bool, options: dict) -> None:
    from adgen.training.train_composer import (ComposerConfig, refill_composer,  # torch
                                               retrain_words, train_composer)
    refill = options.pop("refill", None)
    words = options.pop("retrain_words", None)
    known = {f.name for f in fields(ComposerConfig)}
    given = {COMPOSER_RENAMES.get(k, k): v for k, v in options.items() if v is not None}
    if refill and words:
        raise click.UsageError("--refill and --retrain-words are two runs: one at a time")
    for flag, value in (("--refill", refill), ("--retrain-words", words)):
        if value and (given.keys() & {"resume", "shape_minutes", "shape_steps"}):
            raise click.UsageError(f"{flag} reruns one stage of a finished checkpoint; "
                                   "it takes no --resume or budget")
    unused = sorted(k for k in given if k not in known)
    if unused:
        raise click.UsageError("not used by --arch composer: "
                               + ", ".join("--" + k.replace("_", "-") for k in unused))
    if "data" not in given and not dry_run:
        given["data"] = str(data_dir() / "families64")
    if refill:
        given.setdefault("desc", "composer-refill")
    if words:
        given.setdefault("desc", "composer-words")
    cfg = ComposerConfig(**given)
    if dry_run:
        click.echo(json.dumps({**asdict(cfg), **({"refill": refill} if refill else {}),
                               **({"retrain_words": words} if words else {})},
                              indent=2, sort_keys=True))
        return
    if refill:
        final = refill_composer(cfg, refill)
    elif words:
        final = retrain_words(cfg, words)
    else:
        final = train_composer(cfg, explicit=set(given))
    click.echo(f"final checkpoint: {final}")


def _run_arch(run_dir: str) -> str | None:
    """The arch a run folder was started with (None when its config.json cannot say)."""
    from pathlib import Path
    try:
        saved = json.loads((Path(run_dir) / "config.json").read_text())
    except (OSError, ValueError):
        return None
    return saved.get("arch") or (saved.get("config") or {}).get("arch")
