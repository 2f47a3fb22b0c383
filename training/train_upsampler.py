"""Training the 4x upsampler: runs/<nnnnn>-<desc>/ with metrics.jsonl and resumable checkpoints.

Pairs (input 64 px -> target 256 px, both composited on the same palette colour):
  real       the concept's 64 px training image (what the base generator imitates)
  degraded   the same, blurred (Gaussian sigma 0-1.2 px) and with noise (sigma 0-0.04), or
             the 256 px render box-downsampled, so the stage does not depend on one filter
  generated  the base generator's own output for the concept's caption (its layout shift
             off, z random), so the stage learns to repair what the base model gets wrong
and the target is always the exact SVG render at 256 px (data/twemoji256). Every 20th
concept is held out of training for the evaluation (adgen.training.eval_upsampler).

Loss: L1 + edge_weight x L1 between Sobel gradients (the edge term: bilinear / L1-only
outputs are soft exactly where the gradients are large). Inputs are random crops
(crop x crop -> 4crop x 4crop); the network is fully convolutional, so it is exported and
served on whole 64 px images. Adam, 100-step warm-up, cosine decay to 0 at `steps`.
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from adgen.atomic import atomic_write_json
from adgen.captions import COLOR_NAMES, PALETTE
from adgen.errors import AdgenError
from adgen.training.upsampler import SCALE, Upsampler, load_upsampler, save_upsampler
from adgen.paths import release_model_dir
from adgen.training.checkpoint import (load_generator, load_optimizer, load_tensors,
                                       optimizer_tensors, save_tensors)
from adgen.training.data import load_dataset
from adgen.training.eval import to_uint8
from adgen.training.sampler import caption_embeddings
from adgen.training.stages import use_bf16
from adgen.training.loop import next_run_dir

WARMUP = 100


class UpsamplerTrainError(AdgenError):
    """An upsampler run that cannot start or resume; one line for the user."""


@dataclass(frozen=True)
class UpsamplerConfig:
    data: str = "data/twemoji64"
    data256: str = "data/twemoji256"
    base_model: str | None = None   # generator checkpoint for the "generated" pairs (release)
    out: str = "runs"
    desc: str = "upsampler"
    width: int = 32
    n_blocks: int = 4
    batch_size: int = 16
    crop: int = 32                  # input crop side; the target crop is 4x
    steps: int = 6000
    max_minutes: float = 0.0        # 0: no time limit (steps decide)
    lr: float = 2e-3
    edge_weight: float = 0.5
    mix: tuple[float, float, float] = (0.4, 0.3, 0.3)  # real, degraded, generated
    gen_per_concept: int = 3
    holdout_every: int = 20
    threads: int = 0
    precision: str = "auto"         # auto: bf16 autocast where the CPU has bf16 units
    seed: int = 0
    log_every: int = 50
    ckpt_every: int = 500
    resume: str | None = None
    init: str | None = None         # start from this upsampler checkpoint's weights (fine-tune)
    progress: bool = True


def holdout_mask(n: int, every: int) -> np.ndarray:
    """True for concepts held out of upsampler training (every `every`-th, from 0)."""
    return (np.arange(n) % every) == 0


def _palette() -> torch.Tensor:
    return torch.tensor([PALETTE[c] for c in COLOR_NAMES], dtype=torch.float32) / 255.0


def composite_u8(rgba_u8: torch.Tensor, colors: torch.Tensor) -> torch.Tensor:
    """uint8 RGBA [B, S, S, 4], colour ids [B] -> float [B, 3, S, S] in [-1, 1]."""
    x = rgba_u8.permute(0, 3, 1, 2).float().div_(255.0)
    a = x[:, 3:4]
    bg = _palette()[colors][:, :, None, None]
    return (x[:, :3] * a + bg * (1.0 - a)) * 2.0 - 1.0


def sobel(x: torch.Tensor) -> torch.Tensor:
    """[B, C, H, W] -> [B, 2C, H, W]: horizontal and vertical Sobel responses per channel."""
    k = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]], device=x.device)
    c = x.shape[1]
    w = torch.stack([k, k.T])[:, None].repeat(c, 1, 1, 1).to(x.dtype)         # [2C, 1, 3, 3]
    return F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), w, groups=c)


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    if sigma <= 0.05:
        return x
    r = max(1, int(math.ceil(2.5 * sigma)))
    t = torch.arange(-r, r + 1, dtype=x.dtype)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    k = k / k.sum()
    c = x.shape[1]
    x = F.conv2d(F.pad(x, (r, r, 0, 0), mode="replicate"), k.view(1, 1, 1, -1).repeat(c, 1, 1, 1),
                 groups=c)
    return F.conv2d(F.pad(x, (0, 0, r, r), mode="replicate"), k.view(1, 1, -1, 1).repeat(c, 1, 1, 1),
                    groups=c)


def first_family_latents(z: torch.Tensor, n_families: int) -> torch.Tensor:
    """z [N, z_dim] changed so that a composer whose words name no family draws family 0
    (Twemoji, the family of the 256 px targets): the seed picks the argmax of z[:, :F]."""
    if not n_families:
        return z
    z = z.clone()
    z[:, 0] = z[:, :n_families].max(1).values + 0.5
    return z


@torch.no_grad()
def generated_pool(base_model: str | None, records: list[dict], dataset_hash: str,
                   concepts: np.ndarray, per_concept: int, seed: int,
                   progress: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The base generator's 64 px outputs for captions of `concepts`, layout shift off.

    -> (images uint8 [P, 64, 64, 3], concept ids [P], colour ids [P])."""
    loaded = load_generator(base_model or release_model_dir())
    G = loaded.module
    if hasattr(G, "shift_px"):  # pairs must stay aligned with the unshifted 256 px target
        G.shift_px, G.shrink = 0.0, 0.0
    emb, _ = caption_embeddings(records, dataset_hash, progress=progress)
    rng = np.random.default_rng(seed)
    cid = np.repeat(concepts, per_concept)
    col = rng.integers(0, len(COLOR_NAMES), size=len(cid))
    var = rng.integers(0, emb.shape[2], size=len(cid))
    text = torch.from_numpy(emb[cid, col, var])
    z = torch.from_numpy(rng.standard_normal((len(cid), loaded.z_dim)).astype(np.float32))
    z = first_family_latents(z, getattr(G, "n_families", 0))
    out = []
    for i in tqdm(range(0, len(cid), 256), desc="base generator pool", unit="batch",
                  disable=not progress):
        out.append(to_uint8(G(text[i:i + 256], z[i:i + 256])))
    return (torch.from_numpy(np.concatenate(out)), torch.from_numpy(cid),
            torch.from_numpy(col))


