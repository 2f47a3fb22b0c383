"""Where adgen keeps generated artifacts and finds the shipped release model."""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def artifacts_dir() -> Path:
    """Cached exports (text encoder ONNX, matcher, ...): $ADGEN_ARTIFACTS or ./artifacts."""
    return Path(os.environ.get("ADGEN_ARTIFACTS", PROJECT_ROOT / "artifacts"))


def text_encoder_dir() -> Path:
    return artifacts_dir() / "text_encoder"


def release_model_dir() -> Path:
    return PROJECT_ROOT / "models" / "adgen-emoji64"


def release_upsampler_dir() -> Path:
    """The release 4x upsampler checkpoint (upsampler.safetensors + config.json)."""
    return PROJECT_ROOT / "models" / "adgen-up256"


def sha256_file(path: str | Path) -> str:
    """sha256 of a file, read in 1 MiB blocks (weights and ONNX files are large)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
