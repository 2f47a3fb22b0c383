"""Small real generator checkpoints for the export tests (written with save_generator)."""
from __future__ import annotations

from pathlib import Path


def make_checkpoint(out: Path, arch: str = "film", seed: int = 0, **model_kwargs) -> Path:
    """A randomly initialised generator saved as a real checkpoint folder.

    The FiLM projections and residual gates start at zero in a fresh network, which would
    make the text path a no-op; they get small random values so parity covers that path too.
    """
    import torch

    from adgen.training.checkpoint import save_generator
    from adgen.training.networks import build_generator
    torch.manual_seed(seed)
    module = build_generator(arch, **model_kwargs).eval()
    with torch.no_grad():
        for name, p in module.named_parameters():
            if ".film" in name or name.endswith("gate"):
                p.normal_(0.0, 0.3 if name.endswith("gate") else 0.05)
    return save_generator(module, {}, out)
