"""Each adversarial loss is its formula; regularizers do what their papers say; the registry extends."""

import dataclasses
import math
from typing import ClassVar

import pytest
import torch
from torch import nn

from gandefect.errors import ConfigError
from gandefect.gan import losses
from gandefect.gan.losses import AdversarialLoss, OptimizerSpec, Penalty, clip_weights, gradient_penalty
from gandefect.gan.models import DCGANConfig
from gandefect.gan.trainer import Callback, GANTrainer, TrainSettings

REAL = torch.tensor([2.5, -1.0, 0.3, 40.0, -40.0], dtype=torch.float64)
FAKE = torch.tensor([-3.0, 0.7, 0.0, -35.0, 35.0], dtype=torch.float64)


def sig(t):
    return 1 / (1 + math.exp(-t))


def mean(xs):
    return sum(xs) / len(xs)


def _log(p):  # exact log for the reference: safe where p is far from 0 in float64
    return math.log(p) if p > 0 else -1e300


R, F = REAL.tolist(), FAKE.tolist()


def softplus(t):  # log(1 + e^t), computed exactly in Python floats
    return max(t, 0) + math.log1p(math.exp(-abs(t)))


EXPECTED = {
    # -log D(x) - log(1 - D(G(z))), with -log(sigmoid(t)) = softplus(-t), -log(1 - sigmoid(t)) = softplus(t)
    "minimax": (
        mean([softplus(-r) for r in R]) + mean([softplus(f) for f in F]),
        mean([-softplus(f) for f in F]),
    ),  # log(1 - D(G(z)))
    "nonsaturating": (
        mean([softplus(-r) for r in R]) + mean([softplus(f) for f in F]),
        mean([softplus(-f) for f in F]),
    ),  # -log D(G(z))
    "lsgan": (
        0.5 * mean([(r - 1) ** 2 for r in R]) + 0.5 * mean([f**2 for f in F]),
        0.5 * mean([(f - 1) ** 2 for f in F]),
    ),
    "wgan": (mean(F) - mean(R), -mean(F)),
    "wgan-gp": (mean(F) - mean(R), -mean(F)),
    "hinge": (mean([max(0, 1 - r) for r in R]) + mean([max(0, 1 + f) for f in F]), -mean(F)),
}


def test_registry_holds_the_six_losses():
    assert set(losses.LOSS_NAMES) >= set(EXPECTED)


@pytest.mark.parametrize("name", list(EXPECTED))
def test_each_loss_equals_its_formula_on_fixed_logits(name):
    loss = losses.get(name)
    d_expected, g_expected = EXPECTED[name]
    assert loss.d_loss(REAL, FAKE).item() == pytest.approx(d_expected, abs=1e-6)
    assert loss.g_loss(FAKE).item() == pytest.approx(g_expected, abs=1e-6)


def test_sigmoid_losses_stay_finite_at_extreme_logits():
    extreme = torch.tensor([1e4, -1e4])
    for name in ("minimax", "nonsaturating"):
        loss = losses.get(name)
        values = [loss.d_loss(extreme, -extreme), loss.g_loss(extreme), loss.g_loss(-extreme)]
        assert all(torch.isfinite(v) for v in values), name


def test_small_cases_match_the_probability_form():
    # where the sigmoid is not saturated, the logit form equals the textbook log-probability form
    r, f = 0.4, -0.2
    d = losses.get("minimax").d_loss(torch.tensor([r]), torch.tensor([f])).item()
    assert d == pytest.approx(-_log(sig(r)) - _log(1 - sig(f)), abs=1e-6)


def test_wgan_clipping_bounds_every_critic_weight():
    trainer = GANTrainer(
        losses.get("wgan"), DCGANConfig(g_width=8, d_width=8), TrainSettings(generator_steps=1, batch_size=8)
    )
    with torch.no_grad():
        for p in trainer.D.parameters():
            p.mul_(100)  # far outside the bound before the step
    trainer.fit(torch.rand(16, 1, 28, 28) * 2 - 1)
    assert max(p.abs().max().item() for p in trainer.D.parameters()) <= 0.01 + 1e-12
    clip_weights(trainer.D, 0.5)


class Linear(nn.Module):
    def __init__(self, norm: float):
        super().__init__()
        w = torch.randn(1, 1, 28, 28)
        self.w = nn.Parameter(w / w.norm() * norm)

    def forward(self, x):
        return (x * self.w).flatten(1).sum(1)


def test_gradient_penalty_is_zero_for_unit_gradient_and_positive_otherwise():
    real, fake = torch.rand(8, 1, 28, 28), torch.rand(8, 1, 28, 28)
    assert gradient_penalty(Linear(1.0), real, fake).item() == pytest.approx(0.0, abs=1e-10)
    assert gradient_penalty(Linear(3.0), real, fake).item() == pytest.approx(4.0, rel=1e-5)
    assert gradient_penalty(Linear(0.5), real, fake).item() == pytest.approx(0.25, rel=1e-5)


def test_a_seventh_loss_needs_only_a_registry_entry():
    toy = AdversarialLoss(
        "toy-l1",
        d_loss=lambda r, f: (1 - r).abs().mean() + (1 + f).abs().mean(),
        g_loss=lambda f: (1 - f).abs().mean(),
        optimizer=OptimizerSpec("adam", 1e-3),
    )
    losses.register(toy)
    try:
        trainer = GANTrainer(
            losses.get("toy-l1"), DCGANConfig(g_width=8, d_width=8), TrainSettings(generator_steps=1, batch_size=8)
        )
        before = [p.clone() for p in trainer.G.parameters()]
        result = trainer.fit(torch.rand(16, 1, 28, 28) * 2 - 1)
        assert result.generator_steps == 1
        assert any(not torch.equal(a, b) for a, b in zip(before, trainer.G.parameters()))
    finally:
        del losses.REGISTRY["toy-l1"]


