"""GAN-zoo stage: the domain feature net, then one tracked, registered GAN per loss."""

from __future__ import annotations

import math
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import mlflow
import pandas as pd
import torch
from mlflow.entities import Metric

from gandefect import faults, hardware
from gandefect.config import Config
from gandefect.data.datasets import Split, image_grid, load_split
from gandefect.data.snapshot import Progress
from gandefect.errors import BadInputError
from gandefect.evaluate.features import (
    CONTRASTIVE,
    LABELLED,
    FeatureNet,
)
from gandefect.evaluate.generators import generator_metrics
from gandefect.gan import families as family_registry
from gandefect.gan import losses as loss_registry
from gandefect.gan.models import DCGANConfig, Generator, init_weights, noise
from gandefect.gan.trainer import Callback, DiffusionTrainer, GANTrainer, TrainSettings, VAETrainer
from gandefect.lifecycle import registry, tracking, versioning
from gandefect.lifecycle.zoo import ensure_feature_net, zoo_members
from gandefect.names import GAN_EXPERIMENT, generator_model

RUN_ID_FILE = "mlflow_run_id"
TABLE_COLUMNS = [
    "loss",
    "fid",
    "fid_ratio",
    "precision",
    "recall",
    "class_entropy_ratio",
    "confident_rate",
    "generator_steps",
    "train_seconds",
    "meets_targets",
]
MAX_FID_RATIO, MIN_ENTROPY_RATIO = 0.10, 0.9  # "good enough to be a realistic source of fakes"


def longest_first(cfg: Config, names: list[str]) -> list[str]:
    """Zoo members by their discriminator steps (updates x critic steps; a step costs about the
    same in every member), the longest first: what a pool of workers should start with."""

    def steps(name: str) -> int:
        family = family_registry.FAMILIES.get(name)
        loss = None if family else loss_registry.get(name)
        return cfg.gan.steps_for(name) * (loss.n_critic if loss else 1)

    return sorted(names, key=steps, reverse=True)


def member_settings(name: str) -> dict:
    """What defines a zoo member besides the params (part of its cache key); unknown names fail."""
    if name in loss_registry.REGISTRY:
        return loss_registry.get(name).settings()
    if name in family_registry.FAMILIES:
        return family_registry.get(name).settings()
    known = ", ".join([*loss_registry.REGISTRY, *family_registry.FAMILIES])
    raise BadInputError(f"unknown generator {name!r}: neither a loss nor a family; known: {known}")


def model_config(cfg: Config) -> DCGANConfig:
    g = cfg.gan
    return DCGANConfig(
        image_size=cfg.data.image_size,
        channels=1 if cfg.data.mode == "L" else 3,
        z_dim=g.z_dim,
        g_width=g.g_width,
        d_width=g.d_width,
    )


class _Tracker(Callback):
    """Streams a GAN's metrics, sample grids and early generators into its MLflow run."""

    def __init__(self, client, run_id: str, z: torch.Tensor, name: str, progress: Progress | None):
        self.client, self.run_id, self.z, self.name, self.progress = client, run_id, z, name, progress

    def on_metrics(self, rows):
        now = int(time.time() * 1000)
        batch = [Metric(k, float(v), now, step) for step, m in rows for k, v in m.items() if math.isfinite(v)]
        for i in range(0, len(batch), 1000):
            self.client.log_batch(self.run_id, metrics=batch[i : i + 1000], synchronous=True)

    def on_epoch_end(self, epoch, trainer):
        was_training = trainer.G.training
        trainer.G.eval()
        with torch.no_grad():
            grid = image_grid(trainer.G(self.z.to(trainer.settings.device)).to(hardware.CPU))
        trainer.G.train(was_training)
        self.client.log_image(self.run_id, grid, artifact_file=f"samples/epoch_{epoch:03d}.png")

    def on_early_generator(self, epoch, generator):
        info, _ = registry.log_torch_model(generator, f"generator_epoch{epoch}", self.z[:2])
        mlflow.set_tag(f"early_generator_epoch{epoch}", info.model_uri)

    def on_step(self, step, total):
        if self.progress:
            self.progress(f"gan {self.name}", step, total)


