"""Background palette and caption templates: the visual vocabulary of the generator.

Training composites each RGBA emoji onto a palette colour and writes a caption from these
templates; the offline prompt expander writes prompts in the same style, and evaluation
reads the background colour back from border pixels. Keep them in this one place.
"""
from __future__ import annotations

import re

import numpy as np

# Named background colours, far enough apart to be told apart from border pixels.
PALETTE: dict[str, tuple[int, int, int]] = {
    "white": (245, 245, 245),
    "black": (20, 20, 20),
    "gray": (128, 128, 128),
    "red": (220, 40, 40),
    "orange": (245, 140, 30),
    "yellow": (250, 220, 50),
    "green": (40, 160, 60),
    "teal": (0, 150, 150),
    "sky blue": (120, 190, 240),
    "navy": (20, 40, 120),
    "purple": (130, 50, 170),
    "pink": (245, 150, 200),
    "brown": (120, 70, 30),
    "beige": (225, 205, 160),
}
COLOR_NAMES: tuple[str, ...] = tuple(PALETTE)

# Style words users put in briefs that map onto how the images look.
STYLE = "flat sticker style"

# Design families: the same concepts drawn by three emoji sets. A prompt names one with the
# family's own word ("a cat in noto emoji style"); without one, the seed picks.
FAMILIES: tuple[str, ...] = ("twemoji", "noto", "fluent")
FAMILY_PHRASE = "in {family} emoji style"

# Object colours a prompt may bind to the object ("a blue apple"), as opposed to the
# background; each is a palette colour, so one table serves both.
OBJECT_COLORS: tuple[str, ...] = ("red", "orange", "yellow", "green", "teal", "sky blue",
                                  "navy", "purple", "pink", "brown")


def family_phrase(family: str) -> str:
    """'noto' -> 'in noto emoji style'; an unknown family is a KeyError naming the known."""
    if family not in FAMILIES:
        raise KeyError(f"unknown design family {family!r}; known: {', '.join(FAMILIES)}")
    return FAMILY_PHRASE.format(family=family)

TEMPLATES: tuple[str, ...] = (
    "{a_name}, flat sticker style, on {a_color} background",
    "{name} icon on {a_color} background",
    "{a_name} emoji on a plain {color} background",
    "flat illustration of {a_name}, {color} backdrop",
)
# The canonical caption: what prompts produced by the offline expander look like.
CANONICAL_TEMPLATE = TEMPLATES[0]

# More wordings the layered generator's text heads are trained on (with TEMPLATES), so that
# a prompt worded differently still finds its concept.
EXTRA_TRAIN_TEMPLATES: tuple[str, ...] = (
    "{a_name} on {a_color} background",
    "{name} sticker, {color} background",
    "cute {name} clipart on a {color} background",
    "{a_color} background with {a_name}",
    "a simple {name} icon, {color} background, flat design",
    "ad image: {a_name} on {a_color} backdrop",
)
TRAIN_TEMPLATES: tuple[str, ...] = TEMPLATES + EXTRA_TRAIN_TEMPLATES

# Paraphrases NEVER used in training (fixed before the v2 release run): `adgen eval` scores
# prompts in these wordings to measure how the model copes with wording it never saw.
PARAPHRASE_TEMPLATES: tuple[str, ...] = (
    "{a_name} sticker against a solid {color} backdrop",
    "picture of {a_name} with a {color} colored background",
    "{color} backdrop behind {a_name}, vector art",
)


def article(phrase: str) -> str:
    """'apple' -> 'an apple', 'red apple' -> 'a red apple'."""
    phrase = phrase.strip()
    return ("an " if phrase[:1].lower() in "aeiou" else "a ") + phrase


def caption(name: str, color: str, template: str = CANONICAL_TEMPLATE) -> str:
    """caption('red apple', 'teal') -> 'a red apple, flat sticker style, on a teal background'."""
    if color not in PALETTE:
        raise KeyError(f"unknown palette colour {color!r}; known: {', '.join(COLOR_NAMES)}")
    return template.format(name=name, a_name=article(name), color=color, a_color=article(color))


def caption_names(records: list[dict]) -> list[list[str]]:
    """Per concept record: its name, then those of its aliases that no other record has as
    its name or alias ('_' read as a space). The emoji data gives 20 concepts another
    concept's name as an alias ('cat' for the cat face, 'pencil' for the memo, 'egg' for
    cooking); trained as words of both, such a word reads as either by the wording."""
    def clean(n: str) -> str:
        return n.replace("_", " ")
    count: dict[str, int] = {}
    for r in records:
        for n in {clean(r["name"]), *(clean(a) for a in r.get("aliases", []))}:
            count[n] = count.get(n, 0) + 1
    return [[clean(r["name"]), *(clean(a) for a in r.get("aliases", [])
                                 if count[clean(a)] == 1)] for r in records]


def colors_in(text: str) -> list[str]:
    """Palette colours named in free text, longest names first ('sky blue' before 'blue')."""
    found, lowered = [], " " + re.sub(r"[^a-z ]", " ", text.lower()) + " "
    for name in sorted(COLOR_NAMES, key=len, reverse=True):
        if f" {name} " in lowered:
            found.append(name)
            lowered = lowered.replace(f" {name} ", " ")
    aliases = {"grey": "gray", "blue": "sky blue", "violet": "purple", "gold": "yellow",
               "golden": "yellow", "cream": "beige", "tan": "beige", "turquoise": "teal",
               "dark blue": "navy", "silver": "gray", "lime": "green", "magenta": "pink"}
    for alias, name in aliases.items():
        if f" {alias} " in lowered and name not in found:
            found.append(name)
    return found


def composite(rgba: np.ndarray, color: str | tuple[int, int, int]) -> np.ndarray:
    """RGBA uint8[..., H, W, 4] over a flat colour -> RGB uint8[..., H, W, 3]."""
    rgb = np.array(PALETTE[color] if isinstance(color, str) else color, dtype=np.float32)
    alpha = rgba[..., 3:4].astype(np.float32) / 255.0
    out = rgba[..., :3].astype(np.float32) * alpha + rgb * (1.0 - alpha)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def nearest_color(rgb) -> str:
    """The palette colour nearest (Euclidean RGB) to an observed colour."""
    rgb = np.asarray(rgb, dtype=np.float32)
    names = list(PALETTE)
    table = np.array([PALETTE[n] for n in names], dtype=np.float32)
    return names[int(np.argmin(((table - rgb) ** 2).sum(axis=1)))]


def border_color(image_hwc: np.ndarray, width: int = 3) -> str:
    """Background colour of one RGB uint8[H, W, 3] image read from its border pixels."""
    img = image_hwc.astype(np.float32)
    border = np.concatenate([img[:width].reshape(-1, 3), img[-width:].reshape(-1, 3),
                             img[:, :width].reshape(-1, 3), img[:, -width:].reshape(-1, 3)])
    return nearest_color(np.median(border, axis=0))
