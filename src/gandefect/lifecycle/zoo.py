"""The GAN zoo as the registry holds it: its members, the domain feature net it is measured with
(found or trained and registered), its registered generators and their samples."""

from __future__ import annotations

import hashlib
import json
import math

import mlflow
import numpy as np
import torch

from gandefect import hardware
from gandefect.config import Config
from gandefect.data.datasets import Split, to_uint8
from gandefect.data.snapshot import Progress
from gandefect.errors import BadInputError
from gandefect.evaluate.features import (
    CONTRASTIVE,
    LABELLED,
    FeatureNet,
    FeatureNetConfig,
    accuracy,
    knn_accuracy,
    train_contrastive_net,
    train_feature_net,
)
from gandefect.gan import families as family_registry
from gandefect.gan import losses as loss_registry
from gandefect.gan.models import noise
from gandefect.lifecycle import registry, tracking, versioning
from gandefect.names import FEATURE_MODEL, GAN_EXPERIMENT, generator_model


def zoo_members(cfg: Config) -> list[str]:
    """Every generator the zoo trains: one DCGAN per loss, then the other families."""
    return [*loss_registry.selected(cfg.gan.losses), *family_registry.selected(cfg.gan.families)]


def feature_space(cfg: Config, train: Split, test: Split) -> str:
    """The space the zoo is measured in: `features.space`, where `auto` is labelled when every
    train and test image has a class label and contrastive (label-free) otherwise."""
    labelled = train.labels is not None and test.labels is not None
    space = cfg.features.space
    if space == "auto":
        return LABELLED if labelled else CONTRASTIVE
    if space == LABELLED and not labelled:
        raise BadInputError(
            "features.space is labelled, but not every train and test image has a class label: "
            "set features.space to auto or contrastive (label-free), or ingest labelled data "
            "(the default MNIST digits, or --labels-from-subfolders)"
        )
    return space


def ensure_feature_net(
    cfg: Config, train: Split, test: Split, version: str, progress: Progress | None = None
) -> tuple[FeatureNet, float]:
    """Load the feature net registered for this data version, profile and space, or train and
    register one. The figure returned is its quality: the labelled net's test accuracy, or
    the contrastive net's nearest-neighbour label accuracy where labels exist to check it (NaN
    where they don't)."""
    space = feature_space(cfg, train, test)
    tracking.setup(cfg)
    # Reuse across GAN runs: only the data and the feature net's own settings define it.
    settings = json.dumps(
        {
            "features": cfg.features.model_dump(),
            "space": space,
            "seed": cfg.seed,
            "size": cfg.data.image_size,
            "mode": cfg.data.mode,
        },
        sort_keys=True,
    )
    key = f"{version}:{hashlib.sha256(settings.encode()).hexdigest()[:12]}"
    found = registry.latest_version_with_tag(FEATURE_MODEL, "data_key", key)
    if found is not None and version != versioning.UNVERSIONED:
        net = registry.load_torch_model(f"models:/{FEATURE_MODEL}/{found.version}")
        return net, float(found.tags.get("test_accuracy", "nan"))
    f = cfg.features
    device = hardware.resolve(cfg.device)
    labelled = space == LABELLED
    fcfg = FeatureNetConfig(
        image_size=cfg.data.image_size,
        channels=train.images.shape[1],
        n_classes=len(train.classes) if labelled else 0,
        n_features=f.n_features,
        space=space,
    )
    epochs = f.epochs if labelled else f.contrastive_epochs
    with tracking.start_run(cfg, GAN_EXPERIMENT, "feature-net", version) as run:
        mlflow.log_param("feature_space", space)

        def on_epoch(epoch: int, loss: float) -> None:
            mlflow.log_metric("train_loss", loss, step=epoch)
            if progress:
                progress(f"feature net ({space})", epoch + 1, epochs)

        if labelled:
            net = train_feature_net(
                fcfg, train.images, train.labels, epochs, f.batch_size, f.lr, cfg.seed, on_epoch, device
            )
            acc = accuracy(net, test.images, test.labels, device=device)
            mlflow.set_tag("accuracy_ok", str(acc >= f.min_accuracy))
        else:
            net = train_contrastive_net(
                fcfg, train.images, epochs, f.contrastive_batch_size, f.lr, f.temperature, cfg.seed, on_epoch, device
            )
            checkable = train.labels is not None and test.labels is not None
            acc = (
                knn_accuracy(net, train.images, train.labels, test.images, test.labels, device=device)
                if checkable
                else float("nan")
            )
        if math.isfinite(acc):
            mlflow.log_metric("test_accuracy" if labelled else "knn_accuracy", acc)
        registry.log_torch_model(
            net,
            "feature_net",
            test.images[:2],
            FEATURE_MODEL,
            {
                "data_key": key,
                "data_version": version,
                "feature_space": space,
                "test_accuracy": f"{acc:.4f}",
                "run_id": run.info.run_id,
            },
        )
    return net, acc


def sample_generator(cfg: Config, loss: str, n: int, seed: int) -> np.ndarray:
    """n uint8 samples of the newest registered generator `loss`, drawn with `seed`."""
    tracking.setup(cfg)
    g = registry.load_torch_model(registry.latest_uri(generator_model(loss), f"train-gans --loss {loss}"))
    with torch.no_grad(), hardware.placed(g, hardware.resolve(cfg.device)):
        return to_uint8(g(noise(g, n, torch.Generator().manual_seed(seed))))


def registered_generators(cfg: Config) -> dict[str, str]:
    """name -> model URI for every registered generator (latest version) and its early checkpoints."""
    tracking.setup(cfg)
    found = {}
    for loss in zoo_members(cfg):
        latest = registry.latest_version(generator_model(loss))
        if latest is None:
            continue
        found[loss] = f"models:/{generator_model(loss)}/{latest.version}"
        for tag, uri in mlflow.MlflowClient().get_run(latest.run_id).data.tags.items():
            if tag.startswith("early_generator_epoch"):
                found[f"{loss}-epoch{tag.removeprefix('early_generator_epoch')}"] = uri
    if not found:
        raise BadInputError("no registered generators: run `gandefect train-gans` first")
    return found
