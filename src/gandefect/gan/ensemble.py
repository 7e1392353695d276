"""Zoo members that share an architecture, trained in lockstep as one batched model.

Each member stays a `GANTrainer` of its own: its loss, its optimizers (built over its own
parameters), seed, data order, budget, checkpoints and callbacks, so what the registry, the
reports and a resumed run see does not change. The ensemble only changes how a step is
computed: the members' discriminators (then their generators) run as one model batched over
the members, `torch.func.functional_call` under `vmap` on their parameters stacked for the
step, so K small steps become one larger one. The gradients reach each member's own
parameters through the stack, each member's optimizer updates them as it would alone, a member
on a critic step skips the generator update on its own schedule, and a member whose budget is
spent leaves the group while the others go on.

Batched arithmetic is not bit-identical to one member's: a member trained here ends within
float32 rounding of the same member trained alone (tests/gan/test_ensemble.py states how close).
"""

from __future__ import annotations

import copy

import torch
from torch import nn
from torch.func import functional_call, vmap

from gandefect import hardware
from gandefect.gan.losses import GradientPenalty
from gandefect.gan.trainer import GANTrainer, TrainResult


def can_join(trainer) -> bool:
    """Whether a trainer can train in an ensemble: a GAN whose regularizer, if any, is the
    gradient penalty (the one the batched step computes)."""
    penalty = getattr(getattr(trainer, "loss", None), "penalty", None)
    return isinstance(trainer, GANTrainer) and (penalty is None or isinstance(penalty, GradientPenalty))


def shape_of(trainer: GANTrainer) -> tuple:
    """What members must share to be batched: their modules' classes and shape, device and arithmetic."""
    return (
        type(trainer.G),
        type(trainer.D),
        tuple(sorted(trainer.model_cfg.to_dict().items())),
        str(trainer.settings.device),
        trainer.mixed,
    )


def groups(trainers: dict[str, object]) -> list[list[str]]:
    """The members (by name, in the given order) that train together: those that can join an
    ensemble, grouped by shape; every other trainer is a group of its own."""
    out: dict[object, list[str]] = {}
    for name, trainer in trainers.items():
        key = shape_of(trainer) if can_join(trainer) else ("alone", name)
        out.setdefault(key, []).append(name)
    return list(out.values())


