"""One creative: a generated image, a headline and a call-to-action button in a W x H canvas.

    c = compose(image, (300, 250), "Summer sale on sneakers", "Shop now")
    c.image  # RGB uint8[250, 300, 3];  c.boxes: what was drawn where, as measured

Rules the layout keeps (tests check each from `boxes`):
- everything lies inside the canvas less a safe margin (6% of the short side, >= 4 px);
- text always fits: the headline wraps (words; any character for CJK; a word wider than the
  space is broken), then shrinks down to `min_px`; when it still does not fit the creative
  is refused with a LayoutError naming the size, never drawn overflowing or clipped;
- text colour (black or white) has WCAG contrast >= 4.5:1 against every colour behind it;
- wide banners (W >= 2.2 H) put image, headline, button (and logo) in a row; other sizes
  stack them in a column.
The canvas takes the image's own background colour (the median of its border), so the
generated sticker sits on one continuous colour; the image is scaled by nearest neighbour
at a whole multiple when it can (crisp pixels), a larger source (a 256 px stage) the same.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw

from adgen.errors import AdgenError
from adgen.serving.jobs.fonts import FontChoice, choose

MIN_CONTRAST = 4.5
BLACK, WHITE = (0, 0, 0), (255, 255, 255)
LAYOUT_VERSION = "1"  # bump when the same inputs would give other pixels (resume key)


class LayoutError(AdgenError):
    """This copy cannot be laid out in this size (too long even at the minimum size)."""


@dataclass(frozen=True)
class Box:
    kind: str  # image | logo | button | headline | cta (text boxes: one per line)
    x0: int
    y0: int
    x1: int  # exclusive
    y1: int
    text: str = ""
    font: str = ""
    size: int = 0
    color: tuple = ()
    contrast: float = 0.0  # text boxes: the lowest ratio against what is behind them

    def to_json(self) -> dict:
        d = {"kind": self.kind, "box": [self.x0, self.y0, self.x1, self.y1]}
        if self.text:
            d.update(text=self.text, font=self.font, size=self.size,
                     color="#%02x%02x%02x" % self.color, contrast=round(self.contrast, 2))
        return d


@dataclass
class Creative:
    image: np.ndarray
    boxes: list[Box]
    margin: int
    background: tuple
    dropped: str = ""  # symbols no font draws (emoji), left out of the text
    fonts: dict = field(default_factory=dict)  # role -> FontChoice


# ---------------------------------------------------------------- colour

def luminance(rgb) -> float:
    """WCAG 2 relative luminance of an sRGB colour."""
    c = np.asarray(rgb, dtype=np.float64)[..., :3] / 255.0
    lin = np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    return lin @ np.array([0.2126, 0.7152, 0.0722])


def contrast(a, b) -> float:
    la, lb = float(luminance(a)), float(luminance(b))
    return (max(la, lb) + 0.05) / (min(la, lb) + 0.05)


def text_colour(behind) -> tuple[tuple, float]:
    """Black or white, whichever has the higher worst-case contrast over `behind` colours."""
    best = max(((c, min(contrast(c, b) for b in behind)) for c in (BLACK, WHITE)),
               key=lambda t: t[1])
    return best


def parse_colour(value: str) -> tuple:
    """'#1a2b3c', '1a2b3c' or '#abc' -> (r, g, b)."""
    v = value.strip().lstrip("#")
    if len(v) == 3:
        v = "".join(ch * 2 for ch in v)
    try:
        if len(v) != 6:
            raise ValueError
        return tuple(int(v[i:i + 2], 16) for i in (0, 2, 4))
    except ValueError:
        raise LayoutError(f"--brand-color must look like #1a2b3c, got {value!r}") from None


def colours_in(region: np.ndarray) -> list[tuple]:
    """The distinct RGB colours of an image region (packed to one int each: fast)."""
    flat = np.asarray(region, dtype=np.uint32).reshape(-1, 3)
    packed = np.unique((flat[:, 0] << 16) | (flat[:, 1] << 8) | flat[:, 2])
    return [(int(v >> 16), int(v >> 8 & 255), int(v & 255)) for v in packed]


def border_colour(img: np.ndarray) -> tuple:
    edge = np.concatenate([img[0], img[-1], img[:, 0], img[:, -1]]).reshape(-1, 3)
    return tuple(int(v) for v in np.median(edge, axis=0))


# ---------------------------------------------------------------- text

def _tokens(text: str) -> list[tuple[str, bool]]:
    """(token, space before it): words, or single characters for CJK; closing punctuation
    stays with the character before it (no line starts with '，')."""
    out: list[tuple[str, bool]] = []
    space = False
    word = ""
    for ch in text:
        if ch.isspace():
            if word:
                out.append((word, space))
                word = ""
            space = True
            continue
        cjk = "\u2e80" <= ch <= "\u9fff" or "\uac00" <= ch <= "\ud7af" \
            or "\uf900" <= ch <= "\ufaff" or "\uff00" <= ch <= "\uffef"
        if cjk and ch in "，。、！？：；）」』】〉》．，" and (out or word):
            if word:
                word += ch
            else:
                out[-1] = (out[-1][0] + ch, out[-1][1])
            continue
        if cjk:
            if word:
                out.append((word, space))
                space = False
            out.append((ch, space))
            word, space = "", False
        else:
            word += ch
    if word:
        out.append((word, space))
    return out


def _width(font, text: str) -> int:
    left, _, right, _ = font.getbbox(text)
    return max(0, right - min(left, 0))


def wrap(text: str, font, width: int) -> list[str]:
    """Greedy wrap to `width` px; a token wider than the line is split by characters."""
    if _width(font, text) <= width:
        return [text]
    lines: list[str] = []
    line = ""
    for tok, space in _tokens(text):
        cand = (line + (" " if space else "") + tok) if line else tok
        if _width(font, cand) <= width:
            line = cand
            continue
        if line:
            lines.append(line)
        line = ""
        for ch in tok:  # only a token wider than a whole line gets here piece by piece
            if line and _width(font, line + ch) > width:
                lines.append(line)
                line = ""
            line += ch
    if line:
        lines.append(line)
    return lines


@dataclass
class _Block:
    lines: list[str]
    font: object
    size: int
    boxes: list[tuple[int, int, int, int]]  # ink box of each line relative to the block
    width: int
    height: int


def _block(choice: FontChoice, size: int, width: int, max_lines: int) -> _Block | None:
    """The text wrapped at `size` px into `width`, or None if it takes over max_lines or a
    single character is wider than the space."""
    font = choice.font(size)
    lines = wrap(choice.text, font, width)
    if not lines or len(lines) > max_lines or \
            any(len(ln) == 1 and _width(font, ln) > width for ln in lines):
        return None  # (wrap keeps longer lines within width)
    ascent, descent = font.getmetrics()
    pitch = round((ascent + descent) * 1.08)
    boxes = []
    for i, ln in enumerate(lines):
        left, top, right, bottom = font.getbbox(ln)
        boxes.append((left, top + i * pitch, right, bottom + i * pitch))
    top = min(b[1] for b in boxes)
    bottom = max(b[3] for b in boxes)
    boxes = [(b[0], b[1] - top, b[2], b[3] - top) for b in boxes]  # ink starts at y 0
    width_used = max(b[2] - min(b[0], 0) for b in boxes)
    return _Block(lines, font, size, boxes, width_used, bottom - top)


def _draw_block(draw, canvas: np.ndarray, block: _Block, choice: FontChoice, kind: str,
                cx: int, y: int, out: list[Box]) -> None:
    """Draws the block centred on x = cx with its ink starting at y; records one Box per
    line, as measured, with the contrast against the pixels behind it."""
    for ln, (left, top, right, bottom) in zip(block.lines, block.boxes):
        w = right - left
        ox = cx - w // 2 - left  # drawing origin so the ink starts at cx - w // 2
        oy = y + top - block.font.getbbox(ln)[1]  # so the ink starts at y + top
        x0, y0, x1, y1 = draw.textbbox((ox, oy), ln, font=block.font, anchor="la")
        behind = colours_in(canvas[max(y0, 0):y1, max(x0, 0):x1]) or [WHITE]
        colour, ratio = text_colour(behind)
        if ratio < MIN_CONTRAST:  # a busy background: a plate under the line keeps it legible
            plate = WHITE if colour == BLACK else BLACK
            draw.rectangle((x0, y0, x1 - 1, y1 - 1), fill=plate)
            colour, ratio = text_colour([plate])
        draw.text((ox, oy), ln, font=block.font, fill=colour, anchor="la")
        out.append(Box(kind, x0, y0, x1, y1, ln, choice.face.label, block.size, colour, ratio))


# ---------------------------------------------------------------- images

def scale_image(img: np.ndarray, side: int):
    """Square RGB image -> PIL image of at most side x side: a whole-number nearest-neighbour
    multiple when that is >= 2x (crisp pixels), else nearest (up) or Lanczos (down) to side."""
    src = Image.fromarray(np.asarray(img, dtype=np.uint8), "RGB")
    n = img.shape[0]
    if side // n >= 2:
        return src.resize((n * (side // n),) * 2, Image.NEAREST)
    return src.resize((side, side), Image.NEAREST if side >= n else Image.LANCZOS)


def _logo_image(logo, height: int, max_width: int):
    im = logo if isinstance(logo, Image.Image) else Image.open(logo)
    im = im.convert("RGBA")
    scale = min(height / im.height, max_width / im.width)
    size = (max(1, int(im.width * scale)), max(1, int(im.height * scale)))
    return im.resize(size, Image.LANCZOS)


# ---------------------------------------------------------------- layout

def compose(source: np.ndarray, size: tuple[int, int], headline: str, cta: str,
            brand: tuple | None = None, logo=None, min_px: int = 10) -> Creative:
    """Lays out and draws one creative; LayoutError when the copy cannot fit."""
    W, H = size
    src = np.asarray(source, dtype=np.uint8)
    if src.ndim != 3 or src.shape[2] != 3 or src.shape[0] != src.shape[1]:
        raise LayoutError(f"source image must be square RGB, got {list(src.shape)}")
    m = max(4, round(0.06 * min(W, H)))
    iw, ih = W - 2 * m, H - 2 * m
    gap = max(3, round(0.04 * min(W, H)))
    bg = border_colour(src)
    head = choose(headline) if headline.strip() else None
    call = choose(cta) if cta.strip() else None
    head = head if head and head.text else None
    call = call if call and call.text else None
    row = W >= 2.2 * H
    fg, _ = text_colour([bg])
    button = brand or fg
    logo_im = None
    plan = _fit_row if row else _fit_column
    # Largest headline first; the first size that leaves the image its share wins, else
    # the smallest size at which the text fits at all.
    top = round(ih * 0.42) if row else round(min(96, 0.11 * min(W, H) * (1.2 if H > 2 * W
                                                                         else 1)))
    tried: dict[int, tuple] = {}

    def attempt(hs):
        if hs not in tried:
            cs = max(min_px, round(hs * (0.8 if row else 0.72)))
            logo_im = None
            if logo is not None:
                lh = max(8, round(ih * 0.6)) if row else max(8, round(cs * 2.4))
                logo_im = _logo_image(logo, lh, max(8, round(iw * (0.18 if row else 0.35))))
            tried[hs] = (plan(head, call, hs, cs, min_px, iw, ih, gap, logo_im), logo_im)
        return tried[hs]
    top = max(min_px, top)
    best, logo_im = attempt(min_px)
    fits = None
    if best is not None and not best.get("fail"):
        hs = largest(lambda s: (attempt(s)[0] or {}).get("ok", False), min_px, top) or \
            largest(lambda s: attempt(s)[0] is not None, min_px, top)
        fits, logo_im = attempt(hs)
    if fits is None:
        what = "call to action" if best is not None and best.get("fail") else "headline"
        raise LayoutError(f"{what} does not fit {W}x{H} even at {min_px} px: "
                          f"{(cta if what == 'call to action' else headline)[:60]!r}")
    best = fits
    canvas = Image.new("RGB", (W, H), bg)
    draw = ImageDraw.Draw(canvas)
    boxes: list[Box] = []
    pos = best["place"](m)
    x, y, side = pos["image"]
    pic = scale_image(src, side)
    px, py = x + (side - pic.width) // 2, y + (side - pic.height) // 2
    canvas.paste(pic, (px, py))
    boxes.append(Box("image", px, py, px + pic.width, py + pic.height))
    if logo_im is not None and "logo" in pos:
        lx, ly = pos["logo"]
        canvas.paste(logo_im, (lx, ly), logo_im)
        boxes.append(Box("logo", lx, ly, lx + logo_im.width, ly + logo_im.height))
    if best["btn"] is not None:
        bx, by, bw, bh = pos["button"]
        draw.rounded_rectangle((bx, by, bx + bw - 1, by + bh - 1), radius=max(2, bh // 5),
                               fill=button)
        boxes.append(Box("button", bx, by, bx + bw, by + bh))
    arr = np.asarray(canvas).copy()
    if best["head"] is not None:
        cx, hy = pos["headline"]
        _draw_block(draw, arr, best["head"], head, "headline", cx, hy, boxes)
    if best["btn"] is not None:
        arr = np.asarray(canvas).copy()
        cx, cy = pos["cta"]
        _draw_block(draw, arr, best["btn"], call, "cta", cx, cy, boxes)
    return Creative(np.asarray(canvas).copy(), boxes, m, bg,
                    (head.dropped if head else "") + (call.dropped if call else ""),
                    {"headline": head, "cta": call})


@lru_cache(maxsize=64)
def _button(call, cs, min_px, max_w, max_h):
    """The CTA block that fits a button of at most max_w x max_h (shrinking to min_px)."""
    if call is None:
        return None, 0, 0, True
    def attempt(size, lines):
        padx, pady = max(4, round(size * 0.9)), max(2, round(size * 0.45))
        blk = _block(call, size, max_w - 2 * padx, lines)
        if blk is not None and blk.height + 2 * pady <= max_h:
            return blk, blk.width + 2 * padx, blk.height + 2 * pady, True
        return None
    for lines in (1, 2):  # one line at any size reads better than two
        size = largest(lambda s: attempt(s, lines) is not None, min_px, cs)
        if size is not None:
            return attempt(size, lines)
    return None, 0, 0, False


def largest(fits, lo: int, hi: int) -> int | None:
    """The largest size in [lo, hi] for which fits(size) holds, by bisection (text that
    fits at a size fits at every smaller one); None when not even lo fits."""
    if hi < lo or not fits(lo):
        return None
    while lo < hi:
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if fits(mid) else (lo, mid - 1)
    return lo


def _fit_column(head, call, hs, cs, min_px, iw, ih, gap, logo_im):
    logo_w = logo_im.width + gap if logo_im is not None else 0
    btn, bw, bh, ok = _button(call, cs, min_px, iw - logo_w, max(1, ih // 4))
    if not ok:
        return {"ok": False, "fail": "cta", "btn": None, "head": None}
    bottom_h = max(bh, logo_im.height if logo_im is not None else 0)
    blk = _block(head, hs, iw, 3) if head else None
    if head and blk is None:
        return None
    hh = blk.height if blk else 0
    gaps = gap * (int(bool(blk)) + int(bottom_h > 0))
    side = min(iw, ih - hh - bottom_h - gaps)
    ok = side >= max(16, int(0.45 * min(iw, ih)))
    if side < 16:
        return None

    def place(m):
        total = side + hh + bottom_h + gaps
        y = m + (ih - total) // 2
        pos = {"image": (m + (iw - side) // 2, y, side)}
        y += side + gap
        if blk:
            pos["headline"] = (m + iw // 2, y)
            y += hh + gap
        group = bw + logo_w
        x = m + (iw - group) // 2
        if logo_im is not None:
            pos["logo"] = (x, y + (bottom_h - logo_im.height) // 2)
            x += logo_w
        if btn is not None:
            by = y + (bottom_h - bh) // 2
            pos["button"] = (x, by, bw, bh)
            pos["cta"] = (x + bw // 2, by + (bh - btn.height) // 2)
        return pos
    return {"ok": ok, "head": blk, "btn": btn, "place": place}


def _fit_row(head, call, hs, cs, min_px, iw, ih, gap, logo_im):
    side = ih
    logo_w = logo_im.width + gap if logo_im is not None else 0
    btn, bw, bh, ok = _button(call, cs, min_px, max(1, (iw - side) // 3), ih)
    if not ok:
        return {"ok": False, "fail": "cta", "btn": None, "head": None}
    text_w = iw - side - gap - (bw + gap if btn else 0) - logo_w
    blk = None
    if head:
        pitch_lines = max(1, min(3, ih // max(1, round(hs * 1.2))))
        blk = _block(head, hs, max(1, text_w), pitch_lines)
        if blk is None or blk.height > ih:
            return None

    def place(m):
        pos = {"image": (m, m, side)}
        x = m + side + gap
        if blk:
            pos["headline"] = (x + text_w // 2, m + (ih - blk.height) // 2)
        x = m + iw - logo_w - (bw if btn else 0)
        if btn is not None:
            by = m + (ih - bh) // 2
            pos["button"] = (x, by, bw, bh)
            pos["cta"] = (x + bw // 2, by + (bh - btn.height) // 2)
        if logo_im is not None:
            pos["logo"] = (m + iw - logo_im.width, m + (ih - logo_im.height) // 2)
        return pos
    return {"ok": True, "head": blk, "btn": btn, "place": place}
