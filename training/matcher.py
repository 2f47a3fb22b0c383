"""The matching model used by `adgen eval`: a small CNN image encoder into the MiniLM space.

DAMSM-style: the image encoder is trained contrastively (symmetric InfoNCE with a learned
temperature) so that a real composited image lands near the frozen MiniLM embedding of its
own caption, and away from the other captions in the batch. Evaluation then asks whether a
generated image is nearer its own caption than 99 others (R-precision) and compares
feature statistics (Fréchet distance). It is trained only on real images, never on a
generator's output, and cached in artifacts/matcher/<key>/ (safetensors + config.json).
"""
from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import nn
from tqdm import tqdm

from adgen.contract import EMBED_DIM
from adgen.errors import AdgenError
from adgen.paths import artifacts_dir
from adgen.training import augment
from adgen.training.checkpoint import check_safetensors_file, write_checkpoint
MATCHER_VERSION = 1


class MatcherError(AdgenError):
    """A matcher that cannot be trained or loaded."""


@dataclass(frozen=True)
class MatcherConfig:
    width: int = 16          # channels of the first conv; x2 per downsampling
    steps: int = 1000
    batch_size: int = 128
    lr: float = 2e-3
    seed: int = 0
    threads: int = 0


class ImageEncoder(nn.Module):
    """[B, 3, 64, 64] in [-1, 1] -> unit vectors [B, 384]."""

    def __init__(self, width: int = 32, out_dim: int = EMBED_DIM):
        super().__init__()
        layers: list[nn.Module] = []
        ch_in = 3
        for i in range(4):  # 64 -> 32 -> 16 -> 8 -> 4 px
            ch = width * 2 ** i
            layers += [nn.Conv2d(ch_in, ch, 3, stride=2, padding=1), nn.BatchNorm2d(ch),
                       nn.ReLU(True), nn.Conv2d(ch, ch, 3, padding=1), nn.BatchNorm2d(ch),
                       nn.ReLU(True)]
            ch_in = ch
        self.net = nn.Sequential(*layers)
        # Mean colour of the image joins the pooled features: background colour is half the
        # caption and should not have to survive the conv stack on its own.
        self.proj = nn.Linear(ch_in * 2 + 3, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.net(x)                                               # [B, C, 4, 4]
        feats = torch.cat([h.mean((2, 3)), h.amax((2, 3)), x.mean((2, 3))], 1)
        return F.normalize(self.proj(feats), dim=1)


@dataclass(frozen=True)
class Matcher:
    encoder: ImageEncoder   # eval mode
    path: Path
    config: dict

    @torch.no_grad()
    def embed(self, images: torch.Tensor, batch: int = 256) -> torch.Tensor:
        """[N, 3, 64, 64] in [-1, 1] -> [N, 384] unit features."""
        return torch.cat([self.encoder(images[i:i + batch]) for i in range(0, len(images), batch)])


def matcher_key(dataset_hash: str, embeddings_key: str, cfg: MatcherConfig) -> str:
    blob = json.dumps({"v": MATCHER_VERSION, "data": dataset_hash, "emb": embeddings_key,
                       **{k: v for k, v in asdict(cfg).items() if k != "threads"}}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def train_matcher(data, cfg: MatcherConfig, progress: bool = True) -> ImageEncoder:
    """Contrastive training on real composited images (data: adgen.training.sampler.TrainingData)."""
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    enc = ImageEncoder(cfg.width)
    log_temp = nn.Parameter(torch.tensor(2.5))  # logit scale exp(2.5) ~ 12 at start
    opt = torch.optim.AdamW(list(enc.parameters()) + [log_temp], lr=cfg.lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=cfg.steps,
                                                pct_start=0.1)
    enc.train()
    bar = tqdm(range(cfg.steps), desc="train matcher", unit="step", disable=not progress)
    for _ in bar:
        images, emb, idx, colors = data.sample(cfg.batch_size, gen)
        # Mild translation so that slightly off-centre generated emoji still match.
        images = augment.translate(images, ratio=0.06, generator=gen)
        logits = log_temp.exp().clamp(max=100.0) * enc(images) @ emb.T      # [B, B]
        # Duplicate (concept, colour) pairs in a batch are true positives too.
        key = idx * 64 + colors
        same = (key[:, None] == key[None, :]).float()
        target = same / same.sum(1, keepdim=True)
        loss = 0.5 * (torch.sum(-target * F.log_softmax(logits, 1), 1).mean() +
                      torch.sum(-target * F.log_softmax(logits.T, 1), 1).mean())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        bar.set_postfix(loss=f"{loss.item():.3f}", refresh=False)
    return enc.eval()


def save_matcher(enc: ImageEncoder, config: dict, out_dir: Path) -> Path:
    return write_checkpoint(out_dir, {k: v.contiguous() for k, v in enc.state_dict().items()},
                            config, "matcher.safetensors")


def load_matcher(path: Path) -> Matcher:
    try:
        config = json.loads((path / "config.json").read_text())
        check_safetensors_file(path / "matcher.safetensors")
        enc = ImageEncoder(config["matcher"]["width"])
        enc.load_state_dict(load_file(str(path / "matcher.safetensors")))
    except (OSError, KeyError, RuntimeError, json.JSONDecodeError) as exc:
        raise MatcherError(f"matcher at {path} is unreadable ({exc}); delete it to retrain") from None
    return Matcher(enc.eval(), path, config)


def get_matcher(data, cfg: MatcherConfig, cache_root: Path | None = None,
                progress: bool = True) -> Matcher:
    """The cached matcher for this dataset + embeddings + config, trained on first use."""
    if data.dataset_hash is None or data.embeddings_key is None:
        raise MatcherError("the matcher needs a real dataset and cached caption embeddings")
    key = matcher_key(data.dataset_hash, data.embeddings_key, cfg)
    path = (cache_root or artifacts_dir() / "matcher") / key
    if (path / "config.json").is_file():
        return load_matcher(path)
    t0 = time.time()
    enc = train_matcher(data, cfg, progress=progress)
    save_matcher(enc, {"version": MATCHER_VERSION, "matcher": asdict(cfg),
                       "dataset_hash": data.dataset_hash, "embeddings_key": data.embeddings_key,
                       "train_seconds": round(time.time() - t0, 1)}, path)
    return load_matcher(path)
