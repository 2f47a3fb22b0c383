"""Finished creatives for a job's images: every image in every requested size.

    creatives/<id>/<id>-<k>-<W>x<H>.png       atomic; PNG chunks carry the copy and prompt
    creatives/contact_sheet_<W>x<H>.png       one sheet per size
    manifest.jsonl                            one line per creative, "kind": "creative"

Copy comes from the image's manifest line (the prompt file's "copy", written by
`adgen expand`), else from the offline rules on its brief (or prompt). Resume works as for
images: a creative whose manifest line matches its source image (sha256), copy, style
(brand colour, logo, layout version) and whose file still has the recorded sha256 is not
drawn again. A creative that cannot be laid out (copy too long for the size, a letter no
installed font draws) is a per-item error; the others are still written.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError
from tqdm import tqdm

from adgen.errors import AdgenError
from adgen.serving.jobs.images import atomic_write_bytes, contact_sheet, has_symlink, image_suffix, \
    png_bytes, read_png, write_png
from adgen.prompting.adcopy import offline_copy
from adgen.serving.jobs.fonts import FontError, available
from adgen.serving.jobs.job_index import ManifestIndex
from adgen.serving.jobs.job_resume import WINDOW, ImageTask
from adgen.serving.jobs.layout import LAYOUT_VERSION, LayoutError, compose, parse_colour
from adgen.serving.jobs.manifest import Writer
from adgen.serving.jobs.manifest import utc_now as _now
from adgen.serving.jobs.prompt_stream import stream_plan
from adgen.serving.jobs.prompts import LineError

DEFAULT_SIZES = "300x250,728x90,160x600,320x50,1080x1080"
SHEET_MAX = 64  # creatives per contact sheet


class CreativeError(AdgenError):
    """Options that make every creative impossible (bad size list, unreadable logo)."""


def parse_sizes(value) -> tuple[tuple[int, int], ...]:
    """'300x250,728x90' (or a sequence of such strings / pairs) -> ((300, 250), (728, 90))."""
    items = value.split(",") if isinstance(value, str) else list(value or ())
    sizes = []
    for item in items:
        if isinstance(item, (tuple, list)):
            w, h = item
        else:
            m = re.fullmatch(r"\s*(\d{1,5})\s*[xX×]\s*(\d{1,5})\s*", str(item))
            if not m:
                raise CreativeError(f"creative size must look like 300x250, got {item!r}")
            w, h = int(m.group(1)), int(m.group(2))
        if not (32 <= w <= 4096 and 32 <= h <= 4096):
            raise CreativeError(f"creative size {w}x{h} is outside 32..4096 px")
        if (w, h) not in sizes:
            sizes.append((int(w), int(h)))
    if not sizes:
        raise CreativeError("no creative size given (e.g. --creatives 300x250,728x90)")
    return tuple(sizes)


@dataclass(frozen=True)
class CreativeSpec:
    sizes: tuple[tuple[int, int], ...]
    brand_color: str | None = None
    logo: str | None = None
    min_px: int = 10

    def check(self) -> "CreativeSpec":
        parse_sizes(self.sizes)
        if self.brand_color:
            try:
                parse_colour(self.brand_color)
            except LayoutError as exc:
                raise CreativeError(str(exc)) from None
        if self.logo:
            self._logo()
        if not 6 <= self.min_px <= 64:
            raise CreativeError(f"--min-text-px must be in [6, 64], got {self.min_px}")
        available()  # no font at all: one line, before any work
        return self

    def _logo(self):
        try:
            with Image.open(self.logo) as im:
                im.load()
                return im.convert("RGBA")
        except (OSError, UnidentifiedImageError, ValueError) as exc:
            raise CreativeError(f"--logo {self.logo}: not a readable image "
                                f"({type(exc).__name__})") from None

    def style_key(self) -> str:
        """What besides the copy and the source changes the pixels (resume key)."""
        logo = hashlib.sha256(Path(self.logo).read_bytes()).hexdigest() if self.logo else None
        return hashlib.sha256(json.dumps([LAYOUT_VERSION, (self.brand_color or "").lower(),
                                          logo, self.min_px]).encode()).hexdigest()[:16]


def copy_for(entry: dict) -> dict:
    """The image's copy: its own (from the prompt file), else the offline rules."""
    copy = entry.get("copy")
    if isinstance(copy, dict) and isinstance(copy.get("headline"), str) \
            and isinstance(copy.get("cta"), str):
        return {"headline": copy["headline"], "cta": copy["cta"], "source": "prompt file"}
    rules = offline_copy(entry.get("brief") or entry.get("prompt") or "",
                         entry.get("variation") or 0)
    return {"headline": rules["headline"], "cta": rules["cta"], "source": "rules"}


def rel_path(entry: dict, size: tuple[int, int]) -> str:
    return f"creatives/{entry['id']}/{entry['id']}-{entry['k']}-{size[0]}x{size[1]}.png"


def creative_id(entry: dict, size: tuple[int, int]) -> str:
    return f"{entry['custom_id']}@{size[0]}x{size[1]}"


