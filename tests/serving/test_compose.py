"""Creative layout (adgen.serving.jobs.layout): text inside the margins by the layout's own measured
boxes, WCAG contrast, CJK glyphs present in the chosen font, hard copy (long, empty, emoji,
right-to-left, HTML-ish), and the headline read back by OCR (Debian's tesseract-ocr).

Fonts and tesseract come from `make sysdeps` (Debian packages). As root (CI) a missing one
fails the test; only a user who cannot install them gets a skip that says why."""
from __future__ import annotations

import os
import re
import shutil
import subprocess

import numpy as np
import pytest

from adgen.serving.jobs.layout import MIN_CONTRAST, LayoutError, compose, contrast

SIZES = [(300, 250), (728, 90), (160, 600), (320, 50), (1080, 1080), (336, 280), (300, 600)]


def _need(what: str, ok: bool) -> None:
    if ok:
        return
    msg = f"{what} missing: `make sysdeps` installs it (Debian, as root)"
    if os.geteuid() == 0:
        pytest.fail(msg)  # CI installs it: a missing package is a real failure there
    pytest.skip(msg + "; not root here, so it cannot be installed")


@pytest.fixture(scope="module", autouse=True)
def fonts():
    from adgen.serving.jobs.fonts import find_face
    _need("fonts-dejavu-core", find_face("dejavu") is not None)
    _need("fonts-noto-cjk", find_face("cjk-zh") is not None)


