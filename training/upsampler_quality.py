"""The upsampler's picture on the base generator's own images, against the exact 256 px render.

`adgen eval-upsampler` scores real 64 px inputs; what is served upsamples generated ones. This
check draws captions of the concepts held out of upsampler training with the base generator
(layout shift off: adgen.training.train_upsampler.generated_pool) and keeps the *aligned*
pairs: those whose 64 px image agrees with the 256 px render box-downsampled to 64 px within
ALIGNED_LEVELS mean |Δ| uint8 levels (the generator drew that concept on that colour in
place). Against a render the input does not show, PSNR would score the generator, not the
stage. On the aligned pairs: PSNR (dB, uint8) of a variant's 256 px output and of Pillow
bicubic against the render, and their difference, the gain (bar: PSNR_GAIN_BAR_DB).

Also the calibration inputs of the upsampler's int8 export: generated 64 px images of
concepts the evaluation does not use (the upsampler's training concepts).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from adgen.paths import release_model_dir, sha256_file
from adgen.training import eval_metrics
from adgen.training.data import load_dataset
from adgen.training.eval_upsampler import box_down, pil_resize, psnr
from adgen.training.train_upsampler import composite_u8, generated_pool, holdout_mask
from adgen.training.eval import to_uint8
from adgen.training.upsampler import UpsamplerError

ALIGNED_LEVELS = 6.0     # mean |gen64 - box_down(render)| for a pair to count as aligned
PSNR_GAIN_BAR_DB = 2.0   # the stage must beat bicubic by this much on aligned pairs
HELDOUT_EVERY = 20       # adgen train-upsampler's default: every 20th concept held out
PAIR_SEED, CALIBRATION_SEED = 12, 11


@dataclass(frozen=True)
class GeneratedPairs:
    x64: np.ndarray        # uint8 [N, 64, 64, 3]: the generator's images, every pair drawn
    y256: np.ndarray       # uint8 [N, 256, 256, 3]: the exact renders, same concept and colour
    concept: np.ndarray    # int [N]
    color: np.ndarray      # int [N]
    aligned: np.ndarray    # bool [N]: aligned_mask(x64, y256)
    base_sha256: str       # the base generator's weights


def aligned_mask(x64: np.ndarray, y256: np.ndarray,
                 levels: float = ALIGNED_LEVELS) -> np.ndarray:
    """bool [N]: mean |x64 - box_down(y256)| <= levels (uint8 [N,64,64,3] / [N,256,256,3])."""
    if x64.ndim != 4 or y256.ndim != 4 or len(x64) != len(y256) or \
            y256.shape[1] != 4 * x64.shape[1] or x64.shape[-1] != 3 or y256.shape[-1] != 3:
        raise UpsamplerError(f"pairs must be uint8 [N,S,S,3] and [N,4S,4S,3], got "
                             f"{list(x64.shape)} and {list(y256.shape)}")
    diff = np.abs(x64.astype(np.float32) - box_down(y256).astype(np.float32))
    return diff.reshape(len(x64), -1).mean(1) <= levels


def psnr_gain(upsampled: np.ndarray, pairs: GeneratedPairs) -> dict:
    """PSNR of `upsampled` (uint8 [N,256,256,3], one per pair) and of bicubic against the
    renders, over the aligned pairs; UpsamplerError when none is aligned."""
    if upsampled.shape != pairs.y256.shape:
        raise UpsamplerError(f"expected {len(pairs.y256)} images [256,256,3], got "
                             f"{list(upsampled.shape)}")
    keep = pairs.aligned
    if not keep.any():
        raise UpsamplerError("no generated image is aligned with its render: the base "
                             "generator does not draw these concepts in place")
    ref = pairs.y256[keep]
    up = psnr(upsampled[keep], ref)
    bicubic = psnr(pil_resize(pairs.x64[keep], 256, "bicubic"), ref)
    return {"pairs": int(keep.sum()), "pairs_drawn": int(len(keep)),
            "aligned_levels": ALIGNED_LEVELS, "psnr_db": round(up, 3),
            "bicubic_psnr_db": round(bicubic, 3), "gain_db": round(up - bicubic, 3),
            "bar_db": PSNR_GAIN_BAR_DB, "met": bool(up - bicubic >= PSNR_GAIN_BAR_DB)}


def identity_top1(upsampled: np.ndarray, pairs: GeneratedPairs, data64: str | Path) -> float:
    """Identity top-1 (adgen eval's nearest-real-image check) of `upsampled` box-downsampled
    to 64 px, over every pair drawn (aligned or not)."""
    ranks = eval_metrics.identity_ranks(box_down(upsampled), pairs.concept, pairs.color,
                                        load_dataset(data64).images)
    return eval_metrics.identity_scores(ranks)["top1"]


def _base_sha(base_model: str | Path | None) -> str:
    path = Path(base_model) if base_model else release_model_dir()
    weights = path if path.is_file() else path / "generator.safetensors"
    return sha256_file(weights)


def generated_pairs(data64: str | Path, data256: str | Path,
                    base_model: str | Path | None = None, per_concept: int = 4,
                    seed: int = PAIR_SEED, progress: bool = False) -> GeneratedPairs:
    """The held-out concepts drawn `per_concept` times by the base generator (release model
    when None), each beside its exact 256 px render on the same colour."""
    ds64, ds256 = load_dataset(data64), load_dataset(data256, size=256)
    if [r["codepoints"] for r in ds64.records] != [r["codepoints"] for r in ds256.records]:
        raise UpsamplerError(f"{data64} and {data256} list different concepts: build both "
                             "with the same filters")
    held = np.nonzero(holdout_mask(len(ds64.records), HELDOUT_EVERY))[0]
    x, concept, color = generated_pool(base_model and str(base_model), ds64.records,
                                       ds64.dataset_hash, held, per_concept, seed, progress)
    y = np.concatenate([to_uint8(composite_u8(torch.from_numpy(ds256.images[concept[i:i + 64]]),
                                              color[i:i + 64]))
                        for i in range(0, len(concept), 64)])
    x64 = x.numpy()
    return GeneratedPairs(x64, y, concept.numpy(), color.numpy(), aligned_mask(x64, y),
                          _base_sha(base_model))


def calibration_images(data64: str | Path, count: int = 128,
                       base_model: str | Path | None = None, seed: int = CALIBRATION_SEED,
                       progress: bool = False) -> np.ndarray:
    """uint8 [count, 64, 64, 3]: the base generator's images of `count` concepts the
    upsampler trained on (none of generated_pairs')."""
    if count < 1:
        raise UpsamplerError(f"calibration needs at least 1 image, got {count}")
    ds64 = load_dataset(data64)
    train = np.nonzero(~holdout_mask(len(ds64.records), HELDOUT_EVERY))[0]
    pick = np.random.default_rng(seed).choice(train, min(count, len(train)), replace=False)
    x, _, _ = generated_pool(base_model and str(base_model), ds64.records, ds64.dataset_hash,
                             pick, 1, seed, progress)
    return x.numpy()
