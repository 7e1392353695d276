"""Training speed and the share of the hardware's peak it uses, measured side by side in one run.

Prints images/s of the project's GAN trainer with full MLflow tracking (per-step metrics,
sample grids, checkpoints, a real SQLite store) against a bare PyTorch loop over the same
models, loss, batch and device; their ratio; the FLOPs of one training image (counted by
torch's FlopCounterMode); and the share of this machine's measured matmul peak the trainer
reaches: float32 matmul on the CPU, and on `--device cuda` both the float32 and the bf16
peak (the trainer computes in bf16 there). Rounds alternate between the two loops so drift
on a shared machine hits both alike. The default GAN is the one params.yaml configures
(batch size and widths of the `gan` section, image size of `data`).

    .venv/bin/python bench/train_throughput.py [--steps 150] [--rounds 3] [--loss nonsaturating] [--device cpu]

`--compare DIR` runs DIR's own copy of this benchmark (another checkout, e.g. a baseline
commit, with its own .venv) in alternating rounds and prints both side by side.
`--side-by-side` compares one GAN on every core's thread with one GAN per core on one thread
each (separate processes, as the flow's default runner trains the zoo), in total images/s.
`--ensemble` trains the zoo's DCGAN members that share a critic's shape (or `--members`) one
after another and then as one batched ensemble (gandefect.gan.ensemble), in alternating rounds,
and prints both in images/s and as a share of the fp32 (and, on a GPU, bf16) matmul peak.
`--detector` trains the CNN detector (the `detect.cnn` recipe of params.yaml, on random 8-bit
images of the data's size) in float32 and under bf16 autocast, in alternating rounds, and prints
both in images/s and as a share of the fp32 matmul peak, beside what `precision: auto` takes on
this machine: bf16 pays only where the CPU computes it natively (AVX512-BF16, AMX).
`--prefetch` trains the CNN detector on the embedded digits (half of them as the fake class) with
each step's batch made in turn, as before, and made one step ahead by a background thread
(`hardware.prefetched`), in alternating rounds: on all the machine's threads (the main model)
and on one (a leave-one-out worker), with the share of a step spent making its batch and which
way `hardware.batches_ahead` has the detector make them on this machine; `--device cuda` on the
GPU, where the step waits for its batch.
`--ceiling` records the convolutions and matrix products of one training step of `--loss`, and
times the step, those calls alone on the same arguments, and the same products as dense GEMMs
(their im2col form: forward, input and weight gradient each one product) batched over as many
members as `--members` names: the share of the fp32 peak any implementation built on these
products can reach, however the members are batched.
`--flow` runs the whole `gandefect run` in a fresh clone of this checkout's HEAD (with
`--profile`) and prints each stage's seconds and how many of the machine's cores it kept
busy (sampled machine-wide from /proc/stat), so a change is measured where it matters and a
stage that leaves cores idle shows.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import logging
import math
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_map
from torch.utils.flop_counter import FlopCounterMode

from gandefect import hardware
from gandefect.config import load_config
from gandefect.data import sources
from gandefect.detect.cnn import CNNDetector, PatchNet
from gandefect.detect.common import Labeled
from gandefect.gan import losses
from gandefect.gan.ensemble import GANEnsemble, groups
from gandefect.gan.models import DCGANConfig, Discriminator, Generator, init_weights
from gandefect.gan.trainer import GANTrainer, TrainSettings
from gandefect.names import RETRAIN_EXPERIMENT

ROOT = Path(__file__).resolve().parents[1]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def matmul_flops(
    device: torch.device, dtype: torch.dtype = torch.float32, n: int | None = None, repeats: int = 10
) -> float:
    """FLOP/s of an n x n matrix product on `device` (float32: TF32 off; the largest product a
    2-core CPU finishes quickly, a large one on a GPU)."""
    n = n or (2048 if device.type == "cpu" else 8192)
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    tf32 = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        for _ in range(3):
            torch.mm(a, b)
        _sync(device)
        start = time.perf_counter()
        for _ in range(repeats):
            torch.mm(a, b)
        _sync(device)
        return 2 * n**3 * repeats / (time.perf_counter() - start)
    finally:
        torch.backends.cuda.matmul.allow_tf32 = tf32


def bare_loop(loss, cfg: DCGANConfig, real: torch.Tensor, batch: int, steps: int, device: torch.device) -> float:
    """The same models, layout and updates (and the same autocast) with nothing around them; images/s."""
    torch.manual_seed(0)
    G, D = Generator(cfg), Discriminator(cfg)
    G.apply(init_weights)
    D.apply(init_weights)
    G.to(device, memory_format=torch.channels_last)
    D.to(device, memory_format=torch.channels_last)
    mixed = hardware.use_bf16("auto", device, on_cpu=False)  # as the zoo trains
    opt_g, opt_d = loss.optimizer.build(G.parameters()), loss.optimizer.build(D.parameters())
    real = real.to(device, memory_format=torch.channels_last)
    _sync(device)
    start = time.perf_counter()
    for step in range(steps):
        x = real[(step * batch) % (len(real) - batch) :][:batch]
        with torch.no_grad(), hardware.autocast(mixed, device):
            fake = G(torch.randn(batch, cfg.z_dim, device=device))
        with hardware.autocast(mixed, device):
            terms = loss.discriminator_step(D, opt_d, x, fake)
        if (step + 1) % loss.n_critic == 0:
            with hardware.autocast(mixed, device):
                g = loss.g_loss(D(G(torch.randn(batch, cfg.z_dim, device=device))).float())
            opt_g.zero_grad(set_to_none=True)
            g.backward()
            opt_g.step()
        float(terms["d_loss"])  # the trainer reads its metrics every step; so does the bare loop
    _sync(device)
    return steps * batch / (time.perf_counter() - start)


def tracked_trainer(
    loss, cfg: DCGANConfig, real: torch.Tensor, batch: int, steps: int, workdir: Path, device: torch.device
) -> float:
    """The project's trainer with its MLflow callback on a real SQLite store; returns images/s."""
    import mlflow

    from gandefect.stages.gans import _Tracker

    mlflow.set_tracking_uri(f"sqlite:///{workdir / 'mlflow.db'}")
    exp = mlflow.set_experiment("bench")
    with mlflow.start_run(experiment_id=exp.experiment_id) as run:
        z = torch.randn(64, cfg.z_dim)
        callback = _Tracker(mlflow.MlflowClient(), run.info.run_id, z, loss.name, None)
        settings = TrainSettings(
            generator_steps=steps // loss.n_critic,
            batch_size=batch,
            early_epochs=(),
            checkpoint_every=100,
            device=device,
            bf16=hardware.use_bf16("auto", device, on_cpu=False),
        )
        trainer = GANTrainer(loss, cfg, settings, workdir / "ckpt", callback)
        _sync(device)
        start = time.perf_counter()
        trainer.fit(real)
        _sync(device)
        return trainer.step * batch / (time.perf_counter() - start)


