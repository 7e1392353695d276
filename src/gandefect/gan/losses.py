"""One registry of adversarial losses. Adding a loss is adding one entry.

An entry owns the whole discriminator step (its objective, regularizer, critic steps per
generator step and what follows each update), so every trainer runs any entry the same way.
Every loss works on raw discriminator outputs (logits / critic values). Log-sigmoid terms
use softplus, since -log(sigmoid(t)) = softplus(-t) and -log(1 - sigmoid(t)) = softplus(t),
which never takes the log of a number that can round to 0.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from gandefect.config import registered
from gandefect.errors import BadInputError

Tensor = torch.Tensor


@dataclass(frozen=True)
class OptimizerSpec:
    name: str  # adam | rmsprop
    lr: float
    betas: tuple[float, float] = (0.5, 0.999)

    def build(self, params) -> torch.optim.Optimizer:
        if self.name == "rmsprop":
            return torch.optim.RMSprop(params, lr=self.lr)
        return torch.optim.Adam(params, lr=self.lr, betas=self.betas)


@dataclass(frozen=True)
class Penalty:
    """A discriminator regularizer: `weight` times its value joins the discriminator loss, and
    its value is recorded under `name`. A new one is a subclass with `__call__`.

    `every` > 1: lazy regularization (Karras et al. 2020, StyleGAN2): the penalty is computed on
    every `every`-th discriminator step only, weighted `every` times, so its expected gradient
    is the same at a fraction of the cost."""

    weight: float
    every: int = 1
    name: ClassVar[str] = "penalty"

    def __call__(
        self, D: nn.Module, real: Tensor, fake: Tensor, *condition: Tensor, generator: torch.Generator | None = None
    ) -> Tensor:
        """The penalty's value for D, called as D(x, *condition) (the condition is per image);
        its randomness from `generator` (None: torch's global one)."""
        raise NotImplementedError


@dataclass(frozen=True)
class GradientPenalty(Penalty):
    """The gradient penalty of Gulrajani et al. 2017 on the first `fraction` of the batch's pairs."""

    fraction: float = 1.0
    name: ClassVar[str] = "gradient_penalty"

    def __call__(
        self, D: nn.Module, real: Tensor, fake: Tensor, *condition: Tensor, generator: torch.Generator | None = None
    ) -> Tensor:
        return gradient_penalty(D, real, fake, self.fraction, condition, generator)


@dataclass(frozen=True)
class AdversarialLoss:
    name: str
    d_loss: Callable[[Tensor, Tensor], Tensor]  # (real logits, fake logits) -> scalar
    g_loss: Callable[[Tensor], Tensor]  # fake logits -> scalar
    optimizer: OptimizerSpec
    n_critic: int = 1  # discriminator steps per generator step
    clip: float | None = None  # weight clipping bound after every discriminator step (WGAN)
    penalty: Penalty | None = None  # regularizer added to the discriminator loss (WGAN-GP)
    disc_norm: str = "batch"
    wasserstein: bool = False  # D's output difference estimates a Wasserstein distance
    paper: str = ""

    def settings(self) -> dict:
        """Everything but the loss functions, in a form that is the same in every process
        (part of the cache key of a GAN trained with this loss)."""
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in ("d_loss", "g_loss")}
        return {**out, "penalty": self.penalty_settings() or None}

    def penalty_settings(self) -> dict:
        """The regularizer's kind and fields ({} without one), for tracking."""
        return {"kind": self.penalty.name, **asdict(self.penalty)} if self.penalty else {}

    def discriminator_step(
        self,
        D: nn.Module,
        opt: torch.optim.Optimizer,
        real: Tensor,
        fake: Tensor,
        *condition: Tensor,
        step: int = 0,
        generator: torch.Generator | None = None,
    ) -> dict[str, Tensor]:
        """One update of D (called as D(x, *condition)) on a real and a fake batch: objective plus
        weighted penalty (on the steps its `every` picks), then `after_d_step`. Returns the
        objective and penalty, detached."""
        real_out, fake_out = D(real, *condition), D(fake, *condition)
        d_loss = self.d_loss(real_out, fake_out)
        terms, total = {"d_loss": d_loss.detach()}, d_loss
        if self.penalty is not None and step % self.penalty.every == 0:
            # a penalty drawing nothing may take no generator (the documented signature has one)
            by = {"generator": generator} if generator is not None else {}
            value = self.penalty(D, real, fake, *condition, **by)
            total = d_loss + self.penalty.weight * self.penalty.every * value
            terms[self.penalty.name] = value.detach()
        if self.wasserstein:
            terms["wasserstein_estimate"] = (real_out.mean() - fake_out.mean()).detach()
        opt.zero_grad(set_to_none=True)
        total.backward()
        opt.step()
        self.after_d_step(D)
        return terms

    def after_d_step(self, D: nn.Module) -> None:
        """What follows every discriminator update: weight clipping where the entry has a bound."""
        if self.clip is not None:
            clip_weights(D, self.clip)


REGISTRY: dict[str, AdversarialLoss] = {}


def register(loss: AdversarialLoss) -> AdversarialLoss:
    REGISTRY[loss.name] = loss
    return loss


def get(name: str) -> AdversarialLoss:
    if name not in REGISTRY:
        raise BadInputError(f"unknown loss {name!r}; known: {', '.join(REGISTRY)}")
    return REGISTRY[name]


def selected(names: list[str] | None, setting: str = "gan.losses") -> list[str]:
    """The losses a config setting names; None: every registered loss, in registry order."""
    return registered(names, REGISTRY, setting, "loss")