@torch.no_grad()
def _samples(generator: Generator, n: int, seed: int) -> torch.Tensor:
    """n samples (on the CPU) from the seed's noise, computed where the generator is."""
    generator.eval()
    return generator.sample(n, torch.Generator().manual_seed(seed)).to(hardware.CPU)


def untrained_metrics(cfg: Config, net: FeatureNet, test: Split) -> dict[str, float]:
    """Metrics of a freshly initialized generator: the reference every trained one must beat."""
    torch.manual_seed(cfg.seed)
    g = Generator(model_config(cfg))
    g.apply(init_weights)
    return generator_metrics(
        net, test.images, _samples(g, cfg.gan.eval_samples, cfg.seed), device=hardware.resolve(cfg.device)
    )


def build_trainer(
    cfg: Config,
    name: str,
    settings: TrainSettings,
    checkpoint_dir: Path | None = None,
    callback: Callback | None = None,
):
    """The training loop of zoo member `name` (a loss of the DCGAN zoo or another family), seeded."""
    family = family_registry.FAMILIES.get(name)
    if family is None:
        return GANTrainer(loss_registry.get(name), model_config(cfg), settings, checkpoint_dir, callback)
    if family.kind == "gan":
        return GANTrainer(
            loss_registry.get(family.loss),
            model_config(cfg),
            settings,
            checkpoint_dir,
            callback,
            family.generator,
            family.discriminator,
        )
    torch.manual_seed(cfg.seed)  # the model's initial weights
    if family.kind == "vae":
        return VAETrainer(
            family_registry.VAE(model_config(cfg)), settings, family.lr, family.beta, checkpoint_dir, callback
        )
    model = family.generator(model_config(cfg), width=family.width, sample_steps=family.sample_steps)
    return DiffusionTrainer(model, settings, family.lr, checkpoint_dir, callback, family.ema)


def train_gan(
    cfg: Config,
    member: str,
    train: Split,
    test: Split,
    net: FeatureNet,
    baseline: dict[str, float],
    version: str,
    resume: bool = False,
    parent_run_id: str | None = None,
    flow_run_id: str | None = None,
    progress: Progress | None = None,
) -> dict[str, float]:
    """Train one GAN with MLflow tracking, evaluate it, register its generator; returns its metrics."""
    member_settings(member)
    family = family_registry.FAMILIES.get(member)
    loss = None if family and family.kind != "gan" else loss_registry.get(family.loss if family else member)
    g = cfg.gan
    ckpt_dir = cfg.path(g.checkpoint_dir) / member
    run_file = ckpt_dir / RUN_ID_FILE
    resume_run = run_file.read_text().strip() if resume and run_file.exists() else None
    if not resume and ckpt_dir.exists():
        shutil.rmtree(ckpt_dir)  # a fresh run must not pick up an old checkpoint
    # the other families keep no early generators: one fake set each
    early = () if family else tuple(g.early_epochs)
    device = hardware.resolve(cfg.device)
    settings = TrainSettings(
        g.steps_for(member),
        g.batch_size,
        cfg.seed,
        early,
        g.checkpoint_every,
        device=device,
        bf16=hardware.use_bf16(cfg.precision, device, on_cpu=False),
    )
    tracking.setup(cfg)
    with tracking.start_run(
        cfg, GAN_EXPERIMENT, f"gan-{member}", version, flow_run_id, parent_run_id=parent_run_id, run_id=resume_run
    ) as run:
        ckpt_dir.mkdir(parents=True, exist_ok=True)
        run_file.write_text(run.info.run_id)
        if not resume_run:  # a resumed run has its parameters already
            _log_member_params(settings, family, loss)
        trainer = build_trainer(cfg, member, settings, ckpt_dir)
        z = noise(trainer.G, g.grid_samples, torch.Generator().manual_seed(cfg.seed)).to(hardware.CPU)
        trainer.callback = _Tracker(mlflow.MlflowClient(), run.info.run_id, z, member, progress)
        started = time.perf_counter()
        result = trainer.fit(train.images, resume=resume)
        seconds = time.perf_counter() - started
        samples = _samples(trainer.G, g.eval_samples, cfg.seed + 1)
        metrics = generator_metrics(net, test.images, samples, device=device)
        trainer.G.to(hardware.CPU)  # registered on the CPU: loads anywhere
        metrics.update(
            fid_untrained=baseline["fid"],
            fid_ratio=metrics["fid"] / baseline["fid"],
            train_seconds=seconds,
            generator_steps=result.generator_steps,
            steps=result.steps,
            resumed_from_step=result.resumed_from,
        )
        mlflow.log_metrics(metrics)
        if not resume_run:
            mlflow.log_param("feature_space", "labelled" if net.labelled else "contrastive")
        mlflow.log_image(image_grid(samples[:64]), "samples/final.png")
        _, mv = registry.log_torch_model(
            trainer.G,
            "generator",
            z[:2],
            generator_model(member),
            {"data_version": version, "loss": member, "fid": f"{metrics['fid']:.3f}", "run_id": run.info.run_id},
        )
    return {**metrics, "run_id": run.info.run_id, "model_version": mv.version}


