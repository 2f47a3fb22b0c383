"""The baseline architectures, kept for comparison and for old checkpoints; the shipped
generator is `composer` (adgen.training.composer). Both export to ONNX (opset 17) with a
dynamic batch axis and are built through adgen.training.networks.build_generator.

- ``film`` (v1, DF-GAN style): z -> 4x4 feature map, then four up-blocks (to 64 px), each
  with two FiLM (text-driven affine) modulations and a residual shortcut; channels are
  ngf * mults at 4/8/16/32/64 px (default 256/128/64/32/16). Discriminator: spectral-norm
  strided convs, residual 3x3 convs at low resolution, and a concat conditional head
  (projected embedding replicated over 4x4).
- ``dcgan`` (the seed design): text projection 384->128 with LeakyReLU concatenated with z
  (100), plain transposed convs with batch norm; a DCGAN discriminator with batch norm and
  the same projected text concatenated at 4x4.

Every generator maps (embedding float32[B, 384], z float32[B, z_dim]) to float32[B, 3, 64, 64]
in [-1, 1] (tanh).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import spectral_norm

from adgen.contract import DEFAULT_Z_DIM, EMBED_DIM
from adgen.training.embedding import EmbedNorm, NetworkError

DCGAN_Z_DIM = 100


# --------------------------------------------------------------------------- FiLM

class FiLM(nn.Module):
    """Per-channel scale and shift predicted from the text condition.

    gamma starts at 1 and beta at 0 (zero-initialised projection), so at init the block is
    the unconditioned conv path and the text learns to steer it.
    """

    def __init__(self, cond_dim: int, channels: int):
        super().__init__()
        self.proj = nn.Linear(cond_dim, 2 * channels)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        # x: [B, C, H, W], cond: [B, cond_dim] -> gamma, beta: [B, C, 1, 1]
        gamma, beta = self.proj(cond).unsqueeze(-1).unsqueeze(-1).chunk(2, dim=1)
        return x * (1.0 + gamma) + beta


class UpBlock(nn.Module):
    """x2 nearest upsample, conv-FiLM-lrelu, conv-FiLM-lrelu, plus a 1x1 shortcut."""

    def __init__(self, in_ch: int, out_ch: int, cond_dim: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.film1 = FiLM(cond_dim, out_ch)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1)
        self.film2 = FiLM(cond_dim, out_ch)
        self.skip = nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch else nn.Identity()

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, scale_factor=2.0, mode="nearest")  # [B, in, 2H, 2W]
        h = F.leaky_relu(self.film1(self.conv1(x), cond), 0.2)
        h = F.leaky_relu(self.film2(self.conv2(h), cond), 0.2)
        return self.skip(x) + h


class FilmGenerator(nn.Module):
    """DF-GAN-style generator. Channels at 4, 8, 16, 32, 64 px: ngf * mults."""

    def __init__(self, z_dim: int = DEFAULT_Z_DIM, embed_dim: int = EMBED_DIM, ngf: int = 16,
                 mults: tuple[int, ...] = (16, 8, 4, 2, 1), cond_dim: int = 256,
                 cond_aug: bool = False, embed_norm: bool = True):
        super().__init__()
        if len(mults) != 5:
            raise NetworkError(f"film generator needs 5 channel multipliers (4..64 px), got {mults}")
        self.z_dim, self.embed_dim, self.cond_aug = z_dim, embed_dim, cond_aug
        chans = [ngf * m for m in mults]
        # Text trunk: the sentence embedding -> a condition shared by all FiLM layers. With
        # conditioning augmentation it predicts mean and log-variance (StackGAN); at eval
        # time the mean is used, so the exported graph is deterministic.
        self.embed_norm = EmbedNorm(embed_dim) if embed_norm else nn.Identity()
        self.text = nn.Linear(embed_dim, 2 * cond_dim if cond_aug else cond_dim)
        self.fc = nn.Linear(z_dim, chans[0] * 4 * 4)
        self.blocks = nn.ModuleList(
            UpBlock(chans[i], chans[i + 1], cond_dim + z_dim) for i in range(4))
        self.out = nn.Conv2d(chans[-1], 3, 3, padding=1)
        self.kl = torch.zeros(())  # last conditioning-augmentation KL term (training only)

    def condition(self, embedding: torch.Tensor) -> torch.Tensor:
        c = self.text(self.embed_norm(embedding))
        if not self.cond_aug:
            return F.leaky_relu(c, 0.2)
        mu, logvar = c.chunk(2, dim=1)
        if self.training:
            self.kl = 0.5 * torch.mean(mu.pow(2) + logvar.exp() - 1.0 - logvar)
            c = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)
        else:
            c = mu
        return F.leaky_relu(c, 0.2)

    def forward(self, embedding: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        # embedding: [B, 384], z: [B, z_dim] -> image [B, 3, 64, 64]
        cond = torch.cat([self.condition(embedding), z], dim=1)  # [B, cond_dim + z_dim]
        x = self.fc(z).view(z.shape[0], -1, 4, 4)
        for block in self.blocks:
            x = block(x, cond)
        # 4 up-blocks take 4 px to 64 px.
        return torch.tanh(self.out(F.leaky_relu(x, 0.2)))


class DownBlock(nn.Module):
    """Spectral-norm down block: conv4x4/2 -> lrelu, optionally a residual conv3x3 -> lrelu.

    The extra 3x3 conv is only used at low resolution (cheap there, 2-core CPU budget).
    """

    def __init__(self, in_ch: int, out_ch: int, extra: bool):
        super().__init__()
        self.down = spectral_norm(nn.Conv2d(in_ch, out_ch, 4, stride=2, padding=1))
        self.conv = spectral_norm(nn.Conv2d(out_ch, out_ch, 3, padding=1)) if extra else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.leaky_relu(self.down(x), 0.2)
        if self.conv is not None:
            x = x + F.leaky_relu(self.conv(x), 0.2)
        return x


class FilmDiscriminator(nn.Module):
    """Image -> 4x4 features; conditional head on concat(features, replicated embedding)."""

    def __init__(self, embed_dim: int = EMBED_DIM, ndf: int = 32,
                 mults: tuple[int, ...] = (1, 2, 4, 8), extra_from: int = 2,
                 embed_norm: bool = True):
        super().__init__()
        if len(mults) != 4:
            raise NetworkError(f"film discriminator needs 4 channel multipliers, got {mults}")
        chans = [3] + [ndf * m for m in mults]
        # 64 -> 32 -> 16 -> 8 -> 4 px; blocks from index extra_from on get a 3x3 residual conv.
        self.blocks = nn.Sequential(*[DownBlock(chans[i], chans[i + 1], i >= extra_from)
                                      for i in range(4)])
        self.embed_norm = EmbedNorm(embed_dim) if embed_norm else nn.Identity()
        self.text = spectral_norm(nn.Linear(embed_dim, 128))
        self.joint = spectral_norm(nn.Conv2d(chans[-1] + 128, chans[-1], 3, padding=1))
        self.logit = spectral_norm(nn.Conv2d(chans[-1], 1, 4))

    def features(self, image: torch.Tensor) -> torch.Tensor:
        return self.blocks(image)  # [B, C, 4, 4]

    def head(self, feats: torch.Tensor, embedding: torch.Tensor) -> torch.Tensor:
        t = self.text(self.embed_norm(embedding))
        t = F.leaky_relu(t, 0.2)[:, :, None, None].expand(-1, -1, 4, 4)
        h = F.leaky_relu(self.joint(torch.cat([feats, t], dim=1)), 0.2)
        return self.logit(h).view(-1)  # [B]

    def forward(self, image: torch.Tensor, embedding: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(image), embedding)


# --------------------------------------------------------------------------- DCGAN (baseline)

class DcganGenerator(nn.Module):
    """The seed design: [z, lrelu(W e)] -> transposed convs with batch norm -> tanh."""

    def __init__(self, z_dim: int = DCGAN_Z_DIM, embed_dim: int = EMBED_DIM, ngf: int = 64,
                 proj_dim: int = 128):
        super().__init__()
        self.z_dim, self.embed_dim = z_dim, embed_dim
        self.text = nn.Linear(embed_dim, proj_dim)
        layers: list[nn.Module] = [nn.ConvTranspose2d(z_dim + proj_dim, ngf * 8, 4, 1, 0, bias=False),
                                   nn.BatchNorm2d(ngf * 8), nn.ReLU(True)]
        ch = ngf * 8
        for _ in range(3):  # 4 -> 8 -> 16 -> 32 px
            layers += [nn.ConvTranspose2d(ch, ch // 2, 4, 2, 1, bias=False),
                       nn.BatchNorm2d(ch // 2), nn.ReLU(True)]
            ch //= 2
        layers += [nn.ConvTranspose2d(ch, 3, 4, 2, 1, bias=False), nn.Tanh()]  # 64 px
        self.net = nn.Sequential(*layers)

    def forward(self, embedding: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        t = F.leaky_relu(self.text(embedding), 0.2)             # [B, proj_dim]
        x = torch.cat([z, t], dim=1)[:, :, None, None]           # [B, z+proj, 1, 1]
        return self.net(x)


class DcganDiscriminator(nn.Module):
    """DCGAN discriminator; projected text concatenated at 4x4 (GAN-CLS style)."""

    def __init__(self, embed_dim: int = EMBED_DIM, ndf: int = 64, proj_dim: int = 128):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(3, ndf, 4, 2, 1, bias=False), nn.LeakyReLU(0.2, True),
            nn.Conv2d(ndf, ndf * 2, 4, 2, 1, bias=False), nn.BatchNorm2d(ndf * 2),
            nn.LeakyReLU(0.2, True),
            nn.Conv2d(ndf * 2, ndf * 4, 4, 2, 1, bias=False), nn.BatchNorm2d(ndf * 4),
            nn.LeakyReLU(0.2, True),
            nn.Conv2d(ndf * 4, ndf * 8, 4, 2, 1, bias=False), nn.BatchNorm2d(ndf * 8),
            nn.LeakyReLU(0.2, True))
        self.text = nn.Linear(embed_dim, proj_dim)
        self.joint = nn.Sequential(
            nn.Conv2d(ndf * 8 + proj_dim, ndf * 8, 1, bias=False), nn.BatchNorm2d(ndf * 8),
            nn.LeakyReLU(0.2, True), nn.Conv2d(ndf * 8, 1, 4))

    def features(self, image: torch.Tensor) -> torch.Tensor:
        return self.net(image)

    def head(self, feats: torch.Tensor, embedding: torch.Tensor) -> torch.Tensor:
        t = F.leaky_relu(self.text(embedding), 0.2)[:, :, None, None].expand(-1, -1, 4, 4)
        return self.joint(torch.cat([feats, t], dim=1)).view(-1)

    def forward(self, image: torch.Tensor, embedding: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(image), embedding)
