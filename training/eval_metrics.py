"""Pixel-space metrics of `adgen eval` that need no learned model.

identity        rank of the true concept when a generated image is compared with every
                concept's real image composited on the same background colour: images
                area-downsampled to 32 px, the generated one shifted by up to `shift` px
                (at 32 px) in x and y, squared distance, best shift. Real images score 1.0.
bg_accuracy     background colour read where the real image's alpha is empty (median of
                those pixels -> nearest palette colour); border pixels when the emoji
                covers everything.
grid_energy     share of the non-DC spectral energy of the grey image on the rows and
                columns of the 2, 4 and 8 pixel periods (what nearest/transposed-conv
                upsampling paints); the generated / real ratio is the grid-artefact figure.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from adgen.captions import COLOR_NAMES, border_color, composite, nearest_color

ID_SIZE = 32
GRID_PERIODS = (2, 4, 8)


def _down(images_u8: np.ndarray) -> torch.Tensor:
    """uint8 [N, 64, 64, 3] -> float32 [N, 3, 32, 32] in [0, 1] (2x2 area mean)."""
    x = torch.from_numpy(images_u8).permute(0, 3, 1, 2).float().div(255.0)
    return F.avg_pool2d(x, x.shape[-1] // ID_SIZE)


def _shifted(x: torch.Tensor, shift: int) -> torch.Tensor:
    """[N, C, H, W] -> [N, S, C*H*W], every (dy, dx) in [-shift, shift]^2, edge-replicated."""
    pad = F.pad(x, (shift,) * 4, mode="replicate")
    h, w = x.shape[-2:]
    views = [pad[:, :, dy:dy + h, dx:dx + w] for dy in range(2 * shift + 1)
             for dx in range(2 * shift + 1)]
    return torch.stack(views, 1).flatten(2)


def identity_ranks(gen_u8: np.ndarray, concept: np.ndarray, color: np.ndarray,
                   rgba: np.ndarray, shift: int = 2) -> np.ndarray:
    """0-based rank of the true concept among all concepts, per item (0 = nearest)."""
    ranks = np.empty(len(concept), dtype=np.int64)
    for k in np.unique(color):
        rows = np.nonzero(color == k)[0]
        refs = _down(composite(rgba, COLOR_NAMES[int(k)])).flatten(1)        # [N, D]
        gen = _shifted(_down(gen_u8[rows]), shift)                           # [n, S, D]
        d = (gen.pow(2).sum(-1, keepdim=True) - 2.0 * gen @ refs.T
             + refs.pow(2).sum(-1)[None, None])                              # [n, S, N]
        best = d.min(1).values                                               # [n, N]
        own = best[torch.arange(len(rows)), torch.from_numpy(concept[rows])]
        ranks[rows] = (best < own[:, None]).sum(1).numpy()
    return ranks


def identity_scores(ranks: np.ndarray) -> dict[str, float]:
    return {"top1": float(np.mean(ranks < 1)), "top5": float(np.mean(ranks < 5)),
            "median_rank": float(np.median(ranks))}


def bg_accuracy(images_u8: np.ndarray, concept: np.ndarray, color: np.ndarray,
                rgba: np.ndarray) -> float:
    hits = []
    for img, c, k in zip(images_u8, concept, color):
        empty = rgba[c, :, :, 3] == 0
        if empty.sum() >= 16:
            read = nearest_color(np.median(img[empty].astype(np.float32), axis=0))
        else:
            read = border_color(img)
        hits.append(read == COLOR_NAMES[int(k)])
    return float(np.mean(hits))


def grid_energy(images_u8: np.ndarray) -> float:
    """Mean share of spectral energy on the 2/4/8-pixel period rows and columns."""
    grey = images_u8.astype(np.float32).mean(-1)                             # [N, H, W]
    grey -= grey.mean(axis=(1, 2), keepdims=True)
    power = np.abs(np.fft.fft2(grey)) ** 2
    n = grey.shape[-1]
    freqs = sorted({(n // p) % n for p in GRID_PERIODS} | {(-n // p) % n for p in GRID_PERIODS})
    mask = np.zeros((n, n), dtype=bool)
    mask[freqs, :] = True
    mask[:, freqs] = True
    mask[0, 0] = False
    total = power.sum(axis=(1, 2)) + 1e-9
    return float((power[:, mask].sum(1) / total).mean())

