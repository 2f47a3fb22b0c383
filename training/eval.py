"""Evaluation of a generator checkpoint against real images (the ceiling row).

For `items` (concept, palette colour) pairs drawn with a held-out seed, the canonical caption
is embedded (cached MiniLM embeddings) and the generator renders it with latents from
adgen.latents (seeds derived from the eval seed, never used in training). Metrics, each
for the generated images and for the real composited images of the same captions:

  r_precision     matcher: is the image nearer its caption than `candidates - 1` random
                  other captions (top-1 of 100)? chance = 1 / candidates
  fd              Fréchet distance of matcher features against real images of other items
                  (real row: two disjoint halves of the real set)
  color_accuracy  background colour read from border pixels == the caption's colour
  mae, mse        pixels in [0, 1] against the real image of the same caption (real: 0)
  diversity       mean pairwise pixel MAE between seeds of one caption (real: 0, one image)
  identity_*      nearest real image among all concepts on the same colour (eval_metrics)
  bg_accuracy     background colour read where the real alpha is empty (eval_metrics)
  grid_energy     spectral share at the 2/4/8-pixel periods (eval_metrics)
  *_paraphrase    the same items prompted in PARAPHRASE_TEMPLATES (never trained on),
                  scored against their canonical captions

A `composer` checkpoint (trained on a design-family dataset whose twemoji family is this set)
is scored here too: with `style` every prompt names that family ("..., in twemoji emoji
style"), which compares it like with like against a twemoji-only generator; without it the
seeds pick the families and the twemoji-trained matcher and pixel rows read other designs.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from adgen.atomic import atomic_write_json
from adgen.captions import (COLOR_NAMES, PARAPHRASE_TEMPLATES, border_color, caption,
                            composite, family_phrase)
from adgen.errors import AdgenError
from adgen.latents import derive_seed, seeds_to_z
from adgen.training import eval_metrics
from adgen.training.checkpoint import load_generator
from adgen.training.matcher import MatcherConfig, get_matcher
from adgen.training.sampler import load_training_data
from adgen.training.stages import encode_cached
HIGHER_IS_BETTER = {"r_precision": True, "r_precision_paraphrase": True,
                    "identity_top1": True, "identity_top5": True,
                    "identity_top1_paraphrase": True, "identity_top5_paraphrase": True,
                    "identity_top1_worst_seed": True, "bg_accuracy": True,
                    "color_accuracy": True, "fd": False, "grid_energy": False, "mae": False,
                    "mse": False, "diversity": True}
METRICS = tuple(HIGHER_IS_BETTER)


class EvalError(AdgenError):
    """An evaluation that cannot run."""


@dataclass(frozen=True)
class EvalConfig:
    checkpoint: str
    data: str = "data/twemoji64"
    items: int = 1000             # (concept, colour) pairs; 0 = one per concept
    candidates: int = 100         # R-precision: 1 true caption among this many
    seed: int = 777_000_001       # held-out eval seed (latents + item draw)
    diversity_items: int = 100
    diversity_seeds: int = 4
    batch_size: int = 128
    threads: int = 0
    matcher_steps: int = 1000
    matcher_width: int = 16
    out: str | None = None        # default: <checkpoint>/eval.json (eval_<style>.json)
    progress: bool = True
    style: str | None = None      # design family named in every prompt (composer checkpoints)


def to_unit(images_u8: np.ndarray) -> torch.Tensor:
    """uint8 [N, 64, 64, 3] -> float32 [N, 3, 64, 64] in [-1, 1]."""
    return torch.from_numpy(images_u8).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """Generator output [N, 3, 64, 64] in [-1, 1] -> uint8 [N, 64, 64, 3] (as postprocess)."""
    x = ((images.clamp(-1, 1) + 1.0) * 127.5).round().to(torch.uint8)
    return x.permute(0, 2, 3, 1).contiguous().numpy()


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """FD between Gaussians fitted to feature sets a [N, D] and b [M, D]."""
    a, b = a.astype(np.float64), b.astype(np.float64)
    mu_a, mu_b = a.mean(0), b.mean(0)
    ca, cb = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    # sqrtm(ca @ cb) via the symmetric form sqrt(ca) cb sqrt(ca): same trace, stable eigh.
    w, v = np.linalg.eigh(ca)
    sqrt_ca = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    m = sqrt_ca @ cb @ sqrt_ca
    tr_sqrt = np.sqrt(np.clip(np.linalg.eigvalsh((m + m.T) / 2), 0, None)).sum()
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(ca) + np.trace(cb) - 2.0 * tr_sqrt)


@dataclass(frozen=True)
class EvalItems:
    concept: np.ndarray     # int [N]
    color: np.ndarray       # int [N] index into COLOR_NAMES
    text: torch.Tensor      # [N, 384] canonical caption embedding
    negatives: np.ndarray   # int [N, candidates - 1] flat (concept * n_colours + colour) keys


def draw_items(table: torch.Tensor, n_items: int, candidates: int, seed: int) -> EvalItems:
    """Items and their R-precision distractors from embedding table [C, n_colours, V, 384]."""
    n_concepts, n_colors = table.shape[:2]
    rng = np.random.default_rng(seed)
    if n_items <= 0 or n_items >= n_concepts:
        concept = np.arange(n_concepts)
    else:
        concept = np.sort(rng.choice(n_concepts, size=n_items, replace=False))
    color = rng.integers(0, n_colors, size=len(concept))
    total = n_concepts * n_colors
    if candidates - 1 > total - 1:
        raise EvalError(f"--candidates {candidates} exceeds the {total} distinct captions")
    own = concept * n_colors + color
    negatives = np.empty((len(concept), candidates - 1), dtype=np.int64)
    for i in range(len(concept)):
        pick = rng.choice(total - 1, size=candidates - 1, replace=False)
        negatives[i] = pick + (pick >= own[i])  # skip the item's own caption
    return EvalItems(concept, color, table[concept, color, 0], negatives)


def score_images(images_u8: np.ndarray, items: EvalItems, table: torch.Tensor, matcher,
                 reference_feats: np.ndarray | None = None) -> dict:
    """R-precision, colour accuracy and matcher features of one image set."""
    feats = matcher.embed(to_unit(images_u8))                               # [N, 384]
    flat = table[:, :, 0].reshape(-1, table.shape[-1])                      # [C*K, 384]
    pos = (feats * items.text).sum(1)                                       # [N]
    neg = torch.einsum("nd,nkd->nk", feats, flat[torch.from_numpy(items.negatives)])
    r_precision = float((pos[:, None] > neg).all(1).float().mean())
    colors = [border_color(im) for im in images_u8]
    color_acc = float(np.mean([c == COLOR_NAMES[k] for c, k in zip(colors, items.color)]))
    return {"r_precision": r_precision, "color_accuracy": color_acc, "feats": feats.numpy()}


def real_images(rgba: np.ndarray, items: EvalItems) -> np.ndarray:
    return np.stack([composite(rgba[c], COLOR_NAMES[k]) for c, k in zip(items.concept, items.color)])


@torch.no_grad()
def generate(module, items: EvalItems, base_seed: int, k: int, z_dim: int, batch: int,
             tags: list[str]) -> np.ndarray:
    seeds = [derive_seed(base_seed, tag, k) for tag in tags]
    z = torch.from_numpy(seeds_to_z(seeds, z_dim))
    out = [to_uint8(module(items.text[i:i + batch], z[i:i + batch]))
           for i in range(0, len(tags), batch)]
    return np.concatenate(out)


def compare(gen_u8: np.ndarray, real_u8: np.ndarray, items: EvalItems, table, matcher) -> dict:
    """Both rows of every metric except diversity. gen_u8 may be the real images (sanity)."""
    g = score_images(gen_u8, items, table, matcher)
    r = score_images(real_u8, items, table, matcher)
    even, odd = slice(0, None, 2), slice(1, None, 2)
    gf, rf = g.pop("feats"), r.pop("feats")
    diff = gen_u8.astype(np.float32) / 255.0 - real_u8.astype(np.float32) / 255.0
    return {
        "r_precision": {"generated": g["r_precision"], "real": r["r_precision"]},
        "color_accuracy": {"generated": g["color_accuracy"], "real": r["color_accuracy"]},
        # Generated on even items vs real on odd items; the ceiling: real even vs real odd.
        "fd": {"generated": frechet_distance(gf[even], rf[odd]),
               "real": frechet_distance(rf[even], rf[odd])},
        "mae": {"generated": float(np.abs(diff).mean()), "real": 0.0},
        "mse": {"generated": float((diff ** 2).mean()), "real": 0.0},
    }


def pixel_metrics(gen_u8: np.ndarray, real_u8: np.ndarray, items: EvalItems,
                  rgba: np.ndarray) -> dict:
    """identity top-1/top-5, background accuracy and grid energy, both rows."""
    out = {}
    for name, imgs in (("generated", gen_u8), ("real", real_u8)):
        ids = eval_metrics.identity_scores(
            eval_metrics.identity_ranks(imgs, items.concept, items.color, rgba))
        out.setdefault("identity_top1", {})[name] = ids["top1"]
        out.setdefault("identity_top5", {})[name] = ids["top5"]
        out.setdefault("bg_accuracy", {})[name] = eval_metrics.bg_accuracy(
            imgs, items.concept, items.color, rgba)
        out.setdefault("grid_energy", {})[name] = eval_metrics.grid_energy(imgs)
    return out


def diversity(module, items: EvalItems, cfg: EvalConfig, z_dim: int, tags: list[str],
              rgba: np.ndarray | None = None) -> tuple[float, float]:
    """Mean pairwise pixel MAE across diversity_seeds latents of the same caption, and the
    worst seed's identity top-1 on those items (1.0 when rgba is not given)."""
    n = min(cfg.diversity_items, len(tags))
    sub = EvalItems(items.concept[:n], items.color[:n], items.text[:n], items.negatives[:n])
    runs = [generate(module, sub, cfg.seed + 1, k, z_dim, cfg.batch_size, tags[:n]).astype(np.float32)
            for k in range(cfg.diversity_seeds)]
    pairs = [np.abs(runs[i] - runs[j]).mean() / 255.0
             for i in range(len(runs)) for j in range(i + 1, len(runs))]
    worst = 1.0
    if rgba is not None:
        worst = min(eval_metrics.identity_scores(eval_metrics.identity_ranks(
            r.astype(np.uint8), sub.concept, sub.color, rgba))["top1"] for r in runs)
    return (float(np.mean(pairs)) if pairs else 0.0), worst


