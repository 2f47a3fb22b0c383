"""The composing generator (arch ``composer``): the words choose a concept, a design family,
an object colour and a background colour; a decoder draws the chosen (concept, family).

What it adds to the layered arch (whose decoder and compositing it keeps):

- **Design families.** The codebook holds one latent per (concept, family) cell, so the same
  concept is drawn as Twemoji, Noto or Fluent. A prompt that names a family gets it; a prompt
  that names none gets the family its seed picks (argmax of the first F entries of z, which
  is uniform over families), so the seeds of one prompt show different real designs.
- **Combinations never seen.** Cells held out of training (and any cell a family lacks) get
  their latent from `FamilyTranslator`, trained to predict a cell's latent from the same
  concept's latents in the other families; the predictions are baked into the codebook.
- **Object colour bound to the object.** A head reads the object colour ("a blue apple")
  apart from the background colour ("on a white background"); a chosen colour recolours
  the foreground in the graph, keeping its light/dark structure (so edges and shape stay).
- **No blends.** Concept, family and colours are hard choices (argmax), never a
  probability-weighted mix of latents: an unknown thing is drawn as the one nearest known
  thing, and `grounding()` says how sure that choice was.

forward(embedding [B, 384], z [B, z_dim]) -> image [B, 3, 64, 64] in [-1, 1], as every
adgen generator; everything is inside the exported graph.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from adgen.captions import COLOR_NAMES, FAMILIES, OBJECT_COLORS, PALETTE
from adgen.contract import DEFAULT_Z_DIM, EMBED_DIM
from adgen.training.layered import LATENT_SIZE, ResBlock, ShapeDecoder, palette_tensor

LUMA = (0.299, 0.587, 0.114)


class EmbedStandardise(nn.Module):
    """(embedding - mean) / std per dimension, clipped to +-clip.

    Captions share a long template, so the concept is a small difference between MiniLM
    embeddings; per-dimension standardising makes that difference the signal (a 12-minute
    probe: identity stayed near 0 without it). The clip keeps prompts unlike any caption
    from reaching the trunk as huge values. Identity until set_stats(); the buffers are in
    the state dict, so checkpoints and the ONNX graph carry them.
    """

    def __init__(self, dim: int = EMBED_DIM, clip: float = 6.0):
        super().__init__()
        self.clip = clip
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("inv_std", torch.ones(dim))

    @torch.no_grad()
    def set_stats(self, embeddings: torch.Tensor) -> None:
        flat = embeddings.reshape(-1, embeddings.shape[-1]).float()
        self.mean.copy_(flat.mean(0))
        self.inv_std.copy_(1.0 / flat.std(0).clamp_min(1e-4))

    def forward(self, e: torch.Tensor) -> torch.Tensor:
        return ((e - self.mean) * self.inv_std).clamp(-self.clip, self.clip)


def recolour(fg: torch.Tensor, alpha: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Foreground fg [B,3,H,W] in [0,1] recoloured to target [B,3] in [0,1].

    The object's mean luminance (alpha-weighted) maps to the target colour; darker parts go
    toward black and lighter parts toward white in proportion, so the drawing's shading and
    outlines survive while every coloured area takes the target hue."""
    lum = LUMA[0] * fg[:, 0:1] + LUMA[1] * fg[:, 1:2] + LUMA[2] * fg[:, 2:3]  # [B,1,H,W]
    mean = (lum * alpha).sum((2, 3), keepdim=True) / alpha.sum((2, 3), keepdim=True).clamp_min(1.0)
    d = (lum - mean).clamp(-1.0, 1.0)                                     # [B,1,H,W]
    t = target[:, :, None, None]
    darker = t * (1.0 + d / mean.clamp_min(0.05))                         # d < 0
    lighter = t + (1.0 - t) * d / (1.0 - mean).clamp_min(0.05)            # d >= 0
    return torch.where(d < 0, darker, lighter).clamp(0.0, 1.0)