def flops_per_image(loss, cfg: DCGANConfig, batch: int, device: torch.device) -> tuple[float, bool]:
    """Training FLOPs per real image: one discriminator step, plus 1/n_critic of a generator step;
    and whether that is a lower bound. torch's FlopCounterMode cannot follow a gradient
    penalty's double backward, so a loss with a penalty is counted without it (a lower bound)."""
    try:
        return _counted(loss, cfg, batch, device), False
    except RuntimeError:
        return _counted(dataclasses.replace(loss, penalty=None), cfg, batch, device), True


def _counted(loss, cfg: DCGANConfig, batch: int, device: torch.device) -> float:
    trainer = GANTrainer(
        loss, cfg, TrainSettings(batch_size=batch, device=device, bf16=hardware.use_bf16("auto", device, on_cpu=False))
    )
    x = (torch.rand(batch, cfg.channels, cfg.image_size, cfg.image_size) * 2 - 1).to(device)
    per_step = []
    for step in range(loss.n_critic):
        trainer.step = step
        with FlopCounterMode(display=False) as counter:
            trainer.train_step(x)
        per_step.append(counter.get_total_flops())
    return sum(per_step) / len(per_step) / batch


def model_config(args, loss) -> DCGANConfig:
    """The GAN params.yaml configures (its profile's), with the widths the options give."""
    cfg_all = load_config(ROOT / "params.yaml", args.profile)
    g = cfg_all.gan
    return DCGANConfig(
        image_size=cfg_all.data.image_size,
        channels=1 if cfg_all.data.mode == "L" else 3,
        z_dim=g.z_dim,
        g_width=args.g_width or g.g_width,
        d_width=args.d_width or g.d_width,
        disc_norm=loss.disc_norm,
    )


