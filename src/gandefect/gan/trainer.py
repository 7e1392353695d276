"""The GAN training loop: owns the models, optimizers, checkpoints and step accounting.

A step is one discriminator update on one real batch; the generator is updated after every
`n_critic`-th step, so a run of G generator updates takes G * n_critic steps (training length
is counted in generator updates, the same for every loss). An epoch is one pass of the
discriminator over the real images. Randomness at step t comes from a seed derived from (seed, t), so a run
resumed from a checkpoint continues exactly as the uninterrupted run would have.
"""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch

from gandefect import hardware
from gandefect.gan.families import vae_loss
from gandefect.gan.losses import AdversarialLoss
from gandefect.gan.models import DCGANConfig, Discriminator, Generator, init_weights
from gandefect.hardware import CPU

CHECKPOINT = "checkpoint.pt"


@dataclass
class TrainSettings:
    generator_steps: int = 600
    batch_size: int = 32
    seed: int = 0
    early_epochs: tuple[int, ...] = (1,)  # keep the generator after these epochs as extra, cruder fakes
    checkpoint_every: int = 100  # steps between checkpoints (and at every epoch end)
    log_every: int = 1  # steps between recorded metrics
    device: torch.device = CPU  # where the models train (gandefect.hardware)
    bf16: bool = False  # bf16 autocast (the penalty stays float32): gandefect.hardware.use_bf16


class Callback:
    """Hooks the trainer calls; the lifecycle layer implements them (MLflow, progress bars)."""

    def on_metrics(self, rows: list[tuple[int, dict[str, float]]]) -> None: ...
    def on_epoch_end(self, epoch: int, trainer: GANTrainer) -> None: ...
    def on_early_generator(self, epoch: int, generator: Generator) -> None: ...
    def on_step(self, step: int, total: int) -> None: ...


@dataclass
class TrainResult:
    steps: int
    generator_steps: int
    resumed_from: int = 0
    early: dict[int, Generator] = field(default_factory=dict)


class _Loop:
    """The loop every zoo member shares: shuffled epochs, per-step seeds, checkpoints, callbacks
    and early generators. Subclasses give `train_step`, `total_steps`, `train_mode` and checkpoints."""

    settings: TrainSettings
    callback: Callback
    G: torch.nn.Module
    step: int = 0
    generator_steps: int = 0

    checkpoint_dir: Path | None = None

    def total_steps(self) -> int: ...
    def train_step(self, real: torch.Tensor) -> dict[str, float]: ...
    def train_mode(self, on: bool) -> None: ...
    def state_dict(self) -> dict: ...
    def load_state(self, state: dict) -> None: ...

    def save_checkpoint(self) -> Path | None:
        if self.checkpoint_dir is None:
            return None
        self.checkpoint_dir.mkdir(parents=True, exist_ok=True)
        path = self.checkpoint_dir / CHECKPOINT
        tmp = path.with_suffix(".tmp")
        torch.save(self.state_dict(), tmp)
        os.replace(tmp, path)  # a kill mid-write never leaves a half checkpoint
        return path

    def load_checkpoint(self) -> bool:
        path = self.checkpoint_dir / CHECKPOINT if self.checkpoint_dir else None
        if path is None or not path.exists():
            return False
        self.load_state(torch.load(path, weights_only=False, map_location=self.settings.device))
        return True

    def fit(self, real: torch.Tensor, resume: bool = False) -> TrainResult:
        """Train on real images (N, C, H, W) in [-1, 1] for `total_steps()` steps."""
        self.begin(real, resume)
        while not self.done:
            self.after_step(self.train_step(self.next_batch()))
        return self.end()

    # -- the loop in parts: `fit` runs them in turn, an ensemble interleaves its members' ------
    def begin(self, real: torch.Tensor, resume: bool = False) -> None:
        """Put the real images on the device, resume from the checkpoint when asked, enter train mode."""
        s = self.settings
        self._per_epoch = len(real) // s.batch_size
        if self._per_epoch == 0:
            raise ValueError(f"need at least batch_size={s.batch_size} real images, got {len(real)}")
        self._total = self.total_steps()
        # the whole split on the device once, channels-last: batches are slices of it
        self._real = real.to(s.device, memory_format=torch.channels_last) if real.dim() == 4 else real.to(s.device)
        resumed_from = self.step if resume and self.load_checkpoint() else 0
        self._result = TrainResult(0, 0, resumed_from)
        self.train_mode(True)
        self._buffer: list[tuple[int, dict[str, float]]] = []
        self._perm_epoch, self._perm = -1, None

    @property
    def done(self) -> bool:
        return self.step >= self._total

    def next_batch(self) -> torch.Tensor:
        """The real batch of the current step, and the step's randomness seeded from (seed, step):
        torch's global generator, and `rng`, the same stream held by this member alone."""
        s = self.settings
        epoch, pos = divmod(self.step, self._per_epoch)
        if epoch != self._perm_epoch:
            perm = torch.randperm(len(self._real), generator=torch.Generator().manual_seed(s.seed * 7919 + epoch))
            self._perm, self._perm_epoch = perm.to(s.device), epoch
        seed = s.seed * 1_000_003 + self.step
        torch.manual_seed(seed)
        self.rng = torch.Generator(s.device).manual_seed(seed)
        return self._real[self._perm[pos * s.batch_size : (pos + 1) * s.batch_size]]

    def after_step(self, metrics: dict[str, float]) -> None:
        """Count the step; record its metrics, checkpoint and keep early generators on schedule."""
        s, per_epoch = self.settings, self._per_epoch
        self.step += 1
        if self.step % s.log_every == 0:
            self._buffer.append((self.step, metrics))
        self.callback.on_step(self.step, self._total)
        epoch_done = self.step % per_epoch == 0
        if epoch_done or self.step % s.checkpoint_every == 0 or self.step == self._total:
            self.callback.on_metrics(self._buffer)
            self._buffer = []
            self.save_checkpoint()
        if epoch_done:
            finished = self.step // per_epoch
            if finished in s.early_epochs:
                early = copy.deepcopy(self.G).to(CPU).eval()  # stored on the CPU, as every model
                self._result.early[finished] = early
                self.callback.on_early_generator(finished, early)
            self.callback.on_epoch_end(finished, self)

    def end(self) -> TrainResult:
        """Flush the last metrics, leave train mode; the run's steps and early generators."""
        if self._buffer:
            self.callback.on_metrics(self._buffer)
            self._buffer = []
        result = self._result
        result.steps, result.generator_steps = self.step, self.generator_steps
        self.train_mode(False)
        return result


