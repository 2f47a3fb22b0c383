"""adgen eval: score a generator checkpoint against real images.

Usage:
  adgen eval models/adgen-emoji64                      table + <ckpt>/eval.json
  adgen eval runs/00004-film/checkpoints/final -o film.json
  adgen eval CKPT --items 0                            one item per concept (all 1,604)
  adgen eval CKPT --dry-run                            print the resolved config

The matching model (small CNN into the MiniLM space) is trained on first use on real
images only (~minutes on 2 cores) and cached in artifacts/matcher/.
"""
from __future__ import annotations

import json
from dataclasses import asdict

import click

EPILOG = """Examples:

\b
  adgen eval models/adgen-emoji64
  adgen eval runs/00004-film/checkpoints/final --out film-eval.json
  adgen eval CKPT --items 0 --threads 2
"""


@click.command("eval", epilog=EPILOG)
@click.argument("checkpoint")
@click.option("--data", default="data/twemoji64", show_default=True, help="Dataset folder.")
@click.option("--items", type=int, default=1000, show_default=True,
              help="(concept, colour) pairs to score; 0 = one per concept.")
@click.option("--candidates", type=int, default=100, show_default=True,
              help="R-precision: 1 true caption among this many.")
@click.option("--seed", type=int, default=777_000_001, show_default=True,
              help="Held-out eval seed (item draw and latents).")
@click.option("--diversity-items", type=int, default=100, show_default=True)
@click.option("--diversity-seeds", type=int, default=4, show_default=True)
@click.option("--batch-size", type=int, default=128, show_default=True)
@click.option("--threads", type=int, default=0, show_default=True, help="0 = all cores.")
@click.option("--matcher-steps", type=int, default=1000, show_default=True,
              help="Matcher training steps (cached per config in artifacts/matcher/).")
@click.option("--matcher-width", type=int, default=16, show_default=True,
              help="Matcher CNN base width.")
@click.option("-o", "--out", default=None, help="JSON output (default <checkpoint>/eval.json).")
@click.option("--progress/--no-progress", default=True, help="Show progress bars.")
@click.option("--dry-run", is_flag=True, help="Print the resolved config and exit.")
def eval_cmd(dry_run, **options):
    """Evaluate CHECKPOINT (a folder or its generator.safetensors)."""
    from adgen.training.eval import EvalConfig, evaluate, format_table
    cfg = EvalConfig(**options)
    if dry_run:
        click.echo(json.dumps(asdict(cfg), indent=2, sort_keys=True))
        return
    results = evaluate(cfg)
    click.echo(format_table(results))
    click.echo(f"chance: r_precision {results['chance']['r_precision']:.3f}, "
               f"color_accuracy {results['chance']['color_accuracy']:.3f}")
    click.echo(f"wrote {results['_out']}")
