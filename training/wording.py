"""A grammar of training wordings for the composer's text heads.

The heads first learned from ten fixed templates, in every one of which the background
colour stands right before "background" or "backdrop". On wordings they never saw they
then read a bare colour word as the object's ("a yellow square on pink": pink square) and
missed the background (benchmarks.wording, 2026-12-03: background 0.553, an object colour
invented in 52% of prompts that named none). This grammar varies how the subject, its
object colour, the background and filler words are said and in which order, so the heads
learn the binding from the words around a colour and not from one template.

Never produced here (they are `adgen eval`'s paraphrases and benchmarks.wording's unseen
wordings, which measure what this grammar buys): see NEVER_TRAINED; a test checks it.

    form = draw_form(rng)                       # one random wording, drawn once (version 2)
    form.render("apple", "blue", "teal")        # e.g. "ad image: an apple in blue over teal"

A caption and its colour-swapped twin share one form, so they differ only in which colour
word sits where.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from adgen.captions import TRAIN_TEMPLATES, article, caption

# How an object colour o is said of a name n ("{o} {n}" is also the recolouring of a name
# that carries its own colour word, done by the caller).
OBJECT_FORMS = ("{o} {n}", "{o} {n}", "{o} {n}", "{n} in {o}", "{o}-colored {n}",
                "{n} colored {o}", "{n} painted {o}", "{o} colored {n}", "all-{o} {n}",
                # version 2
                "{o} {n}", "{n} in {o} color", "{n} coloured {o}", "{o}-painted {n}",
                "{n} done in {o}", "{n} in bright {o}", "{n} ({o})", "{n}, {o}",
                "{n} with {o} coloring", "{n} in a {o} colorway", "{o} coloured {n}")
# The subject around an (article) name.
SUBJECTS = ("{a_n}", "{a_n}", "{n}", "{a_n} icon", "{a_n} emoji", "{a_n} sticker",
            "{a_n} illustration", "an illustration of {a_n}", "a drawing of {a_n}",
            "{a_n} graphic", "clipart of {a_n}", "an image of {a_n}", "one {n}",
            "a single {n}", "{n} symbol", "{a_n} design", "a cartoon of {a_n}",
            # version 2
            "{a_n} pictogram", "a picture of {a_n}", "a render of {a_n}", "{a_n} badge",
            "a logo-like {n}", "{a_n} mascot", "a small {n}", "a big {n}", "the {n}",
            "a flat {n}", "an emoji of {a_n}")
# The background after the subject, and before it (then joined by BEFORE_JOINS).
BACKGROUND_AFTER = ("on {a_c} background", "on a {c} background", "on a plain {c} background",
                    "on a solid {c} background", "with {a_c} background",
                    "with a {c} backdrop", "over a {c} background", "{c} background",
                    "{c} backdrop", "on {c}", "over {c}", "set on {c}", "placed on {c}",
                    "on a {c} wall", "in front of a {c} wall", "on {c} paper",
                    "background: {c}", "bg {c}", "with a {c} bg", "on a {c} surface",
                    "{c} backgrounds", "background color {c}",
                    # version 2
                    "on a {c} card", "on a {c} tile", "on a {c} panel", "on a {c} board",
                    "atop {c}", "upon {c}", "on top of {c}", "in front of {c}",
                    "resting on {c}", "sitting on {c}", "floating over {c}",
                    "surrounded by {c}", "with {c} around it", "framed by {c}",
                    "in a {c} room", "with a {c} setting", "in a {c} scene",
                    "in a {c} frame", "over a {c} base", "on a {c} square", "on {c} fabric",
                    "on a {c} table", "background in {c}", "background of {c}",
                    "backdrop color: {c}",
                    "and a {c} background", "; {c} background", "with {c} all over",
                    "on a flat {c} color", "on {c} cardboard", "on a {c} sticker sheet")
BACKGROUND_BEFORE = ("{a_c} background", "{c} background", "a plain {c} backdrop",
                     "{c} backdrop", "{c} wall", "{c} paper", "on {c}", "{c} bg",
                     # version 2
                     "{c} card", "a {c} tile", "{c} panel", "{c} scene", "{c} setting",
                     "a {c} square", "{c} base", "a {c} frame", "on a {c} board",
                     "{c} color", "a {c} room", "all {c} around", "{c} fabric",
                     "a solid {c}", "flat {c}", "bright {c}", "{c} tones",
                     "a {c} table", "background {c}")
BEFORE_JOINS = ("{b} with {s}", "{b}: {s}", "{b}, {s}", "{b} and {s}", "{b}, featuring {s}",
                # version 2
                "{b}; {s}", "{b} - {s}", "{b}. {s}", "{b}, with {s} on it",
                "{b} holding {s}", "{b}, and on it {s}", "{b} | {s}", "{b} showing {s}")
AFTER_JOINS = ("{s} {b}", "{s}, {b}", "{s} - {b}", "{s}. {b}", "{s} | {b}",
               # version 2
               "{s}; {b}", "{s} ({b})", "{s} / {b}", "{s}, set {b}", "{s}. Put it {b}")
FILLERS = ("flat sticker style", "flat design", "flat illustration", "minimal", "simple",
           "clean", "cartoon style", "high quality", "for an ad", "sticker art", "no text",
           "2d", "cute", "bold shapes", "ad campaign asset",
           # version 2
           "vibrant", "modern", "for social media", "product illustration", "eye-catching",
           "playful", "icon style", "bright colors", "studio lighting", "crisp edges",
           "high resolution", "simple shapes", "for a banner", "marketing graphic")
PREFIXES = ("ad image: ", "banner: ", "social post: ", "create ", "draw ", "generate ",
            "an ad with ",
            # version 2
            "please draw ", "make ", "show ", "prompt: ", "ad: ", "render ", "design ",
            "illustrate ")

# Phrases of the wordings that measure this grammar; none may appear in a training caption.
NEVER_TRAINED = ("against", "behind", "vector art", "colored background", "in the style of",
                 "field", "the background is", "canvas", "centered ", "shown", "-toned",
                 "finish", "in colour", "rendered", "following", "artwork",
                 # the second unseen set
                 "sits on", "isolated", "in the middle", "color block", "seamless", "tinted",
                 " shade", "that is", "like a ", "-flavoured")


# Version 2 (2026-12-03) appended to every table above; version 1 draws from each table's
# first V1_SIZES entries, so a version-1 seed gives the very captions the release's first
# word rounds were trained on (and finds their cached encodings).
GRAMMARS = (1, 2)
V1_SIZES = {OBJECT_FORMS: 9, SUBJECTS: 17, BACKGROUND_AFTER: 22, BACKGROUND_BEFORE: 8,
            BEFORE_JOINS: 5, AFTER_JOINS: 5, FILLERS: 15, PREFIXES: 7}


def grammar_size(table: tuple[str, ...], grammar: int) -> int:
    """How many of `table`'s entries grammar version `grammar` draws from."""
    if grammar not in GRAMMARS:
        raise ValueError(f"grammar must be one of {GRAMMARS}, not {grammar}")
    return V1_SIZES[table] if grammar == 1 else len(table)


