"""Fonts for creatives: found on this machine, never downloaded.

Two Debian packages cover the copy adgen writes: fonts-dejavu-core (DejaVu Sans Bold:
Latin, Greek, Cyrillic, Arabic, Hebrew) and fonts-noto-cjk (Noto Sans CJK Bold: Chinese,
Japanese, Korean, plus Latin). They are located with fontconfig's `fc-match` (the family
it returns is checked: fc-match falls back to any font rather than fail) or at Debian's
paths. `choose` picks the first font that draws every letter of a text; symbols no font
draws (emoji) are dropped and reported, a letter no font draws is a per-item error, so a
creative never shows a missing-glyph box ("tofu").
"""
from __future__ import annotations

import shutil
import subprocess
import unicodedata
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from PIL import ImageFont, features

from adgen.errors import AdgenError
from adgen.prompting.adcopy import scripts

INSTALL_HINT = ("install Debian's fonts-dejavu-core and fonts-noto-cjk (`make sysdeps` as "
                "root, or: sudo apt-get install fonts-dejavu-core fonts-noto-cjk)")
# name -> (fontconfig pattern, family it must return, Debian path, face index in that file)
_FONTS = {
    "dejavu": ("DejaVu Sans:style=Bold", "DejaVu Sans",
               "/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf", 0),
    # NotoSansCJK-Bold.ttc holds JP, KR, SC, TC, HK faces in this order.
    "cjk-zh": ("Noto Sans CJK SC:style=Bold", "Noto Sans CJK SC",
               "/usr/share/fonts/opentype/noto/NotoSansCJK-Bold.ttc", 2),
    "cjk-ja": ("Noto Sans CJK JP:style=Bold", "Noto Sans CJK JP",
               "/usr/share/fonts/opentype/noto/NotoSansCJK-Bold.ttc", 0),
    "cjk-ko": ("Noto Sans CJK KR:style=Bold", "Noto Sans CJK KR",
               "/usr/share/fonts/opentype/noto/NotoSansCJK-Bold.ttc", 1),
}
_NOT_A_CHAR = "\U0010FFFD"  # private use, plane 16: no font draws it, so it shows .notdef


class FontError(AdgenError):
    """No usable font (package missing) or a text no installed font can draw."""


@dataclass(frozen=True)
class FontFace:
    name: str  # dejavu | cjk-zh | cjk-ja | cjk-ko
    path: str
    index: int

    @property
    def label(self) -> str:
        """What metadata shows: the file name and face, never this machine's folders."""
        return f"{Path(self.path).name}#{self.index}"


@dataclass(frozen=True)
class FontChoice:
    face: FontFace
    text: str  # what will be drawn (undrawable symbols removed)
    dropped: str  # the symbols removed (emoji and the like)
    shaped: bool = False  # needs libraqm: right-to-left or complex script

    def font(self, size: int):
        return load(self.face, size, self.shaped)


def _fc_match(pattern: str, family: str) -> tuple[str, int] | None:
    if not shutil.which("fc-match"):
        return None
    try:
        out = subprocess.run(["fc-match", pattern, "--format=%{file}\t%{index}\t%{family}"],
                             capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    parts = out.split("\t")
    if len(parts) == 3 and family.lower() in parts[2].lower() and Path(parts[0]).is_file():
        return parts[0], int(parts[1] or 0)
    return None


@lru_cache(maxsize=None)
def find_face(name: str) -> FontFace | None:
    pattern, family, path, index = _FONTS[name]
    if Path(path).is_file():
        return FontFace(name, path, index)
    found = _fc_match(pattern, family)
    return FontFace(name, found[0], found[1]) if found else None


def available() -> list[FontFace]:
    """The faces found, DejaVu first; FontError when there is none at all."""
    faces = [f for f in (find_face(n) for n in _FONTS) if f is not None]
    if not faces:
        raise FontError(f"no font for creatives: {INSTALL_HINT}")
    return faces


@lru_cache(maxsize=256)
def load(face: FontFace, size: int, shaped: bool = False):
    """The face at `size` px; shaped: laid out by libraqm (bidi, Arabic joining), which is
    needed for right-to-left and complex scripts and several times slower for the rest."""
    engine = ImageFont.Layout.RAQM if shaped and _has_raqm() else ImageFont.Layout.BASIC
    return ImageFont.truetype(face.path, size, index=face.index, layout_engine=engine)


@lru_cache(maxsize=1)
def _has_raqm() -> bool:
    return bool(features.check("raqm"))  # shaping for Arabic/Hebrew (libraqm)


@lru_cache(maxsize=None)
def _notdef(face: FontFace):
    return _mask(face, _NOT_A_CHAR)


def _mask(face: FontFace, ch: str):
    font = ImageFont.truetype(face.path, 32, index=face.index,
                              layout_engine=ImageFont.Layout.BASIC)  # one char, one glyph
    m = font.getmask(ch)
    return m.size, bytes(m)


@lru_cache(maxsize=65536)
def covers(face: FontFace, ch: str) -> bool:
    """Whether the face has a glyph for `ch` (it does not draw .notdef for it)."""
    if ch.isspace() or unicodedata.category(ch) in ("Cc", "Cf", "Mn", "Me"):
        return True  # nothing of their own to draw
    return _mask(face, ch) != _notdef(face)


def _droppable(ch: str) -> bool:
    """Symbols (emoji, pictographs), their modifiers and joiners: dropped when undrawable."""
    cat = unicodedata.category(ch)
    return cat in ("So", "Sk", "Cf", "Co", "Cn") or 0xFE00 <= ord(ch) <= 0xFE0F


def _preferred(text: str) -> list[str]:
    found = scripts(text)
    cjk = "cjk-ja" if "kana" in found else "cjk-ko" if "hangul" in found else "cjk-zh"
    if found & {"han", "kana", "hangul"}:
        return [cjk, "cjk-zh", "cjk-ja", "cjk-ko", "dejavu"]
    return ["dejavu", cjk, "cjk-zh", "cjk-ja", "cjk-ko"]


def choose(text: str) -> FontChoice:
    """The first face (by the text's writing system) that draws every letter of `text`.

    Raises FontError naming the character when no installed face draws a letter."""
    faces = {f.name: f for f in available()}
    order = [faces[n] for n in dict.fromkeys(_preferred(text)) if n in faces]
    best, best_missing = None, None
    for face in order:
        missing = [ch for ch in dict.fromkeys(text) if not covers(face, ch)]
        if not [ch for ch in missing if not _droppable(ch)]:
            if best is None or len(missing) < len(best_missing):
                best, best_missing = face, missing
            if not missing:
                break
    if best is None:
        bad = next((ch for ch in text if not _droppable(ch)
                    and not any(covers(f, ch) for f in order)), None)
        if bad is None:
            raise FontError(f"no single installed font draws all of {text!r}")
        hint = "" if "cjk-zh" in faces else f"; {INSTALL_HINT}"
        raise FontError(f"no installed font draws {bad!r} (U+{ord(bad):04X}){hint}")
    # An emoji's joiners and presentation selectors go with it.
    drop = set(best_missing) | ({"\u200d", "\ufe0e", "\ufe0f"} if best_missing else set())
    kept = "".join(ch for ch in text if ch not in drop)
    kept = " ".join(kept.split())
    shaped = bool(scripts(kept) - {"latin", "han", "kana", "hangul", "cyrillic", "greek"}) \
        or any(unicodedata.bidirectional(ch) in ("R", "AL") for ch in kept)
    return FontChoice(best, kept, "".join(ch for ch in text if ch in drop), shaped)
