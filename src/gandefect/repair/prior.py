"""Inpainting with a diffusion model of the real images as the prior (RePaint, Lugmayr et al. 2022).

The zoo's DDPM (`gandefect.gan.diffusion.DDPM`) has learnt the real training images. To fill a
hole, the sampler walks from step `strength * T` down to 0: at every step the unknown pixels come
from the model's own denoising step and the known ones from the input noised to that step, so
the hole is generated to agree with what surrounds it. `resample` extra round trips per step
(noise one step up, denoise again) let the two parts harmonise, as RePaint does.

With `strength` < 1 the walk starts from a fill noised part of the way (SDEdit, Meng et al.
2022): the trained U-Net's fill when one is given (the served recipe: the U-Net puts back the
likely content, the prior makes its texture look like the real images'), else the pull-push
fill. Pixels outside the mask stay the input's own bytes: `Repairer` composites in uint8 after
any inpainting net, this one included.
"""

from __future__ import annotations

import itertools

import torch
from torch import nn

from gandefect.repair.model import pull_push_fill


class PriorInpainter(nn.Module):
    """An inpainting net (`inpaint(x, hole)`, x in [-1, 1], hole 1 = rewrite) made of the zoo's
    DDPM and, optionally, the U-Net whose fill it refines; served like the U-Net alone."""

    def __init__(
        self,
        ddpm: nn.Module,
        start: nn.Module | None = None,
        steps: int = 20,
        strength: float = 0.1,
        resample: int = 2,
        seed: int = 0,
    ):
        super().__init__()
        if not 0 < strength <= 1:
            raise ValueError(f"strength must be in (0, 1], got {strength}")
        self.ddpm, self.start = ddpm, start
        self.steps, self.strength, self.resample, self.seed = steps, strength, resample, seed

    def forward(self, x_and_mask: torch.Tensor) -> torch.Tensor:
        return self.inpaint(x_and_mask[:, :-1], x_and_mask[:, -1:])

    @torch.no_grad()
    def inpaint(self, known: torch.Tensor, hole: torch.Tensor) -> torch.Tensor:
        ddpm, dev = self.ddpm, known.device
        # drawn on the CPU from the seed: the same holes get the same fill on every call and device
        rng = torch.Generator().manual_seed(self.seed)

        def randn(like: torch.Tensor) -> torch.Tensor:
            return torch.randn(like.shape, generator=rng).to(dev)

        alpha_bar = ddpm.alpha_bar.to(dev)
        T = ddpm.TIMESTEPS
        start = max(1, round(self.strength * (T - 1)))
        steps = torch.linspace(start, 0, max(2, round(self.strength * self.steps)) + 1).round().long().tolist()
        if self.strength >= 1:
            init = known
        elif self.start is not None:
            init = hole * self.start.inpaint(known, hole).float() + (1 - hole) * known
        else:
            init = pull_push_fill(known, hole)
        a = alpha_bar[start]
        x = a.sqrt() * init + (1 - a).sqrt() * randn(known)
        for t, t_next in itertools.pairwise(steps):
            a, a_next = alpha_bar[t], (alpha_bar[t_next] if t_next > 0 else torch.ones((), device=dev))
            for r in range(self.resample + 1):
                eps = ddpm.net(x, torch.full((x.shape[0],), t / T, device=dev)).float()
                x0 = ((x - (1 - a).sqrt() * eps) / a.sqrt()).clamp(-1, 1)
                # DDPM posterior step from t to t_next (eta = 1): a fresh noise draw each step
                sigma = ((1 - a_next) / (1 - a) * (1 - a / a_next)).clamp(min=0).sqrt()
                unknown = a_next.sqrt() * x0 + (1 - a_next - sigma**2).clamp(min=0).sqrt() * eps + sigma * randn(x)
                seen = a_next.sqrt() * known + (1 - a_next).sqrt() * randn(x) if t_next > 0 else known
                x_next = hole * unknown + (1 - hole) * seen
                if r < self.resample and t_next > 0:  # one step back up, to denoise it again
                    x = (a / a_next).sqrt() * x_next + (1 - a / a_next).sqrt() * randn(x)
                else:
                    x = x_next
        return x.clamp(-1, 1)
