"""How far the concept's own drawings carry a held-out (concept, family) cell, scored by the
family evaluation's own reader (adgen.training.eval_composer.Scorer) on the real drawings,
no model in between: the front any filler built from the other cells moves along.

Usage:
  python -m benchmarks.held_out_baselines                       # data/families64, ~1 min
  python -m benchmarks.held_out_baselines --data data/families64 --results-dir out/

Every candidate is an RGBA picture for each held-out cell (c, f), built only from trained
cells, composited on a random palette colour per cell and scored like `adgen eval
--families`' held-out row (family: which of c's three real drawings it is nearest to;
identity: whether c is the nearest concept among every cell):

  copies       c's twemoji drawing; c's other non-twemoji drawing; their mixes
  analogy      c's twemoji drawing + alpha x the mean (target - twemoji) of the k concepts
               nearest to c in twemoji pixels (what `--held-out-fill analogy` does to latents)
  neighbour    the target-family drawing of the concept nearest to c in its two trained
               families, as it is and edited by beta x (c - neighbour) in those families
  warp         a geometric analogy (adgen.training.warp_fill.warp_targets): the smooth field
               that bends the neighbour's twemoji drawing into its target-family drawing,
               applied to c's twemoji drawing; then the neighbour's colour change and
               gamma x what the warp left over (the neighbour's target - its bent twemoji)

With --oracle, rows that read the held-out drawing itself (no filler may; they say what one
would have to know, ~8 min more):

  oracle field   c's twemoji drawing bent by the smooth field fitted onto the unseen drawing
                 (a 4x4 control grid, or the warp fill's full 16x16), alone and with the unseen
                 drawing's colour statistics (per-channel mean and spread)
  oracle pick    the warp fill with, instead of the nearest concept, whichever of the K
                 nearest concepts' fields (8x8 grid) brings c's drawing closest to the unseen
                 one: how far choosing the neighbour better could go

Premultiplied RGBA in [0, 1]; distances at 32 px like the scorer's. Writes
<results>/<machine>/held_out_baselines.{json,md}.
"""
from __future__ import annotations

import argparse
import sys

import numpy as np
import torch
import torch.nn.functional as F

from adgen.captions import COLOR_NAMES, composite
from adgen.training.eval_composer import Items, Scorer
from adgen.training.families import load_families
from adgen.training.warp_fill import (WARP_LEVELS, colour_transfer, fit_warp, neighbours,
                                      premultiplied, warp, warp_targets)
from benchmarks.common import command_line, machine_info, md_table, write_part

BARS = {"family": 0.60, "identity": 0.40}


def to_u8(x: torch.Tensor) -> np.ndarray:
    """float [N, 4, 64, 64] premultiplied -> uint8 [N, 64, 64, 4] straight alpha."""
    a = x[:, 3:].clamp(0, 1)
    rgb = (x[:, :3] / a.clamp_min(1e-3)).clamp(0, 1)
    return (torch.cat([rgb, a], 1).permute(0, 2, 3, 1) * 255).round().byte().numpy()


