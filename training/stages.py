"""Two-stage training of the layered generator (``adgen train --arch layered``).

Stage 1, shapes (the `--max-minutes` / `--max-steps` budget): ShapeEncoder + ShapeDecoder as
an RGBA autoencoder. Each step composites a batch of emoji on random palette colours; the
decoder sees the encoder's latent (RMS-normalised per image) plus Gaussian noise of std
`noise`, and is scored by L1 against the real composite and L1 on alpha; with
`--gan-weight` > 0 a spectral-norm hinge discriminator on the composites adds an
adversarial term (pix2pix-style: reconstruction first, GAN as a sharpener).
Stage 2, words (`--map-steps`): the codebook is set to the encoder's latents of all
concepts; the text trunk learns concept and colour classification from caption embeddings
(every training template, name and alias, see mapping_captions), with Gaussian noise on the
standardised embedding so unseen wording lands on the right concept.

Run folder as for the GAN loop (config.json, metrics.jsonl, samples/, checkpoints/latest
with state.safetensors for --resume, checkpoints/final).
"""
from __future__ import annotations

import hashlib
import json
import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import spectral_norm

from adgen.captions import COLOR_NAMES, TRAIN_TEMPLATES, caption
from adgen.contract import EMBED_DIM
from adgen.paths import artifacts_dir
from adgen.serving.runtime.providers import cpu_flags
from adgen.training.checkpoint import load_optimizer, optimizer_tensors
from adgen.training.layered import LayeredGenerator, ShapeEncoder, composite
from adgen.training.sampler import cached_encodings, text_encoder_hash

MAP_CAPTIONS_PER_CONCEPT = 12


def cpu_has_bf16() -> bool:
    """True when the CPU multiplies bf16 natively (AVX512-BF16 or AMX); elsewhere torch
    emulates it, slower than fp32."""
    return bool(cpu_flags() & {"avx512_bf16", "amx_bf16"})


def use_bf16(precision: str, device: torch.device) -> bool:
    if precision == "bf16":
        return True
    if precision == "fp32":
        return False
    return device.type == "cuda" or cpu_has_bf16()


class PatchDiscriminator(nn.Module):
    """Composite [B, 3, 64, 64] -> patch logits [B, 1, 8, 8]; spectral norm, no text."""

    def __init__(self, width: int = 32):
        super().__init__()
        chans = [3, width, width * 2, width * 4]
        layers: list[nn.Module] = []
        for cin, cout in zip(chans[:-1], chans[1:]):  # 64 -> 32 -> 16 -> 8 px
            layers += [spectral_norm(nn.Conv2d(cin, cout, 4, stride=2, padding=1)),
                       nn.LeakyReLU(0.2)]
        layers.append(spectral_norm(nn.Conv2d(chans[-1], 1, 3, padding=1)))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def normalise_latent(lat: torch.Tensor) -> torch.Tensor:
    """Per-image RMS 1, so the training noise std is relative to the latent's scale."""
    rms = lat.pow(2).mean(dim=(1, 2, 3), keepdim=True).add(1e-6).sqrt()
    return lat / rms


# --------------------------------------------------------------------------- captions