def source(bg=(250, 220, 40), fg=(200, 30, 30), n=64):
    img = np.zeros((n, n, 3), np.uint8)
    img[:] = bg
    img[n // 4:3 * n // 4, n // 4:3 * n // 4] = fg
    return img


def check_inside(c, size):
    W, H = size
    m = c.margin
    assert m >= 4
    for b in c.boxes:
        assert m <= b.x0 < b.x1 <= W - m and m <= b.y0 < b.y1 <= H - m, (size, b)


def check_contrast(c):
    for b in c.boxes:
        if b.kind in ("headline", "cta"):
            assert b.contrast >= MIN_CONTRAST, b
            # measured again here: every colour behind the box in a redraw without text
    texts = [b for b in c.boxes if b.kind in ("headline", "cta")]
    return texts


def ink_outside_boxes(c) -> int:
    """Pixels that differ from the background outside every recorded box."""
    mask = np.ones(c.image.shape[:2], bool)
    for b in c.boxes:
        mask[b.y0:b.y1, b.x0:b.x1] = False
    return int((c.image[mask] != np.array(c.background, np.uint8)).any(axis=1).sum())


# (headline, call to action) in Latin, CJK and right-to-left scripts
COPY = [("Summer sale on sneakers", "Shop now"),
        ("Valentine's day chocolate gift box", "Get it delivered"),
        ("夏季运动鞋大促销", "立即购买"),
        ("تخفيضات الصيف على الأحذية", "تسوق الآن")]


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("headline,cta", COPY)
def test_every_box_is_inside_the_margins_and_readable(size, headline, cta):
    c = compose(source(), size, headline, cta)
    assert c.image.shape == (size[1], size[0], 3)
    check_inside(c, size)
    texts = check_contrast(c)
    assert {b.kind for b in texts} == {"headline", "cta"}
    assert ink_outside_boxes(c) == 0  # nothing drawn beyond what the layout measured
    # the drawn lines are the whole copy: nothing cut
    drawn = "".join(b.text for b in texts if b.kind == "headline").replace(" ", "")
    assert drawn == headline.replace(" ", "")


@pytest.mark.parametrize("bg", [(0, 0, 0), (255, 255, 255), (119, 119, 119), (0, 90, 200),
                                (255, 0, 0), (20, 200, 20)])
def test_contrast_against_any_background_and_brand_colour(bg):
    for brand in (None, (255, 215, 0), (30, 30, 160), bg):
        c = compose(source(bg=bg), (300, 250), "Fresh coffee every morning", "Join today",
                    brand=brand)
        for b in check_contrast(c):
            region = c.image[b.y0:b.y1, b.x0:b.x1].reshape(-1, 3)
            behind = bg if b.kind == "headline" else (brand or b.color)
            if b.kind == "cta":
                # the button: its fill is the most common colour in the box
                vals, counts = np.unique(region, axis=0, return_counts=True)
                behind = tuple(vals[counts.argmax()])
            assert contrast(b.color, behind) >= MIN_CONTRAST, (bg, brand, b)


def test_wcag_formula():
    assert contrast((0, 0, 0), (255, 255, 255)) == pytest.approx(21.0)
    assert contrast((119, 119, 119), (255, 255, 255)) == pytest.approx(4.48, abs=0.01)


@pytest.mark.parametrize("headline,lang", [("夏季运动鞋大促销，全场五折", "zh"),
                                           ("新しいスマホ予約開始", "ja"),
                                           ("여름 신발 대세일", "ko")])
def test_cjk_glyphs_are_all_in_the_chosen_font(headline, lang):
    """No tofu: the font file the layout used has a glyph for every character drawn."""
    from fontTools.ttLib import TTCollection, TTFont

    from adgen.serving.jobs.fonts import choose
    c = compose(source(), (300, 250), headline, "立即购买")
    choice = choose(headline)
    assert choice.face.name.startswith("cjk")
    path, index = choice.face.path, choice.face.index
    font = TTCollection(path).fonts[index] if path.endswith(".ttc") else TTFont(path)
    cmap = font.getBestCmap()
    lines = [b for b in c.boxes if b.kind == "headline"]
    assert lines and all(b.font == choice.face.label for b in lines)
    drawn = "".join(b.text for b in lines)
    assert drawn.replace(" ", "") == headline.replace(" ", "")
    missing = [ch for ch in drawn if not ch.isspace() and ord(ch) not in cmap]
    assert missing == []


def test_very_long_copy_wraps_or_is_refused_never_clipped():
    long = "Donaudampfschifffahrtsgesellschaftskapitänsmützen und Zubehör im Angebot"
    c = compose(source(), (300, 250), long, "Jetzt kaufen")
    check_inside(c, (300, 250))
    assert len([b for b in c.boxes if b.kind == "headline"]) >= 2
    assert ink_outside_boxes(c) == 0
    with pytest.raises(LayoutError, match=r"headline does not fit 320x50"):
        compose(source(), (320, 50), "word " * 60, "Shop now", min_px=12)
    with pytest.raises(LayoutError, match="call to action does not fit"):
        compose(source(), (320, 50), "Sale", "Supercalifragilisticexpialidocious " * 3,
                min_px=14)


def test_empty_copy_draws_the_image_alone():
    c = compose(source(), (300, 250), "", "   ")
    assert [b.kind for b in c.boxes] == ["image"]
    check_inside(c, (300, 250))


def test_emoji_are_dropped_not_drawn_as_boxes():
    c = compose(source(), (300, 250), "Party time 🎉👍🏽", "Join us ❤️")
    text = "".join(b.text for b in c.boxes if b.kind == "headline")
    assert text == "Party time" and "🎉" in c.dropped
    check_inside(c, (300, 250))


def test_html_ish_copy_is_drawn_literally_and_fits():
    c = compose(source(), (728, 90), "<b>Sale</b> &amp; <script>x</script>", "<a>Buy</a>")
    check_inside(c, (728, 90))
    assert "<b>Sale</b>" in " ".join(b.text for b in c.boxes if b.kind == "headline")


def test_rtl_copy_is_shaped_and_inside():
    from adgen.serving.jobs.fonts import choose
    assert choose("تسوق الآن").shaped and choose("קנו עכשיו").shaped
    for size in ((300, 250), (320, 50)):
        c = compose(source(), size, "מבצע קיץ על נעליים", "קנו עכשיו")
        check_inside(c, size)


def test_larger_source_and_logo():
    from PIL import Image
    logo = Image.new("RGBA", (120, 40), (0, 0, 0, 0))
    logo.paste((20, 20, 20, 255), (0, 0, 120, 40))
    for size in ((300, 250), (728, 90), (160, 600)):
        c = compose(source(n=256), size, "Summer sale", "Shop now", brand=(228, 0, 43),
                    logo=logo)
        check_inside(c, size)
        kinds = [b.kind for b in c.boxes]
        assert "logo" in kinds and "button" in kinds
        boxes = [b for b in c.boxes if b.kind in ("image", "logo", "button", "headline")]
        for i, a in enumerate(boxes):  # no two elements overlap (text lines in a button do)
            for b in boxes[i + 1:]:
                assert a.x1 <= b.x0 or b.x1 <= a.x0 or a.y1 <= b.y0 or b.y1 <= a.y0, (a, b)


def test_crisp_nearest_neighbour_scale():
    from adgen.serving.jobs.layout import scale_image
    img = source()
    big = np.asarray(scale_image(img, 200))
    assert big.shape == (192, 192, 3)  # 3x, a whole multiple
    assert (big[::3, ::3] == img).all()


def _tesseract() -> str | None:
    return shutil.which("tesseract")


def test_ocr_reads_the_headline_back(tmp_path):
    """A rendered 300x250 creative through tesseract: the headline comes back."""
    _need("tesseract-ocr", _tesseract() is not None)
    from PIL import Image
    headline = "Summer sale on sneakers"
    c = compose(source(), (300, 250), headline, "Shop now")
    path = tmp_path / "c.png"
    Image.fromarray(c.image).save(path)
    text = subprocess.run([_tesseract(), str(path), "-", "--psm", "6"], capture_output=True,
                          text=True, timeout=120, check=True).stdout
    words = re.sub(r"[^a-z ]", " ", text.lower()).split()
    assert all(w in words for w in headline.lower().split()), text
    # The call to action, light on its button: cropped to the button, read as one line.
    b = next(b for b in c.boxes if b.kind == "button")
    crop = Image.fromarray(c.image[b.y0:b.y1, b.x0:b.x1]).resize(
        ((b.x1 - b.x0) * 3, (b.y1 - b.y0) * 3), Image.LANCZOS)
    crop.save(tmp_path / "cta.png")
    text = subprocess.run([_tesseract(), str(tmp_path / "cta.png"), "-", "--psm", "7"],
                          capture_output=True, text=True, timeout=120, check=True).stdout
    assert re.sub(r"[^a-z ]", "", text.lower()).split() == ["shop", "now"], text