class Baselines:
    def __init__(self, data: str, seed: int = 0):
        self.ds = load_families(data)
        self.scorer = Scorer(self.ds)
        self.mask = self.ds.train_mask()                                   # [C, F]
        cells = np.argwhere(~self.mask)
        self.c, self.f = cells[:, 0], cells[:, 1]
        self.other = np.where(self.f == 1, 2, 1)  # the non-twemoji family not asked for
        self.colors = np.random.default_rng(seed).integers(len(COLOR_NAMES), size=len(cells))
        self.x = premultiplied(self.ds.images)                             # [C, F, 4, 64, 64]
        self.x32 = F.avg_pool2d(self.x.flatten(0, 1), 2).view(*self.x.shape[:2], -1)

    def score(self, rgba_u8: np.ndarray) -> dict:
        items = Items([""] * len(self.c), self.c, self.f, self.colors,
                      np.full(len(self.c), -1))
        imgs = np.stack([composite(r, COLOR_NAMES[k]) for r, k in zip(rgba_u8, self.colors)])
        s = self.scorer.score(imgs, items)
        return {"family": float(np.mean(s["family"] == self.f)),
                "identity": float(np.mean(s["rank"] < 1)),
                "identity_top5": float(np.mean(s["rank"] < 5))}

    def analogy(self, k: int, alpha: float) -> torch.Tensor:
        out = []
        for ci, fi in zip(self.c, self.f):
            pool = np.nonzero(self.mask[:, fi] & self.mask[:, 0])[0]
            pool = pool[pool != ci]
            d = (self.x32[pool, 0] - self.x32[ci, 0]).pow(2).sum(1)
            near = pool[d.topk(min(k, len(pool)), largest=False).indices.numpy()]
            out.append(self.x[ci, 0] + alpha * (self.x[near, fi] - self.x[near, 0]).mean(0))
        return torch.stack(out)

    def rows(self) -> list[dict]:
        x, c, f, o = self.x, self.c, self.f, self.other
        cands = {"real drawing (ceiling)": x[c, f],
                 "twemoji drawing of the concept": x[c, 0],
                 "its other non-twemoji drawing": x[c, o]}
        for w in (0.3, 0.5, 0.7):
            cands[f"mix twemoji {w} / other {1 - w:.1f}"] = w * x[c, 0] + (1 - w) * x[c, o]
        for k in (1, 2, 4, 8):
            for alpha in (1.0, 1.5):
                cands[f"analogy k {k}, alpha {alpha}"] = self.analogy(k, alpha)
        n = neighbours(self.x32, self.mask, c, f)[:, 0]
        cands["neighbour's drawing in the target family"] = x[n, f]
        for beta in (0.5, 1.0):
            cands[f"neighbour + {beta} x (concept - neighbour)"] = x[n, f] + beta * 0.5 * (
                (x[c, 0] - x[n, 0]) + (x[c, o] - x[n, o]))
        w = warp_targets(x, self.mask, c, f)  # adgen.training.warp_fill: --held-out-fill warp
        cands["warp: twemoji bent like the neighbour's drawings"] = w["bent"]
        cands["warp + the neighbour's colour change (--held-out-fill warp)"] = w["recoloured"]
        for gamma in (0.25, 0.5):
            cands[f"warp + colour change + {gamma} x what the warp left"] = \
                w["recoloured"] + gamma * (w["neighbour"] - w["neighbour_bent"])
        return self.scored(cands)

    def scored(self, cands: dict) -> list[dict]:
        return [{"candidate": name, **self.score(to_u8(v.clamp(0, 1)))}
                for name, v in cands.items()]

    def oracle_rows(self, k: int = 30) -> list[dict]:
        """Rows that read the unseen drawing x[c, f] (module docstring: --oracle)."""
        x, c, f = self.x, self.c, self.f
        src, truth = x[c, 0], x[c, f]
        cands = {}
        for levels, grid in ((WARP_LEVELS[:1], "4x4"), (WARP_LEVELS, "16x16")):
            bent = warp(src, fit_warp(src, truth, levels=levels))
            cands[f"oracle field ({grid}): twemoji bent onto the unseen drawing"] = bent
            cands[f"oracle field ({grid}) + the unseen drawing's colour statistics"] = \
                colour_transfer(bent, bent, truth)
        near = neighbours(self.x32, self.mask, c, f, k=k)                  # [cells, k]
        pairs = sorted({(int(n), int(fi)) for row, fi in zip(near, f) for n in row})
        pn, pf = (np.array(v) for v in zip(*pairs))
        fields = fit_warp(x[pn, 0], x[pn, pf], levels=WARP_LEVELS[:2])     # [pairs, 2, 8, 8]
        index = {p: i for i, p in enumerate(pairs)}
        best, best_d = None, None
        for j in range(k):
            n = near[:, j]
            fld = fields[[index[(int(a), int(b))] for a, b in zip(n, f)]]
            v = colour_transfer(warp(src, fld), warp(x[n, 0], fld), x[n, f])
            d = (F.avg_pool2d(v, 2) - F.avg_pool2d(truth, 2)).pow(2).flatten(1).sum(1)
            if best is None:
                best, best_d = v, d
            else:
                closer = d < best_d
                best[closer], best_d = v[closer], torch.minimum(d, best_d)
        cands[f"oracle pick: the best of the {k} nearest concepts' fields"] = best
        return self.scored(cands)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default="data/families64")
    ap.add_argument("--results-dir", default="benchmarks/results")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--oracle", action="store_true",
                    help="add the rows that read the unseen drawing (~8 min more)")
    args = ap.parse_args(argv)
    b = Baselines(args.data, args.seed)
    rows = b.rows() + (b.oracle_rows() if args.oracle else [])
    table = md_table(["candidate (held-out cells, real drawings)", "family", "identity top-1",
                      "identity top-5"],
                     [[r["candidate"], f"{r['family']:.3f}", f"{r['identity']:.3f}",
                       f"{r['identity_top5']:.3f}"] for r in rows], "-rrr")
    print("\n".join(table))

    def markdown(payload: dict, command: str) -> str:
        return "\n".join([f"# Held-out cells from the concept's other drawings "
                          f"({payload['cells']} cells)", "", f"`{command}`", "", *table, "",
                          f"Bars of the model: family >= {BARS['family']}, identity top-1 "
                          f">= {BARS['identity']}.", ""])
    write_part("held_out_baselines", {"machine": machine_info(), "cells": len(b.c),
                                      "bars": BARS, "rows": rows},
               command_line("held_out_baselines", argv), args.results_dir, markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
