"""The training loop: config -> runs/<nnnnn>-<desc>/ with metrics, sample grids, checkpoints
(adgen.training.run starts or resumes a run with the arch's trainer).

Run folder:
  config.json          resolved TrainConfig + data/encoder hashes + environment
  metrics.jsonl        one line per log interval: losses, D logits, lr, step time, images/s
  samples/step-N.png   fixed prompts x 2 fixed seeds (EMA generator), every sample_every steps
  checkpoints/latest/  generator.safetensors + config.json (save_generator format: EMA
                       weights when EMA is on) + state.safetensors (G, D, EMA, optimisers,
                       RNG, step, elapsed) for --resume
  checkpoints/final/   the same at the end of the run
"""
from __future__ import annotations

import contextlib
import copy
import json
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from adgen.atomic import atomic_file
from adgen.captions import COLOR_NAMES
from adgen.training import augment, losses
from adgen.training.checkpoint import (load_optimizer, load_tensors, optimizer_tensors,
                                       save_generator, save_tensors)
from adgen.training.networks import (ARCHS, build_discriminator, build_generator, default_model_kwargs,
                               set_embedding_stats)
from adgen.training.loop import StepMeter, TrainError
from adgen.training.sampler import TrainingData, fake_training_data, load_training_data

GRID_PROMPTS = 32  # fixed prompts in every sample grid, each with 2 fixed seeds


@dataclass(frozen=True)
class TrainConfig:
    """Every option of `adgen train`, one field per CLI option."""
    # model
    arch: str = "film"
    z_dim: int | None = None          # None: the arch's default (film 128, dcgan 100)
    ngf: int | None = None
    ndf: int | None = None
    cond_aug: bool = False            # conditioning augmentation (film only)
    # losses and tricks
    loss: str = "hinge"               # hinge | bce
    mismatch: bool = True             # matching-aware mismatched pairs
    magp_every: int = 4               # MA-GP every k D steps (0 = off)
    magp_weight: float = 2.0
    diffaug: str = "translation,cutout"  # "" = off
    ema: bool = True
    ema_beta: float = 0.998
    kl_weight: float = 1.0            # conditioning-augmentation KL weight
    # layered arch (adgen.training.stages)
    gan_weight: float = 0.0           # adversarial term in the shape stage (0 = L1 only)
    noise: float = 0.15               # latent noise std the decoder learns to absorb
    map_steps: int = 3000             # text-head steps (stage 2)
    map_captions: int = 12            # extra captions per concept for stage 2
    map_noise: float = 0.5            # noise std on the standardised embedding (stage 2)
    precision: str = "auto"           # auto (bf16 where the CPU/GPU has it) | fp32 | bf16
    shift_px: float = 0.0             # seed-driven layout variation: max shift (pixels)
    shrink: float = 0.0               # ... and max shrink (fraction of the size)
    # optimiser
    lr_g: float = 1e-4
    lr_d: float = 4e-4                # TTUR: D learns faster
    beta1: float = 0.0
    beta2: float = 0.9
    lr_decay: str = "linear"          # none | linear (to 0 from decay_start of the budget)
    decay_start: float = 0.6
    # loop
    batch_size: int = 64
    max_steps: int | None = None
    max_minutes: float | None = None
    log_every: int = 20
    sample_every: int = 500
    ckpt_every: int = 1000
    seed: int = 0
    threads: int = 0                  # 0: all cores
    device: str = "auto"              # auto | cpu | cuda
    data: str = "data/twemoji64"
    fake_data: bool = False
    runs_dir: str = "runs"
    desc: str | None = None
    resume: str | None = None
    progress: bool = True


# The seed design's settings, applied by --arch dcgan unless an option overrides them.
ARCH_PRESETS = {
    "film": {},
    "layered": {"lr_g": 2e-3, "ema": False, "diffaug": "", "mismatch": False, "magp_every": 0},
    "dcgan": {"loss": "bce", "mismatch": False, "magp_every": 0, "diffaug": "", "ema": False,
              "lr_g": 2e-4, "lr_d": 2e-4, "beta1": 0.5, "beta2": 0.999, "lr_decay": "none"},
}


