"""adgen eval: score a generator checkpoint against real images.

Usage:
  adgen eval models/adgen-emoji64                      table + <ckpt>/eval.json
  adgen eval runs/00004-film/checkpoints/final -o film.json
  adgen eval CKPT --items 0                            one item per concept (all 1,604)
  adgen eval CKPT --dry-run                            print the resolved config
  adgen eval models/adgen-emoji64 --style twemoji      a composer, every prompt naming a family
  adgen eval CKPT --families data/families64 --compare models/adgen-emoji64
                                                       design families, object colours

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
  adgen eval models/adgen-emoji64 --style twemoji --items 600
  adgen eval CKPT --families data/families64 --compare models/adgen-emoji64
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
@click.option("-o", "--out", default=None, help="JSON output (default <checkpoint>/eval.json, "
              "or eval_<style>.json).")
@click.option("--style", default=None, metavar="FAMILY",
              help="Name this design family (twemoji, noto, fluent) in every prompt: a "
                   "composer checkpoint scored like with like on the twemoji set.")
@click.option("--progress/--no-progress", default=True, help="Show progress bars.")
@click.option("--families", "families_data", default=None, metavar="DIR",
              help="Score against a design-family dataset (adgen data build --families): "
                   "families per seed, held-out cells, object colours. Writes "
                   "<checkpoint>/eval_families.json (or --out).")
@click.option("--compare", "compare", multiple=True, metavar="CKPT",
              help="With --families: also score this checkpoint, side by side (repeatable).")
@click.option("--dry-run", is_flag=True, help="Print the resolved config and exit.")
def eval_cmd(dry_run, families_data, compare, **options):
    """Evaluate CHECKPOINT (a folder or its generator.safetensors)."""
    if families_data and options["style"] is not None:
        raise click.UsageError("--style names one family in the twemoji-set eval; --families "
                               "already scores every family")
    if families_data:
        _eval_families(options, families_data, compare, dry_run)
        return
    if compare:
        raise click.UsageError("--compare needs --families")
    if options["style"] is not None:
        from adgen.captions import family_phrase
        try:
            family_phrase(options["style"])
        except KeyError as exc:
            raise click.UsageError(f"--style: {exc.args[0]}") from None
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


def _eval_families(options: dict, data: str, compare: tuple[str, ...], dry_run: bool) -> None:
    from pathlib import Path

    from adgen.atomic import atomic_write_json
    ckpt = options["checkpoint"]
    names = {Path(ckpt).name if Path(ckpt).name != "final" else Path(ckpt).parent.parent.name:
             ckpt}
    for other in compare:
        names.setdefault(Path(other).name, other)
    n_items = options["items"] or 400
    plan = {"data": data, "items": n_items, "seed": options["seed"], "checkpoints": names}
    if dry_run:
        click.echo(json.dumps(plan, indent=2, sort_keys=True))
        return
    import torch

    from adgen.training.eval_composer import evaluate_checkpoints, format_rows
    if options["threads"]:
        torch.set_num_threads(options["threads"])
    results = evaluate_checkpoints(names, data, n_items, options["seed"])
    out = Path(options["out"] or Path(ckpt if Path(ckpt).is_dir() else Path(ckpt).parent)
               / "eval_families.json")
    atomic_write_json(out, {"eval": plan, "results": results}, sort_keys=True)
    click.echo(format_rows(results))
    click.echo(f"wrote {out}")
