"""Fixtures for the expander tests: a small concept list and its vocabulary, an isolated
artifacts folder, and the scripted OpenAI-compatible HTTP server (expand_helpers)."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))  # for expand_helpers
from expand_helpers import ScriptedLLM, write_concepts  # noqa: E402


@pytest.fixture(scope="session")
def small_concepts(tmp_path_factory) -> Path:
    return write_concepts(tmp_path_factory.mktemp("concepts") / "concepts.jsonl")


@pytest.fixture(scope="session")
def small_vocab(small_concepts, text_encoder, tmp_path_factory):
    from adgen.prompting.vocab import Vocabulary
    return Vocabulary.load(small_concepts, encoder=text_encoder,
                           cache_dir=tmp_path_factory.mktemp("vocab-cache"))


@pytest.fixture
def isolated_artifacts(tmp_path, text_encoder_dir, monkeypatch) -> Path:
    """ADGEN_ARTIFACTS in tmp (caches land there), with the real text encoder linked in."""
    root = tmp_path / "artifacts"
    root.mkdir()
    (root / "text_encoder").symlink_to(text_encoder_dir, target_is_directory=True)
    monkeypatch.setenv("ADGEN_ARTIFACTS", str(root))
    return root


@pytest.fixture
def llm_http():
    server = ScriptedLLM()
    server.thread.start()
    try:
        yield server
    finally:
        server.httpd.shutdown()
        server.httpd.server_close()
        server.thread.join(timeout=5)


@pytest.fixture
def no_key(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    return os.environ
