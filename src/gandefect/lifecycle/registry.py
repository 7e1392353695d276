"""MLflow model logging, registration and loading (pickle format, any batch size)."""

from __future__ import annotations

from pathlib import Path

import torch

import gandefect

PACKAGE_DIR = Path(gandefect.__file__).resolve().parent


def pip_requirements() -> list[str]:
    """Pinned explicitly: letting MLflow infer them costs seconds per model."""
    import mlflow
    import numpy

    return [f"torch=={torch.__version__.split('+')[0]}", f"numpy=={numpy.__version__}", f"mlflow=={mlflow.__version__}"]


def log_torch_model(model: torch.nn.Module, name: str, example_input: torch.Tensor,
                    registered_name: str | None = None, tags: dict | None = None):
    """Log (and, given `registered_name`, register) a module; returns (model info, version or None).

    Logs with the MLflow PyTorch flavor as a pickle (not pt2, which needs an input example and
    can freeze the batch size), with gandefect's code attached so loading needs nothing else."""
    import mlflow
    from mlflow.models import infer_signature

    model.eval()
    with torch.no_grad():
        output = model(example_input)
    info = mlflow.pytorch.log_model(
        model, name=name, serialization_format="pickle", code_paths=[str(PACKAGE_DIR)],
        signature=infer_signature(example_input.numpy(), output.numpy()),
        pip_requirements=pip_requirements(),
    )
    version = register(info.model_uri, registered_name, tags) if registered_name else None
    return info, version


def register(model_uri: str, name: str, tags: dict | None = None):
    """Create a new version of registered model `name` from a logged model; returns the version."""
    import mlflow

    client = mlflow.MlflowClient()
    try:
        client.get_registered_model(name)
    except mlflow.exceptions.MlflowException:
        client.create_registered_model(name)
    run_id = mlflow.active_run().info.run_id if mlflow.active_run() else None
    version = client.create_model_version(name, model_uri, run_id=run_id,
                                          tags={k: str(v) for k, v in (tags or {}).items()})
    return version


def latest_version_with_tag(name: str, key: str, value: str):
    """The newest registered version of `name` whose tag `key` equals `value`, or None."""
    import mlflow

    client = mlflow.MlflowClient()
    try:
        versions = client.search_model_versions(f"name = '{name}'")
    except mlflow.exceptions.MlflowException:
        return None
    matching = [v for v in versions if v.tags.get(key) == value]
    return max(matching, key=lambda v: int(v.version)) if matching else None


def latest_uri(name: str, hint: str) -> str:
    """models:/name/<newest version>; a clear error naming the command that makes one if none."""
    import mlflow

    from gandefect.errors import BadInputError

    try:
        versions = mlflow.MlflowClient().search_model_versions(f"name = '{name}'")
    except mlflow.exceptions.MlflowException:
        versions = []
    if not versions:
        raise BadInputError(f"no registered {name}: run `gandefect {hint}` first")
    return f"models:/{name}/{max(int(v.version) for v in versions)}"


def served_uri(name: str, hint: str) -> str:
    """models:/name@champion when a champion is set, else the newest version."""
    from gandefect.lifecycle.gates import CHAMPION, alias_version

    return f"models:/{name}@{CHAMPION}" if alias_version(name, CHAMPION) else latest_uri(name, hint)


def load_torch_model(uri: str) -> torch.nn.Module:
    """Load a logged module with the installed gandefect code.

    MLflow prepends the model's logged code directory to sys.path and leaves it there; a
    process started afterwards (a task runner's worker inherits sys.path) would then import
    that snapshot of gandefect instead of the installed one. The path is restored after the load."""
    import sys

    import mlflow

    saved = list(sys.path)
    try:
        return mlflow.pytorch.load_model(uri, map_location="cpu").eval()
    finally:
        sys.path[:] = saved