# Options an arch's loop never reads. The layered arch trains an autoencoder (Adam 0.9/0.99
# with its own warm-up and cosine) and text heads: no discriminator options, no GAN schedule.
UNUSED_BY_ARCH = {
    "layered": {"loss", "mismatch", "magp_every", "magp_weight", "diffaug", "ema", "ema_beta",
                "kl_weight", "cond_aug", "beta1", "beta2", "lr_decay", "decay_start", "ndf"},
}


RESUME_OVERRIDES = ("map_steps", "map_captions", "map_noise", "shift_px", "shrink")


def resolve_config(arch: str = "film", **options) -> TrainConfig:
    """TrainConfig from CLI options: explicit options > arch preset > dataclass default."""
    if arch not in ARCHS:
        raise TrainError(f"unknown --arch {arch!r}; choose one of {', '.join(ARCHS)}")
    known = {f.name for f in fields(TrainConfig)}
    unknown = set(options) - known
    if unknown:
        raise TrainError(f"unknown option(s): {', '.join(sorted(unknown))}")
    given = {k for k, v in options.items() if v is not None}
    unused = sorted(given & UNUSED_BY_ARCH.get(arch, set()))
    if unused:  # never silently ignored: an option the arch does not read is a mistake
        raise TrainError(f"not used by --arch {arch}: "
                         + ", ".join("--" + k.replace("_", "-") for k in unused))
    values = {**ARCH_PRESETS[arch], **{k: v for k, v in options.items() if v is not None}}
    cfg = TrainConfig(arch=arch, **values)
    validate(cfg)
    return cfg


def validate(cfg: TrainConfig) -> None:
    checks = [
        (cfg.loss in ("hinge", "bce"), f"--loss must be hinge or bce, got {cfg.loss!r}"),
        (cfg.lr_decay in ("none", "linear"), "--lr-decay must be none or linear"),
        (cfg.batch_size >= 2, "--batch-size must be at least 2 (mismatched pairs roll the batch)"),
        (cfg.max_steps is None or cfg.max_steps >= 1, "--max-steps must be at least 1"),
        (cfg.max_minutes is None or cfg.max_minutes > 0, "--max-minutes must be positive"),
        (cfg.max_steps is not None or cfg.max_minutes is not None or cfg.resume is not None,
         "give --max-steps and/or --max-minutes (a training budget)"),
        (0.0 <= cfg.ema_beta < 1.0, "--ema-beta must be in [0, 1)"),
        (cfg.magp_every >= 0, "--magp-every must be >= 0"),
        (cfg.threads >= 0, "--threads must be >= 0"),
        (cfg.device in ("auto", "cpu", "cuda"), "--device must be auto, cpu or cuda"),
        (cfg.precision in ("auto", "fp32", "bf16"), "--precision must be auto, fp32 or bf16"),
        (cfg.gan_weight >= 0 and cfg.noise >= 0 and cfg.map_noise >= 0,
         "--gan-weight, --noise and --map-noise must be >= 0"),
        (0 <= cfg.shift_px <= 16 and 0 <= cfg.shrink < 1,
         "--shift-px must be in [0, 16] and --shrink in [0, 1)"),
        (cfg.map_steps >= 1 and cfg.map_captions >= 0,
         "--map-steps must be >= 1 and --map-captions >= 0"),
        (not (cfg.cond_aug and cfg.arch != "film"), "--cond-aug needs --arch film"),
        (cfg.log_every >= 1 and cfg.sample_every >= 1 and cfg.ckpt_every >= 1,
         "--log-every, --sample-every and --ckpt-every must be >= 1"),
    ]
    for ok, msg in checks:
        if not ok:
            raise TrainError(msg)
    try:
        augment.diff_augment(torch.zeros(1, 3, 8, 8), cfg.diffaug)
    except ValueError as exc:
        raise TrainError(str(exc)) from None


def model_kwargs(cfg: TrainConfig) -> dict:
    kwargs = default_model_kwargs(cfg.arch)
    if cfg.z_dim is not None:
        kwargs["z_dim"] = cfg.z_dim
    if cfg.ngf is not None:
        kwargs["ngf"] = cfg.ngf
    if cfg.arch == "film":
        kwargs["cond_aug"] = cfg.cond_aug
    if cfg.arch == "layered":
        kwargs.pop("ngf", None)
        kwargs["dec_width"] = cfg.ngf or kwargs["dec_width"]
        kwargs["noise"] = cfg.noise
        kwargs["shift_px"], kwargs["shrink"] = cfg.shift_px, cfg.shrink
    return kwargs


