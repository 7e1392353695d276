"""Diffusion-style generator families: images made by many small denoising steps, not by one
pass of a decoder.

- `DDPM` (Ho et al. 2020): a U-Net learns the noise added to an image at a random step of a
  1,000-step variance-preserving schedule; images are drawn with the deterministic DDIM sampler
  (Song et al. 2021) in `sample_steps` steps, so a fake set is a function of its seed.
- `RectifiedFlow` (Liu et al. 2023; flow matching, Lipman et al. 2023): the same U-Net learns
  the velocity x1 - x0 along straight paths from noise x0 to an image x1; images are drawn by
  `sample_steps` Euler steps (few: the straighter the paths, the fewer it needs).

`refine(x, strength, z)` is the aligned path (SDEdit, Meng et al. 2022; the "aligned" training
sets of B-Free and Rajan et al. 2025): a real image noised part of the way and denoised by the
model keeps its content and gains the model's generation traces, so a detector trained on the
pair learns the traces rather than what the images show.

Both are modules whose `forward(z)` maps flat noise (`cfg.z_dim` = C*H*W, drawn by
`gandefect.gan.models.noise` like every generator's) to images in [-1, 1], so the fake sets,
the registry and serving treat them as any generator; `loss(x)` is their training objective.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from gandefect.gan.models import DCGANConfig, noise


def _groups(channels: int) -> int:
    return math.gcd(8, channels)


class _ResBlock(nn.Module):
    """GroupNorm -> SiLU -> conv3, plus the time embedding, twice; a 1x1 skip where widths differ."""

    def __init__(self, cin: int, cout: int, tdim: int):
        super().__init__()
        self.norm1, self.conv1 = nn.GroupNorm(_groups(cin), cin), nn.Conv2d(cin, cout, 3, 1, 1)
        self.time = nn.Linear(tdim, cout)
        self.norm2, self.conv2 = nn.GroupNorm(_groups(cout), cout), nn.Conv2d(cout, cout, 3, 1, 1)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x))) + self.time(temb)[:, :, None, None]
        return self.skip(x) + self.conv2(F.silu(self.norm2(h)))


class TimeUNet(nn.Module):
    """A small U-Net of (image, t in [0, 1]) -> an image-shaped output: two resolutions below the
    input (halved while the side is even), a residual block per level on each side."""

    def __init__(self, channels: int, width: int, image_size: int):
        super().__init__()
        self.width = width
        tdim = 4 * width
        self.time = nn.Sequential(nn.Linear(width, tdim), nn.SiLU(), nn.Linear(tdim, tdim))
        levels, size = 0, image_size
        while levels < 2 and size % 2 == 0:
            levels, size = levels + 1, size // 2
        widths = [width * 2**i for i in range(levels + 1)]
        self.stem = nn.Conv2d(channels, width, 3, 1, 1)
        self.down = nn.ModuleList(_ResBlock(widths[i], widths[i], tdim) for i in range(levels))
        self.pool = nn.ModuleList(nn.Conv2d(widths[i], widths[i + 1], 3, 2, 1) for i in range(levels))
        self.mid = _ResBlock(widths[-1], widths[-1], tdim)
        # nearest-neighbour resize + conv, as diffusion U-Nets up-sample (not the zoo's transposed convolutions)
        self.unpool = nn.ModuleList(
            nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(widths[i + 1], widths[i], 3, 1, 1))
            for i in range(levels)
        )
        self.up = nn.ModuleList(_ResBlock(2 * widths[i], widths[i], tdim) for i in range(levels))
        self.out = nn.Sequential(nn.GroupNorm(_groups(width), width), nn.SiLU(), nn.Conv2d(width, channels, 3, 1, 1))

    def embed(self, t: torch.Tensor) -> torch.Tensor:
        """Sinusoidal features of t (Vaswani et al. 2017), then an MLP."""
        half = self.width // 2
        freqs = torch.exp(-math.log(1000.0) * torch.arange(half, device=t.device) / half)
        angles = 1000.0 * t[:, None].float() * freqs[None]
        return self.time(torch.cat([angles.sin(), angles.cos()], dim=1))

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        temb = self.embed(t)
        h = self.stem(x)
        skips = []
        for block, pool in zip(self.down, self.pool):
            h = block(h, temb)
            skips.append(h)
            h = pool(h)
        h = self.mid(h, temb)
        for block, unpool in zip(reversed(self.up), reversed(self.unpool)):
            h = block(torch.cat([unpool(h), skips.pop()], dim=1), temb)
        return self.out(h)


class _NoiseToImage(nn.Module):
    """What both families share: the U-Net, and noise of the image's shape as their latent."""

    def __init__(self, cfg: DCGANConfig, width: int, sample_steps: int):
        super().__init__()
        c, s = cfg.channels, cfg.image_size
        self.cfg = DCGANConfig(image_size=s, channels=c, z_dim=c * s * s, g_width=width, d_width=width)
        self.sample_steps = sample_steps
        self.net = TimeUNet(c, width, s)

    def _image(self, z: torch.Tensor) -> torch.Tensor:
        return z.view(z.shape[0], self.cfg.channels, self.cfg.image_size, self.cfg.image_size)

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        return self(noise(self, n, generator))


