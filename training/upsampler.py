"""The 4x upsampler (64 px -> 256 px): a small residual CNN with pixel-shuffle, ESPCN-style.

All convolutions run at 64 px; one 3x3 conv makes 16 sub-pixels per channel and
PixelShuffle(4) lays them out at 256 px, added to a bilinear upsampling of the input, so
the network only learns the difference (the edges bilinear blurs):

    x [B, 3, 64, 64] in [-1, 1]
      -> conv3x3(3 -> C) -> n_blocks x ResBlock(C) -> lrelu -> conv3x3(C -> 3*16)
      -> PixelShuffle(4) -> r [B, 3, 256, 256]
    y = clamp(bilinear4x(x) + r, -1, 1)          [B, 3, 256, 256]

Cost per image: (9*3*C + n_blocks*2*9*C*C + 9*C*48) MACs per 64 px position
(C=32, 3 blocks: ~0.45 GFLOP at 64 -> 256). Fully convolutional and shift-equivariant, so the
base generator's sub-pixel layout shifts carry through. Checkpoints: upsampler.safetensors
+ config.json (kind adgen-upsampler, format_version), loaded only by load_upsampler.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import nn

from adgen.errors import AdgenError
from adgen.paths import sha256_file
from adgen.training.checkpoint import (FORMAT_VERSION, CheckpointError,
                                       check_safetensors_file, read_config, resolve_weights,
                                       write_checkpoint)

SCALE = 4
IN_SIZE = 64
OUT_SIZE = IN_SIZE * SCALE
KIND = "adgen-upsampler"
WEIGHTS_NAME = "upsampler.safetensors"


class UpsamplerError(AdgenError):
    """An upsampler that cannot be built or trained; one line for the user."""


class _Res(nn.Module):
    """conv-lrelu-conv plus identity: [B, C, H, W] -> same."""

    def __init__(self, ch: int):
        super().__init__()
        self.c1 = nn.Conv2d(ch, ch, 3, padding=1)
        self.c2 = nn.Conv2d(ch, ch, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.c2(F.leaky_relu(self.c1(x), 0.2))


class Upsampler(nn.Module):
    """RAW_IMAGE [B, 3, 64, 64] in [-1, 1] -> [B, 3, 256, 256] in [-1, 1]."""

    arch = "espcn-res"

    def __init__(self, width: int = 32, n_blocks: int = 3):
        super().__init__()
        if width < 4 or n_blocks < 0:
            raise UpsamplerError(f"upsampler needs width >= 4 and n_blocks >= 0, "
                                 f"got {width}, {n_blocks}")
        self.model_kwargs = {"width": width, "n_blocks": n_blocks}
        self.head = nn.Conv2d(3, width, 3, padding=1)
        self.body = nn.Sequential(*[_Res(width) for _ in range(n_blocks)])
        self.tail = nn.Conv2d(width, 3 * SCALE * SCALE, 3, padding=1)
        # Start as plain bilinear: the residual branch begins silent.
        nn.init.zeros_(self.tail.weight)
        nn.init.zeros_(self.tail.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        base = F.interpolate(x, scale_factor=SCALE, mode="bilinear", align_corners=False)
        h = self.body(F.leaky_relu(self.head(x), 0.2))
        r = F.pixel_shuffle(self.tail(F.leaky_relu(h, 0.2)), SCALE)
        return torch.clamp(base + r, -1.0, 1.0)

    def flops_per_image(self) -> int:
        """Multiply-adds x 2 of the convolutions (the bilinear base is not counted)."""
        c, n = self.model_kwargs["width"], self.model_kwargs["n_blocks"]
        macs = 9 * 3 * c + n * 2 * 9 * c * c + 9 * c * 3 * SCALE * SCALE
        return 2 * macs * IN_SIZE * IN_SIZE


# ----------------------------------------------------------------------------- checkpoints

@dataclass(frozen=True)
class LoadedUpsampler:
    module: Upsampler  # in eval mode
    config: dict
    path: Path
    sha256: str


def save_upsampler(module: Upsampler, out_dir, extra: dict | None = None) -> Path:
    """out_dir/upsampler.safetensors + config.json, written atomically."""
    config = {"format_version": FORMAT_VERSION, "kind": KIND, "arch": module.arch,
              "model": dict(module.model_kwargs), "scale": SCALE, "in_size": IN_SIZE,
              "out_size": OUT_SIZE, **(extra or {})}
    state = {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}
    return write_checkpoint(out_dir, state, config, WEIGHTS_NAME,
                            {"format_version": str(FORMAT_VERSION), "kind": KIND})


def load_upsampler(path) -> LoadedUpsampler:
    """The one loader: validates the safetensors framing, config kind/version and shapes."""
    weights, config_path = resolve_weights(path, WEIGHTS_NAME)
    check_safetensors_file(weights)
    config = read_config(config_path, kind=KIND)
    if config["arch"] != Upsampler.arch:
        raise CheckpointError(f"{config_path.name}: arch {config['arch']!r} is not "
                              f"{Upsampler.arch!r}")
    try:
        module = Upsampler(**config["model"])
    except (UpsamplerError, TypeError) as exc:
        raise CheckpointError(f"{config_path.name}: cannot build the upsampler: {exc}") from None
    try:
        state = load_file(str(weights))
    except (SafetensorError, OSError, RuntimeError) as exc:
        raise CheckpointError(f"{weights.name} cannot be read: {exc}") from None
    expected = module.state_dict()
    if set(state) != set(expected) or any(state[k].shape != v.shape for k, v in expected.items()):
        raise CheckpointError(f"{weights.name} does not match config.json "
                              f"({config['model']})")
    module.load_state_dict(state, strict=True)
    return LoadedUpsampler(module.eval(), config, weights.parent, sha256_file(weights))