@dataclass(frozen=True)
class Form:
    """One drawn wording: indices into the tables above (-1: not used)."""
    template: int        # >= 0: a TRAIN_TEMPLATES caption instead of the grammar
    obj_form: int
    subject: int
    background: int
    join: int
    before: bool
    filler: int
    filler_first: bool
    prefix: int

    def name(self, name: str, obj: str) -> str:
        """The subject's name with its object colour said this form's way ('' = none)."""
        if not obj:
            return name
        return OBJECT_FORMS[self.obj_form].format(o=obj, n=name)

    def render(self, name: str, obj: str, color: str) -> str:
        """A caption of `name` (plain, no article) in object colour `obj` ('' = its own) on
        background `color`. `name` may already carry the object colour (then obj='')."""
        n = self.name(name, obj)
        if self.template >= 0:
            return caption(n, color, TRAIN_TEMPLATES[self.template])
        s = SUBJECTS[self.subject].format(n=n, a_n=article(n))
        if self.before:
            b = BACKGROUND_BEFORE[self.background].format(c=color, a_c=article(color))
            text = BEFORE_JOINS[self.join].format(b=b, s=s)
        else:
            b = BACKGROUND_AFTER[self.background].format(c=color, a_c=article(color))
            text = AFTER_JOINS[self.join].format(s=s, b=b)
        if self.filler >= 0:
            text = (f"{FILLERS[self.filler]}, {text}" if self.filler_first
                    else f"{text}, {FILLERS[self.filler]}")
        if self.prefix >= 0:
            text = PREFIXES[self.prefix] + text
        return text


def draw_form(rng: np.random.Generator, template_share: float = 0.4, grammar: int = 2) -> Form:
    """A random wording: a fixed training template with probability `template_share`,
    otherwise the grammar (subject, object-colour form, background, order, filler, prefix)."""
    def pick(table) -> int:
        return int(rng.integers(grammar_size(table, grammar) if table in V1_SIZES
                                else len(table)))
    before = bool(rng.random() < 0.3)
    return Form(
        template=pick(TRAIN_TEMPLATES) if rng.random() < template_share else -1,
        obj_form=pick(OBJECT_FORMS), subject=pick(SUBJECTS),
        background=pick(BACKGROUND_BEFORE if before else BACKGROUND_AFTER),
        join=pick(BEFORE_JOINS if before else AFTER_JOINS), before=before,
        filler=pick(FILLERS) if rng.random() < 0.4 else -1,
        filler_first=bool(rng.random() < 0.3),
        prefix=pick(PREFIXES) if rng.random() < 0.15 else -1)
