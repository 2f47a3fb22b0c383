"""Where adgen keeps generated artifacts and finds the shipped release model."""
from __future__ import annotations

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