class UpsamplerTrainer:
    def __init__(self, cfg: UpsamplerConfig, rgba64: np.ndarray, rgba256: np.ndarray,
                 pool: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None, meta: dict):
        self.cfg = cfg
        self.meta = meta
        self.rgba64 = torch.from_numpy(rgba64)
        self.rgba256 = torch.from_numpy(rgba256)
        self.train_ids = torch.from_numpy(np.nonzero(~holdout_mask(len(rgba64),
                                                                   cfg.holdout_every))[0])
        self.pool = pool
        with torch.random.fork_rng():  # the same config starts from the same weights
            torch.manual_seed(cfg.seed)
            self.model = Upsampler(cfg.width, cfg.n_blocks)
        self.opt = torch.optim.Adam(self.model.parameters(), lr=cfg.lr, betas=(0.9, 0.99))
        self.bf16 = use_bf16(cfg.precision, torch.device("cpu"))
        self.gen = torch.Generator().manual_seed(cfg.seed)
        self.step = 0

    def lr_scale(self) -> float:
        if self.step < WARMUP:
            return (self.step + 1) / WARMUP
        t = (self.step - WARMUP) / max(1, self.cfg.steps - WARMUP)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, t)))

    def batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(input crops [B, 3, c, c], target crops [B, 3, 4c, 4c]) in [-1, 1]."""
        cfg, g = self.cfg, self.gen
        b = cfg.batch_size
        src = torch.multinomial(torch.tensor(cfg.mix, dtype=torch.float32), b, True, generator=g)
        if self.pool is None:
            src[src == 2] = 0
        idx = self.train_ids[torch.randint(len(self.train_ids), (b,), generator=g)]
        col = torch.randint(len(COLOR_NAMES), (b,), generator=g)
        x = composite_u8(self.rgba64[idx], col)
        gen_rows = torch.nonzero(src == 2).flatten()
        if len(gen_rows):
            p = torch.randint(len(self.pool[0]), (len(gen_rows),), generator=g)
            idx[gen_rows], col[gen_rows] = self.pool[1][p], self.pool[2][p]
            x[gen_rows] = self.pool[0][p].permute(0, 3, 1, 2).float() / 127.5 - 1.0
        y = composite_u8(self.rgba256[idx], col)
        for i in torch.nonzero(src == 1).flatten().tolist():
            if torch.rand((), generator=g) < 0.3:
                x[i] = F.avg_pool2d(y[i:i + 1], SCALE)[0]
            else:
                sigma = float(torch.rand((), generator=g)) * 1.2
                noise = float(torch.rand((), generator=g)) * 0.04
                xi = gaussian_blur(x[i:i + 1], sigma)[0]
                x[i] = (xi + noise * torch.randn(xi.shape, generator=g)).clamp(-1, 1)
        c = cfg.crop
        xs, ys = [], []
        for i in range(b):
            oy, ox = (int(v) for v in torch.randint(0, 64 - c + 1, (2,), generator=g))
            xs.append(x[i, :, oy:oy + c, ox:ox + c])
            ys.append(y[i, :, SCALE * oy:SCALE * (oy + c), SCALE * ox:SCALE * (ox + c)])
        return torch.stack(xs), torch.stack(ys)

    def train_step(self) -> dict[str, float]:
        x, y = self.batch()
        for group in self.opt.param_groups:
            group["lr"] = self.cfg.lr * self.lr_scale()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.bf16):
            out = self.model(x)
        out = out.float()
        l1 = (out - y).abs().mean()
        edge = (sobel(out) - sobel(y)).abs().mean()
        loss = l1 + self.cfg.edge_weight * edge
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        self.step += 1
        return {"l1": float(l1.detach()), "edge": float(edge.detach())}

    # -- checkpoints: the model as a release checkpoint, the rest for --resume
    def save(self, run_dir: Path, name: str) -> Path:
        out = save_upsampler(self.model, run_dir / "checkpoints" / name, {
            "training": {"run": run_dir.name, "step": self.step, "config": asdict(self.cfg),
                         **self.meta}})
        state = optimizer_tensors("opt", self.opt)
        state["rng"] = self.gen.get_state()
        save_tensors(state, {"step": self.step}, out / "state.safetensors")
        return out

    def init_from(self, path) -> str:
        """Starts from an upsampler checkpoint's weights (same shape); returns its sha256."""
        start = load_upsampler(path)
        if start.config["model"] != dict(self.model.model_kwargs):
            raise UpsamplerTrainError(f"--init {path}: its model {start.config['model']} is "
                                      f"not this run's {dict(self.model.model_kwargs)}")
        self.model.load_state_dict(start.module.state_dict())
        return start.sha256

    def load(self, ckpt: Path) -> None:
        self.model.load_state_dict(load_upsampler(ckpt).module.state_dict())
        self.model.train()
        tensors, meta = load_tensors(ckpt / "state.safetensors")
        load_optimizer("opt", self.opt, tensors)
        self.gen.set_state(tensors["rng"])
        self.step = int(meta["step"])


