"""The layered generator (arch ``layered``): words pick a shape, a decoder draws it, the
background colour is composited inside the network.

Every caption in the data has exactly one real picture, so the problem splits into two easy
ones (trained as two stages by adgen.training.stages):

1. **Shapes** — an RGBA autoencoder over the 1,604 emoji. ``ShapeEncoder`` (training only)
   maps an emoji's RGBA [4, 64, 64] to a latent [C, 8, 8]; ``ShapeDecoder`` maps a latent
   back to foreground RGB + alpha at 64 px (nearest x2 upsampling + 3x3 convs: no
   transposed convs, so no checkerboard). It is trained with latent noise so that nearby
   latents still decode to clean shapes: that noise is what the seed's z moves.
2. **Words** — a text trunk on the standardised MiniLM embedding predicts a distribution
   over the concepts and one over the palette colours. The latent is the probability-
   weighted mix of the concepts' latents (a codebook taken from the trained encoder), so a
   confident prediction lands exactly on a shape the decoder knows; the background is the
   probability-weighted palette colour, so colour is exact and costs the decoder nothing.

forward(embedding [B, 384], z [B, z_dim]) -> image [B, 3, 64, 64] in [-1, 1], as every
adgen generator; everything (softmax, codebook, compositing) is inside the exported graph.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from adgen.captions import COLOR_NAMES, PALETTE
from adgen.contract import DEFAULT_Z_DIM, EMBED_DIM
from adgen.training.embedding import EmbedNorm

LATENT_SIZE = 8  # latent grid side: 64 px / 8


def _conv(cin: int, cout: int, k: int = 3) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, k, padding=k // 2)


class ResBlock(nn.Module):
    """conv-lrelu-conv plus identity: [B, C, H, W] -> same."""

    def __init__(self, ch: int):
        super().__init__()
        self.c1, self.c2 = _conv(ch, ch), _conv(ch, ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.c2(F.leaky_relu(self.c1(F.leaky_relu(x, 0.2)), 0.2))


class ShapeEncoder(nn.Module):
    """RGBA [B, 4, 64, 64] in [0, 1] -> latent [B, latent_ch, 8, 8] (training only)."""

    def __init__(self, latent_ch: int = 16, width: int = 32):
        super().__init__()
        chans = [width, width * 2, width * 4]            # at 32, 16, 8 px
        layers: list[nn.Module] = [_conv(4, chans[0])]
        cin = chans[0]
        for ch in chans:
            layers += [nn.Conv2d(cin, ch, 4, stride=2, padding=1), ResBlock(ch)]
            cin = ch
        layers += [nn.LeakyReLU(0.2), _conv(cin, latent_ch, 1)]
        self.net = nn.Sequential(*layers)

    def forward(self, rgba: torch.Tensor) -> torch.Tensor:
        return self.net(rgba * 2.0 - 1.0)


class ShapeDecoder(nn.Module):
    """latent [B, latent_ch, 8, 8] -> (fg RGB [B, 3, 64, 64] in [0, 1], alpha [B, 1, 64, 64]).

    Channels at 8/16/32/64 px: width * (8, 4, 2, 1).
    """

    def __init__(self, latent_ch: int = 16, width: int = 16):
        super().__init__()
        chans = [width * 8, width * 4, width * 2, width]
        self.stem = _conv(latent_ch, chans[0])
        self.blocks = nn.ModuleList([ResBlock(chans[0])])
        self.ups = nn.ModuleList()
        for cin, cout in zip(chans[:-1], chans[1:]):
            self.ups.append(_conv(cin, cout))
            self.blocks.append(ResBlock(cout))
        self.out = _conv(chans[-1], 4)

    def forward(self, latent: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.blocks[0](self.stem(latent))                         # [B, 8w, 8, 8]
        for up, block in zip(self.ups, self.blocks[1:]):
            x = F.interpolate(x, scale_factor=2.0, mode="nearest")    # x2 per level
            x = block(up(x))
        out = self.out(F.leaky_relu(x, 0.2))                          # [B, 4, 64, 64]
        return torch.sigmoid(out[:, :3]), torch.sigmoid(out[:, 3:4])


def composite(fg: torch.Tensor, alpha: torch.Tensor, bg: torch.Tensor) -> torch.Tensor:
    """fg [B,3,H,W], alpha [B,1,H,W] in [0,1], bg [B,3] in [0,1] -> [B,3,H,W] in [-1, 1]."""
    return (fg * alpha + bg[:, :, None, None] * (1.0 - alpha)) * 2.0 - 1.0


def palette_tensor() -> torch.Tensor:
    """[n_colours, 3] palette in [0, 1], in COLOR_NAMES order."""
    return torch.tensor([PALETTE[c] for c in COLOR_NAMES], dtype=torch.float32) / 255.0


class LayeredGenerator(nn.Module):
    """(embedding [B, 384], z [B, z_dim]) -> image [B, 3, 64, 64] in [-1, 1]."""

    def __init__(self, z_dim: int = DEFAULT_Z_DIM, embed_dim: int = EMBED_DIM,
                 n_concepts: int = 1604, latent_ch: int = 16, dec_width: int = 16,
                 hidden: int = 1024, noise: float = 0.15, temperature: float = 1.0,
                 shift_px: float = 0.0, shrink: float = 0.0):
        super().__init__()
        self.z_dim, self.embed_dim, self.n_concepts = z_dim, embed_dim, n_concepts
        self.latent_ch, self.noise, self.temperature = latent_ch, noise, temperature
        latent_dim = latent_ch * LATENT_SIZE * LATENT_SIZE
        self.embed_norm = EmbedNorm(embed_dim)
        self.trunk = nn.Sequential(nn.Linear(embed_dim, hidden), nn.LeakyReLU(0.2),
                                   nn.Dropout(0.1), nn.Linear(hidden, hidden), nn.LeakyReLU(0.2))
        self.concept_head = nn.Linear(hidden, n_concepts)
        self.color_head = nn.Linear(hidden, len(COLOR_NAMES))
        # Concept latents [n_concepts, latent_dim], set from the trained ShapeEncoder.
        self.codebook = nn.Parameter(torch.zeros(n_concepts, latent_dim))
        self.register_buffer("palette", palette_tensor())
        # z -> latent offset: a fixed orthogonal projection [z_dim, latent_dim] scaled so the
        # offset has unit variance per latent dim on average, times `noise` (the std the
        # decoder was trained to absorb).
        g = torch.Generator().manual_seed(20261201)
        q, _ = torch.linalg.qr(torch.randn(latent_dim, z_dim, generator=g))
        self.register_buffer("z_proj", q.T * (latent_dim / z_dim) ** 0.5)
        self.decoder = ShapeDecoder(latent_ch, dec_width)
        # Layout variation from z (what makes seeds differ: the decoder is trained to absorb
        # latent noise, so z alone barely changes the picture): the foreground is moved by up
        # to shift_px pixels and shrunk by up to `shrink` (a fraction of its size) around the
        # centre, by a fixed projection of z. [z_dim, 3] -> (dx, dy, s) through tanh.
        self.shift_px, self.shrink = shift_px, shrink
        self.register_buffer("layout_proj", torch.randn(z_dim, 3, generator=g) / z_dim ** 0.5,
                             persistent=False)  # derived from the fixed seed: not in weights
        ys, xs = torch.meshgrid(torch.linspace(-1, 1, 64), torch.linspace(-1, 1, 64),
                                indexing="ij")
        # Pixel centres in grid_sample's align_corners=False coordinates: [1, 64, 64, 2].
        self.register_buffer("base_grid", torch.stack([xs, ys], -1)[None] * 63.0 / 64.0,
                             persistent=False)

    def heads(self, embedding: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """embedding [B, 384] -> (concept logits [B, n_concepts], colour logits [B, n_colours])."""
        h = self.trunk(self.embed_norm(embedding))
        return self.concept_head(h), self.color_head(h)

    def latent(self, concept_logits: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        p = torch.softmax(concept_logits / self.temperature, dim=1)        # [B, n_concepts]
        lat = p @ self.codebook + self.noise * (z @ self.z_proj)            # [B, latent_dim]
        return lat.view(-1, self.latent_ch, LATENT_SIZE, LATENT_SIZE)

    def layout(self, fg: torch.Tensor, alpha: torch.Tensor, z: torch.Tensor):
        """Moves/shrinks the premultiplied foreground per z; transparent outside."""
        j = torch.tanh(z @ self.layout_proj)                                # [B, 3] in (-1, 1)
        shift = j[:, None, None, :2] * (2.0 * self.shift_px / 64.0)         # [B, 1, 1, 2]
        scale = 1.0 - self.shrink * 0.5 * (j[:, 2] + 1.0)                   # [B] in (1-shrink, 1]
        grid = (self.base_grid - shift) / scale[:, None, None, None]        # [B, 64, 64, 2]
        rgba = F.grid_sample(torch.cat([fg * alpha, alpha], 1), grid, mode="bilinear",
                             padding_mode="zeros", align_corners=False)
        return rgba[:, :3], rgba[:, 3:4]

    def forward(self, embedding: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        concept_logits, color_logits = self.heads(embedding)
        bg = torch.softmax(color_logits, dim=1) @ self.palette               # [B, 3]
        fg, alpha = self.decoder(self.latent(concept_logits, z))
        if self.shift_px > 0 or self.shrink > 0:
            fg_pm, alpha = self.layout(fg, alpha, z)
            return (fg_pm + bg[:, :, None, None] * (1.0 - alpha)) * 2.0 - 1.0
        return composite(fg, alpha, bg)