class GANTrainer(_Loop):
    def __init__(
        self,
        loss: AdversarialLoss,
        model_cfg: DCGANConfig,
        settings: TrainSettings,
        checkpoint_dir: Path | None = None,
        callback: Callback | None = None,
        generator: type = Generator,
        discriminator: type = Discriminator,
    ):
        self.loss, self.settings, self.callback = loss, settings, callback or Callback()
        self.model_cfg = DCGANConfig(**{**model_cfg.to_dict(), "disc_norm": loss.disc_norm})
        self.checkpoint_dir = checkpoint_dir
        torch.manual_seed(settings.seed)
        self.G, self.D = generator(self.model_cfg), discriminator(self.model_cfg)
        self.G.apply(init_weights)
        self.D.apply(init_weights)
        # initialized on the CPU (the same weights on every device); channels-last: oneDNN's and
        # cuDNN's fast convolution layout (measured in docs/benchmarks.md)
        self.G.to(settings.device, memory_format=torch.channels_last)
        self.D.to(settings.device, memory_format=torch.channels_last)
        self.mixed = settings.bf16
        self.opt_g = loss.optimizer.build(self.G.parameters())
        self.opt_d = loss.optimizer.build(self.D.parameters())
        self.step = 0
        self.generator_steps = 0
        # the step's random stream; `next_batch` reseeds it from (seed, step) at every step
        self.rng = torch.Generator(settings.device).manual_seed(settings.seed)

    # -- checkpoints -------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {
            "G": self.G.state_dict(),
            "D": self.D.state_dict(),
            "opt_g": self.opt_g.state_dict(),
            "opt_d": self.opt_d.state_dict(),
            "step": self.step,
            "generator_steps": self.generator_steps,
            "loss": self.loss.name,
            "model_cfg": self.model_cfg.to_dict(),
        }

    def load_state(self, state: dict) -> None:
        self.G.load_state_dict(state["G"])
        self.D.load_state_dict(state["D"])
        self.opt_g.load_state_dict(state["opt_g"])
        self.opt_d.load_state_dict(state["opt_d"])
        self.step, self.generator_steps = state["step"], state["generator_steps"]

    # -- training ----------------------------------------------------------------------
    def total_steps(self) -> int:
        return self.settings.generator_steps * self.loss.n_critic

    def train_mode(self, on: bool) -> None:
        self.G.train(on)
        self.D.train(on)

    def train_step(self, real: torch.Tensor) -> dict[str, float]:
        loss, b = self.loss, real.shape[0]
        z = torch.randn(b, self.model_cfg.z_dim, device=real.device, generator=self.rng)
        with torch.no_grad(), hardware.autocast(self.mixed, real.device):
            fake = self.G(z)
        with hardware.autocast(self.mixed, real.device):
            terms = loss.discriminator_step(self.D, self.opt_d, real, fake, step=self.step, generator=self.rng)
        metrics = {k: v.item() for k, v in terms.items()}
        if (self.step + 1) % loss.n_critic == 0:
            with hardware.autocast(self.mixed, real.device):
                z = torch.randn(b, self.model_cfg.z_dim, device=real.device, generator=self.rng)
                g_loss = loss.g_loss(self.D(self.G(z)).float())
            self.opt_g.zero_grad(set_to_none=True)
            g_loss.backward()
            self.opt_g.step()
            self.generator_steps += 1
            metrics["g_loss"] = g_loss.item()
        return metrics