def measure(args) -> dict:
    """This checkout's figures (one JSON line with --json: what --compare reads)."""
    device = hardware.setup(args.device or "cpu")
    batch = args.batch or load_config(ROOT / "params.yaml", args.profile).gan.batch_size
    loss = losses.get(args.loss)
    cfg = model_config(args, loss)
    real = torch.rand(4000, cfg.channels, cfg.image_size, cfg.image_size) * 2 - 1
    bare_loop(loss, cfg, real, batch, 20, device)  # warm-up
    bare, tracked = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            bare.append(bare_loop(loss, cfg, real, batch, args.steps, device))
            tracked.append(tracked_trainer(loss, cfg, real, batch, args.steps, Path(tmp) / f"r{r}", device))
            if not args.json:
                print(f"round {r + 1}: bare {bare[-1]:.0f} img/s, trainer+mlflow {tracked[-1]:.0f} img/s", flush=True)
    out = {
        "device": str(device),
        "loss": loss.name,
        "batch": batch,
        "threads": torch.get_num_threads(),
        "bare": statistics.median(bare),
        "trainer": statistics.median(tracked),
        **dict(zip(("flops_per_image", "flops_lower_bound"), flops_per_image(loss, cfg, batch, device))),
        "peak_fp32": statistics.median(matmul_flops(device) for _ in range(3)),
    }
    if device.type == "cuda":
        out["peak_bf16"] = statistics.median(matmul_flops(device, torch.bfloat16) for _ in range(3))
        out["gpu"] = torch.cuda.get_device_name()
    return out


def _legacy(text: str) -> dict:
    """The figures of a checkout whose benchmark predates --json (it prints a text summary)."""

    def num(label):
        m = re.search(rf"{re.escape(label)}\s+([\d.]+)", text)
        return float(m.group(1)) if m else float("nan")

    return {
        "bare": num("bare PyTorch loop"),
        "trainer": num("trainer + MLflow"),
        "flops_per_image": num("training FLOPs per image") * 1e6,
        "peak_fp32": num("matmul FLOP/s (2048^2)") * 1e9,
        "device": "cpu",
    }


def _other(directory: Path, args) -> dict:
    python = directory / ".venv" / "bin" / "python"
    cmd = [
        str(python if python.exists() else sys.executable),
        "bench/train_throughput.py",
        "--steps",
        str(args.steps),
        "--rounds",
        "1",
        "--loss",
        args.loss,
    ]
    env = {**os.environ, "PYTHONPATH": str(directory / "src") + os.pathsep + str(directory)}
    text = subprocess.run(cmd + ["--json"], cwd=directory, env=env, capture_output=True, text=True, check=False)
    if text.returncode == 0 and text.stdout.strip().startswith("{"):
        return json.loads(text.stdout.strip().splitlines()[-1])
    text = subprocess.run(cmd, cwd=directory, env=env, capture_output=True, text=True, check=True)
    return _legacy(text.stdout)


def _rows(f: dict) -> list[tuple[str, str]]:
    share = f["trainer"] * f["flops_per_image"] / f["peak_fp32"]
    rows = [
        ("device", f.get("gpu", f["device"])),
        ("batch", str(f.get("batch", 32))),
        ("bare PyTorch loop, images/s", f"{f['bare']:.0f}"),
        ("trainer + MLflow, images/s", f"{f['trainer']:.0f}"),
        ("ratio trainer / bare (target >= 0.97)", f"{f['trainer'] / f['bare']:.3f}"),
        (
            "training FLOPs per image, MFLOP",
            f"{'>= ' if f.get('flops_lower_bound') else ''}{f['flops_per_image'] / 1e6:.1f}",
        ),
        ("trainer FLOP/s, GFLOP/s", f"{f['trainer'] * f['flops_per_image'] / 1e9:.1f}"),
        ("fp32 matmul peak, GFLOP/s", f"{f['peak_fp32'] / 1e9:.1f}"),
        ("share of fp32 matmul peak", f"{share:.3f}"),
    ]
    if "peak_bf16" in f:
        rows += [
            ("bf16 matmul peak, GFLOP/s", f"{f['peak_bf16'] / 1e9:.1f}"),
            ("share of bf16 matmul peak", f"{f['trainer'] * f['flops_per_image'] / f['peak_bf16']:.4f}"),
        ]
    return rows


