"""One stand-in for the engine a job talks to (adgen.serving.jobs.job.make_engine), for job tests
that need no server: images come from the seed alone, so reruns are byte-identical.

    monkeypatch.setattr(job, "make_engine", lambda cfg: FakeEngine(draw=square_64))
"""
from __future__ import annotations

import numpy as np

from adgen.errors import AdgenError


def noise_8(seed: int) -> np.ndarray:
    """uint8 [8, 8, 3] random pixels from the seed."""
    return np.random.default_rng(seed % 2**32).integers(0, 255, (8, 8, 3), dtype=np.uint8)


def flat_8(seed: int) -> np.ndarray:
    """uint8 [8, 8, 3] of one grey level from the seed."""
    return np.full((8, 8, 3), seed % 251, dtype=np.uint8)


def square_64(seed: int) -> np.ndarray:
    """A 64 px sticker: a coloured square on a plain background, from the seed."""
    rng = np.random.default_rng(seed % 2**32)
    img = np.empty((64, 64, 3), np.uint8)
    img[:] = rng.integers(0, 255, 3)
    img[16:48, 16:48] = rng.integers(0, 255, 3)
    return img


class FakeEngine:
    """The async engine interface; stops answering after `budget` requests (a killed run)."""

    def __init__(self, draw=noise_8, budget: int = 10**9):
        self.draw, self.budget = draw, budget
        self.calls, self.retried = {"fake": 0}, 0

    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc):
        return None

    async def wait_ready(self, timeout_s=0):
        return ["fake"]

    async def model_info(self):
        return {"name": "fake", "version": "1", "sha256": "0" * 64}

    async def infer(self, prompts, seeds):
        self.calls["fake"] += 1
        if self.calls["fake"] > self.budget:
            raise AdgenError("fake server gone")
        return np.stack([self.draw(int(s)) for s in seeds]), "fake"