class _OneModelLoop(_Loop):
    """One model trained by its own loss with Adam: same settings, checkpoints and callbacks as
    GANTrainer (one step = one batch; `generator_steps` = steps); `G` is what draws images."""

    STATE_KEY = "model"  # the model's entry in a checkpoint

    def __init__(
        self,
        model,
        sampler,
        settings: TrainSettings,
        lr: float,
        checkpoint_dir: Path | None = None,
        callback: Callback | None = None,
    ):
        self.model, self.G, self.settings = model, sampler, settings
        self.callback, self.checkpoint_dir = callback or Callback(), checkpoint_dir
        for module in (self.model, self.G):  # G may be a copy of the model (a moving average)
            module.to(settings.device, memory_format=torch.channels_last)
        self.opt = torch.optim.Adam(model.parameters(), lr=lr)
        self.step = self.generator_steps = 0

    def loss(self, real: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]: ...

    def state_dict(self) -> dict:
        return {self.STATE_KEY: self.model.state_dict(), "opt": self.opt.state_dict(), "step": self.step}

    def load_state(self, state: dict) -> None:
        self.model.load_state_dict(state[self.STATE_KEY])
        self.opt.load_state_dict(state["opt"])
        self.step = self.generator_steps = state["step"]

    def total_steps(self) -> int:
        return self.settings.generator_steps

    def train_mode(self, on: bool) -> None:
        self.model.train(on)

    def train_step(self, real: torch.Tensor) -> dict[str, float]:
        with hardware.autocast(self.settings.bf16, real.device):
            loss, metrics = self.loss(real)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        self.generator_steps += 1
        return {"loss": loss.item(), **metrics}


class VAETrainer(_OneModelLoop):
    """The training loop of a VAE generator family (negative ELBO); `G` is the decoder."""

    STATE_KEY = "vae"

    def __init__(
        self,
        vae,
        settings: TrainSettings,
        lr: float,
        beta: float,
        checkpoint_dir: Path | None = None,
        callback: Callback | None = None,
    ):
        super().__init__(vae, vae.decoder, settings, lr, checkpoint_dir, callback)
        self.vae, self.beta = vae, beta

    def loss(self, real: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        return vae_loss(real, *self.vae(real), self.beta)


class DiffusionTrainer(_OneModelLoop):
    """The training loop of a diffusion-style family (gandefect.gan.diffusion): its own loss on
    every batch; `G`, which samples, is the exponential moving average of the trained weights
    (`ema` decay per step; 0: the weights themselves), as diffusion models are sampled."""

    def __init__(
        self,
        model,
        settings: TrainSettings,
        lr: float,
        checkpoint_dir: Path | None = None,
        callback: Callback | None = None,
        ema: float = 0.0,
    ):
        super().__init__(model, copy.deepcopy(model) if ema else model, settings, lr, checkpoint_dir, callback)
        self.ema = ema

    def loss(self, real: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        return self.model.loss(real), {}

    def train_step(self, real: torch.Tensor) -> dict[str, float]:
        metrics = super().train_step(real)
        if self.ema:
            with torch.no_grad():
                for averaged, trained in zip(self.G.parameters(), self.model.parameters()):
                    averaged.lerp_(trained, 1.0 - self.ema)
        return metrics

    def state_dict(self) -> dict:
        return {**super().state_dict(), "ema": self.G.state_dict()}

    def load_state(self, state: dict) -> None:
        super().load_state(state)
        self.G.load_state_dict(state["ema"])
