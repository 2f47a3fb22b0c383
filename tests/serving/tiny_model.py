"""A tiny text-conditioned generator exported with the contract's names, for serving tests.

Stands in for a trained checkpoint: the serving path only needs an ONNX with
EMBEDDING fp32[B,384], Z fp32[B,z] -> RAW_IMAGE fp32[B,3,64,64] in [-1,1] plus its manifest,
and the torch module to check Triton's output against PyTorch.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch
from torch import nn

from serving.contract import EMBED_DIM, generator_spec

TINY_Z_DIM = 16


class TinyGenerator(nn.Module):
    """[B,384] + [B,z] -> fc -> 4x4 -> four (upsample, conv, FiLM) blocks -> tanh [B,3,64,64]."""

    def __init__(self, z_dim: int = TINY_Z_DIM, ch: int = 16):
        super().__init__()
        self.ch = ch
        self.fc = nn.Linear(EMBED_DIM + z_dim, ch * 4 * 4)
        self.blocks = nn.ModuleList(nn.Conv2d(ch, ch, 3, padding=1) for _ in range(4))
        self.films = nn.ModuleList(nn.Linear(EMBED_DIM, 2 * ch) for _ in range(4))
        self.to_rgb = nn.Conv2d(ch, 3, 3, padding=1)

    def forward(self, embedding, z):
        x = self.fc(torch.cat([embedding, z], dim=1)).view(-1, self.ch, 4, 4)
        for conv, film in zip(self.blocks, self.films):
            x = nn.functional.interpolate(x, scale_factor=2.0, mode="nearest")
            gamma, beta = film(embedding).chunk(2, dim=1)
            x = nn.functional.leaky_relu(conv(x) * (1 + gamma[..., None, None])
                                         + beta[..., None, None], 0.2)
        return torch.tanh(self.to_rgb(x) * 3.0)


def export_tiny(out_dir: Path, module: nn.Module | None = None, z_dim: int = TINY_Z_DIM,
                seed: int = 0) -> tuple[Path, nn.Module]:
    """Writes out_dir/generator.onnx + manifest.json; returns (out_dir, module)."""
    torch.manual_seed(seed)
    module = (module or TinyGenerator(z_dim)).eval()
    out_dir.mkdir(parents=True, exist_ok=True)
    spec = generator_spec(z_dim)
    path = out_dir / "generator.onnx"
    dummy = (torch.zeros(2, EMBED_DIM), torch.zeros(2, z_dim))
    names = ["EMBEDDING", "Z", "RAW_IMAGE"]
    with torch.no_grad():
        torch.onnx.export(module, dummy, str(path), input_names=names[:2],
                          output_names=names[2:], opset_version=17, dynamo=False,
                          dynamic_axes={n: {0: "batch"} for n in names})
    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    manifest = {"kind": "adgen-generator-onnx", "format_version": 1, "model": "generator.onnx",
                "z_dim": z_dim, "arch": "tiny-test",
                "checkpoint": {"name": "tiny-test", "sha256": sha},
                "files": {"generator.onnx": {"sha256": sha}},
                "spec": {"inputs": [t.name for t in spec.inputs]}}
    (out_dir / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return out_dir, module
