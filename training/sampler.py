"""Training batches: concept image x palette colour x caption embedding.

Each sample is one concept's RGBA image composited on a random palette colour, paired with
the embedding of one of its cached captions. Captions are encoded once with the serving
TextEncoder (the same numbers serving computes) and cached under artifacts/embeddings/,
keyed by dataset hash + text-encoder hash + caption scheme.

Caption scheme "names-x-colours-x2" (encoding every alias x template x colour would take
~20 min on 2 cores): per (concept, colour) two captions,
  0: the canonical template with the concept name (what the offline expander writes),
  1: one of the other templates with the name or an alias, picked by a fixed-seed RNG.
"""
from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from adgen.atomic import atomic_file
from adgen.captions import CANONICAL_TEMPLATE, COLOR_NAMES, PALETTE, TEMPLATES, caption
from adgen.contract import EMBED_DIM
from adgen.errors import AdgenError
from adgen.paths import artifacts_dir, text_encoder_dir
from adgen.serving.runtime.text import TextEncoder
from adgen.training.data import load_dataset

CAPTION_SCHEME = "names-x-colours-x2"
VARIANTS = 2


class SamplerError(AdgenError):
    """Training data that cannot be prepared."""


def text_encoder_hash(model_dir: Path | None = None) -> str:
    """The text encoder's weights sha256 (from its manifest), identifies the embeddings."""
    manifest = Path(model_dir or text_encoder_dir()) / "manifest.json"
    try:
        return json.loads(manifest.read_text())["weights_sha256"]
    except (OSError, KeyError, json.JSONDecodeError):
        raise SamplerError(f"text encoder manifest missing or bad at {manifest}: "
                           "run `adgen export text-encoder`") from None


def caption_table(records: list[dict]) -> list[list[list[str]]]:
    """captions[concept][colour][variant] for the caption scheme above."""
    rng = np.random.default_rng(0)
    others = TEMPLATES[1:]
    table = []
    for rec in records:
        names = [rec["name"], *rec.get("aliases", [])]
        rows = []
        for color in COLOR_NAMES:
            tmpl = others[int(rng.integers(len(others)))]
            name = names[int(rng.integers(len(names)))]
            rows.append([caption(rec["name"], color, CANONICAL_TEMPLATE),
                         caption(name, color, tmpl)])
        table.append(rows)
    return table


def cache_key(dataset_hash: str, te_hash: str) -> str:
    blob = json.dumps({"dataset": dataset_hash, "encoder": te_hash, "scheme": CAPTION_SCHEME,
                       "templates": TEMPLATES, "colors": COLOR_NAMES}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


def caption_embeddings(records: list[dict], dataset_hash: str, encoder_dir: Path | None = None,
                       progress: bool = True, threads: int = 0) -> tuple[np.ndarray, str]:
    """float32[N, n_colours, 2, 384] embeddings (cached) and the cache key."""
    key = cache_key(dataset_hash, text_encoder_hash(encoder_dir))
    arr = cached_encodings(artifacts_dir() / "embeddings" / f"{key}.npy",
                           lambda: [t for rows in caption_table(records) for row in rows
                                    for t in row],
                           (len(records), len(COLOR_NAMES), VARIANTS, EMBED_DIM),
                           "encode captions", progress, encoder_dir, threads)
    return arr, key


def cached_encodings(path: Path, texts: Callable[[], list[str]], shape: tuple[int, ...],
                     desc: str, progress: bool, encoder_dir: Path | None = None,
                     threads: int = 0) -> np.ndarray:
    """float32 `shape` (the encodings of texts() in order, reshaped) read from the cache file
    `path`, or encoded with the serving text encoder and cached there when missing or of
    another shape. texts: a callable, so that a cache hit never builds the list."""
    if path.is_file():
        arr = np.load(path, allow_pickle=False)
        if arr.shape == shape:
            return arr

    encoder = TextEncoder(encoder_dir, threads=threads, batch_size=128)
    texts = texts()
    out = np.empty((len(texts), EMBED_DIM), dtype=np.float32)
    step = 1024
    for start in tqdm(range(0, len(texts), step), desc=desc, unit="chunk",
                      disable=not progress):
        out[start:start + step] = encoder.encode(texts[start:start + step])
    arr = out.reshape(shape)
    with atomic_file(path) as f:
        np.save(f, arr, allow_pickle=False)
    return arr


@dataclass
class TrainingData:
    """Everything the loop samples from, as tensors."""
    rgba: torch.Tensor        # float32[N, 4, 64, 64] in [0, 1]
    embeddings: torch.Tensor  # float32[N, n_colours, variants, 384]
    names: list[str]
    dataset_hash: str | None
    text_encoder_hash: str | None
    embeddings_key: str | None

    @property
    def n(self) -> int:
        return self.rgba.shape[0]

    def images(self, idx: torch.Tensor, colors: torch.Tensor) -> torch.Tensor:
        """Composite concepts idx[B] on palette colours colors[B] -> [B, 3, 64, 64] in [-1, 1]."""
        palette = torch.tensor([PALETTE[c] for c in COLOR_NAMES], dtype=torch.float32) / 255.0
        rgba = self.rgba[idx]
        alpha = rgba[:, 3:4]
        bg = palette[colors][:, :, None, None]
        return (rgba[:, :3] * alpha + bg * (1.0 - alpha)) * 2.0 - 1.0

    def sample(self, batch: int, gen: torch.Generator):
        """A random batch: (images [B,3,64,64], embeddings [B,384], idx [B], colours [B])."""
        idx = torch.randint(0, self.n, (batch,), generator=gen)
        colors = torch.randint(0, self.embeddings.shape[1], (batch,), generator=gen)
        variant = torch.randint(0, self.embeddings.shape[2], (batch,), generator=gen)
        return self.images(idx, colors), self.embeddings[idx, colors, variant], idx, colors


def load_training_data(data_dir: str | Path, progress: bool = True) -> TrainingData:
    ds = load_dataset(data_dir)
    emb, key = caption_embeddings(ds.records, ds.dataset_hash, progress=progress)
    rgba = torch.from_numpy(ds.images).permute(0, 3, 1, 2).float().div_(255.0).contiguous()
    return TrainingData(rgba, torch.from_numpy(emb), [r["name"] for r in ds.records],
                        ds.dataset_hash, text_encoder_hash(), key)


def fake_training_data(n: int = 64, seed: int = 0) -> TrainingData:
    """Random blobs and random unit embeddings: exercises the loop without data or encoder."""
    g = torch.Generator().manual_seed(seed)
    rgba = torch.rand(n, 4, 64, 64, generator=g)
    emb = torch.randn(n, len(COLOR_NAMES), VARIANTS, EMBED_DIM, generator=g)
    emb = emb / emb.norm(dim=-1, keepdim=True)
    return TrainingData(rgba, emb, [f"fake {i}" for i in range(n)], None, None, None)
