"""The held-out fill by geometric analogy: a held-out cell (c, f) is drawn as c's twemoji
drawing bent the way the drawings of c's nearest concept n bend from twemoji to family f,
recoloured the way n's colours change, then found in the decoder's latent space.

    field  = fit_warp(x[n, twemoji], x[n, f])          smooth displacement, coarse to fine
    target = colour_transfer(warp(x[c, twemoji], field), warp(x[n, twemoji], field), x[n, f])
    latent = argmin_z |decode(z) - target| (composited on palette colours), from L[c, twemoji]

Only trained cells are read. `python -m benchmarks.held_out_baselines` scores the pictures
(before the decoder) with `adgen eval --families`' reader beside the pixel analogies.
Images here are premultiplied RGBA float [N, 4, 64, 64] in [0, 1].
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from adgen.training.layered import composite

# fit_warp: control grids coarse to fine (side, Gaussian blur sigma in px, Adam steps each).
WARP_LEVELS = ((4, 3.0, 120), (8, 1.5, 120), (16, 0.7, 120))
WARP_SMOOTH = 0.2  # weight of the field's squared differences between control points


def premultiplied(images_u8: np.ndarray) -> torch.Tensor:
    """uint8 [..., 64, 64, 4] -> float [..., 4, 64, 64] premultiplied, in [0, 1]."""
    x = torch.from_numpy(np.asarray(images_u8)).float().movedim(-1, -3) / 255.0
    return torch.cat([x[..., :3, :, :] * x[..., 3:, :, :], x[..., 3:, :, :]], -3)


def blur(img: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of [N, C, H, W] (edges replicated)."""
    r = 3 * int(sigma + 1)
    k = torch.exp(-torch.arange(-r, r + 1).float() ** 2 / (2 * sigma * sigma))
    k = (k / k.sum()).repeat(img.shape[1], 1, 1, 1)  # [C, 1, 1, 2r+1]
    img = F.conv2d(F.pad(img, (r, r, 0, 0), mode="replicate"), k, groups=img.shape[1])
    return F.conv2d(F.pad(img, (0, 0, r, r), mode="replicate"), k.transpose(2, 3),
                    groups=img.shape[1])


def warp(img: torch.Tensor, field: torch.Tensor) -> torch.Tensor:
    """img [N, C, H, W] resampled at identity + field (control grid [N, 2, g, g], in
    grid_sample's [-1, 1] units, bilinearly upsampled)."""
    n, _, h, w = img.shape
    grid = F.affine_grid(torch.eye(2, 3).expand(n, 2, 3), (n, 1, h, w), align_corners=False)
    dense = F.interpolate(field, size=(h, w), mode="bilinear", align_corners=True)
    return F.grid_sample(img, grid + dense.permute(0, 2, 3, 1), align_corners=False)


def fit_warp(src: torch.Tensor, dst: torch.Tensor, smooth: float = WARP_SMOOTH,
             levels: tuple = WARP_LEVELS) -> torch.Tensor:
    """The smooth field with warp(src, field) ~ dst: squared error plus `smooth` x the
    field's squared differences, Adam, coarse to fine on blurred images (`levels`: a prefix
    of WARP_LEVELS stops at a coarser grid). -> [N, 2, side, side] of the last level."""
    field = torch.zeros(len(src), 2, 2, 2)
    for side, sigma, steps in levels:
        field = F.interpolate(field, size=(side, side), mode="bilinear",
                              align_corners=True).requires_grad_(True)
        opt = torch.optim.Adam([field], lr=0.02)
        s, d = blur(src, sigma), blur(dst, sigma)
        for _ in range(steps):
            tv = field.diff(dim=2).pow(2).mean() + field.diff(dim=3).pow(2).mean()
            loss = (warp(s, field) - d).pow(2).mean() + smooth * tv
            opt.zero_grad()
            loss.backward()
            opt.step()
        field = field.detach()
    return field


def colour_transfer(img: torch.Tensor, ref_src: torch.Tensor,
                    ref_dst: torch.Tensor) -> torch.Tensor:
    """img with the per-channel colour change ref_src -> ref_dst (alpha-weighted mean and
    spread of straight colour; the spread ratio kept within 0.5-2)."""
    def stats(x):
        w = x[:, 3:]
        rgb = x[:, :3] / w.clamp_min(1e-3)
        total = w.sum((2, 3), keepdim=True).clamp_min(1e-3)
        mean = (rgb * w).sum((2, 3), keepdim=True) / total
        spread = (((rgb - mean) ** 2 * w).sum((2, 3), keepdim=True) / total).sqrt()
        return mean, spread.clamp_min(0.02)
    (ms, ss), (md, sd) = stats(ref_src), stats(ref_dst)
    a = img[:, 3:]
    rgb = (img[:, :3] / a.clamp_min(1e-3) - ms) * (sd / ss).clamp(0.5, 2) + md
    return torch.cat([rgb.clamp(0, 1) * a, a], 1)