def _log_member_params(settings: TrainSettings, family, loss) -> None:
    """A member's parameters: the arithmetic `precision` resolved to on this machine, its family's
    settings, and its adversarial loss and optimizer."""
    mlflow.log_param("bf16", settings.bf16)
    if family:
        mlflow.log_params({f"family.{k}": v for k, v in family.settings().items()} | {"family.about": family.about})
    if loss is not None:
        mlflow.log_params(
            {
                "loss": loss.name,
                "loss.paper": loss.paper,
                "loss.n_critic": loss.n_critic,
                "loss.clip": loss.clip,
                "optimizer": loss.optimizer.name,
                "optimizer.lr": loss.optimizer.lr,
                "optimizer.betas": loss.optimizer.betas,
                "disc_norm": loss.disc_norm,
                **{f"loss.penalty.{k}": v for k, v in loss.penalty_settings().items()},
            }
        )


@dataclass
class ZooSummary:
    table: pd.DataFrame
    report: Path
    run_id: str
    baseline: dict[str, float]
    feature_accuracy: float
    data_version: str
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)
    feature_space: str = LABELLED


def zoo_table(rows: dict[str, dict[str, float]]) -> pd.DataFrame:
    """One row per generator; its targets: the FID ratio and, in a labelled space only, the
    class entropy ratio (a label-free space has no classes to count)."""
    table = pd.DataFrame([{"loss": k, **v} for k, v in rows.items()])
    meets = table["fid_ratio"] <= MAX_FID_RATIO
    if "class_entropy_ratio" in table.columns:
        meets &= table["class_entropy_ratio"] >= MIN_ENTROPY_RATIO
    table["meets_targets"] = meets.map({True: "yes", False: "no"})
    return table[[c for c in TABLE_COLUMNS if c in table.columns]]


SPACE_NOTES = {
    LABELLED: "FID, precision and recall in the labelled feature space (a classifier of the real images' "
    "class labels).",
    CONTRASTIVE: "FID, precision and recall in the label-free feature space (trained self-supervised, "
    "contrastive, on the real train images). Class entropy and the confident rate are absent: "
    "they count the feature net's classes, and this space has none.",
}


