"""The one constructor of every generator architecture, and what checkpoints store.

``build_generator(arch, **kwargs)`` builds any of ARCHS; the kwargs are what checkpoints
store under config["model"]. The shipped architecture is ``composer``
(adgen.training.composer: a codebook per (concept, design family) cell, text heads, layered
composition); ``layered`` (adgen.training.layered) is v2, and ``film`` / ``dcgan``
(adgen.training.baselines) are the GAN baselines with their discriminators.

Every generator maps (embedding float32[B, 384], z float32[B, z_dim]) to float32[B, 3, 64, 64]
in [-1, 1].
"""
from __future__ import annotations

import torch
from torch import nn

from adgen.contract import DEFAULT_Z_DIM, EMBED_DIM, IMAGE_SIZE
from adgen.training.baselines import (DCGAN_Z_DIM, DcganDiscriminator, DcganGenerator,
                                      FilmDiscriminator, FilmGenerator)
from adgen.training.composer import ComposerGenerator
from adgen.training.embedding import EmbedNorm, NetworkError
from adgen.training.layered import LayeredGenerator

ARCHS = ("composer", "layered", "film", "dcgan")
SHIPPED_ARCH = "composer"
__all__ = ["ARCHS", "SHIPPED_ARCH", "EmbedNorm", "NetworkError", "build_generator",
           "build_discriminator", "default_model_kwargs", "set_embedding_stats",
           "count_params"]


# --------------------------------------------------------------------------- constructors

def _normalise(kwargs: dict) -> dict:
    # JSON turns tuples into lists; constructors want tuples.
    return {k: tuple(v) if isinstance(v, list) else v for k, v in kwargs.items()}


def default_model_kwargs(arch: str) -> dict:
    """The full constructor kwargs of an architecture's generator (what config['model'] holds)."""
    if arch == "film":
        return {"z_dim": DEFAULT_Z_DIM, "embed_dim": EMBED_DIM, "ngf": 16,
                "mults": [16, 8, 4, 2, 1], "cond_dim": 256, "cond_aug": False,
                "embed_norm": True}
    if arch == "dcgan":
        return {"z_dim": DCGAN_Z_DIM, "embed_dim": EMBED_DIM, "ngf": 64, "proj_dim": 128}
    if arch == "layered":
        return {"z_dim": DEFAULT_Z_DIM, "embed_dim": EMBED_DIM, "n_concepts": 1604,
                "latent_ch": 16, "dec_width": 16, "hidden": 1024, "noise": 0.15,
                "temperature": 1.0, "shift_px": 0.0, "shrink": 0.0}
    if arch == "composer":
        return {"z_dim": DEFAULT_Z_DIM, "embed_dim": EMBED_DIM, "n_concepts": 1584,
                "n_families": 3, "latent_ch": 16, "dec_width": 16, "hidden": 1024,
                "noise": 0.15, "shift_px": 2.0}
    raise NetworkError(f"unknown arch {arch!r}; choose one of {', '.join(ARCHS)}")


def build_generator(arch: str = SHIPPED_ARCH, **model_kwargs) -> nn.Module:
    """A fresh generator; kwargs override default_model_kwargs(arch)."""
    kwargs = default_model_kwargs(arch)
    unknown = set(model_kwargs) - set(kwargs)
    if unknown:
        raise NetworkError(f"unknown {arch} generator option(s): {', '.join(sorted(unknown))}")
    kwargs.update(model_kwargs)
    cls = {"layered": LayeredGenerator, "composer": ComposerGenerator,
           "film": FilmGenerator}.get(arch, DcganGenerator)
    module = cls(**_normalise(kwargs))
    module.arch = arch
    module.model_kwargs = {k: list(v) if isinstance(v, tuple) else v for k, v in kwargs.items()}
    return module


def build_discriminator(arch: str, embed_dim: int = EMBED_DIM, ndf: int | None = None,
                        **kwargs) -> nn.Module:
    if arch == "film":
        return FilmDiscriminator(embed_dim=embed_dim, ndf=ndf or 32, **_normalise(kwargs))
    if arch == "dcgan":
        return DcganDiscriminator(embed_dim=embed_dim, ndf=ndf or 64, **_normalise(kwargs))
    raise NetworkError(f"unknown arch {arch!r}; choose one of {', '.join(ARCHS)}")


def set_embedding_stats(module: nn.Module, embeddings: torch.Tensor) -> None:
    """Sets every EmbedNorm in module from training caption embeddings [..., 384]."""
    for m in module.modules():
        if isinstance(m, EmbedNorm):
            m.set_stats(embeddings)


def count_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


assert IMAGE_SIZE == 64, "the networks are built for 64x64 images"