@dataclasses.dataclass(frozen=True)
class R1(Penalty):
    """Mescheder et al. 2018: E[||grad_x D(x)||^2] on real images only."""

    name: ClassVar[str] = "r1"

    def __call__(self, D, real, fake, *condition, generator=None):  # draws nothing: the generator goes unused
        real = real.detach().requires_grad_(True)
        (grad,) = torch.autograd.grad(D(real, *condition).sum(), real, create_graph=True)
        return grad.flatten(1).pow(2).sum(1).mean()


class Recorder(Callback):
    def __init__(self):
        self.rows = []

    def on_metrics(self, rows):
        self.rows += rows


def _train(loss: AdversarialLoss) -> tuple[GANTrainer, list]:
    real = torch.rand(16, 1, 28, 28, generator=torch.Generator().manual_seed(0)) * 2 - 1
    recorder = Recorder()
    trainer = GANTrainer(
        loss,
        DCGANConfig(g_width=8, d_width=8),
        TrainSettings(generator_steps=2, batch_size=8, early_epochs=()),
        callback=recorder,
    )
    trainer.fit(real)
    return trainer, recorder.rows


def test_a_new_regularizer_needs_only_a_registry_entry():
    plain = losses.get("nonsaturating")
    losses.register(dataclasses.replace(plain, name="ns-r1", penalty=R1(weight=10.0)))
    try:
        regularized, rows = _train(losses.get("ns-r1"))
    finally:
        del losses.REGISTRY["ns-r1"]
    unregularized, plain_rows = _train(plain)
    assert len(rows) == 2 and all(m["r1"] > 0 for _, m in rows) and "r1" not in plain_rows[0][1]
    # the same seeds and data: only the penalty's gradient can make the critics differ
    assert rows[0][1]["d_loss"] == plain_rows[0][1]["d_loss"]
    assert any(not torch.equal(a, b) for a, b in zip(regularized.D.parameters(), unregularized.D.parameters()))


def test_the_penalty_share_of_a_conditioned_critic_slices_its_condition_too():
    seen = []

    class Conditioned(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.ones(1))

        def forward(self, x, mask):
            seen.append((len(x), len(mask)))
            return (x * mask * self.w).flatten(1).sum(1)

    loss = losses.get("wgan-gp")
    critic = Conditioned()
    x, mask = torch.rand(8, 1, 4, 4), torch.rand(8, 1, 4, 4)
    terms = loss.discriminator_step(critic, loss.optimizer.build(critic.parameters()), x, x.flip(0), mask)
    assert seen == [(8, 8), (8, 8), (4, 4)] and loss.penalty.fraction == 0.5
    assert set(terms) == {"d_loss", "gradient_penalty", "wasserstein_estimate"}


def test_the_configured_losses_default_to_the_registry_and_unknown_ones_are_named():
    assert losses.selected(None) == list(losses.REGISTRY)
    assert losses.selected(["hinge", "wgan"]) == ["hinge", "wgan"]
    with pytest.raises(ConfigError, match="gan.losses: unknown loss bogus; known: minimax"):
        losses.selected(["hinge", "bogus"])


def test_a_lazy_penalty_runs_on_every_kth_step_with_k_times_the_weight():
    plain = losses.get("nonsaturating")
    x = torch.rand(8, 1, 28, 28, generator=torch.Generator().manual_seed(1))
    updates, terms = {}, {}
    for name, penalty in (("none", None), ("every", R1(weight=10.0)), ("lazy", R1(weight=10.0, every=2))):
        loss = dataclasses.replace(plain, name=name, penalty=penalty)
        torch.manual_seed(0)
        critic = Linear(3.0)
        start = critic.w.detach().clone()
        opt = torch.optim.SGD(critic.parameters(), lr=0.1)
        terms[name] = [set(loss.discriminator_step(critic, opt, x, x.flip(0), step=0))]
        updates[name] = critic.w.detach() - start
        terms[name].append(set(loss.discriminator_step(critic, opt, x, x.flip(0), step=1)))
    assert all("r1" in t for t in terms["every"])
    assert "r1" in terms["lazy"][0] and "r1" not in terms["lazy"][1]  # computed on every 2nd step only
    # on the step it runs, the lazy penalty pushes the critic twice as hard as the every-step one
    every, lazy = updates["every"] - updates["none"], updates["lazy"] - updates["none"]
    assert every.abs().max() > 0
    assert torch.allclose(lazy, 2 * every, rtol=1e-4, atol=1e-9)


def test_a_penalty_written_without_a_generator_argument_still_works_where_none_is_given():
    class OldStyle(Penalty):  # draws nothing, and predates the generator argument
        name: ClassVar[str] = "old"

        def __call__(self, D, real, fake, *condition):
            return D(real, *condition).pow(2).mean()

    loss = dataclasses.replace(losses.get("wgan"), name="wgan-old", penalty=OldStyle(1.0))
    critic = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 1))
    x = torch.rand(8, 1, 4, 4)
    terms = loss.discriminator_step(critic, loss.optimizer.build(critic.parameters()), x, x.flip(0))
    assert terms["old"] > 0