def _device(cfg: TrainConfig) -> torch.device:
    if cfg.device == "cuda" or (cfg.device == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise TrainError("--device cuda but no CUDA device is available")
        return torch.device("cuda")
    return torch.device("cpu")


def _lr_scale(cfg: TrainConfig, progress: float) -> float:
    if cfg.lr_decay == "none" or progress <= cfg.decay_start:
        return 1.0
    return max(0.0, 1.0 - (progress - cfg.decay_start) / max(1e-9, 1.0 - cfg.decay_start))


class Trainer:
    """Holds the networks, optimisers and run folder; `run()` trains to the budget."""

    samples_while_training = True  # a sample grid every cfg.sample_every steps

    def __init__(self, cfg: TrainConfig, data: TrainingData | None = None):
        self.setup(cfg, data)
        self.G = build_generator(cfg.arch, **model_kwargs(cfg)).to(self.device)
        d_kwargs = {"ndf": cfg.ndf} if cfg.ndf else {}
        self.D = build_discriminator(cfg.arch, **d_kwargs).to(self.device)
        # Caption statistics into the EmbedNorm buffers (film); before the EMA copy.
        set_embedding_stats(self.G, self.data.embeddings.to(self.device))
        set_embedding_stats(self.D, self.data.embeddings.to(self.device))
        self.G_ema = copy.deepcopy(self.G).eval() if cfg.ema else None
        if self.G_ema is not None:
            for p in self.G_ema.parameters():
                p.requires_grad_(False)
        self.opt_g = torch.optim.Adam(self.G.parameters(), lr=cfg.lr_g, betas=(cfg.beta1, cfg.beta2))
        self.opt_d = torch.optim.Adam(self.D.parameters(), lr=cfg.lr_d, betas=(cfg.beta1, cfg.beta2))
        self.step = 0
        self.elapsed = 0.0  # training seconds, summed over resumed sessions
        self.sample_prompts()

    def setup(self, cfg: TrainConfig, data: TrainingData | None) -> None:
        """Config, threads, device, seeds and data: what every arch's trainer starts from."""
        self.cfg = cfg
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        self.device = _device(cfg)
        torch.manual_seed(cfg.seed)
        self.gen = torch.Generator().manual_seed(cfg.seed)  # data + z + augment stream
        self.data = data or (fake_training_data(seed=cfg.seed) if cfg.fake_data
                             else load_training_data(cfg.data, progress=cfg.progress))

    def sample_prompts(self) -> None:
        """The sample grid's fixed prompts and seeds (self.G built)."""
        self.z_dim = self.G.z_dim
        # From their own RNG so they never depend on cfg.seed.
        g = torch.Generator().manual_seed(1234)
        n = min(GRID_PROMPTS, self.data.n)
        self.grid_idx = torch.randperm(self.data.n, generator=g)[:n]
        self.grid_col = torch.randint(0, len(COLOR_NAMES), (n,), generator=g)
        self.grid_z = torch.randn(2, self.z_dim, generator=g)

    # ------------------------------------------------------------------ one step
    def train_step(self) -> dict[str, float]:
        cfg, dev = self.cfg, self.device
        real, emb, _, _ = self.data.sample(cfg.batch_size, self.gen)
        real, emb = real.to(dev), emb.to(dev)
        z = torch.randn(cfg.batch_size, self.z_dim, generator=self.gen).to(dev)
        aug = (lambda x: augment.diff_augment(x, cfg.diffaug, generator=self.gen)) \
            if cfg.diffaug else (lambda x: x)

        # --- D step: (real, text) real; (fake, text) and (real, wrong text) fake.
        fake = self.G(emb, z)
        feats_real = self.D.features(aug(real))
        d_real = self.D.head(feats_real, emb)
        d_mis = self.D.head(feats_real, losses.mismatched(emb)) if cfg.mismatch else None
        d_fake = self.D(aug(fake.detach()), emb)
        loss_d = losses.d_loss(cfg.loss, d_real, d_fake, d_mis)
        gp = torch.zeros(())
        if cfg.magp_every and self.step % cfg.magp_every == 0:
            # Lazy regularisation: every k steps with k times the weight.
            norm = getattr(self.D, "embed_norm", None)
            scale = float(norm.scale) if hasattr(norm, "scale") else 1.0
            gp = losses.ma_gp(self.D, real, emb, weight=cfg.magp_weight * cfg.magp_every,
                              embed_scale=scale)
            loss_d = loss_d + gp
        self.opt_d.zero_grad(set_to_none=True)
        loss_d.backward()
        self.opt_d.step()

        # --- G step (D frozen so its weight gradients are not computed).
        for p in self.D.parameters():
            p.requires_grad_(False)
        d_gen = self.D(aug(fake), emb)
        loss_g = losses.g_loss(cfg.loss, d_gen)
        kl = getattr(self.G, "kl", None) if cfg.cond_aug else None
        if kl is not None:
            loss_g = loss_g + cfg.kl_weight * kl
        self.opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        self.opt_g.step()
        for p in self.D.parameters():
            p.requires_grad_(True)
        if self.G_ema is not None:
            losses.ema_update(self.G_ema, self.G, cfg.ema_beta, step=self.step)
        self.step += 1
        gp = gp.detach()
        out = {"loss_d": loss_d.item(), "loss_g": loss_g.item(), "d_real": d_real.mean().item(),
               "d_fake": d_fake.mean().item(), "gp": gp.item()}
        if d_mis is not None:
            out["d_mis"] = d_mis.mean().item()
        return out

    # ------------------------------------------------------------------ outputs
    @property
    def release_generator(self) -> torch.nn.Module:
        return self.G_ema if self.G_ema is not None else self.G

    @torch.no_grad()
    def sample_grid(self, path: Path) -> None:
        """GRID_PROMPTS prompts x 2 seeds, as an 8-column PNG (each prompt twice in a row)."""
        g = self.release_generator
        was_training = g.training
        g.eval()
        n = len(self.grid_idx)
        emb = self.data.embeddings[self.grid_idx, self.grid_col, 0].repeat_interleave(2, 0)
        z = self.grid_z.repeat(n, 1)
        imgs = g(emb.to(self.device), z.to(self.device)).cpu()
        g.train(was_training)
        imgs = ((imgs.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
        cols = 8
        rows = -(-len(imgs) // cols)
        sheet = np.full((rows * 64, cols * 64, 3), 255, dtype=np.uint8)
        for i, im in enumerate(imgs):
            r, c = divmod(i, cols)
            sheet[r * 64:(r + 1) * 64, c * 64:(c + 1) * 64] = im
        with atomic_file(path) as f:
            Image.fromarray(sheet).save(f, format="PNG")

    def generator_config(self, run_dir: Path) -> dict:
        return {"arch": self.cfg.arch, "model": model_kwargs(self.cfg),
                "dataset_hash": self.data.dataset_hash,
                "text_encoder_hash": self.data.text_encoder_hash,
                "training": {"run": run_dir.name, "step": self.step,
                             "elapsed_s": round(self.elapsed, 1), "ema": self.cfg.ema,
                             "embeddings_key": self.data.embeddings_key,
                             "config": asdict(self.cfg)}}

    def save(self, run_dir: Path, name: str) -> Path:
        out = run_dir / "checkpoints" / name
        save_generator(self.release_generator, self.generator_config(run_dir), out)
        tensors = {f"G.{k}": v for k, v in self.G.state_dict().items()}
        tensors |= {f"D.{k}": v for k, v in self.D.state_dict().items()}
        if self.G_ema is not None:
            tensors |= {f"E.{k}": v for k, v in self.G_ema.state_dict().items()}
        tensors |= optimizer_tensors("optG", self.opt_g) | optimizer_tensors("optD", self.opt_d)
        tensors["rng.torch"] = torch.get_rng_state()
        tensors["rng.gen"] = self.gen.get_state()
        save_tensors(tensors, {"step": self.step, "elapsed": self.elapsed}, out / "state.safetensors")
        return out

    def load_state(self, ckpt_dir: Path) -> None:
        tensors, meta = load_tensors(ckpt_dir / "state.safetensors")
        def part(prefix):
            return {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
        self.G.load_state_dict(part("G."))
        self.D.load_state_dict(part("D."))
        if self.G_ema is not None:
            self.G_ema.load_state_dict(part("E."))
        load_optimizer("optG", self.opt_g, tensors)
        load_optimizer("optD", self.opt_d, tensors)
        torch.set_rng_state(tensors["rng.torch"])
        self.gen.set_state(tensors["rng.gen"])
        self.step, self.elapsed = int(meta["step"]), float(meta["elapsed"])

    # ------------------------------------------------------------------ loop
    def progress_fraction(self) -> float:
        cfg = self.cfg
        fr = [self.step / cfg.max_steps] if cfg.max_steps else []
        if cfg.max_minutes:
            fr.append(self.elapsed / (cfg.max_minutes * 60.0))
        return max(fr) if fr else 0.0

    def loop_step(self) -> tuple[dict[str, float], float]:
        """One step at the scheduled learning rate: (its losses, the rate's scale)."""
        cfg = self.cfg
        scale = _lr_scale(cfg, self.progress_fraction())
        for opt, base in ((self.opt_g, cfg.lr_g), (self.opt_d, cfg.lr_d)):
            for group in opt.param_groups:
                group["lr"] = base * scale
        return self.train_step(), scale

    def bar_postfix(self, row: dict) -> dict:
        return {"d": f"{row['loss_d']:.3f}", "g": f"{row['loss_g']:.3f}",
                "ips": row["images_per_s"]}

    @contextlib.contextmanager
    def metrics_log(self, run_dir: Path) -> Iterator[Callable[[dict], None]]:
        """log(row): one JSON line appended to run_dir/metrics.jsonl, flushed at once so that
        a killed run keeps every row it logged."""
        with open(run_dir / "metrics.jsonl", "a", encoding="utf-8") as metrics:
            def log(row: dict) -> None:
                metrics.write(json.dumps(row) + "\n")
                metrics.flush()
            yield log

    def train_to_budget(self, run_dir: Path, log: Callable[[dict], None], desc: str) -> None:
        """loop_step() until the budget is spent: the mean of each loss (and the speed) to
        log every log_every steps, checkpoints/latest every ckpt_every, a sample grid every
        sample_every (samples_while_training)."""
        cfg = self.cfg
        total = cfg.max_steps if cfg.max_steps else None
        bar = tqdm(total=total, initial=self.step if total else 0, unit="step", desc=desc,
                   disable=not cfg.progress, dynamic_ncols=True)
        meter = StepMeter(cfg.batch_size)
        try:
            while self.progress_fraction() < 1.0:
                t0 = time.perf_counter()
                stats, scale = self.loop_step()
                dt = time.perf_counter() - t0
                self.elapsed += dt
                meter.add(stats, dt, self.step)
                bar.update(1)
                if cfg.max_minutes and not total:
                    left = max(0.0, cfg.max_minutes * 60 - self.elapsed)
                    bar.set_postfix_str(f"{left / 60:.1f} min left", refresh=False)
                if self.step % cfg.log_every == 0:
                    row = meter.row(step=self.step, elapsed_s=round(self.elapsed, 2),
                                    lr_scale=round(scale, 4))
                    log(row)
                    bar.set_postfix(**self.bar_postfix(row), refresh=False)
                if self.samples_while_training and self.step % cfg.sample_every == 0:
                    self.sample_grid(run_dir / "samples" / f"step-{self.step:07d}.png")
                if self.step % cfg.ckpt_every == 0:
                    self.save(run_dir, "latest")
        finally:
            bar.close()

    def finish(self, run_dir: Path) -> Path:
        """The last sample grid, checkpoints/latest (for --resume) and checkpoints/final."""
        self.sample_grid(run_dir / "samples" / f"step-{self.step:07d}.png")
        self.save(run_dir, "latest")
        return self.save(run_dir, "final")

    def run(self, run_dir: Path) -> Path:
        self.G.train()
        self.D.train()
        with self.metrics_log(run_dir) as log:
            self.train_to_budget(run_dir, log, "train")
        return self.finish(run_dir)
