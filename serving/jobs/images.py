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
import struct
import sys
import xml.etree.ElementTree as ET
import zlib
from pathlib import Path
from xml.sax.saxutils import escape

import numpy as np
from isal import isal_zlib
from PIL import Image, ImageDraw, ImageFont

from adgen.atomic import atomic_write
from adgen.contract import IMAGE_SIZE
from adgen.errors import AdgenError


class ImageError(AdgenError):
    """An image that cannot be written or read."""


# Every PNG written here: each row with PNG's Up or Sub filter, whichever leaves the smaller
# sum of |signed bytes| (Pillow's rule, over two filters instead of five; numpy does all
# rows at once), then deflate by ISA-L (python-isal) at its level 1. On 200 generated 256 px
# images of the int8 upsampler (2-core EPYC with AVX-512, machine idle): 0.80 ms and 63.5
# KB per image, against 2.85 ms / 54.9 KB with zlib level 1 + Z_RLE (this writer before)
# and 17 ms / 39 KB for Pillow's default (zlib level 6); `adgen bench` (job, job256) puts
# the writer beside Pillow's levels in every run. The 16% more bytes buy 3.5x less client
# CPU, which on a 2-core host is taken from the server. Lossless either way: the pixels are
# identical.
PNG_COMPRESS_LEVEL = 1  # ISA-L levels 0-3 (2 and 3: no smaller here, slower)
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_SUB, _PNG_UP = 1, 2  # filter-type bytes of a row


def _filter_cost(filtered: np.ndarray) -> np.ndarray:
    """Per row: the sum of the filtered bytes read as signed, |b| = min(b, 256 - b) in
    uint8 (small = compresses well; no int16 copy of the image)."""
    return np.minimum(filtered, np.negative(filtered)).sum(1, dtype=np.uint32)


def _png_chunk(tag: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + tag + data + \
        struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)


def _itxt(key: str, value: str) -> bytes:
    """An uncompressed iTXt chunk: keyword, NUL, flag 0, method 0, empty language and
    translated keyword (each NUL-ended), UTF-8 text; any prompt survives."""
    try:
        keyword = key.encode("latin-1")
    except UnicodeEncodeError:
        keyword = b""
    if not 1 <= len(keyword) <= 79 or b"\0" in keyword:
        raise ImageError(f"PNG text key {key!r} must be 1-79 Latin-1 characters")
    return _png_chunk(b"iTXt", keyword + b"\0\0\0\0\0" + value.encode("utf-8"))


def png_bytes(image_hwc: np.ndarray, text: dict[str, str] | None = None) -> bytes:
    """RGB uint8[H,W,3] -> PNG bytes with iTXt chunks (key -> value)."""
    img = np.asarray(image_hwc, dtype=np.uint8)
    if img.ndim != 3 or img.shape[2] != 3 or img.shape[0] < 1 or img.shape[1] < 1:
        raise ImageError(f"expected an RGB image [H,W,3], got {list(img.shape)}")
    h, w, _ = img.shape
    rows = img.reshape(h, w * 3)
    up, sub = np.empty_like(rows), np.empty_like(rows)  # modulo 256, as PNG defines them
    up[0] = rows[0]  # the row above the first counts as zeros
    np.subtract(rows[1:], rows[:-1], out=up[1:])
    sub[:, :3] = rows[:, :3]  # so does the pixel left of the first
    np.subtract(rows[:, 3:], rows[:, :-3], out=sub[:, 3:])
    use_sub = _filter_cost(sub) < _filter_cost(up)
    raw = np.empty((h, w * 3 + 1), dtype=np.uint8)
    raw[:, 0] = np.where(use_sub, _PNG_SUB, _PNG_UP)
    raw[:, 1:] = np.where(use_sub[:, None], sub, up)
    idat = isal_zlib.compress(raw, PNG_COMPRESS_LEVEL)
    header = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)  # 8-bit RGB, no interlace
    return b"".join([PNG_SIGNATURE, _png_chunk(b"IHDR", header),
                     *(_itxt(k, v) for k, v in (text or {}).items()),
                     _png_chunk(b"IDAT", idat), _png_chunk(b"IEND", b"")])


