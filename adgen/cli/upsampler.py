"""adgen train-upsampler: the 4x (64 -> 256 px) upsampler stage.

Examples:
  adgen data build --name twemoji256 --size 256 --source svg      # targets, once
  adgen train-upsampler --steps 6000 --desc up256
  adgen train-upsampler --resume runs/00003-up256 --steps 8000     # longer, same run
  adgen train-upsampler --steps 50 --width 8 --n-blocks 1 --dry-run
"""
from __future__ import annotations

import json
from dataclasses import asdict

import click

from adgen.training.train_upsampler import UpsamplerConfig

D = UpsamplerConfig()


@click.command("train-upsampler", epilog="Examples:\n\n  adgen train-upsampler --steps 6000 "
               "--desc up256\n\n  adgen train-upsampler --resume runs/00003-up256 --steps 8000")
@click.option("--data", default=D.data, show_default=True, help="64 px dataset (inputs).")
@click.option("--data256", default=D.data256, show_default=True,
              help="256 px SVG renders (targets): adgen data build --size 256 --source svg.")
@click.option("--base-model", default=None,
              help="Generator checkpoint whose outputs are paired with real 256 px images "
                   "(default: the release model).")
@click.option("--out", default=D.out, show_default=True, help="Runs folder.")
@click.option("--desc", default=D.desc, show_default=True, help="Run name suffix.")
@click.option("--width", default=D.width, show_default=True, type=int, help="Channels.")
@click.option("--n-blocks", default=D.n_blocks, show_default=True, type=int,
              help="Residual blocks at 64 px.")
@click.option("--batch-size", default=D.batch_size, show_default=True, type=int)
@click.option("--crop", default=D.crop, show_default=True, type=click.IntRange(8, 64),
              help="Input crop side (target 4x).")
@click.option("--steps", default=D.steps, show_default=True, type=click.IntRange(1),
              help="Total steps (the cosine schedule ends here).")
@click.option("--max-minutes", default=D.max_minutes, show_default=True, type=float,
              help="Stop early after this long (resume later); 0: no limit.")
@click.option("--lr", default=D.lr, show_default=True, type=float)
@click.option("--edge-weight", default=D.edge_weight, show_default=True, type=float,
              help="Weight of the Sobel-gradient L1 term.")
@click.option("--mix", default=",".join(map(str, D.mix)), show_default=True,
              help="Sampling weights of real, degraded and generated inputs.")
@click.option("--gen-per-concept", default=D.gen_per_concept, show_default=True, type=int,
              help="Base-generator outputs per training concept.")
@click.option("--threads", default=D.threads, show_default=True, type=int,
              help="torch threads (0: all cores).")
@click.option("--precision", default=D.precision, show_default=True,
              type=click.Choice(["auto", "bf16", "fp32"]))
@click.option("--seed", default=D.seed, show_default=True, type=int)
@click.option("--log-every", default=D.log_every, show_default=True, type=int)
@click.option("--ckpt-every", default=D.ckpt_every, show_default=True, type=int)
@click.option("--resume", default=None, help="Run folder to continue.")
@click.option("--init", default=None, metavar="CKPT",
              help="Start from this upsampler checkpoint's weights (a fine-tune, e.g. for a "
                   "new base generator); same --width and --n-blocks.")
@click.option("--no-progress", is_flag=True, help="No progress bar.")
@click.option("--dry-run", is_flag=True, help="Print the resolved config and exit.")
def train_upsampler(mix: str, no_progress: bool, dry_run: bool, **options):
    """Train the 4x upsampler on SVG renders, degraded inputs and the base model's outputs."""
    try:
        weights = tuple(float(v) for v in mix.split(","))
    except ValueError:
        raise click.BadParameter(f"{mix!r} is not three numbers", param_hint="--mix") from None
    if len(weights) != 3 or min(weights) < 0 or sum(weights) <= 0:
        raise click.BadParameter("three non-negative weights, not all 0", param_hint="--mix")
    if options.get("resume") and click.get_current_context().get_parameter_source("steps") \
            == click.core.ParameterSource.DEFAULT:
        options["steps"] = 0  # the run's own: its cosine schedule ends where it was set to
    cfg = UpsamplerConfig(**options, mix=weights, progress=not no_progress)
    if dry_run:
        click.echo(json.dumps(asdict(cfg), indent=2))
        return
    from adgen.training.train_upsampler import run_training
    click.echo(f"checkpoint: {run_training(cfg)}")


@click.command("eval-upsampler", epilog="Examples:\n\n  adgen eval-upsampler "
               "runs/00003-up256/checkpoints/final\n\n  adgen eval-upsampler models/adgen-up256 "
               "-o out/up-eval.json --items 200")
@click.argument("checkpoint")
@click.option("-o", "--out", default=None, help="Eval JSON (default: CHECKPOINT/eval.json).")
@click.option("--sheet", default=None,
              help="Contact sheet PNG (default: upsampler_sheet.png beside the JSON).")
@click.option("--data", default=D.data, show_default=True)
@click.option("--data256", default=D.data256, show_default=True)
@click.option("--base-model", default=None, help="Generator for the generated inputs "
              "(default: the release model).")
@click.option("--items", default=500, show_default=True, type=click.IntRange(2),
              help="Generated (concept, colour) items.")
@click.option("--threads", default=0, show_default=True, type=int)
@click.option("--no-progress", is_flag=True)
def eval_upsampler(no_progress: bool, **options):
    """PSNR/SSIM/edges vs bicubic and Lanczos on held-out concepts; R-precision and
    identity of the 256 px images vs the 64 px ones; a side-by-side contact sheet."""
    from adgen.training.eval_upsampler import UpEvalConfig, evaluate_upsampler, format_table
    results = evaluate_upsampler(UpEvalConfig(**options, progress=not no_progress))
    click.echo(format_table(results))
    click.echo(f"wrote {results['_out']} and {results['_sheet']}")
