"""What every training loop shares (the GAN baselines', layered and composer's, the
upsampler's): the run error, run-folder numbering, the step meter, the environment record."""
from __future__ import annotations

import math
import os
import platform
import re
from pathlib import Path

import torch

from adgen.errors import AdgenError


class TrainError(AdgenError):
    """A training run that cannot start or continue."""


def next_run_dir(runs_dir: Path, desc: str) -> Path:
    runs_dir.mkdir(parents=True, exist_ok=True)
    numbers = [int(m.group(1)) for p in runs_dir.iterdir()
               if (m := re.match(r"^(\d{5})-", p.name))]
    safe = re.sub(r"[^A-Za-z0-9._-]+", "-", desc).strip("-") or "run"
    return runs_dir / f"{(max(numbers) + 1) if numbers else 0:05d}-{safe}"


class StepMeter:
    """The one meter of every training loop: windowed means of the losses, the step time and
    images/s, turned into a metrics.jsonl row every log interval; a non-finite loss stops
    the run with a one-line error."""

    def __init__(self, batch_size: int):
        self.batch_size = batch_size
        self.elapsed_window, self.steps, self.sums = 0.0, 0, {}

    def add(self, stats: dict[str, float], seconds: float, step: int) -> None:
        if not all(math.isfinite(v) for v in stats.values()):
            raise TrainError(f"non-finite loss at step {step}: {stats}")
        self.elapsed_window += seconds
        self.steps += 1
        for k, v in stats.items():
            self.sums[k] = self.sums.get(k, 0.0) + v

    def row(self, **head) -> dict:
        """head (step, elapsed_s, ...) + the window's means; starts a new window."""
        n, t = max(1, self.steps), max(self.elapsed_window, 1e-9)
        out = {**head, "step_time_s": round(t / n, 4),
               "images_per_s": round(self.batch_size * self.steps / t, 1),
               **{k: round(v / n, 5) for k, v in self.sums.items()}}
        self.elapsed_window, self.steps, self.sums = 0.0, 0, {}
        return out


def environment() -> dict:
    return {"torch": torch.__version__, "python": platform.python_version(),
            "machine": platform.machine(), "cpu_count": os.cpu_count(),
            "threads": torch.get_num_threads(),
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}
