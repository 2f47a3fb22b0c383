"""The loop for ``--arch layered``: stage 1 (shapes) to the budget, then stage 2 (words).

Resumable like the GAN loop: checkpoints/latest/state.safetensors holds encoder, decoder,
discriminator, optimisers, RNG, step and elapsed time; stage 2 is short (a minute or two)
and always runs whole after stage 1 reaches its budget.
"""
from __future__ import annotations

import math
import time
from pathlib import Path

import torch

from adgen.training.checkpoint import (load_tensors, save_generator, save_tensors)
from adgen.training.networks import build_generator, set_embedding_stats
from adgen.training.stages import (ShapeStage, encode_cached, mapping_captions, train_mapping,
                             use_bf16)
from adgen.training.train import Trainer, model_kwargs
from adgen.training.data import load_dataset


WARMUP_STEPS = 100


class LayeredTrainer(Trainer):
    """Reuses Trainer's budget, sample grid and run layout; replaces the step and state."""

    # Stage 1 trains shapes only: its grids would show the untrained text heads.
    samples_while_training = False

    def __init__(self, cfg, data=None):  # no super().__init__(): it builds GAN parts we skip
        self.setup(cfg, data)
        self.G = build_generator("layered", **self.model_kwargs()).to(self.device)
        set_embedding_stats(self.G, self.data.embeddings.to(self.device))
        self.G_ema = None
        self.bf16 = use_bf16(cfg.precision, self.device)
        self.shape = ShapeStage(self.G, cfg, self.device, self.bf16)
        self.step, self.elapsed, self.mapped = 0, 0.0, False
        self.sample_prompts()

    def model_kwargs(self) -> dict:
        return {**model_kwargs(self.cfg), "n_concepts": int(self.data.n)}

    def generator_config(self, run_dir: Path) -> dict:
        out = super().generator_config(run_dir)
        out["model"] = self.model_kwargs()
        out["training"]["bf16"] = self.bf16
        out["training"]["stage"] = "final" if self.mapped else "shapes"
        return out

    # ------------------------------------------------------------------ state
    def save(self, run_dir: Path, name: str) -> Path:
        out = run_dir / "checkpoints" / name
        save_generator(self.G, self.generator_config(run_dir), out)
        tensors = self.shape.state_tensors(self.gen)
        save_tensors(tensors, {"step": self.step, "elapsed": self.elapsed,
                               "mapped": int(self.mapped)}, out / "state.safetensors")
        return out

    def load_state(self, ckpt_dir: Path) -> None:
        tensors, meta = load_tensors(ckpt_dir / "state.safetensors")
        self.shape.load_state_tensors(tensors, self.gen)
        self.step, self.elapsed = int(meta["step"]), float(meta["elapsed"])

    # ------------------------------------------------------------------ stages
    def lr_scale(self) -> float:
        """Linear warm-up over WARMUP_STEPS, then cosine from 1 to 0.02 over the budget.

        The warm-up keeps the alpha head out of sigmoid saturation in the first steps (a
        wider decoder at full rate from step 0 stuck at alpha ~ 1 - truth in an ablation)."""
        p = min(1.0, self.progress_fraction())
        warm = min(1.0, (self.step + 1) / WARMUP_STEPS)
        return warm * (0.02 + 0.98 * 0.5 * (1.0 + math.cos(math.pi * p)))

    def mapping_data(self, log) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Caption embeddings [M, 384] with concept and colour labels."""
        table = self.data.embeddings                        # [N, n_colours, variants, 384]
        n, k, v, _ = table.shape
        emb = [table.reshape(-1, table.shape[-1])]
        concept = [torch.arange(n).repeat_interleave(k * v)]
        color = [torch.arange(k).repeat_interleave(v).repeat(n)]
        if self.data.dataset_hash is not None and self.cfg.map_captions > 0:
            records = load_dataset(self.cfg.data).records
            texts, c, col = mapping_captions(records, self.cfg.map_captions, self.cfg.seed)
            extra = encode_cached(texts, "layered-map", progress=self.cfg.progress)
            emb.append(torch.from_numpy(extra))
            concept.append(torch.from_numpy(c))
            color.append(torch.from_numpy(col))
        log({"map_captions": int(sum(e.shape[0] for e in emb))})
        return torch.cat(emb), torch.cat(concept), torch.cat(color)

    def loop_step(self) -> tuple[dict[str, float], float]:
        scale = self.lr_scale()
        stats = self.shape.step(self.data, self.gen, scale)
        self.step += 1
        return stats, scale

    def bar_postfix(self, row: dict) -> dict:
        return {"l1": f"{row['l1']:.4f}", "ips": row["images_per_s"]}

    def run(self, run_dir: Path) -> Path:
        cfg = self.cfg
        with self.metrics_log(run_dir) as log:
            self.train_to_budget(run_dir, log, "shapes")
            self.save(run_dir, "latest")
            # Stage 2: codebook from the trained encoder, then the text heads.
            t0 = time.perf_counter()
            self.G.codebook.data.copy_(self.shape.codebook(self.data))
            emb, concept, color = self.mapping_data(log)
            train_mapping(self.G, emb.to(self.device), concept.to(self.device),
                          color.to(self.device), cfg.map_steps, self.gen,
                          input_noise=cfg.map_noise, log=log)
            self.mapped = True
            log({"stage": "words", "seconds": round(time.perf_counter() - t0, 1)})
        self.G.eval()
        return self.finish(run_dir)