def gradient_penalty(
    critic: Callable[..., Tensor],
    real: Tensor,
    fake: Tensor,
    fraction: float = 1.0,
    condition: tuple[Tensor, ...] = (),
    generator: torch.Generator | None = None,
) -> Tensor:
    """E[(||grad_x D(x_hat)||_2 - 1)^2] on random interpolates x_hat (Gulrajani et al. 2017),
    with D called as critic(x_hat, *condition).

    `fraction` < 1 estimates the same expectation from the first share of the batch's pairs
    (the batch is already shuffled): the double backward costs about half of a critic step."""
    if fraction < 1.0:
        n = max(1, round(real.shape[0] * fraction))
        real, fake, condition = real[:n], fake[:n], tuple(c[:n] for c in condition)
    alpha = torch.rand(real.shape[0], *([1] * (real.dim() - 1)), device=real.device, generator=generator)
    with torch.autocast(real.device.type, enabled=False):  # a double backward in bf16 loses the penalty's precision
        x_hat = (alpha * real.float() + (1 - alpha) * fake.float()).requires_grad_(True)
        (grad,) = torch.autograd.grad(critic(x_hat, *condition).sum(), x_hat, create_graph=True)
        return ((grad.flatten(1).norm(2, dim=1) - 1) ** 2).mean()


def clip_weights(critic: nn.Module, bound: float) -> None:
    with torch.no_grad():
        for p in critic.parameters():
            p.clamp_(-bound, bound)


ADAM_DCGAN = OptimizerSpec("adam", 2e-4, (0.5, 0.999))  # Radford et al. 2016

# Goodfellow et al. 2014: D max log D(x) + log(1 - D(G(z))); G min log(1 - D(G(z))) (saturates).
register(
    AdversarialLoss(
        "minimax",
        d_loss=lambda r, f: F.softplus(-r).mean() + F.softplus(f).mean(),
        g_loss=lambda f: -F.softplus(f).mean(),
        optimizer=ADAM_DCGAN,
        paper="Goodfellow et al. 2014 (saturating)",
    )
)

# Same D; G min -log D(G(z)) (the non-saturating heuristic of the same paper).
register(
    AdversarialLoss(
        "nonsaturating",
        d_loss=lambda r, f: F.softplus(-r).mean() + F.softplus(f).mean(),
        g_loss=lambda f: F.softplus(-f).mean(),
        optimizer=ADAM_DCGAN,
        paper="Goodfellow et al. 2014 (non-saturating)",
    )
)

# Mao et al. 2017, coding a=0 (fake), b=1 (real), c=1 (what G wants D to say of fakes):
# D min 1/2 E[(D(x) - b)^2] + 1/2 E[(D(G(z)) - a)^2]; G min 1/2 E[(D(G(z)) - c)^2].
LSGAN_A, LSGAN_B, LSGAN_C = 0.0, 1.0, 1.0
register(
    AdversarialLoss(
        "lsgan",
        d_loss=lambda r, f: 0.5 * ((r - LSGAN_B) ** 2).mean() + 0.5 * ((f - LSGAN_A) ** 2).mean(),
        g_loss=lambda f: 0.5 * ((f - LSGAN_C) ** 2).mean(),
        optimizer=ADAM_DCGAN,
        paper=f"Mao et al. 2017 (a={LSGAN_A:g}, b={LSGAN_B:g}, c={LSGAN_C:g})",
    )
)

# Arjovsky et al. 2017: critic min E[D(G(z))] - E[D(x)]; clip to +-0.01; 5 critic steps; RMSprop 5e-5.
register(
    AdversarialLoss(
        "wgan",
        d_loss=lambda r, f: f.mean() - r.mean(),
        g_loss=lambda f: -f.mean(),
        optimizer=OptimizerSpec("rmsprop", 5e-5),
        n_critic=5,
        clip=0.01,
        wasserstein=True,
        paper="Arjovsky et al. 2017",
    )
)

# Gulrajani et al. 2017: same objective, gradient penalty lambda=10, no batch norm in the
# critic (layer norm instead), Adam lr 1e-4, betas (0, 0.9), 5 critic steps. The penalty is
# estimated on half of each batch's interpolates, which costs less and did not lower the zoo's
# quality on the default data; it runs on every critic step, since a lazy penalty (every 5
# steps, 5x the weight) missed the zoo's quality targets at the same budget
# (bench/gan_budgets.py; figures in docs/benchmarks.md).
register(
    AdversarialLoss(
        "wgan-gp",
        d_loss=lambda r, f: f.mean() - r.mean(),
        g_loss=lambda f: -f.mean(),
        optimizer=OptimizerSpec("adam", 1e-4, (0.0, 0.9)),
        n_critic=5,
        penalty=GradientPenalty(10.0, fraction=0.5),
        disc_norm="layer",
        wasserstein=True,
        paper="Gulrajani et al. 2017",
    )
)

# Lim & Ye 2017 / Miyato et al. 2018: D min E[relu(1 - D(x))] + E[relu(1 + D(G(z)))]; G min -E[D(G(z))].
register(
    AdversarialLoss(
        "hinge",
        d_loss=lambda r, f: F.relu(1 - r).mean() + F.relu(1 + f).mean(),
        g_loss=lambda f: -f.mean(),
        optimizer=OptimizerSpec("adam", 2e-4, (0.0, 0.9)),
        paper="Lim & Ye 2017; Miyato et al. 2018",
    )
)

LOSS_NAMES = tuple(REGISTRY)
