"""`adgen compose`: finished creatives (image + headline + CTA button) in ad sizes.

Usage:
  adgen compose out/ --sizes 300x250,728x90          # every image of an `adgen generate` job
  adgen compose out/ --brand-color '#e4002b' --logo logo.png
  adgen compose img.png --sizes 300x250 --headline "Summer sale" --cta "Shop now" -o ads/

On a job folder the copy is each image's own (from `adgen expand`'s prompts.jsonl), else
the offline rules on its brief; creatives go to creatives/<id>/<id>-<k>-<W>x<H>.png, are
listed in manifest.jsonl and resume like images; one contact sheet per size.
"""
from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import click

from adgen.paths import unwritable
from PIL import UnidentifiedImageError

from adgen.prompting.adcopy import offline_copy
from adgen.serving.jobs.creatives import DEFAULT_SIZES, CreativeSpec, parse_sizes, run_creatives
from adgen.serving.jobs.images import read_png, write_png
from adgen.serving.jobs.job_index import ManifestIndex
from adgen.serving.jobs.layout import compose as draw, parse_colour

EPILOG = """\b
Examples:
  adgen compose out/
  adgen compose out/ --sizes 300x250,728x90,160x600,320x50,1080x1080
  adgen compose out/ --brand-color '#e4002b' --logo logo.png
  adgen compose images/a/a-0-s1.png --sizes 300x250 --headline "Summer sale" \\
      --cta "Shop now" -o ads/

\b
Fonts: DejaVu Sans Bold (Debian fonts-dejavu-core) and Noto Sans CJK Bold (fonts-noto-cjk),
found on this machine; nothing is downloaded. Text that cannot fit a size even at
--min-text-px is a per-creative error in errors.jsonl, never drawn clipped.
"""


@click.command("compose", epilog=EPILOG)
@click.argument("target", type=click.Path(exists=True))
@click.option("--sizes", default=DEFAULT_SIZES, show_default=True,
              help="Creative sizes, WxH separated by commas.")
@click.option("--brand-color", default=None, help="CTA button colour, e.g. '#e4002b'.")
@click.option("--logo", default=None, type=click.Path(dir_okay=False),
              help="Logo image (PNG with transparency) placed on each creative.")
@click.option("--min-text-px", default=10, show_default=True, type=int,
              help="Smallest text size before a creative is refused.")
@click.option("--headline", default=None, help="One image: headline (default: its copy).")
@click.option("--cta", default=None, help="One image: call to action (default: its copy).")
@click.option("-o", "--out", default=None, type=click.Path(file_okay=False),
              help="One image: output folder [default: beside the image].")
@click.option("--no-progress", is_flag=True, help="No progress bar.")
def compose(target, sizes, brand_color, logo, min_text_px, headline, cta, out, no_progress):
    """Render images into ad sizes with a headline and a call-to-action button."""
    spec = CreativeSpec(parse_sizes(sizes), brand_color, logo, min_text_px).check()
    path = Path(target)
    if path.is_dir():
        if not (path / "manifest.jsonl").is_file():
            raise click.ClickException(f"{path} has no manifest.jsonl: run `adgen generate` "
                                       "into it first")
        if headline is not None or cta is not None or out is not None:
            raise click.ClickException("--headline, --cta and -o are for one image; a job "
                                       "folder uses each image's own copy")
        try:
            index = ManifestIndex(path)
            try:
                index.sync()
                r = run_creatives(path, spec, None, not no_progress, index)
            finally:
                index.close()
            if r.errors:  # a bad or missing image is its own line; the rest was written
                with open(path / "errors.jsonl", "a", encoding="utf-8") as f:
                    f.writelines(json.dumps(e, ensure_ascii=False) + "\n" for e in r.errors)
        except (OSError, sqlite3.Error) as exc:  # read-only folder, disk full: one line
            raise click.ClickException(
                f"writing to {path} failed: {_why(exc)}; every creative listed in "
                "manifest.jsonl is complete - fix that and rerun to resume") from None
        click.echo(f"{r.made} creatives made, {r.skipped} already done, {len(r.errors)} "
                   f"failed; contact sheets: {', '.join(r.sheets) or 'none'}")
        for e in r.errors[:5]:
            click.echo(f"  {e['custom_id']}: {e['reason']}", err=True)
        if r.errors:
            click.echo(f"{len(r.errors)} failed: listed in {path / 'errors.jsonl'}", err=True)
            raise SystemExit(1)  # adgen.cli.main drops click Exit codes
        return
    folder = Path(out) if out else path.parent
    problem = unwritable(folder / ".adgen-compose")
    if problem:
        raise click.ClickException(f"cannot write creatives to {folder}: {problem}")
    _one_image(path, spec, headline, cta, folder)


def _why(exc: Exception) -> str:
    what = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    return what + (f" ({exc.filename})" if getattr(exc, "filename", None) else "")


def _one_image(path: Path, spec, headline, cta, out: Path) -> None:
    try:
        img, text = read_png(path)
    except (OSError, UnidentifiedImageError, ValueError) as exc:
        raise click.ClickException(f"{path} is not a readable image "
                                   f"({type(exc).__name__})") from None
    if img.shape[0] != img.shape[1]:
        raise click.ClickException(f"{path}: the source image must be square, got "
                                   f"{img.shape[1]}x{img.shape[0]}")
    try:
        meta = json.loads(text.get("adgen", "{}"))
    except ValueError:
        meta = {}
    rules = offline_copy(meta.get("brief") or meta.get("prompt") or path.stem)
    own = meta.get("copy") or {}
    headline = headline if headline is not None else own.get("headline", rules["headline"])
    cta = cta if cta is not None else own.get("cta", rules["cta"])
    brand = parse_colour(spec.brand_color) if spec.brand_color else None
    logo = spec._logo() if spec.logo else None
    for size in spec.sizes:
        c = draw(img, size, headline, cta, brand, logo, spec.min_px)
        target = out / f"{path.stem}-{size[0]}x{size[1]}.png"
        try:
            out.mkdir(parents=True, exist_ok=True)
            write_png(target, c.image, f"{headline} | {cta} | {meta.get('prompt', '')}",
                      {"copy": {"headline": headline, "cta": cta},
                       "prompt": meta.get("prompt"), "source": path.name,
                       "size": list(size), "dropped": c.dropped,
                       "boxes": [b.to_json() for b in c.boxes]})
        except OSError as exc:  # written atomically: no half creative is left behind
            raise click.ClickException(f"writing {target} failed: {_why(exc)}") from None
        click.echo(str(target))
