"""MLflow tracking: one place that knows the store, the experiments (named in gandefect.names) and the run tags."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path

import mlflow

from gandefect.config import Config
from gandefect.lifecycle.versioning import git_commit


def tracking_uri(cfg: Config) -> str:
    """The configured URI, with a relative SQLite path anchored at the project root."""
    uri = cfg.tracking.uri
    prefix = "sqlite:///"
    if uri.startswith(prefix) and not uri.startswith(prefix + "/"):
        return prefix + str(cfg.path(uri[len(prefix) :]).resolve())
    return uri


def _is_local_store(uri: str) -> bool:
    return uri.startswith(("sqlite:", "file:")) or "://" not in uri


def setup(cfg: Config):
    # Schema migrations of a new SQLite store log at INFO on every first use; not news to a user.
    for name in ("alembic", "mlflow.store.db.utils"):
        logging.getLogger(name).setLevel(logging.WARNING)
    # We log PyTorch models as pickles on purpose (see registry.log_torch_model).
    logging.getLogger("mlflow.pytorch").setLevel(logging.ERROR)
    logging.getLogger("mlflow.pyfunc").setLevel(logging.ERROR)

    mlflow.set_tracking_uri(tracking_uri(cfg))
    return mlflow


def experiment_id(cfg: Config, name: str) -> str:
    """Get or create an experiment; with a local store its artifacts live under artifact_root."""
    mlflow = setup(cfg)
    existing = mlflow.get_experiment_by_name(name)
    if existing is not None:
        return existing.experiment_id
    location = None
    if _is_local_store(tracking_uri(cfg)):
        location = (cfg.path(cfg.tracking.artifact_root).resolve() / name).as_uri()
    return mlflow.create_experiment(name, artifact_location=location)


def flatten(params: dict, prefix: str = "") -> dict[str, str]:
    flat = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, name + "."))
        else:
            flat[name] = str(value)
    return flat


def run_tags(cfg: Config, data_version: str, flow_run_id: str | None = None) -> dict[str, str]:
    return {
        "data_version": data_version,
        "git_commit": git_commit(cfg.root),
        "params_hash": cfg.params_hash(),
        "flow_run_id": flow_run_id or "none",
        "profile": cfg.profile,
    }


@contextlib.contextmanager
def start_run(
    cfg: Config,
    experiment: str,
    run_name: str,
    data_version: str,
    flow_run_id: str | None = None,
    parent_run_id: str | None = None,
    run_id: str | None = None,
) -> Iterator:
    """An MLflow run with the project's tags and the effective parameters already logged.

    `parent_run_id` nests it under another run; `run_id` continues an existing run (resume).
    """
    mlflow = setup(cfg)
    exp_id = experiment_id(cfg, experiment)
    tags = run_tags(cfg, data_version, flow_run_id)
    if run_id:
        with mlflow.start_run(run_id=run_id, nested=mlflow.active_run() is not None) as run:
            mlflow.set_tags(tags)
            yield run
        return
    active = mlflow.active_run()
    if parent_run_id is None and active is not None:
        parent_run_id = active.info.run_id  # a stage inside the retrain flow's run nests under it
    with mlflow.start_run(
        experiment_id=exp_id,
        run_name=run_name,
        parent_run_id=parent_run_id,
        nested=parent_run_id is not None,
        tags=tags,
    ) as run:
        mlflow.log_params(flatten(cfg.to_params()))
        yield run


def log_artifacts(paths: list[Path], artifact_path: str | None = None) -> None:
    for path in paths:
        if path and Path(path).exists():
            mlflow.log_artifact(str(path), artifact_path=artifact_path)


def last_runs(cfg: Config, experiment: str, n: int) -> list:
    """The newest `n` top-level runs of an experiment (none if it does not exist yet)."""
    mlflow = setup(cfg)
    exp = mlflow.get_experiment_by_name(experiment)
    if exp is None:
        return []
    return mlflow.MlflowClient().search_runs(
        [exp.experiment_id], "", order_by=["attribute.start_time DESC"], max_results=n
    )
