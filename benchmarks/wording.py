"""How a composer's text heads read wordings they were never trained on: concept, family,
background colour and object colour, read from the heads (argmax) of one set of prompts
worded three ways, beside the same figures for other checkpoints.

Usage:
  python -m benchmarks.wording                                   # the release, ~1 min
  python -m benchmarks.wording runs/<run>/checkpoints/final --compare models/adgen-emoji64

Wordings (each prompt names a concept, a background colour, in half the prompts an object
colour and in 60% a design family):

  trained     the templates and (first-version) family phrases the heads are trained on
  paraphrase  adgen.captions.PARAPHRASE_TEMPLATES and the family paraphrase of `adgen eval`
  unseen      UNSEEN_* below, fixed on 2026-12-03 before any head was trained on a wider
              grammar; no training wording may produce them (tests/training check it)
  unseen-b    UNSEEN_B_* below, fixed the same day before the grammar's second version

and one set of its own prompts (the "prompts" column): colour-named, every concept whose
name carries a colour word ("red apple") on every background, in the expander's wording,
where the background's colour word can take the name's (the release test holds its concept
rate).

The heads decide every picture's concept, family and colours (the image side is a lookup of
those choices), so these reads are what the family evaluation's rows rest on, at a fraction
of its cost. Writes <results>/<machine>/wording.{json,md}.
"""
from __future__ import annotations

import argparse
import sys

import numpy as np
import torch

from adgen.captions import (COLOR_NAMES, OBJECT_COLORS, PARAPHRASE_TEMPLATES,
                            TRAIN_TEMPLATES, article, caption, colors_in)
from adgen.training.checkpoint import load_generator
from adgen.training.families import load_families
from adgen.training.stages import encode_cached
from adgen.training.train_composer import FAMILY_PARAPHRASE, FAMILY_TEMPLATES, FAMILY_V1
from benchmarks.common import command_line, machine_info, md_table, write_part

# Never trained on (see the module docstring): whole prompts, object-colour forms, family
# phrases. {a_name}/{name} already carry the object-colour form.
UNSEEN_TEMPLATES = (
    "an ad visual of {a_name} over a {color} field",
    "{a_name}; the background is {color}",
    "product shot: {a_name}, solid {color} behind it",
    "{color} canvas, {a_name} centered",
    "{a_name} shown against {color}",
)
UNSEEN_OBJECT_FORMS = ("a {o}-toned {name}", "{a_name} with a {o} finish",
                       "{a_name}, {o} in colour")
UNSEEN_FAMILY = ("rendered the way {f} emoji look", "following {f} emoji artwork")
# A second never-trained set, fixed on 2026-12-03 before the grammar's second version was
# written (the first set had been read template by template by then, so it is no longer
# blind to the grammar's author; this one is).
UNSEEN_B_TEMPLATES = (
    "{a_name} sits on a {color} backdrop",
    "{a_name}, isolated on {color}",
    "{color} surroundings and, in the middle, {a_name}",
    "poster: {a_name} with a {color} color block",
    "{a_name} photographed on {color} seamless paper",
)
UNSEEN_B_OBJECT_FORMS = ("{a_name} tinted {o}", "{a_name} in a {o} shade", "{a_name} that is {o}")
UNSEEN_B_FAMILY = ("like a {f} emoji", "{f}-flavoured")
UNSEEN_SETS = {"unseen": (UNSEEN_TEMPLATES, UNSEEN_OBJECT_FORMS, UNSEEN_FAMILY),
               "unseen-b": (UNSEEN_B_TEMPLATES, UNSEEN_B_OBJECT_FORMS, UNSEEN_B_FAMILY)}
WORDINGS = ("trained", "paraphrase", *UNSEEN_SETS)
COLOUR_NAMED = "colour-named"   # its own prompts: see colour_named()
HEADS = ("concept", "family", "background", "object")


def items(records: list[dict], families: tuple[str, ...], n: int, seed: int) -> np.ndarray:
    """[n, 4] labels: concept, family (len(families): none), background, object colour
    (0: the concept's own; only for names without a colour word of their own)."""
    rng = np.random.default_rng(seed)
    out = []
    while len(out) < n:
        c = int(rng.integers(len(records)))
        bg = int(rng.integers(len(COLOR_NAMES)))
        fam = len(families) if rng.random() < 0.4 else int(rng.integers(len(families)))
        obj = 0
        if rng.random() < 0.5:
            o = int(rng.integers(len(OBJECT_COLORS)))
            if OBJECT_COLORS[o] != COLOR_NAMES[bg] and not colors_in(records[c]["name"]):
                obj = 1 + o
        out.append((c, fam, bg, obj))
    return np.array(out, dtype=np.int64)


