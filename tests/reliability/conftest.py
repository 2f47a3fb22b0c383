"""Fixtures for the reliability tests.

The serving fixtures (small checkpoint -> ONNX export -> model repository -> one session
tritonserver) are reused from tests/serving/conftest.py; pytest only shares a conftest with
its own folder, so its fixture functions are re-exported here. Servers that a test kills
are started by the test itself (reliability_helpers.start_server) on `lean_repo` (the
`adgen` model alone: faster to start), never the session one.
"""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # for reliability_helpers
EXPAND_TESTS = HERE.parent / "expand"

_spec = importlib.util.spec_from_file_location("_adgen_serving_fixtures",
                                               HERE.parent / "serving" / "conftest.py")
_serving = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_serving)

small_checkpoint = _serving.small_checkpoint
small_onnx = _serving.small_onnx
model_repo = _serving.model_repo
lean_repo = _serving.lean_repo
triton = _serving.triton


@pytest.fixture
def expand_env(tmp_path, text_encoder_dir):
    """(briefs file, small concept list, env) for `adgen expand` in a subprocess: artifacts
    isolated in tmp (the vocabulary cache lands there), no OpenAI key or base URL."""
    sys.path.insert(0, str(EXPAND_TESTS))
    from expand_helpers import write_concepts

    from reliability_helpers import cli_env
    artifacts = tmp_path / "artifacts"
    artifacts.mkdir()
    (artifacts / "text_encoder").symlink_to(text_encoder_dir, target_is_directory=True)
    briefs = tmp_path / "briefs.txt"
    briefs.write_text("summer sale sneakers\nvalentine chocolate gift box\npizza night deal\n")
    concepts = write_concepts(tmp_path / "concepts.jsonl")
    env = cli_env(ADGEN_ARTIFACTS=str(artifacts))
    env.pop("OPENAI_API_KEY", None)
    env.pop("OPENAI_BASE_URL", None)
    return briefs, concepts, env
