"""DiffAugment restricted to geometry: random translation and cutout, never colour.

Colour is a condition (the background colour named in the caption), so brightness,
saturation or contrast jitter would teach D to ignore it. Both ops are differentiable in
the image and applied to real and fake batches alike, before D.
"""
from __future__ import annotations

import torch


def translate(x: torch.Tensor, ratio: float = 0.125, generator=None) -> torch.Tensor:
    """Shift each image by up to ratio * size pixels; edges are replicated, so the
    border (which carries the background colour) keeps its colour. x: [B, C, H, W]."""
    b, _, h, w = x.shape
    sy, sx = int(h * ratio + 0.5), int(w * ratio + 0.5)
    if sy == 0 and sx == 0:
        return x
    dy = torch.randint(-sy, sy + 1, (b, 1), generator=generator, device=x.device)
    dx = torch.randint(-sx, sx + 1, (b, 1), generator=generator, device=x.device)
    ys = (torch.arange(h, device=x.device)[None, :] + dy).clamp_(0, h - 1)  # [B, H]
    xs = (torch.arange(w, device=x.device)[None, :] + dx).clamp_(0, w - 1)  # [B, W]
    bi = torch.arange(b, device=x.device)[:, None, None]
    # Advanced indexing gives [B, H, W, C]; permute back to [B, C, H, W].
    return x.permute(0, 2, 3, 1)[bi, ys[:, :, None], xs[:, None, :]].permute(0, 3, 1, 2)


def cutout(x: torch.Tensor, ratio: float = 0.5, generator=None) -> torch.Tensor:
    """Zero one random (ratio*H) x (ratio*W) square per image, allowed to hang off the edge."""
    b, _, h, w = x.shape
    ch, cw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    cy = torch.randint(0, h + (1 - ch % 2), (b, 1, 1), generator=generator, device=x.device)
    cx = torch.randint(0, w + (1 - cw % 2), (b, 1, 1), generator=generator, device=x.device)
    ys = torch.arange(h, device=x.device)[None, :, None]
    xs = torch.arange(w, device=x.device)[None, None, :]
    inside = ((ys - cy + ch // 2) >= 0) & ((ys - cy + ch // 2) < ch) & \
             ((xs - cx + cw // 2) >= 0) & ((xs - cx + cw // 2) < cw)  # [B, H, W]
    return x * (~inside).unsqueeze(1).to(x.dtype)


def diff_augment(x: torch.Tensor, policy: str = "translation,cutout",
                 generator=None) -> torch.Tensor:
    """Applies the comma-separated policy; only geometric ops exist here by design."""
    ops = {"translation": translate, "cutout": cutout}
    for name in filter(None, (p.strip() for p in policy.split(","))):
        if name not in ops:
            raise ValueError(f"unknown DiffAugment op {name!r}; colour ops are not offered "
                             "(colour is a condition)")
        x = ops[name](x, generator=generator)
    return x