def write_zoo_report(table: pd.DataFrame, baseline: dict, setup: ZooSetup, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    quality = (
        f"Feature net test accuracy: {setup.feature_accuracy:.4f}."
        if setup.feature_space == LABELLED
        else f"Feature net nearest-neighbour label accuracy: {setup.feature_accuracy:.4f}."
        if math.isfinite(setup.feature_accuracy)
        else ""
    )
    untrained = f"Untrained generator: FID {baseline['fid']:.1f}"
    if "class_entropy_ratio" in baseline:
        untrained += f", class entropy ratio {baseline['class_entropy_ratio']:.3f}"
    targets = "fid_ratio = FID / untrained FID (target <= 0.10)"
    if setup.feature_space == LABELLED:
        targets += "; class_entropy_ratio = entropy of the sample-class histogram / ln(n_classes) (target >= 0.9)"
    lines = [
        "# GAN zoo",
        "",
        SPACE_NOTES[setup.feature_space],
        "",
        f"{quality} {untrained}.".strip(),
        "",
        f"{targets}.",
        "",
        table.to_markdown(index=False, floatfmt=".3f"),
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


@dataclass
class ZooSetup:
    """What every GAN of the zoo is measured with: the data version, the feature net's test
    accuracy and the untrained generator's metrics (the reference of fid_ratio)."""

    data_version: str
    feature_accuracy: float
    baseline: dict[str, float]
    feature_space: str = LABELLED


def _zoo_inputs(cfg: Config, progress: Progress | None = None):
    version = versioning.data_version(cfg)
    train, test = load_split(cfg.real_dir, "train"), load_split(cfg.real_dir, "test")
    net, acc = ensure_feature_net(cfg, train, test, version, progress)
    space = LABELLED if net.labelled else CONTRASTIVE
    return ZooSetup(version, acc, untrained_metrics(cfg, net, test), space), train, test, net


def prepare_zoo(cfg: Config, progress: Progress | None = None) -> ZooSetup:
    return _zoo_inputs(cfg, progress)[0]


def train_zoo_member(
    cfg: Config,
    member: str,
    setup: ZooSetup,
    resume: bool = False,
    parent_run_id: str | None = None,
    flow_run_id: str | None = None,
    progress: Progress | None = None,
) -> dict[str, float]:
    """One GAN of the zoo in its own process or thread: loads the splits and the registered
    feature net itself (nothing large crosses a process boundary)."""
    member_settings(member)
    faults.reached(f"gan:{member}")
    train, test = load_split(cfg.real_dir, "train"), load_split(cfg.real_dir, "test")
    net, _ = ensure_feature_net(cfg, train, test, setup.data_version)
    return train_gan(
        cfg,
        member,
        train,
        test,
        net,
        setup.baseline,
        setup.data_version,
        resume,
        parent_run_id,
        flow_run_id,
        progress,
    )


def finish_zoo(cfg: Config, rows: dict[str, dict[str, float]], setup: ZooSetup) -> tuple[pd.DataFrame, Path]:
    """The zoo table and report (reports/gan-zoo.md and .csv) over every GAN trained."""
    table = zoo_table(rows)
    report = write_zoo_report(table, setup.baseline, setup, cfg.report_dir / "gan-zoo.md")
    table.to_csv(report.with_suffix(".csv"), index=False)
    return table, report


def run_train_gans(
    cfg: Config,
    losses: list[str] | None = None,
    resume: bool = False,
    flow_run_id: str | None = None,
    progress: Progress | None = None,
) -> ZooSummary:
    """Train the GAN zoo on the real train split; FID and precision/recall against the test split."""
    names = losses or zoo_members(cfg)
    for name in names:
        member_settings(name)  # unknown names fail before any work
    hardware.setup(cfg.device, cfg.deterministic, cfg.threads)
    started = time.perf_counter()
    setup, train, test, net = _zoo_inputs(cfg, progress)  # splits and feature net loaded once
    version, acc = setup.data_version, setup.feature_accuracy
    rows = {}
    with tracking.start_run(cfg, GAN_EXPERIMENT, "train-gans", version, flow_run_id) as parent:
        mlflow.log_param("feature_space", setup.feature_space)
        if math.isfinite(acc):
            mlflow.log_metric("feature_net_accuracy", acc)
        mlflow.log_metrics({f"untrained_{k}": v for k, v in setup.baseline.items()})
        for name in names:
            rows[name] = train_gan(
                cfg, name, train, test, net, setup.baseline, version, resume, parent.info.run_id, flow_run_id, progress
            )
        table, report = finish_zoo(cfg, rows, setup)
        tracking.log_artifacts([report, report.with_suffix(".csv")], "zoo")
        seconds = time.perf_counter() - started
        mlflow.log_metric("zoo_seconds", seconds)
    return ZooSummary(
        table, report, parent.info.run_id, setup.baseline, acc, version, seconds, feature_space=setup.feature_space
    )