def signature(entry: dict, copy: dict, size, style: str) -> dict:
    """What a creative was drawn from; kept in its PNG, compared on resume."""
    return {"source_sha256": entry.get("sha256"), "headline": copy["headline"],
            "cta": copy["cta"], "size": [size[0], size[1]], "style": style}


def is_done(out: Path, rel: str, sig: dict, row: tuple | None) -> bool:
    """The manifest (index row) lists this file with the sha256 it still has, and the PNG
    says it was drawn from the same source image, copy and style."""
    if not row or row[2] != rel or has_symlink(out, rel):
        return False
    try:
        data = (out / rel).read_bytes()
    except OSError:
        return False
    if hashlib.sha256(data).hexdigest() != row[4]:
        return False
    try:
        with Image.open(io.BytesIO(data)) as im:
            meta = json.loads(im.text.get("adgen", "{}"))
    except (OSError, ValueError):
        return False
    return all(meta.get(k) == v for k, v in sig.items())


@dataclass
class CreativesResult:
    made: int = 0
    skipped: int = 0
    errors: list = field(default_factory=list)
    sheets: list = field(default_factory=list)
    compose_ms: list = field(default_factory=list)  # per creative drawn: layout + drawing

    def summary(self) -> dict:
        ms = sorted(self.compose_ms)
        return {"creatives_made": self.made, "creatives_skipped_resume": self.skipped,
                "creatives_failed": len(self.errors), "contact_sheets": self.sheets,
                "compose_ms_mean": round(sum(ms) / len(ms), 2) if ms else None,
                "compose_ms_p50": round(ms[len(ms) // 2], 2) if ms else None}


def job_images(cfg, out: Path, index):
    """The job's images that exist, in plan order, as manifest-like dicts; the prompt files
    are streamed again a window at a time (bounded memory, as the job itself)."""
    window: list = []
    suffix = image_suffix(cfg.size, cfg.format)  # the job's own file names

    def flush():
        rows = index.lookup([t.custom_id for t in window])
        for t in window:
            e = rows.get(t.custom_id)
            if e and e[1] == t.seed and e[2] == t.rel_path and e[3] == t.item.prompt \
                    and not has_symlink(out, e[2]) and (out / e[2]).is_file():
                yield {"custom_id": t.custom_id, "id": t.item.id, "k": t.k, "path": e[2],
                       "sha256": e[4], "prompt": t.item.prompt, "brief": t.item.brief,
                       "copy": t.item.copy, "variation": (t.item.meta or {}).get("variation")}
    for x in stream_plan(cfg.prompts, cfg.n, cfg.shard, style=cfg.style):
        if not isinstance(x, LineError):
            window.extend(ImageTask(x, k, x.seed_for(k, cfg.seed), suffix) for k in range(x.n))
        if len(window) >= WINDOW:
            yield from flush()
            window = []
    yield from flush()


def folder_images(out: Path, index):
    """The image lines of a job folder's manifest that are current (the index holds the
    same sha256: a later line for the same image wins). Their files are not looked at here:
    a missing or damaged one is make_creatives' per-image error."""
    path = out / "manifest.jsonl"
    if not path.is_file():
        return
    window: list[dict] = []

    def flush():
        rows = index.lookup([e["custom_id"] for e in window])
        for e in window:
            row = rows.get(e["custom_id"])
            if row and row[4] == e.get("sha256") and row[2] == e.get("path"):
                yield e
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            try:
                e = json.loads(line)
                ok = e.get("kind", "image") == "image" and all(
                    isinstance(e.get(k), str) for k in ("custom_id", "id", "path"))
            except (ValueError, AttributeError):
                continue
            if ok:
                window.append(e)
            if len(window) >= 4096:
                yield from flush()
                window = []
    yield from flush()


def make_creatives(out: Path, images, spec: CreativeSpec, index, writer,
                   progress: bool = False) -> CreativesResult:
    """Draws the missing creatives of `images` x spec.sizes, appends their manifest lines
    (with index rows) through `writer`, then writes one contact sheet per size."""
    brand = parse_colour(spec.brand_color) if spec.brand_color else None
    logo = spec._logo() if spec.logo else None
    style = spec.style_key()
    result = CreativesResult()
    sheet: dict = {size: [] for size in spec.sizes}  # the first SHEET_MAX of each size
    bar = tqdm(unit="creative", desc="compose", disable=not progress)
    for e in images:
        copy = copy_for(e)
        rows = index.lookup([creative_id(e, size) for size in spec.sizes])
        source = None
        for size in spec.sizes:
            cid, rel = creative_id(e, size), rel_path(e, size)
            sig = signature(e, copy, size, style)
            bar.update(1)
            if is_done(out, rel, sig, rows.get(cid)):
                result.skipped += 1
            else:
                if source is None:
                    try:
                        source = read_source(out, e)
                    except CreativeError as exc:  # this image only; the others go on
                        result.errors.append({"kind": "creative", "custom_id": e["custom_id"],
                                              "id": e["id"], "k": e.get("k"),
                                              "path": e["path"], "size": "all",
                                              "reason": str(exc)})
                        bar.update(len(spec.sizes) - 1 - spec.sizes.index(size))
                        break
                t0 = time.perf_counter()
                try:
                    c = compose(source, size, copy["headline"], copy["cta"], brand, logo,
                                spec.min_px)
                except (LayoutError, FontError) as exc:
                    result.errors.append({"kind": "creative", "custom_id": cid, "id": e["id"],
                                          "k": e.get("k"), "size": f"{size[0]}x{size[1]}",
                                          "reason": str(exc)})
                    continue
                result.compose_ms.append((time.perf_counter() - t0) * 1000.0)
                meta = {**sig, "copy": {"headline": copy["headline"], "cta": copy["cta"]},
                        "copy_source": copy["source"], "prompt": e.get("prompt"),
                        "brief": e.get("brief"), "source": e["path"], "custom_id": cid,
                        "brand_color": spec.brand_color, "dropped": c.dropped,
                        "boxes": [b.to_json() for b in c.boxes]}
                params = f"{copy['headline']} | {copy['cta']} | {e.get('prompt')}"
                sha = write_png(out / rel, c.image, params, meta, root=out)
                info = os.lstat(out / rel)
                writer.append_lines([json.dumps({
                    "kind": "creative", "custom_id": cid, "id": e["id"], "k": e.get("k"),
                    "size": f"{size[0]}x{size[1]}", "width": size[0], "height": size[1],
                    "headline": copy["headline"], "cta": copy["cta"],
                    "copy_source": copy["source"], "source": e["path"],
                    "source_sha256": e.get("sha256"), "prompt": e.get("prompt"),
                    "path": rel, "sha256": sha, "style": style, "dropped": c.dropped,
                    "fonts": sorted({b.font for b in c.boxes if b.font}),
                    "created_at": _now()}, ensure_ascii=False)],
                    [(cid, None, rel, e.get("prompt"), sha, info.st_size, info.st_mtime_ns,
                      info.st_ino)])
                result.made += 1
            if len(sheet[size]) < SHEET_MAX:
                sheet[size].append((rel, f"{e['custom_id']}: {copy['headline']} / "
                                         f"{copy['cta']}"))
    bar.close()
    result.sheets = write_sheets(out, sheet)
    return result


def read_source(out: Path, entry: dict):
    """The image a creative is drawn from, RGB uint8[H, W, 3]; CreativeError (one line) when
    its file is missing, a link, not an image, or not the bytes the manifest recorded."""
    rel = entry["path"]
    if has_symlink(out, rel):
        raise CreativeError(f"{rel} is a symbolic link; only real files are read")
    try:
        data = (out / rel).read_bytes()
    except FileNotFoundError:
        raise CreativeError(f"{rel} is missing (listed in manifest.jsonl)") from None
    except OSError as exc:
        raise CreativeError(f"{rel} cannot be read ({exc.strerror or type(exc).__name__})") \
            from None
    want = entry.get("sha256")
    if want and hashlib.sha256(data).hexdigest() != want:
        raise CreativeError(f"{rel} is damaged: its sha256 is not the one manifest.jsonl "
                            "recorded (rerun `adgen generate` to make it again)")
    try:
        img, _ = read_png(io.BytesIO(data))
    except (OSError, UnidentifiedImageError, ValueError) as exc:
        raise CreativeError(f"{rel} is not a readable image ({type(exc).__name__})") from None
    return img


def write_sheets(out: Path, sheet: dict) -> list[str]:
    """creatives/contact_sheet_<W>x<H>.png from (path, caption) per size."""
    names = []
    for size, items in sheet.items():
        f = min(1.0, 320 / size[0], 320 / size[1])
        tw, th = max(1, round(size[0] * f)), max(1, round(size[1] * f))
        tiles, captions = [], []
        for rel, caption in items:
            if has_symlink(out, rel) or not (out / rel).is_file():
                continue  # failed to lay out: nothing to show
            img, _ = read_png(out / rel)
            tiles.append(np.asarray(Image.fromarray(img).resize((tw, th), Image.LANCZOS)))
            captions.append(caption)
        if tiles:
            sheet_img = contact_sheet(tiles, captions, columns=max(1, 1300 // tw), scale=1,
                                      title=f"adgen creatives {size[0]}x{size[1]} - "
                                            f"{len(tiles)}")
            name = f"creatives/contact_sheet_{size[0]}x{size[1]}.png"
            atomic_write_bytes(out / name, png_bytes(sheet_img), root=out)
            names.append(name)
    return names


def run_creatives(out: Path, spec: CreativeSpec, images=None, progress: bool = False,
                  index=None) -> CreativesResult:
    """Creatives for `images` (default: every current image of the job folder `out`)."""
    own = index is None
    if own:
        index = ManifestIndex(out)
        index.sync()
    writer = Writer(out, "compose", {}, index)
    try:
        return make_creatives(out, folder_images(out, index) if images is None else images,
                              spec, index, writer, progress)
    finally:
        writer.close()
        if own:
            index.close()
