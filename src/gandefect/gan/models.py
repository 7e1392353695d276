"""Size-agnostic DCGAN generator and discriminator (nanoGPT-style: a dataclass and two modules)."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

from gandefect.config import DataConfig, GANConfig, size_plan


@dataclass
class DCGANConfig:
    """A DCGAN's shape, built from the `data` and `gan` sections by name; the defaults are theirs."""

    image_size: int = DataConfig.model_fields["image_size"].default
    channels: int = 1  # 1 for L, 3 for RGB
    z_dim: int = GANConfig.model_fields["z_dim"].default
    g_width: int = GANConfig.model_fields["g_width"].default  # feature maps at full resolution, doubling per halving
    d_width: int = GANConfig.model_fields["d_width"].default  # the discriminator's, at full resolution
    disc_norm: str = "batch"  # batch | layer | none (WGAN-GP's critic must not use batch norm)

    def plan(self) -> tuple[int, int]:
        """(base size, number of 2x up-samplings): see gandefect.config.size_plan."""
        return size_plan(self.image_size)

    def to_dict(self) -> dict:
        return asdict(self)


def _norm(kind: str, channels: int, size: int) -> nn.Module:
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "layer":
        return nn.GroupNorm(1, channels)  # layer norm over (C, H, W), safe for gradient penalties
    return nn.Identity()


class Generator(nn.Module):
    """z -> linear -> (ups x [upsample-by-2 transposed conv, BN, ReLU]) -> conv -> tanh."""

    def __init__(self, cfg: DCGANConfig):
        super().__init__()
        self.cfg = cfg
        base, ups = cfg.plan()
        ch = cfg.g_width * 2**ups
        self.project = nn.Sequential(
            nn.Linear(cfg.z_dim, ch * base * base), nn.BatchNorm1d(ch * base * base), nn.ReLU(True)
        )
        self.base_shape = (ch, base, base)
        blocks = []
        for _ in range(ups):
            blocks += [nn.ConvTranspose2d(ch, ch // 2, 4, 2, 1, bias=False), nn.BatchNorm2d(ch // 2), nn.ReLU(True)]
            ch //= 2
        self.blocks = nn.Sequential(*blocks)
        self.to_image = nn.Sequential(nn.Conv2d(ch, cfg.channels, 3, 1, 1), nn.Tanh())

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = self.project(z).view(z.shape[0], *self.base_shape)
        return self.to_image(self.blocks(x))

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        return self(noise(self, n, generator))


class Discriminator(nn.Module):
    """(ups x [stride-2 conv, norm, LeakyReLU]) -> linear -> one logit per image."""

    def __init__(self, cfg: DCGANConfig):
        super().__init__()
        self.cfg = cfg
        base, ups = cfg.plan()
        ch, size = cfg.d_width, cfg.image_size
        layers = [nn.Conv2d(cfg.channels, ch, 3, 1, 1), nn.LeakyReLU(0.2, True)]
        for _ in range(ups):
            size //= 2
            layers += [
                nn.Conv2d(ch, ch * 2, 4, 2, 1, bias=cfg.disc_norm == "none"),
                _norm(cfg.disc_norm, ch * 2, size),
                nn.LeakyReLU(0.2, True),
            ]
            ch *= 2
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(ch * base * base, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).flatten(1)).squeeze(1)


def noise(generator_module: nn.Module, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """n latent vectors for `generator_module`, drawn on the CPU (the same samples on every device)
    and moved to the module's device."""
    z = torch.randn(n, generator_module.cfg.z_dim, generator=generator)
    return z.to(next(generator_module.parameters()).device)


@torch.no_grad()
def generate(generator_module: nn.Module, z: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """generator_module(z) in batches (a diffusion member runs its network many times per image:
    a whole fake set at once would hold every activation of it); the same images either way."""
    return torch.cat([generator_module(z[i : i + batch_size]) for i in range(0, len(z), batch_size)])


def init_weights(module: nn.Module) -> None:
    """DCGAN initialization: N(0, 0.02) convolutions, N(1, 0.02) norm scales."""
    if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
        nn.init.normal_(module.weight, 0.0, 0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, (nn.BatchNorm2d, nn.BatchNorm1d, nn.GroupNorm)):
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)
