"""Evaluation of a generator against the design-family dataset (`adgen eval --families`).

Every score reads the picture, never the model's own choices:

- identity: the nearest real drawing among all concepts x families on the same background
  colour (32 px, shifts of up to 2 px forgiven), scored by concept; top-1 and top-5.
- family: which of the true concept's real drawings the image is nearest to.
- background: the palette colour read where the real drawing is empty (border otherwise).
- object colour: the object colour nearest to the median foreground pixel, where the
  foreground is every pixel that differs from the requested background.
- identity by edges: identity on luminance gradient magnitudes, so a recoloured object is
  still matched by its outlines (top-5).
- diversity: mean pairwise pixel MAE between the seeds of one prompt, beside the same
  figure for the real drawings of the three families.

Rows: no family named (4 seeds per prompt), family named on trained cells, family named on
held-out cells, object colour + background, and the same prompts in a family wording never
trained on. The real drawings are scored as the ceiling row where that applies.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from adgen.captions import (CANONICAL_TEMPLATE, COLOR_NAMES, OBJECT_COLORS, PALETTE, caption,
                            colors_in, composite, family_phrase)
from adgen.latents import derive_seed, seeds_to_z
from adgen.training.eval_metrics import _down, _shifted, bg_accuracy
from adgen.training.families import FamilyDataset, load_families
from adgen.training.checkpoint import load_generator
from adgen.training.stages import encode_cached
from adgen.training.train_composer import FAMILY_PARAPHRASE

SHIFT = 1  # at 32 px: 2 px at 64


@dataclass(frozen=True)
class Items:
    """Prompts with what they ask for: concept [n], family [n] (-1: none named), colour [n]
    (background), object colour [n] (-1: the concept's own)."""
    texts: list[str]
    concept: np.ndarray
    family: np.ndarray
    color: np.ndarray
    obj: np.ndarray


class Scorer:
    """Nearest-drawing scores against every (concept, family) cell of a dataset."""

    def __init__(self, ds: FamilyDataset):
        self.ds = ds
        c, f = ds.images.shape[:2]
        self.c, self.f = c, f
        self.flat = ds.images.reshape(c * f, *ds.images.shape[2:])       # [C*F, 64, 64, 4]
        self._refs: dict[tuple[int, str], torch.Tensor] = {}

    def refs(self, color: int, kind: str = "pixels") -> torch.Tensor:
        key = (color, kind)
        if key not in self._refs:
            x = _down(composite(self.flat, COLOR_NAMES[color]))
            self._refs[key] = (edges(x) if kind == "edges" else x).flatten(1)
        return self._refs[key]

    def distances(self, images_u8: np.ndarray, color: np.ndarray, kind: str = "pixels"):
        """[n, C, F] squared distances, the best shift per cell."""
        out = torch.empty(len(images_u8), self.c * self.f)
        for k in np.unique(color):
            rows = np.nonzero(color == k)[0]
            refs = self.refs(int(k), kind)
            x = _down(images_u8[rows])
            x = edges(x) if kind == "edges" else x
            gen = _shifted(x, SHIFT)                                          # [n, S, D]
            d = (gen.pow(2).sum(-1, keepdim=True) - 2.0 * gen @ refs.T
                 + refs.pow(2).sum(-1)[None, None])
            out[torch.from_numpy(rows)] = d.min(1).values
        return out.view(-1, self.c, self.f)

    def score(self, images_u8: np.ndarray, items: Items, kind: str = "pixels") -> dict:
        d = self.distances(images_u8, items.color, kind)
        per_concept = d.min(2).values                                         # [n, C]
        idx = torch.arange(len(items.concept))
        own = per_concept[idx, torch.from_numpy(items.concept)]
        rank = (per_concept < own[:, None]).sum(1).numpy()
        fam = d[idx, torch.from_numpy(items.concept)].argmin(1).numpy()       # [n]
        return {"rank": rank, "family": fam}


def edges(x: torch.Tensor) -> torch.Tensor:
    """[N, 3, H, W] -> [N, 1, H, W] luminance gradient magnitude (recolour-invariant shape)."""
    lum = (x * torch.tensor([0.299, 0.587, 0.114])[None, :, None, None]).sum(1, keepdim=True)
    gx = F.pad(lum[..., :, 1:] - lum[..., :, :-1], (0, 1, 0, 0))
    gy = F.pad(lum[..., 1:, :] - lum[..., :-1, :], (0, 0, 0, 1))
    mag = (gx.pow(2) + gy.pow(2)).sqrt()
    return mag / mag.flatten(1).norm(dim=1).clamp_min(1e-6)[:, None, None, None]


def object_color_read(images_u8: np.ndarray, alphas: np.ndarray) -> list[str]:
    """The object colour nearest to the median pixel of the object: where the real drawing
    (alphas uint8[n, 64, 64], the family the image is nearest to) is opaque, eroded by 2 px
    so a seed's shift does not pull in background. A background painted in the object's
    colour therefore does not count."""
    table = np.array([PALETTE[c] for c in OBJECT_COLORS], dtype=np.float32)
    solid = torch.from_numpy((alphas > 200).astype(np.float32))[:, None]
    inner = (-F.max_pool2d(-solid, 5, stride=1, padding=2))[:, 0].numpy() > 0.5
    out = []
    for img, region in zip(images_u8.astype(np.float32), inner):
        if region.sum() < 16:
            out.append("")
            continue
        med = np.median(img[region], axis=0)
        out.append(OBJECT_COLORS[int(np.argmin(((table - med) ** 2).sum(1)))])
    return out


# --------------------------------------------------------------------------- items

def make_items(ds: FamilyDataset, n: int, seed: int, kind: str,
               wording: str = "trained") -> Items:
    """kind: 'unnamed' | 'trained' | 'held_out' | 'object'. wording 'paraphrase' uses a
    family phrase never trained on."""
    rng = np.random.default_rng(seed)
    fams = ds.families
    mask = ds.train_mask()
    if kind == "held_out":
        cells = np.argwhere(~mask)
    elif kind == "trained":
        cells = np.argwhere(mask)
    else:
        cells = np.stack([np.arange(len(ds.records)), np.full(len(ds.records), -1)], 1)
    if kind == "object":
        ok = [i for i, r in enumerate(ds.records)
              if not colors_in(" ".join([r["name"], *r.get("aliases", [])]))]
        cells = cells[ok]
    pick = cells[rng.choice(len(cells), size=min(n, len(cells)), replace=False)]
    texts, colors, objs = [], [], []
    for c, f in pick:
        name = ds.records[c]["name"]
        k = int(rng.integers(len(COLOR_NAMES)))
        o = -1
        if kind == "object":
            choices = [i for i, oc in enumerate(OBJECT_COLORS) if oc != COLOR_NAMES[k]]
            o = int(rng.choice(choices))
            name = f"{OBJECT_COLORS[o]} {name}"
        text = caption(name, COLOR_NAMES[k], CANONICAL_TEMPLATE)
        if f >= 0:
            phrase = (FAMILY_PARAPHRASE.format(f=fams[f]) if wording == "paraphrase"
                      else family_phrase(fams[f]))
            text = f"{text}, {phrase}"
        texts.append(text)
        colors.append(k)
        objs.append(o)
    return Items(texts, pick[:, 0].copy(), pick[:, 1].copy(), np.array(colors), np.array(objs))


@torch.no_grad()
def render(module, texts: list[str], seeds: list[int], z_dim: int, batch: int = 256,
           tag: str = "eval-families") -> np.ndarray:
    """uint8 [n, 64, 64, 3] for prompts and seeds, through the serving text encoder."""
    emb = torch.from_numpy(encode_cached(texts, tag, progress=False))
    z = torch.from_numpy(seeds_to_z(seeds, z_dim))
    out = []
    for i in range(0, len(texts), batch):
        x = module(emb[i:i + batch], z[i:i + batch])
        out.append(((x.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy())
    return np.concatenate(out)


def any_family(ds: FamilyDataset) -> np.ndarray:
    """uint8[C, 64, 64, 4] whose alpha is the most opaque of the concept's drawings: where it
    is empty, no family draws anything, so the background is read there whatever the seed
    picked."""
    out = ds.images[:, 0].copy()
    out[..., 3] = ds.images[..., 3].max(axis=1)
    return out


def real_cells(ds: FamilyDataset, items: Items, families: np.ndarray) -> np.ndarray:
    return np.stack([composite(ds.images[c, f], COLOR_NAMES[k])
                     for c, f, k in zip(items.concept, families, items.color)])


# --------------------------------------------------------------------------- rows

def evaluate_families(module, z_dim: int, ds: FamilyDataset, n_items: int = 400,
                      seed: int = 0, seeds_per_prompt: int = 4) -> dict:
    """Every row of the family evaluation for one generator (module: torch, eval mode)."""
    sc = Scorer(ds)
    out: dict[str, dict] = {}

    # No family named: the seeds of one prompt.
    items = make_items(ds, n_items // seeds_per_prompt, seed, "unnamed")
    runs = [render(module, items.texts, [derive_seed(seed, f"u{i}", k)
                                         for i in range(len(items.texts))], z_dim)
            for k in range(seeds_per_prompt)]
    scores = [sc.score(r, items) for r in runs]
    fam = np.stack([s["family"] for s in scores], 1)                         # [n, seeds]
    div = np.mean([np.abs(runs[i].astype(np.float32) - runs[j]).mean() / 255.0
                   for i in range(len(runs)) for j in range(i + 1, len(runs))])
    reals = [real_cells(ds, items, np.full(len(items.concept), f)).astype(np.float32)
             for f in range(len(ds.families))]
    real_div = np.mean([np.abs(reals[i] - reals[j]).mean() / 255.0
                        for i in range(len(reals)) for j in range(i + 1, len(reals))])
    out["unnamed"] = {
        "prompts": len(items.texts), "seeds": seeds_per_prompt,
        "distinct_families": float(np.mean([len(set(row)) for row in fam])),
        "diversity": float(div), "real_between_family_diversity": float(real_div),
        "diversity_ratio": float(div / real_div),
        "identity_top1": float(np.mean([np.mean(s["rank"] < 1) for s in scores])),
        "identity_top5": float(np.mean([np.mean(s["rank"] < 5) for s in scores])),
        "family_share": {f: float(np.mean(fam == i)) for i, f in enumerate(ds.families)},
    }

    # Family named: trained and held-out cells, trained and never-trained wording.
    for kind, wording in (("trained", "trained"), ("held_out", "trained"),
                          ("held_out", "paraphrase")):
        items = make_items(ds, n_items, seed + 1, kind, wording)
        imgs = render(module, items.texts, [derive_seed(seed, f"n{i}", 0)
                                            for i in range(len(items.texts))], z_dim)
        s = sc.score(imgs, items)
        real = sc.score(real_cells(ds, items, items.family), items)
        out[f"{kind}_{wording}"] = {
            "items": len(items.texts),
            "family_accuracy": float(np.mean(s["family"] == items.family)),
            "identity_top1": float(np.mean(s["rank"] < 1)),
            "identity_top5": float(np.mean(s["rank"] < 5)),
            "real_family_accuracy": float(np.mean(real["family"] == items.family)),
            "real_identity_top1": float(np.mean(real["rank"] < 1)),
            "bg_accuracy": bg_accuracy(imgs, np.arange(len(imgs)), items.color,
                                       ds.images[items.concept, items.family]),
        }

    # Object colour bound to the object, background to the background.
    items = make_items(ds, n_items, seed + 2, "object")
    imgs = render(module, items.texts, [derive_seed(seed, f"o{i}", 0)
                                        for i in range(len(items.texts))], z_dim)
    s_edges = sc.score(imgs, items, kind="edges")
    # The family drawn is found by outlines (the object's colours were changed on purpose).
    read = object_color_read(imgs, ds.images[items.concept, s_edges["family"], ..., 3])
    out["object_color"] = {
        "items": len(items.texts),
        "hue_accuracy": float(np.mean([r == OBJECT_COLORS[o] for r, o in zip(read, items.obj)])),
        "bg_accuracy": bg_accuracy(imgs, items.concept, items.color, any_family(ds)),
        "identity_edges_top5": float(np.mean(s_edges["rank"] < 5)),
        "identity_edges_top1": float(np.mean(s_edges["rank"] < 1)),
    }
    return out


def _cells(res: dict) -> list[tuple[str, str, str]]:
    """(row label, generated, real drawings) for one result."""
    u, t, h = res["unnamed"], res["trained_trained"], res["held_out_trained"]
    hp, o = res["held_out_paraphrase"], res["object_color"]
    return [
        ("no family named: distinct families in 4 seeds", f"{u['distinct_families']:.2f}",
         "3.00"),
        ("no family named: pixel diversity (x real between-family)",
         f"{u['diversity']:.3f} ({u['diversity_ratio']:.2f}x)",
         f"{u['real_between_family_diversity']:.3f}"),
        ("no family named: identity top-1", f"{u['identity_top1']:.3f}", "1.000"),
        ("family named, trained cells: family acc / identity top-1",
         f"{t['family_accuracy']:.3f} / {t['identity_top1']:.3f}",
         f"{t['real_family_accuracy']:.3f} / {t['real_identity_top1']:.3f}"),
        ("held-out cells: family acc / identity top-1",
         f"{h['family_accuracy']:.3f} / {h['identity_top1']:.3f}",
         f"{h['real_family_accuracy']:.3f} / {h['real_identity_top1']:.3f}"),
        ("held-out cells, family wording never trained: family acc / identity top-1",
         f"{hp['family_accuracy']:.3f} / {hp['identity_top1']:.3f}", "–"),
        ("object colour: colour acc / background acc / identity by edges top-5",
         f"{o['hue_accuracy']:.3f} / {o['bg_accuracy']:.3f} / {o['identity_edges_top5']:.3f}",
         "–"),
    ]


def format_rows(results: dict[str, dict]) -> str:
    """A Markdown table: one column per generator (name -> result), then the real drawings."""
    names = list(results)
    cols = {n: _cells(r) for n, r in results.items()}
    lines = ["| row | " + " | ".join(names) + " | real drawings |",
             "|---|" + "---|" * (len(names) + 1)]
    for i, (label, _, real) in enumerate(cols[names[0]]):
        lines.append(f"| {label} | " + " | ".join(cols[n][i][1] for n in names)
                     + f" | {real} |")
    return "\n".join(lines)


def evaluate_checkpoints(checkpoints: dict[str, str], data: str, n_items: int,
                         seed: int) -> dict[str, dict]:
    """name -> evaluate_families of each checkpoint folder, on one dataset and item draw."""
    ds = load_families(data)
    out = {}
    for name, path in checkpoints.items():
        loaded = load_generator(path)
        out[name] = evaluate_families(loaded.module, loaded.z_dim, ds, n_items, seed)
        out[name]["checkpoint"] = {"path": str(path), "sha256": loaded.sha256,
                                   "arch": loaded.arch}
    return out