class DDPM(_NoiseToImage):
    """Noise prediction on a 1,000-step linear-beta schedule; DDIM sampling (eta = 0)."""

    TIMESTEPS = 1000

    def __init__(self, cfg: DCGANConfig, width: int = 32, sample_steps: int = 50):
        super().__init__(cfg, width, sample_steps)
        betas = torch.linspace(1e-4, 0.02, self.TIMESTEPS, dtype=torch.float64)
        self.register_buffer("alpha_bar", torch.cumprod(1 - betas, 0).float())

    def loss(self, x0: torch.Tensor) -> torch.Tensor:
        """E ||eps - eps_theta(sqrt(a_t) x0 + sqrt(1 - a_t) eps, t)||^2, t uniform over the schedule."""
        t = torch.randint(0, self.TIMESTEPS, (x0.shape[0],), device=x0.device)
        a = self.alpha_bar[t][:, None, None, None]
        eps = torch.randn_like(x0)
        pred = self.net(a.sqrt() * x0 + (1 - a).sqrt() * eps, t / self.TIMESTEPS)
        return F.mse_loss(pred.float(), eps)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self._denoise(self._image(z), self.TIMESTEPS - 1, self.sample_steps)

    def refine(self, x: torch.Tensor, strength: float, z: torch.Tensor) -> torch.Tensor:
        """`x` noised to step strength * T with noise `z` (flat, as `noise` draws it), then DDIM back
        to 0 in a proportional share of `sample_steps`."""
        t = max(1, round(strength * (self.TIMESTEPS - 1)))
        a = self.alpha_bar[t]
        noisy = a.sqrt() * x + (1 - a).sqrt() * self._image(z)
        return self._denoise(noisy, t, max(2, round(strength * self.sample_steps)))

    def _denoise(self, x: torch.Tensor, start: int, n_steps: int) -> torch.Tensor:
        """DDIM (eta = 0) from step `start` to 0 in `n_steps` steps."""
        steps = torch.linspace(start, 0, n_steps, device=x.device).round().long()
        for i, t in enumerate(steps):
            a = self.alpha_bar[t]
            a_next = self.alpha_bar[steps[i + 1]] if i + 1 < len(steps) else torch.ones((), device=x.device)
            eps = self.net(x, torch.full((x.shape[0],), float(t) / self.TIMESTEPS, device=x.device)).float()
            x0 = ((x - (1 - a).sqrt() * eps) / a.sqrt()).clamp(-1, 1)
            x = a_next.sqrt() * x0 + (1 - a_next).sqrt() * eps
        return x.clamp(-1, 1)


class RectifiedFlow(_NoiseToImage):
    """Velocity prediction on straight noise-to-image paths; Euler sampling in a few steps."""

    def __init__(self, cfg: DCGANConfig, width: int = 32, sample_steps: int = 8):
        super().__init__(cfg, width, sample_steps)

    def loss(self, x1: torch.Tensor) -> torch.Tensor:
        """E ||(x1 - x0) - v_theta((1 - t) x0 + t x1, t)||^2, x0 ~ N(0, I), t ~ U(0, 1)."""
        x0 = torch.randn_like(x1)
        t = torch.rand(x1.shape[0], device=x1.device)
        tt = t[:, None, None, None]
        return F.mse_loss(self.net((1 - tt) * x0 + tt * x1, t).float(), x1 - x0)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self._integrate(self._image(z), 0.0, self.sample_steps)

    def refine(self, x: torch.Tensor, strength: float, z: torch.Tensor) -> torch.Tensor:
        """`x` moved back along its path to time 1 - strength (toward the noise `z`), then integrated
        to 1 in a proportional share of `sample_steps`."""
        t0 = 1.0 - strength
        return self._integrate(t0 * x + (1 - t0) * self._image(z), t0, max(1, round(strength * self.sample_steps)))

    def _integrate(self, x: torch.Tensor, t0: float, n_steps: int) -> torch.Tensor:
        """Euler steps of the learned velocity from time t0 to 1."""
        dt = (1.0 - t0) / n_steps
        for k in range(n_steps):
            x = x + dt * self.net(x, torch.full((x.shape[0],), t0 + k * dt, device=x.device)).float()
        return x.clamp(-1, 1)
