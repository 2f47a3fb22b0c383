"""Post-processing, PNG metadata, atomic writes and the contact sheet."""
import json

import numpy as np
import pytest

from adgen.serving.jobs.images import (ImageError, atomic_write_bytes, contact_sheet, png_bytes,
                                      pixels_sha256, read_png, write_png)
from adgen.serving.runtime.backend import BackendError, to_uint8


def test_to_uint8_maps_range_rounds_and_transposes():
    raw = np.zeros((1, 3, 2, 2), dtype=np.float32)
    raw[0, 0] = [[-1.0, 1.0], [-2.0, 2.0]]  # ends and out-of-range values clip
    raw[0, 1] = [[0.0, 0.5], [-0.5, 1 / 255]]
    out = to_uint8(raw)
    assert out.shape == (1, 2, 2, 3) and out.dtype == np.uint8
    assert out[0, :, :, 0].tolist() == [[0, 255], [0, 255]]
    # (x+1)*127.5: 0 -> 127.5 -> 128 (half to even), 0.5 -> 191.25 -> 191, -0.5 -> 63.75 -> 64
    assert out[0, :, :, 1].tolist() == [[128, 191], [64, 128]]
    assert out[0, :, :, 2].tolist() == [[128, 128], [128, 128]]


def test_to_uint8_of_a_batch_is_the_plain_formula_image_by_image():
    rng = np.random.default_rng(2)
    raw = rng.uniform(-1.2, 1.2, (3, 3, 256, 256)).astype(np.float32)
    raw[1, 2, 5] = (np.arange(256, dtype=np.float32) + 0.5) / np.float32(127.5) - 1  # ties
    want = np.clip(np.rint((raw + np.float32(1)) * np.float32(127.5)), 0, 255)
    out = to_uint8(raw)
    assert out.shape == (3, 256, 256, 3) and out.flags.c_contiguous
    assert np.array_equal(out, want.astype(np.uint8).transpose(0, 2, 3, 1))
    assert to_uint8(np.zeros((0, 3, 64, 64), np.float32)).shape == (0, 64, 64, 3)


def test_to_uint8_rejects_wrong_layout():
    with pytest.raises(BackendError, match="expected raw images"):
        to_uint8(np.zeros((2, 64, 64, 3), dtype=np.float32))


def test_png_round_trip_keeps_pixels_and_text_chunks(tmp_path):
    img = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    meta = {"prompt": "un café ☕", "seed": 5}
    path = tmp_path / "a" / "x.png"
    sha = write_png(path, img, "un café ☕ | seed: 5", meta)
    pixels, text = read_png(path)
    assert np.array_equal(pixels, img)
    assert text["parameters"] == "un café ☕ | seed: 5"
    assert json.loads(text["adgen"]) == meta
    import hashlib
    assert sha == hashlib.sha256(path.read_bytes()).hexdigest()
    assert pixels_sha256(pixels) == pixels_sha256(img)
    assert [p.name for p in path.parent.iterdir()] == ["x.png"]  # no temp file left


def _flat_art() -> np.ndarray:
    """Flat colour regions with hard edges, as the models draw: RGB uint8 [256, 256, 3]."""
    rng = np.random.default_rng(1)
    img = np.repeat(np.repeat(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8), 16, 0), 16, 1)
    img[100:140, 30:200] = (250, 250, 250)
    img[:, 200:] = np.linspace(0, 255, 56, dtype=np.uint8)[None, :, None]  # a gradient
    return img


def test_png_is_lossless_readable_and_near_pillows_default_size_on_flat_art():
    import io

    from PIL import Image
    img = _flat_art()
    data = png_bytes(img, {"parameters": "un café ☕ 字", "adgen": "{}"})
    with Image.open(io.BytesIO(data)) as im:
        im.load()  # decodes every row and checks every chunk's CRC
        assert im.mode == "RGB" and np.array_equal(np.asarray(im), img)
        assert im.text == {"parameters": "un café ☕ 字", "adgen": "{}"}
    default = io.BytesIO()
    Image.fromarray(img).save(default, format="PNG")  # Pillow's level 6, five filters
    # ISA-L's level 1 searches less than zlib's level 6: 1.6x on this synthetic art, 1.2x on
    # generated images (serving/jobs/images.py); this bounds what that costs in bytes
    assert len(data) <= 2.0 * len(default.getvalue())
    assert np.array_equal(read_png_bytes(png_bytes(img[:1, :1])), img[:1, :1])


def test_png_filter_cost_is_the_sum_of_signed_magnitudes():
    from adgen.serving.jobs.images import _filter_cost
    rows = np.random.default_rng(3).integers(0, 256, (64, 192), dtype=np.uint8)
    rows[0] = 128  # -128 as a signed byte: magnitude 128, the one value int8 abs overflows
    rows[1] = 255  # -1
    want = np.abs(rows.view(np.int8).astype(np.int16)).sum(1)
    assert np.array_equal(_filter_cost(rows), want)
    assert _filter_cost(rows)[0] == 128 * 192 and _filter_cost(rows)[1] == 192


