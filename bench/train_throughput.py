"""Trainer overhead and hardware utilization, measured side by side in one run.

Prints images/s of the project's GAN trainer with full MLflow tracking (per-step metrics,
sample grids, checkpoints, a real SQLite store) against a bare PyTorch loop over the same
models, loss and batch; their ratio; and the share of this machine's measured float32
matmul FLOP/s that the trainer reaches. Rounds alternate between the two so drift on a
shared machine hits both alike.

    .venv/bin/python bench/train_throughput.py [--steps 150] [--rounds 3] [--loss nonsaturating]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from gandefect.gan import losses
from gandefect.gan.models import DCGANConfig, Discriminator, Generator, init_weights
from gandefect.gan.trainer import GANTrainer, TrainSettings


def matmul_flops(n: int = 2048, repeats: int = 10) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)
    start = time.perf_counter()
    for _ in range(repeats):
        torch.mm(a, b)
    return 2 * n**3 * repeats / (time.perf_counter() - start)


def bare_loop(loss, cfg: DCGANConfig, real: torch.Tensor, batch: int, steps: int) -> float:
    """The same models and updates with nothing around them; returns images/s."""
    torch.manual_seed(0)
    G, D = Generator(cfg), Discriminator(cfg)
    G.apply(init_weights)
    D.apply(init_weights)
    opt_g, opt_d = loss.optimizer.build(G.parameters()), loss.optimizer.build(D.parameters())
    start = time.perf_counter()
    for step in range(steps):
        x = real[(step * batch) % (len(real) - batch):][:batch]
        with torch.no_grad():
            fake = G(torch.randn(batch, cfg.z_dim))
        d = loss.d_loss(D(x), D(fake))
        opt_d.zero_grad(set_to_none=True)
        d.backward()
        opt_d.step()
        g = loss.g_loss(D(G(torch.randn(batch, cfg.z_dim))))
        opt_g.zero_grad(set_to_none=True)
        g.backward()
        opt_g.step()
    return steps * batch / (time.perf_counter() - start)


def tracked_trainer(loss, cfg: DCGANConfig, real: torch.Tensor, batch: int, steps: int, workdir: Path) -> float:
    """The project's trainer with its MLflow callback on a real SQLite store; returns images/s."""
    import mlflow

    from gandefect.stages.gans import _Tracker

    mlflow.set_tracking_uri(f"sqlite:///{workdir / 'mlflow.db'}")
    exp = mlflow.set_experiment("bench")
    with mlflow.start_run(experiment_id=exp.experiment_id) as run:
        z = torch.randn(64, cfg.z_dim)
        callback = _Tracker(mlflow.MlflowClient(), run.info.run_id, z, loss.name, None)
        settings = TrainSettings(generator_steps=steps, batch_size=batch, early_epochs=(), checkpoint_every=100)
        trainer = GANTrainer(loss, cfg, settings, workdir / "ckpt", callback)
        start = time.perf_counter()
        trainer.fit(real)
        return steps * batch / (time.perf_counter() - start)


def flops_per_image(loss, cfg: DCGANConfig, batch: int) -> float:
    trainer = GANTrainer(loss, cfg, TrainSettings(batch_size=batch))
    with FlopCounterMode(display=False) as counter:
        trainer.train_step(torch.rand(batch, cfg.channels, cfg.image_size, cfg.image_size) * 2 - 1)
    return counter.get_total_flops() / batch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=150)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--loss", default="nonsaturating")
    ap.add_argument("--g-width", type=int, default=16)
    ap.add_argument("--d-width", type=int, default=16)
    args = ap.parse_args()
    import logging

    logging.getLogger("mlflow").setLevel(logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)
    loss = losses.get(args.loss)
    cfg = DCGANConfig(g_width=args.g_width, d_width=args.d_width, disc_norm=loss.disc_norm)
    real = torch.rand(4000, 1, 28, 28) * 2 - 1
    bare_loop(loss, cfg, real, args.batch, 20)  # warm-up
    bare, tracked = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            bare.append(bare_loop(loss, cfg, real, args.batch, args.steps))
            tracked.append(tracked_trainer(loss, cfg, real, args.batch, args.steps, Path(tmp) / f"r{r}"))
            print(f"round {r + 1}: bare {bare[-1]:.0f} img/s, trainer+mlflow {tracked[-1]:.0f} img/s", flush=True)
    peak = statistics.median(matmul_flops() for _ in range(3))
    per_image = flops_per_image(loss, cfg, args.batch)
    b, t = statistics.median(bare), statistics.median(tracked)
    print(f"\nloss {loss.name}, batch {args.batch}, {args.steps} steps x {args.rounds} rounds, "
          f"{torch.get_num_threads()} threads")
    print(f"bare PyTorch loop        {b:8.0f} images/s")
    print(f"trainer + MLflow         {t:8.0f} images/s")
    print(f"ratio trainer / bare     {t / b:8.3f}   (target >= 0.95)")
    print(f"training FLOPs per image {per_image / 1e6:8.1f} MFLOP")
    print(f"trainer FLOP/s           {t * per_image / 1e9:8.1f} GFLOP/s")
    print(f"matmul FLOP/s (2048^2)   {peak / 1e9:8.1f} GFLOP/s")
    print(f"share of matmul FLOP/s   {t * per_image / peak:8.3f}")


if __name__ == "__main__":
    main()