class ComposerGenerator(nn.Module):
    """(embedding [B, 384], z [B, z_dim]) -> image [B, 3, 64, 64] in [-1, 1]."""

    def __init__(self, z_dim: int = DEFAULT_Z_DIM, embed_dim: int = EMBED_DIM,
                 n_concepts: int = 1584, n_families: int = len(FAMILIES), latent_ch: int = 16,
                 dec_width: int = 16, hidden: int = 1024, noise: float = 0.15,
                 shift_px: float = 2.0):
        super().__init__()
        self.z_dim, self.embed_dim = z_dim, embed_dim
        self.n_concepts, self.n_families = n_concepts, n_families
        self.latent_ch, self.noise, self.shift_px = latent_ch, noise, shift_px
        latent_dim = latent_ch * LATENT_SIZE * LATENT_SIZE
        self.embed_std = EmbedStandardise(embed_dim)
        self.trunk = nn.Sequential(nn.Linear(embed_dim, hidden), nn.LeakyReLU(0.2),
                                   nn.Dropout(0.1), nn.Linear(hidden, hidden), nn.LeakyReLU(0.2))
        self.concept_head = nn.Linear(hidden, n_concepts)
        self.family_head = nn.Linear(hidden, n_families + 1)          # last: none named
        self.color_head = nn.Linear(hidden, len(COLOR_NAMES))         # background
        self.object_head = nn.Linear(hidden, len(OBJECT_COLORS) + 1)  # first: keep its own
        # Cell latents [n_concepts * n_families, latent_dim], concept-major; set after training.
        self.codebook = nn.Parameter(torch.zeros(n_concepts * n_families, latent_dim))
        self.register_buffer("palette", palette_tensor())
        objects = torch.tensor([(0, 0, 0)] + [PALETTE[c] for c in OBJECT_COLORS]) / 255.0
        self.register_buffer("object_palette", objects.float())       # [1 + n_object, 3]
        g = torch.Generator().manual_seed(20261202)
        q, _ = torch.linalg.qr(torch.randn(latent_dim, z_dim, generator=g))
        # z -> latent offset with unit variance per dim, times `noise` (what the decoder absorbs).
        self.register_buffer("z_proj", q.T * (latent_dim / z_dim) ** 0.5)
        self.register_buffer("layout_proj", torch.randn(z_dim, 2, generator=g) / z_dim ** 0.5,
                             persistent=False)
        self.decoder = ShapeDecoder(latent_ch, dec_width)
        ys, xs = torch.meshgrid(torch.linspace(-1, 1, 64), torch.linspace(-1, 1, 64),
                                indexing="ij")
        self.register_buffer("base_grid", torch.stack([xs, ys], -1)[None] * 63.0 / 64.0,
                             persistent=False)                        # [1, 64, 64, 2]

    # ------------------------------------------------------------------ text side
    def heads(self, embedding: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """embedding [B, 384] -> logits: concept [B, C], family [B, F+1], background
        [B, n_colours], object colour [B, 1 + n_object]."""
        h = self.trunk(self.embed_std(embedding))
        return (self.concept_head(h), self.family_head(h), self.color_head(h),
                self.object_head(h))

    def cells(self, concept_logits: torch.Tensor, family_logits: torch.Tensor,
              z: torch.Tensor) -> torch.Tensor:
        """Codebook rows [B]: the argmax concept in the named family, or the seed's family."""
        concept = concept_logits.argmax(1)
        named = family_logits.argmax(1)
        by_seed = z[:, :self.n_families].argmax(1)
        family = torch.where(named == self.n_families, by_seed, named)
        return concept * self.n_families + family

    @torch.no_grad()
    def grounding(self, embedding: torch.Tensor) -> torch.Tensor:
        """[B] probability of the chosen concept: low means the prompt names nothing known."""
        return torch.softmax(self.heads(embedding)[0], dim=1).amax(1)

    # ------------------------------------------------------------------ image side
    def draw(self, rows: torch.Tensor, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Codebook rows [B], z -> (fg [B,3,64,64], alpha [B,1,64,64]) before layout."""
        lat = self.codebook[rows] + self.noise * (z @ self.z_proj)
        return self.decoder(lat.view(-1, self.latent_ch, LATENT_SIZE, LATENT_SIZE))

    def layout(self, fg: torch.Tensor, alpha: torch.Tensor, z: torch.Tensor):
        """Moves the premultiplied foreground by up to shift_px per z; transparent outside."""
        shift = torch.tanh(z @ self.layout_proj)[:, None, None, :] * (2.0 * self.shift_px / 64)
        rgba = F.grid_sample(torch.cat([fg * alpha, alpha], 1), self.base_grid - shift,
                             mode="bilinear", padding_mode="zeros", align_corners=False)
        return rgba[:, :3], rgba[:, 3:4]

    def forward(self, embedding: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        concept_l, family_l, color_l, object_l = self.heads(embedding)
        fg, alpha = self.draw(self.cells(concept_l, family_l, z), z)
        obj = object_l.argmax(1)
        tinted = recolour(fg, alpha, self.object_palette[obj])
        keep = (obj == 0).to(fg.dtype)[:, None, None, None]
        fg = fg * keep + tinted * (1.0 - keep)
        bg = self.palette[color_l.argmax(1)]                                # [B, 3]
        fg_pm, alpha = self.layout(fg, alpha, z)
        return (fg_pm + bg[:, :, None, None] * (1.0 - alpha)) * 2.0 - 1.0


class FamilyTranslator(nn.Module):
    """Predicts a cell's latent from the same concept's latents in the other families.

    (latents [B, F, C, 8, 8], available [B, F] in {0, 1}, target family [B]) ->
    latent [B, C, 8, 8]. Unavailable latents are zeroed and flagged by mask planes; the
    target family enters as one-hot planes. Training only: its outputs for the held-out
    cells are written into the generator's codebook.
    """

    def __init__(self, n_families: int = len(FAMILIES), latent_ch: int = 16, width: int = 64,
                 blocks: int = 3):
        super().__init__()
        self.n_families = n_families
        cin = n_families * latent_ch + 2 * n_families
        self.stem = nn.Conv2d(cin, width, 3, padding=1)
        self.blocks = nn.Sequential(*[ResBlock(width) for _ in range(blocks)])
        self.out = nn.Conv2d(width, latent_ch, 3, padding=1)

    def forward(self, latents: torch.Tensor, available: torch.Tensor,
                target: torch.Tensor) -> torch.Tensor:
        b, f, c, h, w = latents.shape
        mask = available[:, :, None, None, None].to(latents.dtype)
        x = (latents * mask).reshape(b, f * c, h, w)
        planes = torch.cat([available.to(latents.dtype),
                            F.one_hot(target, f).to(latents.dtype)], 1)      # [B, 2F]
        x = torch.cat([x, planes[:, :, None, None].expand(b, 2 * f, h, w)], 1)
        return self.out(F.leaky_relu(self.blocks(self.stem(x)), 0.2))