def texts(records: list[dict], families: tuple[str, ...], labels: np.ndarray,
          wording: str) -> list[str]:
    out = []
    for i, (c, fam, bg, obj) in enumerate(labels):
        name, color = records[c]["name"], COLOR_NAMES[bg]
        o = OBJECT_COLORS[obj - 1] if obj else ""
        if wording == "trained":
            tmpl = TRAIN_TEMPLATES[i % len(TRAIN_TEMPLATES)]
            text = caption(f"{o} {name}".strip(), color, tmpl)
            phrase = FAMILY_TEMPLATES[i % FAMILY_V1]   # the first version's: a fixed set
        elif wording == "paraphrase":
            tmpl = PARAPHRASE_TEMPLATES[i % len(PARAPHRASE_TEMPLATES)]
            text = caption(f"{o} {name}".strip(), color, tmpl)
            phrase = FAMILY_PARAPHRASE
        else:
            templates, forms, family = UNSEEN_SETS[wording]
            tmpl = templates[i % len(templates)]
            if o:
                form = forms[i % len(forms)]
                a_name = form.format(o=o, name=name, a_name=article(name))
                text = tmpl.format(a_name=a_name, color=color)
            else:
                text = tmpl.format(a_name=article(name), color=color)
            phrase = family[i % len(family)]
        if fam < len(families):
            text = f"{text}, {phrase.format(f=families[fam])}"
        out.append(text)
    return out


@torch.no_grad()
def read_heads(module, prompts: list[str]) -> np.ndarray:
    """[n, 4] argmax of the concept, family, background and object-colour heads."""
    emb = torch.from_numpy(encode_cached(prompts, "bench-wording", progress=False))
    return np.stack([h.argmax(1).numpy() for h in module.heads(emb)], 1)


def colour_named(records: list[dict], n_families: int) -> tuple[list[str], np.ndarray]:
    """Every concept whose name carries a colour word ("red apple") on every background, in
    the offline expander's wording: the background's colour word can take the name's."""
    out, labels = [], []
    for c, rec in enumerate(records):
        if colors_in(rec["name"]):
            for bg, color in enumerate(COLOR_NAMES):
                out.append(caption(rec["name"], color))
                labels.append((c, n_families, bg, 0))
    return out, np.array(labels, dtype=np.int64).reshape(-1, 4)


def run(checkpoints: list[str], data: str, n: int, seed: int) -> list[dict]:
    ds = load_families(data)
    labels = items(ds.records, ds.families, n, seed)
    sets = {w: (texts(ds.records, ds.families, labels, w), labels) for w in WORDINGS}
    named_texts, named_labels = colour_named(ds.records, len(ds.families))
    if len(named_texts):
        sets[COLOUR_NAMED] = (named_texts, named_labels)
    rows = []
    for path in checkpoints:
        loaded = load_generator(path)
        if loaded.arch != "composer":
            raise SystemExit(f"{path}: arch {loaded.arch!r}, not a composer (no four heads)")
        module = loaded.module.eval()
        for w, (prompts, truth) in sets.items():
            got = read_heads(module, prompts)
            acc = {h: float(np.mean(got[:, k] == truth[:, k])) for k, h in enumerate(HEADS)}
            named = truth[:, 3] > 0
            rows.append({"checkpoint": path, "wording": w, "prompts": len(prompts), **acc,
                         "object_named": (float(np.mean(got[named, 3] == truth[named, 3]))
                                          if named.any() else None),
                         "object_false": float(np.mean(got[~named, 3] != 0)),
                         "all_four": float(np.mean((got == truth).all(1))),
                         "example": prompts[1]})
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("checkpoint", nargs="?", default="models/adgen-emoji64")
    ap.add_argument("--compare", action="append", default=[], help="another composer folder")
    ap.add_argument("--data", default="data/families64")
    ap.add_argument("--items", type=int, default=1200)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--results-dir", default="benchmarks/results")
    args = ap.parse_args(argv)
    rows = run([args.checkpoint, *args.compare], args.data, args.items, args.seed)
    table = md_table(["checkpoint", "wording", "concept", "family", "background",
                      "object colour (named)", "object colour where none named: false",
                      "all four"],
                     [[r["checkpoint"], r["wording"], f"{r['concept']:.3f}",
                       f"{r['family']:.3f}", f"{r['background']:.3f}",
                       "–" if r["object_named"] is None else f"{r['object_named']:.3f}",
                       f"{r['object_false']:.3f}",
                       f"{r['all_four']:.3f}"] for r in rows], "--rrrrrr")
    print("\n".join(table))

    def markdown(payload: dict, command: str) -> str:
        n_sets = len({r["wording"] for r in rows})
        examples = [f"- {r['wording']} ({r['prompts']} prompts): \"{r['example']}\""
                    for r in rows[:n_sets]]
        return "\n".join([f"# Text heads on wordings never trained ({args.items} prompts)",
                          "", f"`{command}`", "", *table, "", "Examples:", *examples, ""])
    write_part("wording", {"machine": machine_info(), "items": args.items, "rows": rows},
               command_line("wording", argv), args.results_dir, markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