FORMATS = ("png", "webp", "jpeg")  # `adgen generate --format`
EXTENSIONS = {"png": "png", "webp": "webp", "jpeg": "jpg"}
# At 256 px, quality 90 (adgen bench job256, release models, 2-core EPYC): WebP 5 KB /
# 3.9 ms to encode per image, JPEG 9 KB / 0.2 ms; PNG: see png_bytes.
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
    data = job_image_bytes(image_hwc, parameters, adgen_meta, fmt, quality)
    atomic_write_bytes(path, data, root=root)
    return hashlib.sha256(data).hexdigest()


def job_image_bytes(image_hwc: np.ndarray, parameters: str, adgen_meta: dict,
                    fmt: str = "png", quality: int | None = None) -> bytes:
    """A job image's file bytes: the picture with its `parameters` line and `adgen` JSON."""
    return image_bytes(image_hwc, fmt, quality,
                       {"parameters": parameters,
                        "adgen": json.dumps(adgen_meta, sort_keys=True, ensure_ascii=False)})


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
    atomic_write_many(root, [(path, data)])


def atomic_write_many(root: str | Path,
                      files: list[tuple[str | Path, bytes]]) -> list[os.stat_result]:
    """atomic_write_bytes(path, data, root=root) for each (path, data), in order, with every
    folder opened once for all of them (a job writes a batch of images into a few image
    folders: an open costs a path walk, ~0.15 ms on an overlay filesystem, and it was 4 opens
    and an lstat per image). Returns each file's stat as written (size, mtime, inode: what
    an lstat of the renamed file gives)."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    dirs: dict[tuple[str, ...], int] = {(): os.open(root, _DIR_FLAGS)}
    stats = []
    try:
        for path, data in files:
            *folders, name = _relative_parts(root, Path(path))
            fd = dirs[()]
            for i in range(len(folders)):
                key = tuple(folders[:i + 1])
                if key not in dirs:
                    dirs[key] = _open_subdir(fd, folders[i], root.joinpath(*key))
                fd = dirs[key]
            stats.append(_write_in(fd, name, data))
    finally:
        for fd in dirs.values():
            os.close(fd)
    return stats


def _write_in(fd: int, name: str, data: bytes) -> os.stat_result:
    """Temp file in the folder `fd`, then renamed to `name` (replacing a link, never
    following one); the file's stat once written (a rename keeps size, mtime and inode)."""
    while True:
        tmp = f".{name}.{secrets.token_hex(4)}.tmp"  # remove_stale_temp_files' pattern
        try:
            out = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW
                          | getattr(os, "O_CLOEXEC", 0), 0o644, dir_fd=fd)  # as atomic_write
            break
        except FileExistsError:
            continue
    try:
        try:  # plain os.write: a file object per image cost more than the write itself
            view = memoryview(data)
            while view:
                view = view[os.write(out, view):]
            info = os.fstat(out)
        finally:
            os.close(out)
        os.replace(tmp, name, src_dir_fd=fd, dst_dir_fd=fd)  # replaces a link at `name`
        return info
    except BaseException:
        try:
            os.unlink(tmp, dir_fd=fd)
        except FileNotFoundError:
            pass
        raise


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
    """`text`, or its longest prefix that fits with '...' after it: a binary search over
    the prefix length (a prefix is never wider than a longer one), ~7 measurements where
    cutting a character at a time took one per character (a job's 128-caption sheet spent
    ~0.5 s of CPU measuring text)."""
    if draw.textlength(text, font=font) <= width:
        return text
    lo, hi = 0, len(text)  # text[:lo] + "..." fits (or lo == 0); text[:hi] + "..." does not
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if draw.textlength(text[:mid] + "...", font=font) <= width:
            lo = mid
        else:
            hi = mid
    return text[:lo] + "..."
