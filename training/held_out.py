"""Stage 2 of the composer's training: filling the held-out (concept, family) cells of the
codebook from each concept's trained cells.

- `analogy_fill`: the concept's latent in a trained family plus the family direction of its
  nearest concepts; no training, seconds.
- `train_translator` + `fill_cells`: a FamilyTranslator trained to predict a cell's latent
  from the concept's other cells (latent L1, then decoded-image L1); it regresses to a
  blurred mean.
A third fill works in pixels: a geometric analogy (adgen.training.warp_fill).

Codebooks are [C, F, latent_dim] (concept-major), masks bool[C, F] (True = trained).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from adgen.errors import AdgenError
from adgen.training.composer import FamilyTranslator
from adgen.training.layered import composite


class HeldOutError(AdgenError):
    """Held-out cells that cannot be filled."""


@dataclass
class ImageTarget:
    """What the translator's image phase decodes through and compares with: the frozen
    decoder, the real drawings uint8[C, F, 64, 64, 4] and the background palette [K, 3]."""
    decoder: torch.nn.Module
    images: np.ndarray
    palette: torch.Tensor
    steps: int
    batch: int = 32


def _visible(mask: torch.Tensor, concept: torch.Tensor, target: torch.Tensor,
             gen: torch.Generator) -> torch.Tensor:
    """The cells the translator may read [B, F]: the concept's trained cells less the target,
    and half the time one more, so one other drawing is enough."""
    b, f = len(concept), mask.shape[1]
    avail = mask[concept].clone()
    avail[torch.arange(b), target] = False
    extra = torch.randint(0, f, (b,), generator=gen)
    drop = (torch.rand(b, generator=gen) < 0.5) & (avail.sum(1) > 1)
    avail[torch.arange(b)[drop], extra[drop]] = False
    return avail


def train_translator(codebook: torch.Tensor, mask: torch.Tensor, latent_ch: int, steps: int,
                     gen: torch.Generator, batch: int = 128, lr: float = 1e-3,
                     log=None, image: ImageTarget | None = None) -> FamilyTranslator:
    """codebook [C, F, latent_dim] (zeros where not trained), mask bool[C, F] trained cells.

    `steps` of L1 in latent space, then (with `image`) image.steps more where the predicted
    latent is also decoded by the frozen decoder and scored by L1 against the real drawing
    composited on a random palette colour (a latent error the decoder ignores costs nothing,
    one it magnifies costs much)."""
    c, f, _ = codebook.shape
    lat = codebook.view(c, f, latent_ch, 8, 8)
    T = FamilyTranslator(f, latent_ch)
    cells = mask.nonzero()                                                   # [N, 2]
    phases = [("latent", steps, batch)] + ([("image", image.steps, image.batch)]
                                            if image is not None and image.steps else [])
    if image is not None:
        for p in image.decoder.parameters():
            p.requires_grad_(False)
    for phase, n_steps, size in phases:
        base = lr if phase == "latent" else lr / 3        # the image phase fine-tunes
        opt = torch.optim.AdamW(T.parameters(), lr=base, weight_decay=1e-4)
        for step in range(1, n_steps + 1):
            for group in opt.param_groups:
                group["lr"] = base * 0.5 * (1 + math.cos(math.pi * (step - 1) / n_steps))
            pick = cells[torch.randint(0, len(cells), (size,), generator=gen)]
            concept, target = pick[:, 0], pick[:, 1]
            pred = T(lat[concept], _visible(mask, concept, target, gen), target)
            loss = (pred - lat[concept, target]).abs().mean()
            row = {f"{phase}_step": step, "loss_latent": round(loss.item(), 5)}
            if phase == "image":
                rgba = torch.from_numpy(image.images[concept.numpy(), target.numpy()])
                rgba = rgba.permute(0, 3, 1, 2).float() / 255.0
                bg = image.palette[torch.randint(0, len(image.palette), (size,), generator=gen)]
                fg, alpha = image.decoder(pred)
                l_img = (composite(fg, alpha, bg) - composite(rgba[:, :3], rgba[:, 3:], bg)
                         ).abs().mean()
                loss = loss + l_img
                row["loss_image"] = round(l_img.item(), 5)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if log is not None and (step % 200 == 0 or step == n_steps):
                log(row)
    return T.eval()


@torch.no_grad()
def fill_cells(T: FamilyTranslator, codebook: torch.Tensor, mask: torch.Tensor,
               latent_ch: int) -> torch.Tensor:
    """Codebook [C, F, D] with every untrained cell predicted from the concept's trained ones."""
    c, f, d = codebook.shape
    out = codebook.clone()
    todo = (~mask).nonzero()
    if len(todo):
        lat = codebook.view(c, f, latent_ch, 8, 8)
        pred = T(lat[todo[:, 0]], mask[todo[:, 0]], todo[:, 1])
        out[todo[:, 0], todo[:, 1]] = pred.flatten(1)
    return out


@torch.no_grad()
def analogy_fill(codebook: torch.Tensor, mask: torch.Tensor, k: int = 4,
                 alpha: float = 1.5) -> torch.Tensor:
    """Codebook [C, F, D] with every untrained cell (c, f) set to L[c, s] + alpha * mean over
    the k concepts n nearest to c in family s of (L[n, f] - L[n, s]), where s is c's first
    trained family (twemoji, never held out) and n ranges over concepts with both cells
    trained. A family's style is a direction in latent space that differs little between
    similar drawings; alpha > 1 makes up for the mean shrinking it."""
    out = codebook.clone()
    c, f = mask.shape
    source = mask.to(torch.int8).argmax(1)                              # [C]
    for s in range(f):
        for t in range(f):
            todo = ((source == s) & ~mask[:, t] & mask[:, s]).nonzero().squeeze(1)
            pool = (mask[:, t] & mask[:, s]).nonzero().squeeze(1)
            if t == s or not len(todo):
                continue
            if not len(pool):
                raise HeldOutError(f"no concept has both family {s} and {t} trained: "
                                 "nothing to draw an analogy from")
            near = torch.cdist(codebook[todo, s], codebook[pool, s]).topk(
                min(k, len(pool)), largest=False).indices                  # [T, k]
            diff = codebook[pool[near], t] - codebook[pool[near], s]      # [T, k, D]
            out[todo, t] = codebook[todo, s] + alpha * diff.mean(1)
    return out
