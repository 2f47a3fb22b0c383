"""Exported generator variants scored exactly like `adgen eval`: the figures the served-
precision rule (adgen.export.precision) reads. Imports torch and adgen.training."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from adgen.captions import COLOR_NAMES
from adgen.export.onnx_files import ort_session
from adgen.training.checkpoint import load_generator
from adgen.training.eval import EvalConfig, compare, draw_items, generate, real_images
from adgen.training.eval_metrics import identity_ranks, identity_scores
from adgen.training.matcher import MatcherConfig, get_matcher
from adgen.training.sampler import load_training_data


class _OrtGenerator:
    """An exported generator behind the PyTorch call signature adgen.training.eval uses:
    (text float32[B,384] tensor, z float32[B,z] tensor) -> tensor [B,3,64,64]."""

    def __init__(self, onnx_path: Path, threads: int = 0):
        self.session = ort_session(onnx_path, threads=threads)

    def __call__(self, text, z):
        feeds = {"EMBEDDING": text.numpy().astype(np.float32, copy=False),
                 "Z": z.numpy().astype(np.float32, copy=False)}
        return torch.from_numpy(self.session.run(["RAW_IMAGE"], feeds)[0])


def evaluate_variants(checkpoint: str | Path, folders: dict[str, Path], data: str | Path,
                      items: int = 1000, candidates: int = 100, seed: int = 777_000_001,
                      matcher_steps: int | None = None, progress: bool = True) -> dict:
    """R-precision, identity top-1 and colour accuracy of each exported variant, scored
    exactly like `adgen eval` (same items, latents, matcher), and its mean absolute pixel
    difference from the fp32 export in uint8 levels (when "fp32" is among `folders`): the
    figures export/precision.py's keep-the-picture rule reads.
    {precision: {r_precision, identity_top1, color_accuracy, mean_abs_levels}}.

    Also scores PyTorch eager as "pytorch" so the fp32 export can be seen to equal it.
    """
    defaults = EvalConfig(checkpoint=str(checkpoint))
    loaded = load_generator(checkpoint)
    td = load_training_data(data, progress=progress)
    matcher = get_matcher(td, MatcherConfig(width=defaults.matcher_width,
                                            steps=matcher_steps or defaults.matcher_steps),
                         progress=progress)
    picked = draw_items(td.embeddings, items, candidates, seed)
    tags = [f"{c}:{COLOR_NAMES[k]}" for c, k in zip(picked.concept, picked.color)]
    rgba = (td.rgba.permute(0, 2, 3, 1).numpy() * 255.0).round().astype(np.uint8)
    real = real_images(rgba, picked)
    modules = {"pytorch": loaded.module}
    modules.update({p: _OrtGenerator(Path(f) / "generator.onnx") for p, f in folders.items()})
    out, images = {}, {}
    for name, module in modules.items():
        gen = images[name] = generate(module, picked, seed, 0, loaded.z_dim,
                                      defaults.batch_size, tags)
        scores = compare(gen, real, picked, td.embeddings, matcher)
        ranks = identity_ranks(gen, picked.concept, picked.color, rgba)
        out[name] = {"r_precision": scores["r_precision"]["generated"],
                     "identity_top1": identity_scores(ranks)["top1"],
                     "color_accuracy": scores["color_accuracy"]["generated"],
                     "r_precision_real": scores["r_precision"]["real"]}
    if "fp32" in images:  # [items, 64, 64, 3] uint8 each
        ref = images["fp32"].astype(np.int16)
        for name, gen in images.items():
            out[name]["mean_abs_levels"] = float(np.abs(gen.astype(np.int16) - ref).mean())
    out["_eval"] = {"items": int(len(picked.concept)), "candidates": candidates, "seed": seed,
                    "matcher": matcher.path.name, "checkpoint_sha256": loaded.sha256}
    return out