def paraphrase_items(records_names: list[str], items: EvalItems, progress: bool,
                     style: str | None = None) -> EvalItems:
    """The same items prompted in the held-out paraphrase templates (item i: template i % 3)."""
    texts = [caption(records_names[c], COLOR_NAMES[k], PARAPHRASE_TEMPLATES[i % len(PARAPHRASE_TEMPLATES)])
             for i, (c, k) in enumerate(zip(items.concept, items.color))]
    return _embedded(texts, items, "eval-paraphrase", progress, style)


def styled_items(records_names: list[str], items: EvalItems, style: str,
                 progress: bool) -> EvalItems:
    """The canonical captions of `items` with the design family named at the end."""
    texts = [caption(records_names[c], COLOR_NAMES[k]) for c, k in zip(items.concept, items.color)]
    return _embedded(texts, items, "eval-canonical", progress, style)


def _embedded(texts: list[str], items: EvalItems, tag: str, progress: bool,
              style: str | None) -> EvalItems:
    if style:
        texts, tag = [f"{t}, {family_phrase(style)}" for t in texts], f"{tag}-{style}"
    emb = torch.from_numpy(encode_cached(texts, tag, progress=progress))
    return EvalItems(items.concept, items.color, emb, items.negatives)


def check_dataset(loaded, data, style: str | None) -> str | None:
    """None when the checkpoint was trained on `data`; a note when it is a composer scored on
    its twemoji family; EvalError otherwise (another dataset's concepts or pictures)."""
    if style is not None:
        try:
            family_phrase(style)
        except KeyError as exc:
            raise EvalError(f"--style: {exc.args[0]}") from None
        if loaded.arch != "composer":
            raise EvalError(f"--style needs a checkpoint that knows design families (composer); "
                            f"this one is {loaded.arch}")
    trained = loaded.config.get("dataset_hash")
    if trained in (None, data.dataset_hash):
        return None
    if loaded.arch == "composer":
        return (f"composer trained on design-family dataset {trained}; scored on "
                f"{data.dataset_hash} (its twemoji family), "
                + (f"every prompt naming {style}" if style else "no family named"))
    raise EvalError(f"checkpoint was trained on dataset {trained}, --data is {data.dataset_hash}")