def read_png_bytes(data: bytes) -> np.ndarray:
    import io

    from PIL import Image
    with Image.open(io.BytesIO(data)) as im:
        return np.asarray(im.convert("RGB"))


@pytest.mark.parametrize("image, text, match", [
    (np.zeros((8, 8), np.uint8), None, r"expected an RGB image \[H,W,3\], got \[8, 8\]"),
    (np.zeros((0, 8, 3), np.uint8), None, "expected an RGB image"),
    (np.zeros((8, 8, 4), np.uint8), None, "expected an RGB image"),
    (np.zeros((8, 8, 3), np.uint8), {"": "x"}, "must be 1-79 Latin-1 characters"),
    (np.zeros((8, 8, 3), np.uint8), {"字": "x"}, "must be 1-79 Latin-1 characters"),
])
def test_png_refuses_what_it_cannot_write(image, text, match):
    with pytest.raises(ImageError, match=match):
        png_bytes(image, text)


def test_atomic_write_leaves_old_file_when_writing_fails(tmp_path):
    target = tmp_path / "f.bin"
    target.write_bytes(b"old")

    with pytest.raises(TypeError):
        atomic_write_bytes(target, object())  # not bytes: fails inside the write
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["f.bin"]


def test_contact_sheet_grid_size_and_captions():
    imgs = [np.full((64, 64, 3), i * 20, dtype=np.uint8) for i in range(10)]
    sheet = contact_sheet(imgs, [f"id-{i}: a prompt with ünïcode 🍎" for i in range(10)],
                          columns=4, scale=2, title="t")
    rows = 3
    assert sheet.shape[1] == 4 * 128 and sheet.shape[2] == 3
    assert sheet.shape[0] > rows * 128  # tiles plus caption strips and a title
    # the first tile is there, upscaled, below the title strip
    assert (sheet[20:140, 0:128] == 0).mean() > 0.9
    with pytest.raises(ImageError):
        contact_sheet([], [])


def test_a_long_caption_is_cut_to_the_longest_prefix_that_fits_in_few_measurements():
    from PIL import Image, ImageDraw, ImageFont

    from adgen.serving.jobs.images import _fit
    font = ImageFont.load_default()
    draw = ImageDraw.Draw(Image.new("RGB", (8, 8)))
    calls = []

    class Counting:  # the real measurement, counted
        def textlength(self, text, font):
            calls.append(text)
            return draw.textlength(text, font=font)
    text = "line-123-0: a strawberry, flat sticker style, on a white background, campaign 186"
    for width in (6, 40, 124, 300, 2000):
        calls.clear()
        got = _fit(Counting(), text, width, font)
        # what cutting one character at a time gives: the longest prefix that fits
        want = text
        if draw.textlength(text, font=font) > width:
            want = text
            while want and draw.textlength(want + "...", font=font) > width:
                want = want[:-1]
            want += "..."
        assert got == want, width
        assert len(calls) <= 9, (width, len(calls))  # log2(len) + 2, not one per character


def test_atomic_write_many_writes_a_batch_opening_each_folder_once(tmp_path, monkeypatch):
    """A batch of files in a few folders: every file whole, each folder opened once, no
    temp file left, the stats returned are what lstat reads after the rename, a folder that
    is a symbolic link is replaced (its target untouched), a path outside root refused."""
    import os

    from adgen.serving.jobs.images import atomic_write_many
    root = tmp_path / "out"
    target = tmp_path / "elsewhere"
    target.mkdir()
    (root / "images").mkdir(parents=True)
    os.symlink(target, root / "images" / "b")  # planted: nothing may be written through it
    files = [(root / "images" / f"{d}" / f"{d}-{k}.png", f"{d}{k}".encode() * 100)
             for d in "abc" for k in range(4)]
    opened = []
    real_open = os.open
    monkeypatch.setattr(os, "open", lambda p, *a, **k: opened.append(p) or real_open(p, *a, **k))
    stats = atomic_write_many(root, files)
    monkeypatch.undo()
    for (path, data), st in zip(files, stats):
        assert path.read_bytes() == data
        got = os.lstat(path)
        assert (st.st_size, st.st_mtime_ns, st.st_ino) == (got.st_size, got.st_mtime_ns,
                                                          got.st_ino)
    assert not (root / "images" / "b").is_symlink() and not any(target.iterdir())
    folders = [str(p) for p in opened if not str(p).endswith(".tmp")]
    # once each (a new folder: a failed open, mkdir, open), not once per file (4 each)
    assert folders.count(str(root)) == 1 and folders.count("images") == 1
    assert all(folders.count(d) == 2 for d in "abc")
    assert len([p for p in opened if str(p).endswith(".tmp")]) == len(files)
    assert not list(root.rglob("*.tmp"))
    with pytest.raises(ImageError, match="not inside"):
        atomic_write_many(root, [(tmp_path / "escape.png", b"x")])
