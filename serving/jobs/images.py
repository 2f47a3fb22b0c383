"""Image files (PNG, WebP, JPEG) with metadata, symlink-safe writes below an output folder,
and the contact sheet: what jobs write. The pixels come from the pipeline's `postprocess`
stage (adgen.serving.runtime.backend.to_uint8), the only image code Triton runs.

Job images (`write_image`): PNG carries the metadata in text chunks (`parameters`, `adgen`);
WebP and JPEG (lossy, `quality` 1-100) carry the same two values in an XMP packet
(`adgen:parameters`, `adgen:json`; read back by `read_image_meta`).
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import secrets
import stat
import sys
import xml.etree.ElementTree as ET
import zlib
from pathlib import Path
from xml.sax.saxutils import escape

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from PIL.PngImagePlugin import PngInfo

from adgen.atomic import atomic_write
from adgen.contract import IMAGE_SIZE
from adgen.errors import AdgenError


class ImageError(AdgenError):
    """An image that cannot be written or read."""


# zlib settings of every PNG written here: level 1 with the run-length strategy. On flat
# emoji art after PNG's row filters it is 3-4x faster than Pillow's default (level 6,
# default strategy) and the files are no larger: 256 px job images 38.5 vs 39.1 KB, 4.5 vs
# 17.3 ms per image; 64 px 4.0 vs 4.0 KB, 0.49 vs 1.05 ms (96 generated images, 2-core EPYC,
# load average ~8). Lossless either way: the pixels are identical.
PNG_COMPRESS_LEVEL = 1
PNG_STRATEGY = zlib.Z_RLE


def png_bytes(image_hwc: np.ndarray, text: dict[str, str] | None = None) -> bytes:
    """RGB uint8[H,W,3] -> PNG bytes with tEXt/iTXt chunks (key -> value)."""
    info = PngInfo()
    for key, value in (text or {}).items():
        info.add_itxt(key, value)  # iTXt: UTF-8 safe for any prompt
    buf = io.BytesIO()
    Image.fromarray(np.asarray(image_hwc, dtype=np.uint8), "RGB").save(
        buf, format="PNG", pnginfo=info, compress_level=PNG_COMPRESS_LEVEL,
        compress_type=PNG_STRATEGY)
    return buf.getvalue()


FORMATS = ("png", "webp", "jpeg")  # `adgen generate --format`
EXTENSIONS = {"png": "png", "webp": "webp", "jpeg": "jpg"}
# At 256 px, quality 90 (adgen bench job256, release models, 2-core EPYC): WebP 5 KB /
# 3.9 ms to encode per image, JPEG 9 KB / 0.2 ms; PNG (PNG_STRATEGY) 38.5 KB / 4.5 ms.
DEFAULT_QUALITY = 90
XMP_NS = "urn:adgen:meta:1"  # a URN: no host to resolve
_XMP_MAX = 60000  # a JPEG APP1 segment holds 65,502 bytes


def image_suffix(size: int, fmt: str) -> str:
    """A job image's file name ending: `.png` at 64 px (the original layout), `-256px.webp`
    otherwise, so a rerun at another size or format never takes an old file for done."""
    return ("" if size == IMAGE_SIZE else f"-{size}px") + "." + EXTENSIONS[fmt]


def check_format(fmt: str, quality: int | None) -> None:
    """ImageError (one line) for a format or quality `write_image` would not accept."""
    if fmt not in FORMATS:
        raise ImageError(f"unknown image format {fmt!r}; choose one of {', '.join(FORMATS)}")
    if quality is not None:
        if fmt == "png":
            raise ImageError("--quality applies to webp and jpeg only (PNG is lossless)")
        if not 1 <= int(quality) <= 100:
            raise ImageError(f"quality must be in 1..100, got {quality}")


def _xmp_packet(text: dict[str, str]) -> bytes:
    body = "".join(f"<adgen:{k}>{escape(v)}</adgen:{k}>" for k, v in text.items())
    return ('<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>'
            '<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF '
            'xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
            f'<rdf:Description rdf:about="" xmlns:adgen="{XMP_NS}">{body}</rdf:Description>'
            '</rdf:RDF></x:xmpmeta><?xpacket end="w"?>').encode("utf-8")


def image_bytes(image_hwc: np.ndarray, fmt: str = "png", quality: int | None = None,
                text: dict[str, str] | None = None) -> bytes:
    """RGB uint8[H,W,3] -> PNG (text chunks) / WebP or JPEG (XMP with the same keys)."""
    if fmt == "png":
        return png_bytes(image_hwc, text)
    check_format(fmt, quality)
    text = dict(text or {})
    xmp = _xmp_packet(text)
    if len(xmp) > _XMP_MAX:  # a very long ad copy: the manifest line still has it all
        xmp = _xmp_packet({k: v for k, v in text.items() if k == "parameters"})
    buf = io.BytesIO()
    Image.fromarray(np.asarray(image_hwc, dtype=np.uint8), "RGB").save(
        buf, format=fmt.upper(), quality=int(quality or DEFAULT_QUALITY), xmp=xmp)
    return buf.getvalue()


def write_image(path: str | Path, image_hwc: np.ndarray, parameters: str, adgen_meta: dict,
                root: str | Path | None = None, fmt: str = "png",
                quality: int | None = None) -> str:
    """write_png for any of FORMATS (path's extension is the caller's: EXTENSIONS[fmt]);
    returns the sha256 of the file bytes."""
    data = image_bytes(image_hwc, fmt, quality,
                       {"parameters": parameters,
                        "adgen": json.dumps(adgen_meta, sort_keys=True, ensure_ascii=False)})
    atomic_write_bytes(path, data, root=root)
    return hashlib.sha256(data).hexdigest()


def read_image_meta(path: str | Path) -> dict[str, str]:
    """{"parameters", "adgen"} of a job image in any of FORMATS ({} if it has none)."""
    with Image.open(path) as im:
        if im.format == "PNG":
            return dict(getattr(im, "text", {}) or {})
        xmp = im.info.get("xmp")
    if not xmp:
        return {}
    try:
        root = ET.fromstring(xmp.decode("utf-8") if isinstance(xmp, bytes) else xmp)
    except (ET.ParseError, UnicodeDecodeError):
        return {}
    prefix = "{" + XMP_NS + "}"
    return {el.tag[len(prefix):]: el.text or "" for el in root.iter()
            if el.tag.startswith(prefix)}


def atomic_write_bytes(path: str | Path, data: bytes, root: str | Path | None = None) -> None:
    """Writes to a temp file in the same folder and renames (adgen.atomic.atomic_write):
    readers never see half a file.

    root: a folder that `path` lies in (a job's output folder). Every folder between root
    and the file is then opened without following symbolic links; a link planted there by
    whoever can write in root is replaced by a real folder (its target is never touched), so
    nothing is ever written through it. Root itself may be a link (the user's choice)."""
    path = Path(path)
    if root is not None:
        return _write_below(Path(root), path, data)
    atomic_write(path, data)


_DIR_FLAGS = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | getattr(os, "O_CLOEXEC", 0)
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)


def _relative_parts(root: Path, path: Path) -> tuple[str, ...]:
    rel = os.path.relpath(os.path.abspath(path), os.path.abspath(root))
    parts = Path(rel).parts
    if not parts or parts[0] in (os.pardir, os.curdir) or os.pardir in parts:
        raise ImageError(f"{path} is not inside {root}")
    return parts


def _open_subdir(parent_fd: int, name: str, shown: Path) -> int:
    """fd of the real folder `name` in parent_fd: created if missing, a symlink replaced."""
    for _ in range(3):  # a concurrent writer may create or replace it between the calls
        try:
            return os.open(name, _DIR_FLAGS | _NOFOLLOW, dir_fd=parent_fd)
        except FileNotFoundError:
            pass
        except OSError as exc:
            if not stat.S_ISLNK(os.stat(name, dir_fd=parent_fd, follow_symlinks=False).st_mode):
                # a regular file where a folder belongs: the job reports it with the path
                raise OSError(exc.errno, exc.strerror, str(shown)) from None
            os.unlink(name, dir_fd=parent_fd)  # the link only; its target stays as it is
            print(f"warning: {shown} was a symbolic link; replaced it with a folder "
                  "(nothing written through it)", file=sys.stderr, flush=True)
        try:
            os.mkdir(name, 0o777, dir_fd=parent_fd)
        except FileExistsError:
            pass
    raise ImageError(f"{shown} keeps changing; cannot write below it")


def _write_below(root: Path, path: Path, data: bytes) -> None:
    *folders, name = _relative_parts(root, path)
    root.mkdir(parents=True, exist_ok=True)
    fd = os.open(root, _DIR_FLAGS)
    try:
        shown = root
        for folder in folders:
            shown = shown / folder
            parent, fd = fd, _open_subdir(fd, folder, shown)
            os.close(parent)
        while True:
            tmp = f".{name}.{secrets.token_hex(4)}.tmp"  # remove_stale_temp_files' pattern
            try:
                out = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW
                              | getattr(os, "O_CLOEXEC", 0), 0o644, dir_fd=fd)  # as atomic_write
                break
            except FileExistsError:
                continue
        try:
            with os.fdopen(out, "wb") as f:
                f.write(data)
            os.replace(tmp, name, src_dir_fd=fd, dst_dir_fd=fd)  # replaces a link at `name`
        except BaseException:
            try:
                os.unlink(tmp, dir_fd=fd)
            except FileNotFoundError:
                pass
            raise
    finally:
        os.close(fd)