class CoreSampler:
    """Machine-wide CPU use from /proc/stat, sampled every `every` s in a thread: how many of the
    machine's cores a window of wall-clock time kept busy (Linux; elsewhere it reports nothing)."""

    def __init__(self, every: float = 0.5):
        self.every, self.samples = every, []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @staticmethod
    def _read() -> tuple[float, float] | None:
        try:
            fields = [float(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        except (OSError, ValueError):
            return None
        idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
        return sum(fields) - idle, sum(fields)

    def _run(self) -> None:
        while not self._stop.is_set():
            if (reading := self._read()) is not None:
                self.samples.append((time.time(), *reading))
            self._stop.wait(self.every)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def busy(self, start: float, end: float) -> float | None:
        """Share of all cores busy between wall-clock times start and end (None: too few samples)."""
        inside = [s for s in self.samples if start <= s[0] <= end]
        if len(inside) < 2 or inside[-1][2] == inside[0][2]:
            return None
        return (inside[-1][1] - inside[0][1]) / (inside[-1][2] - inside[0][2])


def flow(args) -> None:
    """`gandefect run` in a fresh clone of HEAD; each stage's seconds from the retrain run, and the
    share of the machine's cores busy meanwhile (sampled machine-wide: keep the machine quiet)."""
    cores = os.cpu_count() or 1
    with tempfile.TemporaryDirectory() as tmp:
        clone = Path(tmp) / "clone"
        subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
        if args.device:  # the clone's params.yaml names the device
            params = clone / "params.yaml"
            text = params.read_text()
            params.write_text(
                re.sub(r"(?m)^device: .*$", f"device: {args.device}", text)
                if re.search(r"(?m)^device: ", text)
                else text + f"\ndevice: {args.device}\n"
            )
        cmd = [sys.executable, "-m", "gandefect.cli"] + (["--profile", args.profile] if args.profile else [])
        with CoreSampler() as sampler:
            began, started = time.time(), time.perf_counter()
            code = subprocess.run(cmd + ["run"], cwd=clone, check=False).returncode
            total, finished = time.perf_counter() - started, time.time()
        import mlflow  # only here: the other modes never open a store of their own

        client = mlflow.MlflowClient(f"sqlite:///{clone / 'mlflow.db'}")
        exp = client.get_experiment_by_name(RETRAIN_EXPERIMENT)
        run = client.search_runs([exp.experiment_id], order_by=["attributes.start_time DESC"], max_results=1)[0]

        def cores_busy(start: float, end: float) -> str:
            share = sampler.busy(start, end)
            return "" if share is None else f"{share * cores:5.2f} of {cores} cores busy ({share:.0%})"

        print(
            f"\n`gandefect run` in a fresh clone: {total:.0f} s (exit {code}), device {args.device or 'from params'}, "
            f"{cores_busy(began, finished)}"
        )
        for key, value in sorted(run.data.metrics.items(), key=lambda kv: -kv[1]):
            if key.startswith("seconds_"):
                # the metric is timestamped at its stage's end: the stage ran in [end - seconds, end]
                end = client.get_metric_history(run.info.run_id, key)[-1].timestamp / 1000
                print(f"  {key.removeprefix('seconds_'):<10} {value:8.1f} s  {cores_busy(end - value, end)}")


def _bare_child(args) -> None:
    """One bare loop in this process on `--threads` threads: prints its images/s."""
    torch.set_num_threads(args.threads)
    device = hardware.setup("cpu")
    cfg_all = load_config(ROOT / "params.yaml", args.profile)
    g, loss = cfg_all.gan, losses.get(args.loss)
    cfg = DCGANConfig(
        image_size=cfg_all.data.image_size,
        channels=1 if cfg_all.data.mode == "L" else 3,
        z_dim=g.z_dim,
        g_width=args.g_width or g.g_width,
        d_width=args.d_width or g.d_width,
        disc_norm=loss.disc_norm,
    )
    real = torch.rand(4000, cfg.channels, cfg.image_size, cfg.image_size) * 2 - 1
    batch = args.batch or g.batch_size
    bare_loop(loss, cfg, real, batch, 20, device)  # warm-up
    print(bare_loop(loss, cfg, real, batch, args.steps, device), flush=True)


def side_by_side(args) -> None:
    """One process on all cores' threads vs one process per core on one thread, alternating."""
    cores = os.cpu_count() or 1
    base = [sys.executable, __file__, "--child", "--steps", str(args.steps), "--loss", args.loss]
    if args.profile:
        base += ["--profile", args.profile]

    def run(n: int, threads: int) -> float:
        procs = [
            subprocess.Popen(base + ["--threads", str(threads)], stdout=subprocess.PIPE, text=True) for _ in range(n)
        ]
        return sum(float(p.communicate()[0].split()[-1]) for p in procs)

    one, many = [], []
    for r in range(args.rounds):
        one.append(run(1, cores))
        many.append(run(cores, 1))
        print(
            f"round {r + 1}: 1 GAN x {cores} threads {one[-1]:.0f} img/s, {cores} GANs x 1 thread "
            f"{many[-1]:.0f} img/s in all",
            flush=True,
        )
    a, b = statistics.median(one), statistics.median(many)
    print(f"\nloss {args.loss}, {args.steps} steps x {args.rounds} alternating rounds, {cores} cores")
    print(f"{'1 GAN on ' + str(cores) + ' threads, images/s':<40} {a:>12.0f}")
    print(f"{str(cores) + ' GANs on 1 thread each, images/s in all':<40} {b:>12.0f}")
    print(f"{'side by side / one':<40} {b / a:>12.2f}")


def _members(args, device: torch.device, steps: int) -> list[GANTrainer]:
    """Fresh trainers of the members measured, each for `steps` discriminator steps."""
    g = load_config(ROOT / "params.yaml", args.profile).gan
    out = []
    for name in args.members:
        loss = losses.get(name)
        cfg = model_config(args, loss)
        settings = TrainSettings(
            generator_steps=max(1, steps // loss.n_critic),
            batch_size=args.batch or g.batch_size,
            early_epochs=(),
            checkpoint_every=10**9,
            device=device,
            bf16=hardware.use_bf16("auto", device, on_cpu=False),
        )
        out.append(GANTrainer(loss, cfg, settings))
    return out


def ensemble(args) -> None:
    """One member after another against the batched ensemble, in images/s and share of the peak."""
    device = hardware.setup(args.device or "cpu")
    probe = _members(args, device, args.steps)
    if len(groups(dict(zip(args.members, probe)))) != 1:
        raise SystemExit(f"--members {' '.join(args.members)} do not share one shape: they cannot be batched")
    cfg_all = load_config(ROOT / "params.yaml", args.profile)
    batch = args.batch or cfg_all.gan.batch_size
    real = torch.rand(4000, probe[0].model_cfg.channels, probe[0].model_cfg.image_size, probe[0].model_cfg.image_size)
    real = real * 2 - 1
    flops = sum(flops_per_image(m.loss, m.model_cfg, batch, device)[0] for m in probe)  # one image for each member

    def alone() -> float:
        members = _members(args, device, args.steps)
        _sync(device)
        start = time.perf_counter()
        for m in members:
            m.fit(real)
        _sync(device)
        return sum(m.step for m in members) * batch / (time.perf_counter() - start)

    def batched() -> float:
        members = _members(args, device, args.steps)
        _sync(device)
        start = time.perf_counter()
        GANEnsemble(members).fit(real)
        _sync(device)
        return sum(m.step for m in members) * batch / (time.perf_counter() - start)

    args_warm = argparse.Namespace(**{**vars(args), "steps": 5})
    GANEnsemble(_members(args_warm, device, 5)).fit(real)  # warm-up
    one, many = [], []
    for r in range(args.rounds):  # alternate: drift on a shared machine hits both alike
        one.append(alone())
        many.append(batched())
        print(f"round {r + 1}: one at a time {one[-1]:.0f} img/s, ensemble {many[-1]:.0f} img/s", flush=True)
    peak = statistics.median(matmul_flops(device) for _ in range(3))
    per_image = flops / len(probe)  # the members' mean: images/s counts each member's images
    a, b = statistics.median(one), statistics.median(many)
    print(
        f"\nmembers {', '.join(args.members)}; batch {batch}, {args.steps} steps each, {torch.get_num_threads()} threads"
    )
    print(f"{'':<36} {'one at a time':>16} {'ensemble':>16}")
    print(f"{'images/s (all members)':<36} {a:>16.0f} {b:>16.0f}")
    print(f"{'GFLOP/s':<36} {a * per_image / 1e9:>16.1f} {b * per_image / 1e9:>16.1f}")
    print(f"{'share of the fp32 matmul peak':<36} {a * per_image / peak:>16.3f} {b * per_image / peak:>16.3f}")
    if device.type == "cuda":
        bf16 = statistics.median(matmul_flops(device, torch.bfloat16) for _ in range(3))
        print(f"{'share of the bf16 matmul peak':<36} {a * per_image / bf16:>16.3f} {b * per_image / bf16:>16.3f}")
    print(f"{'fp32 matmul peak, GFLOP/s':<36} {peak / 1e9:>33.1f}")
    print(f"{'ensemble / one at a time':<36} {b / a:>33.2f}")


_PRODUCTS = {"convolution", "convolution_backward", "mm", "addmm", "bmm"}


class _Products(TorchDispatchMode):
    """Records every convolution and matrix product a training step runs (op, argument shapes)."""

    def __init__(self):
        super().__init__()
        self.calls: list[tuple] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if func.overloadpacket.__name__ in _PRODUCTS:  # copies: the step goes on to change its tensors in place
            copy = tree_map(lambda t: t.detach().clone() if isinstance(t, torch.Tensor) else t, (args, kwargs or {}))
            self.calls.append((func, *copy, tuple(out.shape) if isinstance(out, torch.Tensor) else None))
        return out


def _gemms(func, args, out_shape) -> list[tuple[int, int, int]]:
    """The (M, K, N) matrix products one recorded call amounts to, in the im2col form a batched
    implementation would run: a convolution's forward, input gradient and weight gradient are
    each one product of the same FLOPs as the convolution's."""
    name = func.overloadpacket.__name__
    if name in ("mm", "addmm"):
        a, b = args[-2], args[-1]
        return [(a.shape[0], a.shape[1], b.shape[1])]
    if name == "bmm":
        return [(args[0].shape[1], args[0].shape[2], args[1].shape[2])] * args[0].shape[0]
    if name == "convolution":
        x, w, transposed = args[0], args[1], args[6]
    else:  # convolution_backward(grad_out, input, weight, bias_sizes, stride, padding, dilation, transposed, ...)
        out_shape, x, w, transposed = args[0].shape, args[1], args[2], args[7]
    b, spatial_in, spatial_out = x.shape[0], x.shape[2:].numel(), math.prod(out_shape[2:])
    kernel = w.shape[2:].numel()
    if transposed:  # weight (C_in, O, k, k): the forward is a convolution's input gradient
        fwd = (b * spatial_in, w.shape[0], w.shape[1] * kernel)
    else:  # weight (O, C, k, k)
        fwd = (b * spatial_out, w.shape[1] * kernel, w.shape[0])
    dgrad, wgrad = (fwd[0], fwd[2], fwd[1]), (fwd[1], fwd[0], fwd[2])
    if name == "convolution":
        return [fwd]
    mask = args[-1]
    return [g for g, on in zip((dgrad, wgrad), mask[:2]) if on]


def ceiling(args) -> None:
    """What the step's own convolutions and matrix products reach, alone and as dense batched GEMMs."""
    device = hardware.setup(args.device or "cpu")
    (m,) = _members(argparse.Namespace(**{**vars(args), "members": [args.loss]}), device, 10**6)
    batch, mc = m.settings.batch_size, m.model_cfg
    m.begin(torch.rand(4000, mc.channels, mc.image_size, mc.image_size) * 2 - 1)
    for _ in range(5):
        m.after_step(m.train_step(m.next_batch()))
    with _Products() as rec, FlopCounterMode(display=False) as counter:
        x = m.next_batch()
        m.train_step(x)
    step_flops = counter.get_total_flops()

    def timed(fn, reps: int) -> float:
        fn()
        _sync(device)
        start = time.perf_counter()
        for _ in range(reps):
            fn()
        _sync(device)
        return (time.perf_counter() - start) / reps

    def step() -> None:
        m.after_step(m.train_step(m.next_batch()))

    def kernels() -> None:  # the recorded calls again, on the same arguments
        for func, a, kw, _ in rec.calls:
            func(*a, **kw)

    shapes = [g for func, a, _, out in rec.calls for g in _gemms(func, a, out)]
    k = len(args.members)
    mats = [(torch.randn(k, mm, kk, device=device), torch.randn(k, kk, nn, device=device)) for mm, kk, nn in shapes]
    gemm_flops = sum(2 * mm * kk * nn for mm, kk, nn in shapes)

    def dense() -> None:  # the same products for k members at once, one batched matmul each
        for a, b in mats:
            torch.bmm(a, b)

    t_step, t_kernels, t_dense = [], [], []
    for _ in range(args.rounds):  # alternate: drift on a shared machine hits all alike
        t_step.append(timed(step, 20))
        t_kernels.append(timed(kernels, 20))
        t_dense.append(timed(dense, 20) / k)
    peak = statistics.median(matmul_flops(device) for _ in range(3))
    a, b, c = (statistics.median(t) for t in (t_step, t_kernels, t_dense))
    print(
        f"\nloss {m.loss.name}, batch {batch}, {len(rec.calls)} convolutions and products a step, {torch.get_num_threads()} threads"
    )
    print(f"{'':<52} {'s/step':>10} {'GFLOP/s':>9} {'of peak':>8}")
    print(f"{'the whole training step':<52} {a:>10.5f} {step_flops / a / 1e9:>9.1f} {step_flops / a / peak:>8.3f}")
    print(
        f"{'its convolutions and products alone':<52} {b:>10.5f} {step_flops / b / 1e9:>9.1f} {step_flops / b / peak:>8.3f}"
    )
    label = f"the same as dense GEMMs, {k} members batched (each)"
    print(f"{label:<52} {c:>10.5f} {gemm_flops / c / 1e9:>9.1f} {gemm_flops / c / peak:>8.3f}")
    print(f"{'fp32 matmul peak (2048^2), GFLOP/s':<52} {peak / 1e9:>29.1f}")
    print(f"{'share of the step in its convolutions and products':<52} {b / a:>29.2f}")
    if device.type == "cuda":  # the trainer computes in bf16 there
        bf16 = statistics.median(matmul_flops(device, torch.bfloat16) for _ in range(3))
        print(f"{'the whole step, share of the bf16 matmul peak':<52} {step_flops / a / bf16:>29.4f}")
    print(f"{'GEMM-form FLOPs / counted FLOPs (a check: 1.00)':<52} {gemm_flops / step_flops:>29.2f}")


def detector(args) -> None:
    """The CNN detector's training step in float32 and in bf16 autocast, side by side."""
    device = hardware.setup(args.device or "cpu")
    cfg_all = load_config(ROOT / "params.yaml", args.profile)
    c = cfg_all.detect.cnn.model_copy(update={"epochs": 1})
    size, channels = cfg_all.data.image_size, 1 if cfg_all.data.mode == "L" else 3
    n = args.steps * c.batch_size
    rng = np.random.default_rng(0)
    shape = (n, size, size) if channels == 1 else (n, size, size, channels)
    labels = rng.permutation(n) % 2
    train = Labeled(
        rng.integers(0, 256, shape, dtype="uint8"),
        labels,
        np.where(labels == 1, "gan", "real").astype(object),
        np.where(labels == 1, "gan", "real").astype(object),
    )
    net = PatchNet(channels, c.width, c.head == "radial")
    x = torch.randn(c.batch_size, channels, size, size)
    with FlopCounterMode(display=False) as counter:
        patch, image = net(x)
        (patch.mean() + image.mean()).backward()
    per_image = counter.get_total_flops() / c.batch_size

    def train_once(bf16: bool) -> float:
        det = CNNDetector(c, channels, 0).on(device, bf16)
        _sync(device)
        start = time.perf_counter()
        det.fit(train)
        _sync(device)
        return n / (time.perf_counter() - start)

    fp32, bf16 = [], []
    for r in range(args.rounds):  # alternate: drift on a shared machine hits both alike
        fp32.append(train_once(False))
        bf16.append(train_once(True))
        print(f"round {r + 1}: float32 {fp32[-1]:.0f} img/s, bf16 autocast {bf16[-1]:.0f} img/s", flush=True)
    peak = statistics.median(matmul_flops(device) for _ in range(3))
    a, b = statistics.median(fp32), statistics.median(bf16)
    print(f"\ndetect.cnn width {c.width}, batch {c.batch_size}, {args.steps} steps, {torch.get_num_threads()} threads")
    print(f"{'':<36} {'float32':>16} {'bf16 autocast':>16}")
    print(f"{'images/s':<36} {a:>16.0f} {b:>16.0f}")
    print(f"{'share of the fp32 matmul peak':<36} {a * per_image / peak:>16.3f} {b * per_image / peak:>16.3f}")
    print(f"{'fp32 matmul peak, GFLOP/s':<36} {peak / 1e9:>33.1f}")
    print(f"{'bf16 / float32':<36} {b / a:>33.2f}")
    native = hardware.bf16_ok(device)
    print(f"{'bf16 native here':<36} {native!s:>33}")
    print(f"{'precision: auto trains the CNN in':<36} {'bf16' if hardware.use_bf16('auto', device) else 'float32':>33}")


def prefetch(args) -> None:
    """The CNN detector's training with batches made in turn and prefetched, side by side."""
    device = hardware.setup(args.device or "cpu")
    cfg_all = load_config(ROOT / "params.yaml", args.profile)
    c = cfg_all.detect.cnn.model_copy(update={"epochs": 1})
    digits = np.stack([np.asarray(raw.image) for raw in sources.iter_images(sources.resolve_source("mnist5k"))])
    n = min(len(digits), args.steps * c.batch_size)
    labels = np.arange(n) % 2  # the class does not change the work: half are called fake
    names = np.where(labels == 1, "gan", "real").astype(object)
    train = Labeled(digits[:n], labels, names, names)
    made = [0.0]
    make = CNNDetector._batch

    def timed(self, *a):
        start = time.perf_counter()
        try:
            return make(self, *a)
        finally:
            made[0] += time.perf_counter() - start

    def train_once(ahead: bool) -> tuple[float, float]:
        made[0] = 0.0
        with contextlib.ExitStack() as undo:
            saved = hardware.batches_ahead
            hardware.batches_ahead = lambda device: ahead  # either way, whatever this machine would pick
            undo.callback(setattr, hardware, "batches_ahead", saved)
            CNNDetector._batch = timed
            undo.callback(setattr, CNNDetector, "_batch", make)
            start = time.perf_counter()
            CNNDetector(c, 1, 0).on(device).fit(train)
            _sync(device)
            seconds = time.perf_counter() - start
        return n / seconds, made[0] / seconds

    cores = os.cpu_count() or 1
    print(
        f"detect.cnn width {c.width}, batch {c.batch_size}, p_process {c.p_process}, {n // c.batch_size} steps, "
        f"on {device.type}"
    )
    print(
        f"{'threads':<8} {'in turn, img/s':>15} {'prefetched, img/s':>18} {'ratio':>6} {'making, share of a step':>24} {'this machine makes them':>24}"
    )
    # on a GPU the threads only make the batches: one row, on all of them
    for threads in sorted({cores, 1} if device.type == "cpu" else {cores}, reverse=True):
        torch.set_num_threads(threads)
        in_turn, ahead, share = [], [], []
        train_once(False)  # warm-up (oneDNN's or cuDNN's first calls), not counted
        for _ in range(args.rounds):  # alternate: drift on a shared machine hits both alike
            rate, making = train_once(False)
            in_turn.append(rate)
            share.append(making)
            ahead.append(train_once(True)[0])
        a, b = statistics.median(in_turn), statistics.median(ahead)
        picks = "ahead" if hardware.batches_ahead(device) else "in turn"
        print(
            f"{threads:<8} {a:>15.0f} {b:>18.0f} {b / a:>6.2f} {statistics.median(share):>24.2f} {picks:>24}",
            flush=True,
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=150)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--batch", type=int, default=None, help="default: gan.batch_size of params.yaml")
    ap.add_argument("--loss", default="nonsaturating")
    ap.add_argument("--g-width", type=int, default=None)
    ap.add_argument("--d-width", type=int, default=None)
    ap.add_argument(
        "--device",
        default=None,
        choices=hardware.DEVICES,
        help="default: cpu; with --flow: the project's own `device` setting",
    )
    ap.add_argument("--profile", default=None)
    ap.add_argument("--compare", type=Path, default=None, help="another checkout (with its .venv) to measure beside")
    ap.add_argument("--flow", action="store_true", help="time the whole `gandefect run` in a fresh clone of HEAD")
    ap.add_argument(
        "--side-by-side",
        action="store_true",
        help="one GAN on every core vs one GAN per core on one thread (the zoo's runner)",
    )
    ap.add_argument("--ensemble", action="store_true", help="the members one at a time vs as one batched ensemble")
    ap.add_argument("--detector", action="store_true", help="the CNN detector's training in float32 vs bf16 autocast")
    ap.add_argument("--prefetch", action="store_true", help="the CNN detector's batches made in turn vs prefetched")
    ap.add_argument(
        "--ceiling",
        action="store_true",
        help="the step's convolutions and products alone, and as dense GEMMs batched over --members",
    )
    ap.add_argument(
        "--members",
        nargs="+",
        default=["minimax", "nonsaturating", "lsgan", "wgan", "hinge"],
        help="with --ensemble: the zoo members measured (default: the DCGANs that share a batch-norm critic)",
    )
    ap.add_argument("--json", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    args = ap.parse_args()
    logging.getLogger("mlflow").setLevel(logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)
    if args.child:
        _bare_child(args)
        return
    if args.side_by_side:
        side_by_side(args)
        return
    if args.ensemble:
        ensemble(args)
        return
    if args.detector:
        detector(args)
        return
    if args.prefetch:
        prefetch(args)
        return
    if args.ceiling:
        ceiling(args)
        return
    if args.flow:
        flow(args)
        return
    if args.json:
        print(json.dumps(measure(args)))
        return
    if args.compare is None:
        rows = _rows(measure(args))
        print(f"\nloss {args.loss}, {args.steps} steps x {args.rounds} rounds, {torch.get_num_threads()} threads")
        for label, value in rows:
            print(f"{label:<40} {value:>12}")
        return
    mine, theirs = [], []
    quiet = argparse.Namespace(**{**vars(args), "rounds": 1, "json": True})
    for r in range(args.rounds):  # alternate: drift on a shared machine hits both alike
        theirs.append(_other(args.compare.resolve(), args))
        mine.append(measure(quiet))
        print(
            f"round {r + 1}: {args.compare.name} trainer {theirs[-1]['trainer']:.0f} img/s, "
            f"this checkout {mine[-1]['trainer']:.0f} img/s",
            flush=True,
        )

    def median(runs):
        return {k: statistics.median(r[k] for r in runs) if type(runs[0][k]) is float else runs[0][k] for k in runs[0]}

    a, b = _rows(median(theirs)), _rows(median(mine))
    print(f"\nloss {args.loss}, {args.steps} steps x {args.rounds} alternating rounds")
    print(f"{'':<40} {str(args.compare)[-18:]:>18} {'this checkout':>18}")
    for (label, x), (_, y) in zip(a, b):
        print(f"{label:<40} {x:>18} {y:>18}")
    speed = median(mine)["trainer"] / median(theirs)["trainer"]
    print(f"{'trainer images/s, this / other':<40} {speed:>37.2f}")


if __name__ == "__main__":
    main()
