"""What every generator (composer, layered, film, dcgan) shares: the caption-embedding
normaliser at its input (EMBEDDING [B, 384] -> (e - mean) / scale) and the error of a bad
architecture or option."""
from __future__ import annotations

import torch
from torch import nn

from adgen.contract import EMBED_DIM


class NetworkError(ValueError):
    """Unknown architecture or inconsistent model options."""


class EmbedNorm(nn.Module):
    """(embedding - mean) / scale with the training captions' statistics as buffers.

    MiniLM caption embeddings share a large common component (|mean| ~0.72, per-dim std
    ~0.035 on the emoji captions: a colour change moves the cosine by only ~0.06), so raw
    embeddings reach the first layers as a near-constant input and the networks learn to
    ignore the text. One global scale (not per-dimension) keeps the geometry and stays
    tame on prompts unlike the training captions. Identity until set_stats() is called;
    the buffers live in the state dict, so checkpoints and the ONNX graph carry them.
    """

    def __init__(self, dim: int = EMBED_DIM):
        super().__init__()
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("scale", torch.ones(()))

    @torch.no_grad()
    def set_stats(self, embeddings: torch.Tensor) -> None:
        """embeddings: [N, dim] training caption embeddings."""
        flat = embeddings.reshape(-1, embeddings.shape[-1]).float()
        self.mean.copy_(flat.mean(0))
        self.scale.copy_((flat - self.mean).std(0).mean().clamp_min(1e-6))

    def forward(self, e: torch.Tensor) -> torch.Tensor:
        return (e - self.mean) / self.scale