def has_symlink(root: str | Path, rel: str | Path) -> bool:
    """Whether a component of root/rel below root is a symbolic link (or rel escapes root)."""
    path = Path(root)
    for part in Path(rel).parts:
        if part in (os.pardir, os.curdir, os.sep):
            return True
        path = path / part
        if path.is_symlink():
            return True
    return False


def write_png(path: str | Path, image_hwc: np.ndarray, parameters: str, adgen_meta: dict,
              root: str | Path | None = None) -> str:
    """Atomic PNG with the `parameters` (one human line) and `adgen` (JSON) chunks; root as
    in atomic_write_bytes.

    Returns the sha256 of the file bytes."""
    data = png_bytes(image_hwc, {"parameters": parameters,
                                 "adgen": json.dumps(adgen_meta, sort_keys=True,
                                                     ensure_ascii=False)})
    atomic_write_bytes(path, data, root=root)
    return hashlib.sha256(data).hexdigest()


def read_png(path: str | Path) -> tuple[np.ndarray, dict[str, str]]:
    """PNG -> (RGB uint8[H,W,3], text chunks)."""
    with Image.open(path) as im:
        text = dict(getattr(im, "text", {}) or {})
        return np.asarray(im.convert("RGB")), text


def pixels_sha256(image_hwc: np.ndarray) -> str:
    """Identity of the pixels alone (PNG bytes also depend on metadata and zlib)."""
    return hashlib.sha256(np.ascontiguousarray(image_hwc, dtype=np.uint8).tobytes()).hexdigest()


