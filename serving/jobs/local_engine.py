"""`--engine local`: the `adgen` pipeline in-process with onnxruntime, no server needed.

It runs adgen.serving.runtime.backend.Pipeline, the very code the fused Triton model runs, on the same
artifacts, so the same (prompt, seed) gives the same bytes as the Triton path. `--model`
may be a built model repository (its adgen/1/ artifacts are used: exactly what Triton
serves) or a generator export folder (generator.onnx + manifest.json; the text encoder
then comes from artifacts/text_encoder). At size 256 `--model` must be a repository with
`adgen_256` (its 1/ folder adds upsampler/), served pixel-identical to Triton the same way.
"""
from __future__ import annotations

import asyncio
import json
import threading
from pathlib import Path

import numpy as np

from adgen.contract import IMAGE_SIZE, LARGE_IMAGE_SIZE, PUBLIC_MODEL, PUBLIC_MODEL_256, SIZES
from adgen.errors import AdgenError
from adgen.paths import text_encoder_dir
from adgen.serving.runtime.backend import Pipeline


class LocalEngineError(AdgenError):
    """The local engine cannot find or load its artifacts."""


def resolve_local_model_256(model: str | Path) -> tuple[Path, Path, Path, str]:
    """-> (text encoder dir, generator dir, upsampler dir, version) of a repository's
    adgen_256."""
    version_dir = Path(model) / PUBLIC_MODEL_256 / "1"
    parts = (version_dir / "text_encoder", version_dir / "generator", version_dir / "upsampler")
    if (parts[1] / "generator.onnx").is_file() and (parts[2] / "upsampler.onnx").is_file():
        return (*parts, "1")
    raise LocalEngineError(
        f"{model} is not a model repository with `{PUBLIC_MODEL_256}` (needed for --size "
        f"{LARGE_IMAGE_SIZE}): run `adgen repo build --upsampler PATH`")


def resolve_local_model(model: str | Path) -> tuple[Path, Path, str]:
    """-> (text encoder dir, generator dir, version) for a repository or an export folder."""
    path = Path(model)
    version_dir = path / PUBLIC_MODEL / "1"
    if (version_dir / "generator" / "generator.onnx").is_file():
        return version_dir / "text_encoder", version_dir / "generator", "1"
    if (path / "generator.onnx").is_file():
        return text_encoder_dir(), path, "1"
    raise LocalEngineError(
        f"{path} is neither a model repository with a fused `adgen` model nor a generator "
        "export folder (generator.onnx): run `adgen repo build` or `adgen export onnx`")


def repository_model_name(model: str | Path) -> str:
    """The generator name a repository's models report (its config.pbtxt `model_name`, as
    written to adgen_repository.json, e.g. `<model>-int8` for the int8 variant); "" for an
    export folder, whose manifest names it."""
    try:
        info = json.loads((Path(model) / "adgen_repository.json").read_text(encoding="utf-8"))
        return str(info["generator"]["name"])
    except (OSError, ValueError, KeyError, TypeError):
        return ""


class LocalEngine:
    """Same async interface as adgen.serving.jobs.client.AdgenClient; compute runs in one worker thread."""

    def __init__(self, model: str | Path, threads: int = 0, size: int = IMAGE_SIZE):
        if size not in SIZES:
            raise LocalEngineError(f"size must be one of {SIZES}, got {size}")
        if size == LARGE_IMAGE_SIZE:
            te_dir, gen_dir, up_dir, version = resolve_local_model_256(model)
        else:
            (te_dir, gen_dir, version), up_dir = resolve_local_model(model), None
        self.pipeline = Pipeline(te_dir, gen_dir, threads=threads, version=version,
                                 upsampler_dir=up_dir, model_name=repository_model_name(model))
        self._lock = threading.Lock()  # one batch at a time: onnxruntime uses every core
        self.calls = {"local": 0}
        self.retried = 0

    async def __aenter__(self) -> "LocalEngine":
        return self

    async def __aexit__(self, *exc) -> None:
        return None

    def run(self, prompts: list[str], seeds) -> np.ndarray:
        with self._lock:
            self.calls["local"] += 1
            return self.pipeline.run(list(prompts), np.asarray(seeds, dtype=np.int64))

    async def infer(self, prompts: list[str], seeds) -> tuple[np.ndarray, str]:
        images = await asyncio.to_thread(self.run, prompts, seeds)
        return images, "local"

    async def model_info(self) -> dict:
        return {**self.pipeline.info.to_json(), "served_as": "local"}

    async def wait_ready(self, timeout_s: float = 0) -> list[str]:
        return ["local"]