def mapping_captions(records: list[dict], per_concept: int = MAP_CAPTIONS_PER_CONCEPT,
                     seed: int = 0) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Random (template, name or alias, colour) captions: texts, concept ids, colour ids."""
    rng = np.random.default_rng(seed)
    texts, concepts, colors = [], [], []
    for i, rec in enumerate(records):
        names = [rec["name"], *rec.get("aliases", [])]
        for _ in range(per_concept):
            k = int(rng.integers(len(COLOR_NAMES)))
            name = names[int(rng.integers(len(names)))]
            tmpl = TRAIN_TEMPLATES[int(rng.integers(len(TRAIN_TEMPLATES)))]
            texts.append(caption(name.replace("_", " "), COLOR_NAMES[k], tmpl))
            concepts.append(i)
            colors.append(k)
    return texts, np.array(concepts, dtype=np.int64), np.array(colors, dtype=np.int64)


def encode_cached(texts: list[str], tag: str, progress: bool = True) -> np.ndarray:
    """float32[len(texts), 384] with the serving text encoder, cached by content hash."""
    blob = json.dumps({"texts": texts, "encoder": text_encoder_hash()}).encode()
    key = hashlib.sha256(blob).hexdigest()[:20]
    return cached_encodings(artifacts_dir() / "embeddings" / f"{tag}-{key}.npy", lambda: texts,
                            (len(texts), EMBED_DIM), f"encode {tag}", progress)


# --------------------------------------------------------------------------- stage 1

class ShapeStage:
    """The autoencoder stage: owns encoder, decoder (inside G), optional D, optimisers."""

    def __init__(self, G: LayeredGenerator, cfg, device: torch.device, bf16: bool):
        self.cfg, self.device, self.bf16 = cfg, device, bf16
        self.G = G
        self.E = ShapeEncoder(G.latent_ch).to(device)
        params = list(self.E.parameters()) + list(G.decoder.parameters())
        self.opt = torch.optim.Adam(params, lr=cfg.lr_g, betas=(0.9, 0.99))
        self.D = PatchDiscriminator().to(device) if cfg.gan_weight > 0 else None
        self.opt_d = (torch.optim.Adam(self.D.parameters(), lr=cfg.lr_d, betas=(0.0, 0.9))
                      if self.D is not None else None)

    def modules(self) -> dict[str, nn.Module]:
        out = {"E": self.E, "dec": self.G.decoder}
        if self.D is not None:
            out["D"] = self.D
        return out

    def optimisers(self) -> dict[str, torch.optim.Optimizer]:
        out = {"optAE": self.opt}
        if self.opt_d is not None:
            out["optD"] = self.opt_d
        return out

    def state_tensors(self, gen: torch.Generator) -> dict[str, torch.Tensor]:
        """Everything a resumed run needs of this stage: networks, optimisers, both RNGs."""
        tensors = {}
        for prefix, module in self.modules().items():
            tensors |= {f"{prefix}.{k}": v for k, v in module.state_dict().items()}
        for prefix, opt in self.optimisers().items():
            tensors |= optimizer_tensors(prefix, opt)
        return tensors | {"rng.torch": torch.get_rng_state(), "rng.gen": gen.get_state()}

    def load_state_tensors(self, tensors: dict[str, torch.Tensor], gen: torch.Generator) -> None:
        """Puts back what state_tensors saved."""
        for prefix, module in self.modules().items():
            module.load_state_dict({k[len(prefix) + 1:]: v for k, v in tensors.items()
                                    if k.startswith(prefix + ".")})
        for prefix, opt in self.optimisers().items():
            load_optimizer(prefix, opt, tensors)
        torch.set_rng_state(tensors["rng.torch"])
        gen.set_state(tensors["rng.gen"])

    def step(self, data, gen: torch.Generator, lr_scale: float) -> dict[str, float]:
        cfg, dev = self.cfg, self.device
        for opt, base in ((self.opt, cfg.lr_g), (self.opt_d, cfg.lr_d)):
            if opt is not None:
                for group in opt.param_groups:
                    group["lr"] = base * lr_scale
        idx = torch.randint(0, data.n, (cfg.batch_size,), generator=gen)
        colors = torch.randint(0, len(COLOR_NAMES), (cfg.batch_size,), generator=gen)
        rgba = data.rgba[idx].to(dev)
        bg = self.G.palette[colors.to(dev)]
        target = composite(rgba[:, :3], rgba[:, 3:4], bg)
        noise = torch.randn(cfg.batch_size, self.G.latent_ch, 8, 8, generator=gen).to(dev)
        with torch.autocast(dev.type, torch.bfloat16, enabled=self.bf16):
            lat = normalise_latent(self.E(rgba).float()) + self.G.noise * noise
            fg, alpha = self.G.decoder(lat)
        fg, alpha = fg.float(), alpha.float()
        fake = composite(fg, alpha, bg)
        l1 = (fake - target).abs().mean()
        l_alpha = (alpha - rgba[:, 3:4]).abs().mean()
        loss = l1 + l_alpha
        out = {"l1": l1.item(), "l_alpha": l_alpha.item()}
        if self.D is not None:
            with torch.autocast(dev.type, torch.bfloat16, enabled=self.bf16):
                d_real, d_fake = self.D(target), self.D(fake.detach())
            loss_d = F.relu(1.0 - d_real.float()).mean() + F.relu(1.0 + d_fake.float()).mean()
            self.opt_d.zero_grad(set_to_none=True)
            loss_d.backward()
            self.opt_d.step()
            for p in self.D.parameters():
                p.requires_grad_(False)
            with torch.autocast(dev.type, torch.bfloat16, enabled=self.bf16):
                adv = -self.D(fake).float().mean()
            for p in self.D.parameters():
                p.requires_grad_(True)
            loss = loss + cfg.gan_weight * adv
            out |= {"loss_d": loss_d.item(), "adv": adv.item()}
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        return out

    @torch.no_grad()
    def codebook(self, data, batch: int = 256) -> torch.Tensor:
        """Normalised latents of every concept, flattened: [N, latent_dim]."""
        self.E.eval()
        out = [normalise_latent(self.E(data.rgba[i:i + batch].to(self.device))).flatten(1)
               for i in range(0, data.n, batch)]
        self.E.train()
        return torch.cat(out).float()


# --------------------------------------------------------------------------- stage 2

def train_mapping(G: LayeredGenerator, emb: torch.Tensor, concept: torch.Tensor,
                  color: torch.Tensor, steps: int, gen: torch.Generator, batch: int = 512,
                  lr: float = 1e-3, input_noise: float = 0.5, log=None) -> dict[str, float]:
    """Trains G's text trunk and heads: cross-entropy on concepts and colours.

    emb [M, 384] caption embeddings with labels concept [M], color [M]. input_noise is the
    std of Gaussian noise added to the standardised embedding (EmbedNorm output).
    """
    params = (list(G.trunk.parameters()) + list(G.concept_head.parameters())
              + list(G.color_head.parameters()))
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=1e-4)
    G.train()
    stats: dict[str, float] = {}
    for step in range(1, steps + 1):
        lr_now = lr * 0.5 * (1 + math.cos(math.pi * (step - 1) / steps))
        for group in opt.param_groups:
            group["lr"] = lr_now
        idx = torch.randint(0, emb.shape[0], (batch,), generator=gen)
        x = G.embed_norm(emb[idx])
        x = x + input_noise * torch.randn(x.shape, generator=gen)
        h = G.trunk(x)
        lc, lk = G.concept_head(h), G.color_head(h)
        loss_c = F.cross_entropy(lc, concept[idx])
        loss_k = F.cross_entropy(lk, color[idx])
        loss = loss_c + loss_k
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        stats = {"map_step": step, "loss_concept": loss_c.item(), "loss_color": loss_k.item(),
                 "acc_concept": float((lc.argmax(1) == concept[idx]).float().mean()),
                 "acc_color": float((lk.argmax(1) == color[idx]).float().mean())}
        if log is not None and (step % 100 == 0 or step == steps):
            log(stats)
    G.eval()
    return stats
