"""GAN losses and training tricks, each a small pure function on tensors.

- hinge (default) and BCE (the dcgan baseline) adversarial losses
- matching-aware mismatched pairs: a real image with the caption of another sample in the
  batch (the batch rolled by one) counts as "fake", so D must check text-image agreement
- MA-GP (DF-GAN): gradient penalty on (real image, matching text) pairs, |grad|^p
- EMA of the generator weights, used for samples, checkpoints and the release model
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def mismatched(embedding: torch.Tensor, shift: int = 1) -> torch.Tensor:
    """The batch's captions rolled by `shift`: row i gets the caption of row i - shift.

    embedding: [B, D] -> [B, D]. With B == 1 there is no other caption; the caller skips.
    """
    return torch.roll(embedding, shifts=shift, dims=0)


def d_loss(kind: str, real: torch.Tensor, fake: torch.Tensor,
           mis: torch.Tensor | None) -> torch.Tensor:
    """Discriminator loss from logits [B] on (real, text), (fake, text), (real, wrong text).

    With mismatched pairs the two "fake" terms are averaged (DF-GAN's weighting), so the
    real term and the fake side keep equal weight.
    """
    if kind == "hinge":
        loss_real = F.relu(1.0 - real).mean()
        fakes = [F.relu(1.0 + fake).mean()] + ([F.relu(1.0 + mis).mean()] if mis is not None else [])
    elif kind == "bce":
        loss_real = F.binary_cross_entropy_with_logits(real, torch.ones_like(real))
        fakes = [F.binary_cross_entropy_with_logits(fake, torch.zeros_like(fake))]
        if mis is not None:
            fakes.append(F.binary_cross_entropy_with_logits(mis, torch.zeros_like(mis)))
    else:
        raise ValueError(f"unknown loss {kind!r}")
    return loss_real + sum(fakes) / len(fakes)


def g_loss(kind: str, fake: torch.Tensor) -> torch.Tensor:
    """Generator loss from D's logits [B] on (fake, text)."""
    if kind == "hinge":
        return -fake.mean()
    if kind == "bce":
        return F.binary_cross_entropy_with_logits(fake, torch.ones_like(fake))
    raise ValueError(f"unknown loss {kind!r}")


def ma_gp(discriminator: nn.Module, image: torch.Tensor, embedding: torch.Tensor,
          weight: float = 2.0, power: float = 6.0, embed_scale: float = 1.0) -> torch.Tensor:
    """Matching-aware gradient penalty on real (image, matching text) pairs.

    weight * mean(||(dD/dx, dD/de)||_2 ^ power), the norm taken per sample over the image
    [3, 64, 64] and embedding [384] gradients together. Keeps D smooth around real pairs.
    When D standardises the embedding internally (e_n = (e - mean) / embed_scale), the
    embedding gradient is taken w.r.t. e_n (dD/de_n = embed_scale * dD/de), as in DF-GAN
    where D sees the sentence vector directly.
    """
    image = image.detach().requires_grad_(True)
    embedding = embedding.detach().requires_grad_(True)
    out = discriminator(image, embedding)
    g_img, g_emb = torch.autograd.grad(out.sum(), (image, embedding), create_graph=True)
    g_emb = g_emb * embed_scale
    norm = torch.sqrt(g_img.flatten(1).pow(2).sum(1) + g_emb.pow(2).sum(1) + 1e-12)
    return weight * norm.pow(power).mean()


@torch.no_grad()
def ema_update(ema: nn.Module, model: nn.Module, beta: float, step: int | None = None) -> None:
    """ema <- beta * ema + (1 - beta) * model for parameters; buffers are copied.

    With `step` (updates done so far), beta warms up as min(beta, (1 + step) / (10 + step)),
    so early EMA weights are not dominated by the random init in short runs.
    """
    if step is not None:
        beta = min(beta, (1.0 + step) / (10.0 + step))
    ema_params = list(ema.parameters())
    params = list(model.parameters())
    torch._foreach_lerp_(ema_params, params, 1.0 - beta)
    for b_ema, b in zip(ema.buffers(), model.buffers()):
        b_ema.copy_(b)