def neighbours(x32: torch.Tensor, mask: np.ndarray, c: np.ndarray, f: np.ndarray,
               k: int = 1) -> np.ndarray:
    """For each held-out cell (c, f): the k concepts nearest to c over c's trained families
    (pixels x32 [C, F, D]), each trained in f and in those families. -> [cells, k]."""
    out = []
    for ci, fi in zip(c, f):
        seen = np.nonzero(mask[ci])[0]
        pool = np.nonzero(mask[:, fi] & mask[:, seen].all(1))[0]
        pool = pool[pool != ci]
        d = sum((x32[pool, s] - x32[ci, s]).pow(2).sum(1) for s in seen)
        out.append(pool[d.topk(min(k, len(pool)), largest=False).indices.numpy()])
    return np.array(out)


def warp_targets(x: torch.Tensor, mask: np.ndarray, c: np.ndarray, f: np.ndarray,
                 source: int = 0) -> dict[str, torch.Tensor]:
    """The geometric analogy's pictures for cells (c, f), x [C, F, 4, 64, 64] premultiplied,
    from family `source` (twemoji). -> {"bent", "recoloured", "neighbour", "neighbour_bent"}."""
    x32 = F.avg_pool2d(x.flatten(0, 1), 2).view(*x.shape[:2], -1)
    n = neighbours(x32, mask, c, f)[:, 0]
    field = fit_warp(x[n, source], x[n, f])
    bent, neighbour_bent = warp(x[c, source], field), warp(x[n, source], field)
    return {"bent": bent, "neighbour_bent": neighbour_bent, "neighbour": x[n, f],
            "recoloured": colour_transfer(bent, neighbour_bent, x[n, f])}


def fit_latents(decoder, targets: torch.Tensor, init: torch.Tensor, palette: torch.Tensor,
                steps: int, gen: torch.Generator, bounds: tuple | None = None,
                lr: float = 0.05, batch: int = 64) -> torch.Tensor:
    """Latents [N, ch, 8, 8] whose decoded drawings match targets (premultiplied RGBA), by
    L1 of both composited on random palette colours, Adam from `init`; decoder frozen.
    bounds: (low, high) [ch, 8, 8] each latent is kept within after every step."""
    for p in decoder.parameters():
        p.requires_grad_(False)
    out = init.clone()
    for lo in range(0, len(init), batch):
        z = init[lo:lo + batch].clone().requires_grad_(True)
        t = targets[lo:lo + batch]
        opt = torch.optim.Adam([z], lr=lr)
        for _ in range(steps):
            bg = palette[torch.randint(0, len(palette), (len(z),), generator=gen)]
            fg, alpha = decoder(z)
            loss = (composite(fg, alpha, bg) - composite(t[:, :3] / t[:, 3:].clamp_min(1e-3),
                                                         t[:, 3:], bg)).abs().mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            if bounds is not None:
                with torch.no_grad():
                    z.copy_(torch.maximum(torch.minimum(z, bounds[1]), bounds[0]))
        out[lo:lo + batch] = z.detach()
    return out


def latent_bounds(trained: torch.Tensor) -> tuple:
    """(low, high) [ch, 8, 8]: each latent element's range over the trained cells
    [N, ch, 8, 8]. Unbounded, the fit drifted to latents 1.4x the trained cells' spread (the
    translator's fills stay in range)."""
    return trained.amin(0), trained.amax(0)


def warp_fill(decoder, codebook: torch.Tensor, mask: torch.Tensor, images_u8: np.ndarray,
              palette: torch.Tensor, latent_ch: int, steps: int,
              gen: torch.Generator) -> torch.Tensor:
    """Codebook [C, F, D] with every untrained cell set to the latent of its geometric
    analogy (warp_targets' "recoloured"), fit through the frozen decoder from the concept's
    twemoji latent."""
    out = codebook.clone()
    todo = (~mask).nonzero()
    if not len(todo):
        return out
    c, f = todo[:, 0].numpy(), todo[:, 1].numpy()
    x = premultiplied(images_u8)
    targets = warp_targets(x, mask.numpy(), c, f)["recoloured"]
    init = codebook[todo[:, 0], 0].view(-1, latent_ch, 8, 8)
    lat = fit_latents(decoder, targets, init, palette, steps, gen, latent_bounds(
        codebook[mask].view(-1, latent_ch, 8, 8)))
    out[todo[:, 0], todo[:, 1]] = lat.flatten(1)
    return out
