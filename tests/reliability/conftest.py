"""Fixtures for the reliability tests.

The serving fixtures (small checkpoint -> ONNX export -> model repository -> one session
tritonserver) are reused from tests/serving/conftest.py; pytest only shares a conftest with
its own folder, so its fixture functions are re-exported here. Servers that a test kills
are started by the test itself (reliability_helpers.start_server), never the session one.
"""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # for reliability_helpers

_spec = importlib.util.spec_from_file_location("_adgen_serving_fixtures",
                                               HERE.parent / "serving" / "conftest.py")
_serving = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_serving)

small_checkpoint = _serving.small_checkpoint
small_onnx = _serving.small_onnx
model_repo = _serving.model_repo
triton = _serving.triton