def contact_sheet(images, captions, columns: int = 8, scale: int | None = None,
                  title: str | None = None) -> np.ndarray:
    """Grid of RGB uint8[H,W,3] tiles, each upscaled `scale`x with a caption strip below
    (None: 2x for tiles under 128 px, as is for 256 px tiles).

    Returns RGB uint8[rows*(H*scale+caption), columns*W*scale, 3]."""
    images = list(images)
    if not images:
        raise ImageError("contact sheet needs at least one image")
    h, w = images[0].shape[:2]
    if scale is None:
        scale = 2 if max(h, w) < 128 else 1
    tw, th = w * scale, h * scale
    font = ImageFont.load_default()
    line_h = 11
    cap_h = 2 * line_h + 7
    title_h = 16 if title else 0
    columns = max(1, min(columns, len(images)))
    rows = (len(images) + columns - 1) // columns
    sheet = Image.new("RGB", (columns * tw, title_h + rows * (th + cap_h)), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    if title:
        draw.text((3, 2), _fit(draw, title, columns * tw - 6, font), fill=(0, 0, 0), font=font)
    for i, (img, cap) in enumerate(zip(images, captions)):
        x, y = (i % columns) * tw, title_h + (i // columns) * (th + cap_h)
        tile = Image.fromarray(np.asarray(img, dtype=np.uint8), "RGB")
        sheet.paste(tile.resize((tw, th), Image.NEAREST), (x, y))
        for j, line in enumerate(_wrap(draw, _drawable(cap, font), tw - 4, font, 2)):
            draw.text((x + 2, y + th + 1 + j * line_h), line,
                      fill=(0, 0, 0) if j == 0 else (60, 60, 60), font=font)
    return np.asarray(sheet)


def _drawable(text: str, font) -> str:
    """Replaces characters the font cannot draw (the bitmap fallback is Latin-1 only)."""
    try:
        font.getbbox(text)
        return text
    except (UnicodeEncodeError, UnicodeError):
        return text.encode("latin-1", "replace").decode("latin-1")


def _wrap(draw, text: str, width: int, font, max_lines: int) -> list[str]:
    """Greedy word wrap to `width` pixels; the last line is cut with '...'."""
    lines, words = [], text.split()
    while words and len(lines) < max_lines:
        line = words.pop(0)
        while words and draw.textlength(line + " " + words[0], font=font) <= width:
            line += " " + words.pop(0)
        lines.append(line)
    if words:
        lines[-1] = lines[-1] + " " + " ".join(words)
    if lines:
        lines[-1] = _fit(draw, lines[-1], width, font)
    return [_fit(draw, ln, width, font) for ln in lines]


def _fit(draw, text: str, width: int, font) -> str:
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength(text + "...", font=font) > width:
        text = text[:-1]
    return text + "..."