class GANEnsemble:
    """GAN trainers of one shape (`shape_of`), trained in lockstep: `fit` returns each member's
    TrainResult, as its own `fit` would."""

    def __init__(self, members: list[GANTrainer]):
        if not members:
            raise ValueError("an ensemble needs at least one member")
        refused = [m.loss.name for m in members if not can_join(m)]
        if refused:
            raise ValueError(f"cannot train in an ensemble: {', '.join(refused)} (a regularizer it cannot batch)")
        shapes = {shape_of(m) for m in members}
        if len(shapes) > 1:
            raise ValueError(f"ensemble members differ in shape: {len(shapes)} kinds among {len(members)}")
        self.members = members
        # the architecture without weights: every call takes the members' own, stacked
        self._G = copy.deepcopy(members[0].G).to("meta")
        self._D = copy.deepcopy(members[0].D).to("meta")

    def fit(self, real: torch.Tensor, resume: bool = False) -> list[TrainResult]:
        """Train every member on `real` (N, C, H, W) in [-1, 1] for its own `total_steps()`;
        `resume`: each member from its own checkpoint."""
        for m in self.members:
            m.begin(real, resume)
        while active := [m for m in self.members if not m.done]:
            batches = [m.next_batch() for m in active]
            for m, metrics in zip(active, self.step(active, batches)):
                m.after_step(metrics)
        return [m.end() for m in self.members]

    # -- one batched step ---------------------------------------------------------------
    def step(self, group: list[GANTrainer], reals: list[torch.Tensor]) -> list[dict[str, float]]:
        """One discriminator update of every member of `group`, on its own real batch, then a
        generator update of those whose `n_critic` says so: what `GANTrainer.train_step` does
        for one, with each member's randomness drawn from its own stream in the same order."""
        device, mixed = reals[0].device, group[0].mixed
        real = torch.stack(reals)
        z = self._noise(group, reals)
        with torch.no_grad(), hardware.autocast(mixed, device):
            fake = self._forward(self._G, [m.G for m in group], z)
        rows = self._discriminator_step(group, real, fake)
        due = [k for k, m in enumerate(group) if (m.step + 1) % m.loss.n_critic == 0]
        if due:
            sub = [group[k] for k in due]
            z = self._noise(sub, [reals[k] for k in due])
            with hardware.autocast(mixed, device):
                out = self._forward(self._D, [m.D for m in sub], self._forward(self._G, [m.G for m in sub], z))
            g_losses = [m.loss.g_loss(out[j].float()) for j, m in enumerate(sub)]
            for m in sub:
                m.opt_g.zero_grad(set_to_none=True)
            torch.stack(g_losses).sum().backward()
            for j, m in enumerate(sub):
                m.opt_g.step()
                m.generator_steps += 1
                rows[due[j]]["g_loss"] = g_losses[j].item()
        return rows

    def _discriminator_step(self, group: list[GANTrainer], real: torch.Tensor, fake: torch.Tensor) -> list[dict]:
        """`AdversarialLoss.discriminator_step` for every member at once."""
        device, mixed = real.device, group[0].mixed
        with hardware.autocast(mixed, device):
            ds = [m.D for m in group]
            real_out, fake_out = self._forward(self._D, ds, real), self._forward(self._D, ds, fake)
            terms, totals = [], []
            for k, m in enumerate(group):
                d_loss = m.loss.d_loss(real_out[k], fake_out[k])
                terms.append({"d_loss": d_loss.detach()})
                totals.append(d_loss)
            penalized = [k for k, m in enumerate(group) if m.loss.penalty and m.step % m.loss.penalty.every == 0]
            if penalized:
                values = self._gradient_penalties([group[k] for k in penalized], real[penalized], fake[penalized])
                for k, value in zip(penalized, values):
                    p = group[k].loss.penalty
                    totals[k] = totals[k] + p.weight * p.every * value
                    terms[k][p.name] = value.detach()
            for k, m in enumerate(group):
                if m.loss.wasserstein:
                    terms[k]["wasserstein_estimate"] = (real_out[k].mean() - fake_out[k].mean()).detach()
        for m in group:
            m.opt_d.zero_grad(set_to_none=True)
        torch.stack(totals).sum().backward()
        for m in group:
            m.opt_d.step()
            m.loss.after_d_step(m.D)
        return [{name: value.item() for name, value in row.items()} for row in terms]

    def _gradient_penalties(self, group: list[GANTrainer], real: torch.Tensor, fake: torch.Tensor) -> list:
        """`gandefect.gan.losses.gradient_penalty` of each member on its own interpolates (its
        share of the batch, its own alphas), the critics run batched; float32, as alone."""
        n = max(1, round(real.shape[1] * group[0].loss.penalty.fraction))
        if any(max(1, round(real.shape[1] * m.loss.penalty.fraction)) != n for m in group):
            raise ValueError("members batched for a gradient penalty must share its fraction")
        real, fake = real[:, :n], fake[:, :n]
        alphas = torch.stack(
            [torch.rand(n, *([1] * (real.dim() - 2)), device=real.device, generator=m.rng) for m in group]
        )
        with torch.autocast(real.device.type, enabled=False):
            x_hat = (alphas * real.float() + (1 - alphas) * fake.float()).requires_grad_(True)
            out = self._forward(self._D, [m.D for m in group], x_hat)
            (grad,) = torch.autograd.grad(out.sum(), x_hat, create_graph=True)
            return [((g.flatten(1).norm(2, dim=1) - 1) ** 2).mean() for g in grad]

    @staticmethod
    def _noise(group: list[GANTrainer], reals: list[torch.Tensor]) -> torch.Tensor:
        return torch.stack(
            [torch.randn(r.shape[0], m.model_cfg.z_dim, device=r.device, generator=m.rng) for m, r in zip(group, reals)]
        )

    @staticmethod
    def _forward(template: nn.Module, modules: list[nn.Module], x: torch.Tensor) -> torch.Tensor:
        """The members' modules on their own inputs (x: members first), batched: the template's
        code with each member's parameters and buffers. Buffers the call updates (batch-norm
        statistics) are written back to each member's own."""
        params = {
            n: torch.stack([m.get_parameter(n).contiguous() for m in modules]) for n, _ in template.named_parameters()
        }
        buffers = {n: torch.stack([m.get_buffer(n) for m in modules]) for n, _ in template.named_buffers()}
        # contiguous: group norm under vmap cannot query another memory format
        out = vmap(lambda p, b, x: functional_call(template, (p, b), (x,)))(params, buffers, x.contiguous())
        with torch.no_grad():
            for n, stacked in buffers.items():
                for k, m in enumerate(modules):
                    m.get_buffer(n).copy_(stacked[k])
        return out