def evaluate(cfg: EvalConfig) -> dict:
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    if cfg.candidates < 2:
        raise EvalError("--candidates must be at least 2")
    loaded = load_generator(cfg.checkpoint)
    data = load_training_data(cfg.data, progress=cfg.progress)
    cross = check_dataset(loaded, data, cfg.style)
    matcher = get_matcher(data, MatcherConfig(width=cfg.matcher_width, steps=cfg.matcher_steps,
                                              threads=cfg.threads), progress=cfg.progress)
    table = data.embeddings
    items = draw_items(table, cfg.items, cfg.candidates, cfg.seed)
    # The prompts may name the family; R-precision still ranks the plain captions (items).
    prompts = styled_items(data.names, items, cfg.style, cfg.progress) if cfg.style else items
    tags = [f"{c}:{COLOR_NAMES[k]}" for c, k in zip(items.concept, items.color)]
    rgba = (data.rgba.permute(0, 2, 3, 1).numpy() * 255.0).round().astype(np.uint8)
    real = real_images(rgba, items)
    gen = generate(loaded.module, prompts, cfg.seed, 0, loaded.z_dim, cfg.batch_size, tags)
    results = compare(gen, real, items, table, matcher)
    results |= pixel_metrics(gen, real, items, rgba)
    para = paraphrase_items(data.names, items, cfg.progress, cfg.style)
    gen_p = generate(loaded.module, para, cfg.seed, 0, loaded.z_dim, cfg.batch_size, tags)
    results["r_precision_paraphrase"] = {
        "generated": score_images(gen_p, items, table, matcher)["r_precision"],
        "real": results["r_precision"]["real"]}
    ids = eval_metrics.identity_scores(eval_metrics.identity_ranks(gen_p, items.concept,
                                                                   items.color, rgba))
    results["identity_top1_paraphrase"] = {"generated": ids["top1"], "real": 1.0}
    results["identity_top5_paraphrase"] = {"generated": ids["top5"], "real": 1.0}
    div, worst = diversity(loaded.module, prompts, cfg, loaded.z_dim, tags, rgba)
    results["diversity"] = {"generated": div, "real": 0.0}
    results["identity_top1_worst_seed"] = {"generated": worst, "real": 1.0}
    results["chance"] = {"r_precision": 1.0 / cfg.candidates,
                         "color_accuracy": 1.0 / len(COLOR_NAMES)}
    results["checkpoint"] = {"arch": loaded.arch, "sha256": loaded.sha256,
                             "step": loaded.config.get("training", {}).get("step"),
                             "run": loaded.config.get("training", {}).get("run")}
    results["eval"] = {k: v for k, v in asdict(cfg).items() if k not in ("out", "progress")}
    results["eval"]["n_items"] = int(len(items.concept))
    if cross:
        results["eval"]["cross_dataset"] = cross
    results["matcher"] = matcher.path.name
    out = Path(cfg.out) if cfg.out else \
        loaded.path / (f"eval_{cfg.style}.json" if cfg.style else "eval.json")
    atomic_write_json(out, results, sort_keys=True)
    results["_out"] = str(out)
    return results


def format_table(results: dict) -> str:
    lines = [f"{'metric':<26}{'generated':>12}{'real':>12}  better",
             "-" * 58]
    for name in METRICS:
        row = results[name]
        lines.append(f"{name:<26}{row['generated']:>12.4f}{row['real']:>12.4f}  "
                     f"{'higher' if HIGHER_IS_BETTER[name] else 'lower'}")
    return "\n".join(lines)
