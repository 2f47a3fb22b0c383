"""Where adgen keeps what it builds and finds what it ships.

Shipped resources (the release models, the Triton model sources, the demo briefs) are
package data, found with importlib.resources: they are where the installed package is, in a
wheel or a checkout alike. What adgen builds (exports, caches, datasets) goes under the
current folder unless a setting says otherwise: $ADGEN_ARTIFACTS (./artifacts) and
$ADGEN_DATA (./data).
"""
from __future__ import annotations

import hashlib
import os
from importlib.resources import files
from pathlib import Path


def resource_dir(package: str) -> Path:
    """The folder of one of adgen's data packages (adgen.models, adgen.triton_models,
    adgen.examples). adgen is always installed unpacked, so this is a real folder."""
    return Path(str(files(package)))


def artifacts_dir() -> Path:
    """Cached exports (text encoder ONNX, matcher, ...): $ADGEN_ARTIFACTS or ./artifacts."""
    return Path(os.environ.get("ADGEN_ARTIFACTS") or Path.cwd() / "artifacts")


def data_dir() -> Path:
    """Built datasets (`adgen data build`): $ADGEN_DATA or ./data."""
    return Path(os.environ.get("ADGEN_DATA") or Path.cwd() / "data")


def text_encoder_dir() -> Path:
    return artifacts_dir() / "text_encoder"


def release_model_dir() -> Path:
    """The release generator (generator.safetensors + config.json + concepts.jsonl)."""
    return resource_dir("adgen.models") / "adgen-emoji64"


def release_upsampler_dir() -> Path:
    """The release 4x upsampler checkpoint (upsampler.safetensors + config.json)."""
    return resource_dir("adgen.models") / "adgen-up256"


def sha256_file(path: str | Path) -> str:
    """sha256 of a file, read in 1 MiB blocks (weights and ONNX files are large)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
