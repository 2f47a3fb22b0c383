"""Evaluating the 4x upsampler: `adgen eval-upsampler CKPT` -> eval JSON + contact sheet.

Real inputs (concepts held out of upsampler training, every palette colour): the 64 px
training image upsampled by the stage, by bicubic and by Lanczos (Pillow), each against the
exact 256 px SVG render: PSNR (dB, uint8), SSIM (11x11 Gaussian window, sigma 1.5, per
channel) and edge sharpness (edge_strength: the mean of each image's top 5% Sobel gradient
magnitudes, relative to the real renders'; 1.0 = edges as steep as the real picture's).

Generated inputs (the base generator as served: same items, seeds and matcher as
`adgen eval`): R-precision and identity top-1 of the 256 px image box-downsampled to 64 vs
the 64 px image itself, and their mean |difference| in uint8 levels (the 256 px image must
agree with the 64 px one).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from adgen.atomic import atomic_file, atomic_write_json
from adgen.captions import COLOR_NAMES
from adgen.paths import release_model_dir
from adgen.training import eval_metrics
from adgen.training.checkpoint import load_generator
from adgen.training.data import load_dataset
from adgen.training.eval import EvalConfig, draw_items, generate, score_images, to_uint8
from adgen.training.matcher import MatcherConfig, get_matcher
from adgen.training.sampler import load_training_data
from adgen.training.train_upsampler import composite_u8, holdout_mask, sobel
from adgen.training.upsampler import load_upsampler

SHEET_ROWS = 5  # per input kind


@dataclass(frozen=True)
class UpEvalConfig:
    checkpoint: str
    data: str = "data/twemoji64"
    data256: str = "data/twemoji256"
    base_model: str | None = None
    items: int = 500
    candidates: int = EvalConfig.candidates
    seed: int = EvalConfig.seed
    batch_size: int = 32
    threads: int = 0
    out: str | None = None        # default: <checkpoint>/eval.json
    sheet: str | None = None      # default: <out folder>/upsampler_sheet.png
    progress: bool = True


def psnr(a_u8: np.ndarray, b_u8: np.ndarray) -> float:
    """Mean per-image PSNR in dB of uint8 [N, H, W, 3] pairs (identical images count 100)."""
    d = (a_u8.astype(np.float64) - b_u8.astype(np.float64)) ** 2
    mse = d.reshape(len(d), -1).mean(1)
    return float(np.mean(np.where(mse > 0, 10 * np.log10(255.0 ** 2 / np.maximum(mse, 1e-12)),
                                  100.0)))


def ssim(a_u8: np.ndarray, b_u8: np.ndarray, chunk: int = 32) -> float:
    """Mean SSIM (Wang et al. 2004 constants, 11x11 Gaussian sigma 1.5, per channel)."""
    t = torch.arange(11, dtype=torch.float32) - 5
    g = torch.exp(-0.5 * (t / 1.5) ** 2)
    g = g / g.sum()
    gx, gy = g.view(1, 1, 1, 11).repeat(3, 1, 1, 1), g.view(1, 1, 11, 1).repeat(3, 1, 1, 1)

    def blur(v):  # separable: two 11-tap passes instead of one 121-tap one
        return F.conv2d(F.conv2d(v, gx, groups=3), gy, groups=3)
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    vals = []
    for i in range(0, len(a_u8), chunk):
        x = torch.from_numpy(a_u8[i:i + chunk]).permute(0, 3, 1, 2).float()
        y = torch.from_numpy(b_u8[i:i + chunk]).permute(0, 3, 1, 2).float()
        mx, my = blur(x), blur(y)
        sxx, syy, sxy = blur(x * x) - mx ** 2, blur(y * y) - my ** 2, blur(x * y) - mx * my
        s = ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx ** 2 + my ** 2 + c1) * (sxx + syy + c2))
        vals.append(s.mean((1, 2, 3)))
    return float(torch.cat(vals).mean())


def edge_strength(images_u8: np.ndarray, top: float = 0.05, chunk: int = 64) -> float:
    """Mean Sobel gradient magnitude over each image's strongest `top` fraction of pixels.

    A blurred edge spreads the same step over more pixels, so its peak gradients drop;
    ringing and flat areas do not count. Reported relative to the real renders."""
    vals = []
    for i in range(0, len(images_u8), chunk):
        x = torch.from_numpy(images_u8[i:i + chunk]).permute(0, 3, 1, 2).float() / 255.0
        g = sobel(x)
        c = x.shape[1]
        mag = torch.sqrt(g[:, :c] ** 2 + g[:, c:] ** 2).mean(1).flatten(1)      # [n, H*W]
        k = max(1, int(top * mag.shape[1]))
        vals.append(mag.topk(k, dim=1).values.mean(1))
    return float(torch.cat(vals).mean())


def pil_resize(images_u8: np.ndarray, size: int, method: str) -> np.ndarray:
    resample = {"bicubic": Image.Resampling.BICUBIC, "lanczos": Image.Resampling.LANCZOS,
                "nearest": Image.Resampling.NEAREST}[method]
    return np.stack([np.asarray(Image.fromarray(im).resize((size, size), resample))
                     for im in images_u8])


@torch.no_grad()
def upsample(module, images_u8: np.ndarray, batch: int) -> np.ndarray:
    """uint8 [N, 64, 64, 3] -> uint8 [N, 256, 256, 3] through the upsampler (fp32)."""
    out = []
    for i in range(0, len(images_u8), batch):
        x = torch.from_numpy(images_u8[i:i + batch]).permute(0, 3, 1, 2).float() / 127.5 - 1.0
        out.append(to_uint8(module(x)))
    return np.concatenate(out)


def box_down(images_u8: np.ndarray, factor: int = 4) -> np.ndarray:
    """uint8 [N, S, S, 3] -> uint8 [N, S/f, S/f, 3] by f x f area mean (rounded)."""
    x = torch.from_numpy(images_u8).permute(0, 3, 1, 2).float()
    return F.avg_pool2d(x, factor).round().clamp(0, 255).byte().permute(0, 2, 3, 1).numpy()


def contact_sheet(rows: list[list[np.ndarray]], path: Path) -> None:
    """Rows of 256 px cells (64 px cells are nearest-upscaled) -> one PNG."""
    cells = [[c if c.shape[0] == 256 else np.repeat(np.repeat(c, 256 // c.shape[0], 0),
                                                      256 // c.shape[1], 1) for c in r]
             for r in rows]
    sheet = np.concatenate([np.concatenate(r, 1) for r in cells], 0)
    with atomic_file(path) as f:
        Image.fromarray(sheet).save(f, format="PNG", optimize=True)


def composites(rgba_u8: np.ndarray, concept: np.ndarray, color: np.ndarray,
               chunk: int = 64) -> np.ndarray:
    """Concepts on palette colours as uint8 [N, S, S, 3], composited in chunks."""
    return np.concatenate([to_uint8(composite_u8(torch.from_numpy(rgba_u8[concept[i:i + chunk]]),
                                                 torch.from_numpy(color[i:i + chunk])))
                           for i in range(0, len(concept), chunk)])


def evaluate_upsampler(cfg: UpEvalConfig) -> dict:
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    up = load_upsampler(cfg.checkpoint)
    ds64, ds256 = load_dataset(cfg.data), load_dataset(cfg.data256, size=256)
    every = int(up.config.get("training", {}).get("held_out_every") or 20)
    held = np.nonzero(holdout_mask(len(ds64.records), every))[0]
    # --- real inputs: every held-out concept on every palette colour
    cid = np.repeat(held, len(COLOR_NAMES))
    col = np.tile(np.arange(len(COLOR_NAMES)), len(held))
    x64, y256 = composites(ds64.images, cid, col), composites(ds256.images, cid, col)
    outs = {"upsampler": upsample(up.module, x64, cfg.batch_size),
            "bicubic": pil_resize(x64, 256, "bicubic"),
            "lanczos": pil_resize(x64, 256, "lanczos")}
    real_energy = edge_strength(y256)
    real = {"n_images": int(len(cid)), "n_concepts": int(len(held)),
            "psnr_db": {k: psnr(v, y256) for k, v in outs.items()},
            "ssim": {k: ssim(v, y256) for k, v in outs.items()},
            "edge_sharpness": {**{k: edge_strength(v) / real_energy for k, v in outs.items()},
                               "real": 1.0}}
    real["psnr_gain_over_bicubic_db"] = real["psnr_db"]["upsampler"] - real["psnr_db"]["bicubic"]
    # --- generated inputs: the base generator as served, adgen eval's items and matcher
    gen = load_generator(cfg.base_model or release_model_dir())
    data = load_training_data(cfg.data, progress=cfg.progress)
    ec = EvalConfig(checkpoint="", data=cfg.data)
    matcher = get_matcher(data, MatcherConfig(width=ec.matcher_width, steps=ec.matcher_steps,
                                              threads=cfg.threads), progress=cfg.progress)
    items = draw_items(data.embeddings, cfg.items, cfg.candidates, cfg.seed)
    tags = [f"{c}:{COLOR_NAMES[k]}" for c, k in zip(items.concept, items.color)]
    g64 = generate(gen.module, items, cfg.seed, 0, gen.z_dim, 128, tags)
    g256 = upsample(up.module, g64, cfg.batch_size)
    back = box_down(g256)
    rgba = ds64.images
    scores = {}
    for name, imgs in (("64", g64), ("256_downsampled", back)):
        ranks = eval_metrics.identity_ranks(imgs, items.concept, items.color, rgba)
        scores[name] = {"r_precision": score_images(imgs, items, data.embeddings,
                                                    matcher)["r_precision"],
                        "identity_top1": eval_metrics.identity_scores(ranks)["top1"]}
    generated = {"n_items": int(len(items.concept)), **scores,
                 "agreement_mean_abs_levels": float(np.abs(back.astype(np.float32)
                                                           - g64.astype(np.float32)).mean()),
                 "edge_sharpness": {"upsampler": edge_strength(g256) / real_energy,
                                    "bicubic": edge_strength(pil_resize(g64, 256, "bicubic"))
                                    / real_energy}}
    results = {"real_inputs": real, "generated_inputs": generated,
               "bars": {"psnr_gain_db_min": 3.0,
                        "psnr_gain_met": real["psnr_gain_over_bicubic_db"] >= 3.0,
                        "r_precision_not_lower": scores["256_downsampled"]["r_precision"]
                        >= scores["64"]["r_precision"],
                        "identity_not_lower": scores["256_downsampled"]["identity_top1"]
                        >= scores["64"]["identity_top1"]},
               "checkpoint": {"path": up.path.name, "sha256": up.sha256,
                              "model": up.config["model"],
                              "flops_per_image": up.module.flops_per_image(),
                              "step": up.config.get("training", {}).get("step")},
               "base_model": {"sha256": gen.sha256},
               "eval": {k: v for k, v in asdict(cfg).items() if k not in ("out", "progress")}}
    out = Path(cfg.out) if cfg.out else up.path / "eval.json"
    atomic_write_json(out, results, sort_keys=True)
    sheet = Path(cfg.sheet) if cfg.sheet else out.with_name("upsampler_sheet.png")
    pick = np.linspace(0, len(cid) - 1, SHEET_ROWS).astype(int)
    rows = [[x64[i], outs["bicubic"][i], outs["upsampler"][i], y256[i]] for i in pick]
    gpick = np.linspace(0, len(g64) - 1, SHEET_ROWS).astype(int)
    g_real = {i: composites(ds256.images, items.concept[[i]], items.color[[i]])[0]
              for i in gpick}
    g_bic = pil_resize(g64[gpick], 256, "bicubic")
    rows += [[g64[i], g_bic[j], g256[i], g_real[i]] for j, i in enumerate(gpick)]
    contact_sheet(rows, sheet)
    results["_out"], results["_sheet"] = str(out), str(sheet)
    return results


def format_table(r: dict) -> str:
    real, gen = r["real_inputs"], r["generated_inputs"]
    lines = [f"real inputs ({real['n_images']} images, {real['n_concepts']} held-out concepts)",
             f"{'':<12}{'PSNR dB':>9}{'SSIM':>8}{'edges':>8}"]
    for k in ("upsampler", "bicubic", "lanczos"):
        lines.append(f"{k:<12}{real['psnr_db'][k]:>9.2f}{real['ssim'][k]:>8.4f}"
                     f"{real['edge_sharpness'][k]:>8.3f}")
    lines.append(f"upsampler - bicubic: {real['psnr_gain_over_bicubic_db']:+.2f} dB (bar +3)")
    lines.append(f"generated inputs ({gen['n_items']} items): R-precision 64 "
                 f"{gen['64']['r_precision']:.3f} / 256 {gen['256_downsampled']['r_precision']:.3f}"
                 f"; identity 64 {gen['64']['identity_top1']:.3f} / 256 "
                 f"{gen['256_downsampled']['identity_top1']:.3f}; agreement "
                 f"{gen['agreement_mean_abs_levels']:.2f} levels")
    return "\n".join(lines)
