"""Assemble the release model folder (models/adgen-emoji64/) from a checkpoint and evals.

  generator.safetensors, config.json   copied from the checkpoint (EMA weights)
  concepts.jsonl                       the training concepts (the expander's vocabulary)
  metrics.json                         the release model's `adgen eval` output
  <name>_metrics.json                  `adgen eval` of each comparison row (--compare)
  samples.png                          generated (odd rows) above real (even rows), eval items
The model card (MODEL_CARD.md) is written by hand from these numbers.

  python -m adgen.training.release CKPT EVAL_JSON [--compare v1=EVAL_JSON ...] [--out models/adgen-emoji64]
"""
from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from adgen.atomic import atomic_dir
from adgen.captions import COLOR_NAMES
from adgen.paths import release_model_dir
from adgen.training.checkpoint import load_generator
from adgen.training.eval import draw_items, generate, real_images
from adgen.training.sampler import load_training_data

CONCEPT_FIELDS = ("name", "aliases", "category", "char", "codepoints")


def write_concepts(data_dir: Path, out: Path) -> int:
    lines = []
    for line in (data_dir / "captions.jsonl").read_text(encoding="utf-8").splitlines():
        rec = json.loads(line)
        lines.append(json.dumps({k: rec[k] for k in CONCEPT_FIELDS}, ensure_ascii=False,
                                sort_keys=True))
    out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return len(lines)


def sample_sheet(ckpt: Path, data_dir: Path, out: Path, eval_seed: int, n: int = 32) -> None:
    """Rows of 8: generated images of n eval items, each row followed by the real ones."""
    loaded = load_generator(ckpt)
    data = load_training_data(data_dir, progress=False)
    items = draw_items(data.embeddings, n, 100, eval_seed)
    tags = [f"{c}:{COLOR_NAMES[k]}" for c, k in zip(items.concept, items.color)]
    gen = generate(loaded.module, items, eval_seed, 0, loaded.z_dim, 64, tags)
    rgba = (data.rgba.permute(0, 2, 3, 1).numpy() * 255.0).round().astype(np.uint8)
    real = real_images(rgba, items)
    rows = []
    for r in range(0, n, 8):
        rows.append(np.concatenate(list(gen[r:r + 8]), axis=1))
        rows.append(np.concatenate(list(real[r:r + 8]), axis=1))
    Image.fromarray(np.concatenate(rows, axis=0)).save(out, optimize=True)


def make_release(ckpt: Path, eval_json: Path, out_dir: Path, compare: dict[str, Path],
                 data_dir: Path = Path("data/twemoji64")) -> Path:
    """Writes the release folder; compare maps a row name (file <name>_metrics.json) to an
    `adgen eval` output of another model (earlier release, baseline)."""
    with atomic_dir(out_dir) as tmp:
        for name in ("generator.safetensors", "config.json"):
            shutil.copy2(ckpt / name, tmp / name)
        write_concepts(data_dir, tmp / "concepts.jsonl")
        shutil.copy2(eval_json, tmp / "metrics.json")
        for name, path in compare.items():
            shutil.copy2(path, tmp / f"{name}_metrics.json")
        seed = json.loads(Path(eval_json).read_text())["eval"]["seed"]
        sample_sheet(ckpt, data_dir, tmp / "samples.png", seed)
        card = out_dir / "MODEL_CARD.md"
        if card.is_file():  # keep the hand-written card
            shutil.copy2(card, tmp / "MODEL_CARD.md")
    return out_dir


if __name__ == "__main__":
    args = sys.argv[1:]
    out = release_model_dir()
    compare: dict[str, Path] = {}
    while "--out" in args or "--compare" in args:
        flag = "--out" if "--out" in args else "--compare"
        i = args.index(flag)
        if flag == "--out":
            out = Path(args[i + 1])
        else:
            name, _, path = args[i + 1].partition("=")
            compare[name] = Path(path)
        del args[i:i + 2]
    if len(args) != 2:
        sys.exit(__doc__)
    print(make_release(Path(args[0]), Path(args[1]), out, compare))
