"""Generator families built to differ from the DCGAN zoo (what leave-one-family-out holds out).

The zoo's six GANs share one architecture: transposed-convolution up-sampling, whose
traces a detector may learn instead of defects in general. These families make images
another way:

- `vae`: a convolutional variational auto-encoder (Kingma & Welling 2014), not adversarial;
  its decoder up-samples by bilinear resize + convolution (smooth, blurry samples);
- `mlpgan`: a fully-connected GAN (Goodfellow et al. 2014's architecture): no convolution and no
  up-sampling layer at all, hinge loss;
- `resizegan`: a GAN whose generator up-samples by nearest-neighbour resize + convolution
  (Odena et al. 2016's fix for checkerboard artefacts), non-saturating loss;
- `ddpm` and `rectflow`: diffusion-style models (gandefect.gan.diffusion), an image made by many
  small denoising steps of a U-Net: a DDPM sampled by DDIM, a rectified flow in a few Euler steps.

Each is one entry of `FAMILIES`: adding a family is adding an entry (and its modules).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from gandefect.config import registered
from gandefect.errors import BadInputError
from gandefect.gan.diffusion import DDPM, RectifiedFlow
from gandefect.gan.models import DCGANConfig, Discriminator, noise


class MLPGenerator(nn.Module):
    """z -> 256 -> 512 -> H*W*C, tanh: every pixel from a dense layer (no spatial structure built in)."""

    def __init__(self, cfg: DCGANConfig):
        super().__init__()
        self.cfg = cfg
        out = cfg.channels * cfg.image_size**2
        self.net = nn.Sequential(
            nn.Linear(cfg.z_dim, 256),
            nn.LeakyReLU(0.2, True),
            nn.Linear(256, 512),
            nn.BatchNorm1d(512),
            nn.LeakyReLU(0.2, True),
            nn.Linear(512, out),
            nn.Tanh(),
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        c, s = self.cfg.channels, self.cfg.image_size
        return self.net(z).view(z.shape[0], c, s, s)

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        return self(noise(self, n, generator))


class MLPDiscriminator(nn.Module):
    def __init__(self, cfg: DCGANConfig):
        super().__init__()
        self.cfg = cfg
        self.net = nn.Sequential(
            nn.Flatten(),
            nn.Linear(cfg.channels * cfg.image_size**2, 512),
            nn.LeakyReLU(0.2, True),
            nn.Linear(512, 256),
            nn.LeakyReLU(0.2, True),
            nn.Linear(256, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).squeeze(1)


class _ResizeDecoder(nn.Module):
    """z -> linear -> (ups x [resize x2, conv3, norm, ReLU]) -> conv3 -> tanh."""

    def __init__(self, cfg: DCGANConfig, mode: str):
        super().__init__()
        self.cfg, self.mode = cfg, mode
        base, ups = cfg.plan()
        ch = cfg.g_width * 2**ups
        self.base_shape = (ch, base, base)
        self.project = nn.Sequential(nn.Linear(cfg.z_dim, ch * base * base), nn.ReLU(True))
        blocks = []
        for _ in range(ups):
            blocks.append(nn.Sequential(nn.Conv2d(ch, ch // 2, 3, 1, 1), nn.BatchNorm2d(ch // 2), nn.ReLU(True)))
            ch //= 2
        self.blocks = nn.ModuleList(blocks)
        self.to_image = nn.Sequential(nn.Conv2d(ch, cfg.channels, 3, 1, 1), nn.Tanh())

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = self.project(z).view(z.shape[0], *self.base_shape)
        for block in self.blocks:
            x = block(F.interpolate(x, scale_factor=2, mode=self.mode))
        return self.to_image(x)

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        return self(noise(self, n, generator))


class ResizeGenerator(_ResizeDecoder):
    def __init__(self, cfg: DCGANConfig):
        super().__init__(cfg, "nearest")


class VAE(nn.Module):
    """Conv encoder (stride-2 convs) -> (mu, log var) -> bilinear-resize decoder; `decoder` is the generator."""

    def __init__(self, cfg: DCGANConfig):
        super().__init__()
        self.cfg = cfg
        base, ups = cfg.plan()
        layers, ch = [nn.Conv2d(cfg.channels, cfg.g_width, 3, 1, 1), nn.LeakyReLU(0.2, True)], cfg.g_width
        for _ in range(ups):
            layers += [nn.Conv2d(ch, ch * 2, 4, 2, 1), nn.LeakyReLU(0.2, True)]
            ch *= 2
        self.encoder = nn.Sequential(*layers, nn.Flatten(), nn.Linear(ch * base * base, 2 * cfg.z_dim))
        self.decoder = _ResizeDecoder(cfg, "bilinear")

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        mu, logvar = self.encoder(x).chunk(2, dim=1)
        z = mu + torch.randn_like(mu) * (0.5 * logvar).exp()
        return self.decoder(z), mu, logvar


def vae_loss(
    x: torch.Tensor, recon: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor, beta: float
) -> tuple[torch.Tensor, dict[str, float]]:
    """Gaussian negative ELBO per image: squared error (pixels in [-1, 1]) + beta * KL(q(z|x) || N(0, I))."""
    rec = ((recon - x) ** 2).flatten(1).sum(1).mean()
    kl = (-0.5 * (1 + logvar - mu**2 - logvar.exp()).sum(1)).mean()
    return rec + beta * kl, {"reconstruction": rec.item(), "kl": kl.item()}


@dataclass(frozen=True)
class Family:
    """A way of making images the zoo lacks. kind `gan`: trained by the GAN trainer with `loss`
    and these modules; kind `vae`: trained by the VAE loop; kind `diffusion`: `generator` is the
    model (its own loss and sampler), trained by the diffusion loop."""

    name: str
    kind: str
    about: str
    build: str  # how its images are made: members of one build share their traces (leave-one-family-out)
    loss: str | None = None
    generator: type | None = None
    discriminator: type | None = None
    lr: float = 1e-3  # VAE and diffusion
    beta: float = 1.0  # VAE only: weight of the KL term
    width: int = 16  # diffusion only: the U-Net's feature maps at full resolution
    sample_steps: int = 0  # diffusion only: denoising steps per image
    ema: float = 0.0  # diffusion only: decay of the sampled weights' moving average (0: none)

    def settings(self) -> dict:
        return {
            "name": self.name,
            "kind": self.kind,
            "loss": self.loss,
            "lr": self.lr,
            "beta": self.beta,
            "build": self.build,
            "generator": getattr(self.generator, "__name__", None),
            "discriminator": getattr(self.discriminator, "__name__", None),
            **(
                {"width": self.width, "sample_steps": self.sample_steps, "ema": self.ema}
                if self.kind == "diffusion"
                else {}
            ),
        }


FAMILIES: dict[str, Family] = {
    f.name: f
    for f in [
        Family("vae", "vae", "convolutional VAE, bilinear-resize decoder (not adversarial)", "vae", beta=0.5),
        Family(
            "mlpgan",
            "gan",
            "fully-connected GAN, no convolution or up-sampling layer",
            "fully-connected",
            loss="hinge",
            generator=MLPGenerator,
            discriminator=MLPDiscriminator,
        ),
        Family(
            "resizegan",
            "gan",
            "GAN with nearest-neighbour resize + convolution up-sampling",
            "resize-conv",
            loss="nonsaturating",
            generator=ResizeGenerator,
            discriminator=Discriminator,
        ),
        Family(
            "ddpm",
            "diffusion",
            "denoising diffusion (DDPM noise prediction), deterministic DDIM sampler",
            "diffusion",
            generator=DDPM,
            lr=2e-3,
            sample_steps=25,
            ema=0.995,
        ),
        Family(
            "rectflow",
            "diffusion",
            "rectified flow (flow matching), few-step Euler sampler",
            "diffusion",
            generator=RectifiedFlow,
            lr=2e-3,
            sample_steps=8,
        ),
    ]
}
DCGAN_BUILD = "dcgan"  # every loss of the zoo trains the same transposed-convolution DCGAN


def selected(names: list[str] | None) -> list[str]:
    """The families `gan.families` names; None: every registered family, in registry order."""
    return registered(names, FAMILIES, "gan.families", "family")


def build_of(member: str) -> str:
    """How zoo member `member` (a loss of the DCGAN zoo or a family) makes its images."""
    return FAMILIES[member].build if member in FAMILIES else DCGAN_BUILD


def get(name: str) -> Family:
    if name not in FAMILIES:
        raise BadInputError(f"unknown generator family {name!r}; known: {', '.join(FAMILIES)}")
    return FAMILIES[name]