def run_training(cfg: UpsamplerConfig) -> Path:
    """Trains (or resumes) a run; returns the final checkpoint folder."""
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    if cfg.resume:
        run_dir = Path(cfg.resume)
        try:
            saved = json.loads((run_dir / "config.json").read_text())
        except (OSError, ValueError):
            raise UpsamplerTrainError(f"--resume {run_dir}: not an upsampler run folder") from None
        # steps 0: the run's own (a resumed cosine schedule must keep its end)
        cfg = replace(UpsamplerConfig(**{**saved, "mix": tuple(saved["mix"])}),
                      resume=str(run_dir), steps=cfg.steps or saved["steps"],
                      max_minutes=cfg.max_minutes, progress=cfg.progress)
    ds64 = load_dataset(cfg.data)
    ds256 = load_dataset(cfg.data256, size=256)
    if [r["codepoints"] for r in ds64.records] != [r["codepoints"] for r in ds256.records]:
        raise UpsamplerTrainError(f"{cfg.data} and {cfg.data256} list different concepts: "
                                  "build both with the same filters")
    train = np.nonzero(~holdout_mask(len(ds64.records), cfg.holdout_every))[0]
    pool = None
    if cfg.mix[2] > 0:
        pool = generated_pool(cfg.base_model, ds64.records, ds64.dataset_hash, train,
                              cfg.gen_per_concept, cfg.seed, cfg.progress)
    meta = {"dataset_hash": ds64.dataset_hash, "dataset256_hash": ds256.dataset_hash,
            "held_out_every": cfg.holdout_every}
    trainer = UpsamplerTrainer(cfg, ds64.images, ds256.images, pool, meta)
    if cfg.init and not cfg.resume:
        meta["init_sha256"] = trainer.init_from(cfg.init)
    if cfg.resume:
        trainer.load(run_dir / "checkpoints" / "latest")
    else:
        run_dir = next_run_dir(Path(cfg.out), cfg.desc)
        run_dir.mkdir(parents=True)
        atomic_write_json(run_dir / "config.json", asdict(cfg))
    start = time.monotonic()
    bar = tqdm(total=cfg.steps, initial=trainer.step, desc="train-upsampler", unit="step",
               disable=not cfg.progress)
    acc: dict[str, float] = {}
    with open(run_dir / "metrics.jsonl", "a", encoding="utf-8") as metrics:
        while trainer.step < cfg.steps:
            if cfg.max_minutes and time.monotonic() - start > cfg.max_minutes * 60:
                break
            for k, v in trainer.train_step().items():
                acc[k] = acc.get(k, 0.0) + v
            bar.update(1)
            if trainer.step % cfg.log_every == 0:
                row = {"step": trainer.step, "lr": cfg.lr * trainer.lr_scale(),
                       "elapsed_s": round(time.monotonic() - start, 1),
                       **{k: v / cfg.log_every for k, v in acc.items()}}
                metrics.write(json.dumps(row) + "\n")
                metrics.flush()
                bar.set_postfix(l1=f"{row['l1']:.4f}", edge=f"{row['edge']:.4f}")
                acc = {}
            if trainer.step % cfg.ckpt_every == 0:
                trainer.save(run_dir, "latest")
    bar.close()
    trainer.save(run_dir, "latest")
    return trainer.save(run_dir, "final") if trainer.step >= cfg.steps else \
        run_dir / "checkpoints" / "latest"
