"""MLflow model logging, registration, lookup and loading (pickle format, any batch size)."""

from __future__ import annotations

import sys
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path

import mlflow
import numpy as np
import torch
from mlflow.entities.model_registry import ModelVersion
from mlflow.models import infer_signature

import gandefect
from gandefect.detect.common import Detector
from gandefect.detect.model import DetectorModel
from gandefect.errors import BadInputError
from gandefect.hardware import CPU

PACKAGE_DIR = Path(gandefect.__file__).resolve().parent


def pip_requirements() -> list[str]:
    """Pinned explicitly: letting MLflow infer them costs seconds per model."""
    return [f"torch=={torch.__version__.split('+')[0]}", f"numpy=={np.__version__}", f"mlflow=={mlflow.__version__}"]


def log_torch_model(
    model: torch.nn.Module,
    name: str,
    example_input: torch.Tensor,
    registered_name: str | None = None,
    tags: dict | None = None,
):
    """Log (and, given `registered_name`, register) a module; returns (model info, version or None).

    Logs with the MLflow PyTorch flavor as a pickle (not pt2, which needs an input example and
    can freeze the batch size), with gandefect's code attached so loading needs nothing else."""
    model.eval()
    with torch.no_grad():
        output = model(example_input)
    info = mlflow.pytorch.log_model(
        model,
        name=name,
        serialization_format="pickle",
        code_paths=[str(PACKAGE_DIR)],
        signature=infer_signature(example_input.numpy(), output.numpy()),
        pip_requirements=pip_requirements(),
    )
    version = register(info.model_uri, registered_name, tags) if registered_name else None
    return info, version


def log_detector(detector: Detector, name: str, example: np.ndarray):
    """Log a detector with the pyfunc flavor (gandefect's code attached); returns the model info."""
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        # pyfunc nags about type hints and input examples; the signature below states the contract.
        warnings.simplefilter("ignore", UserWarning)
        path = Path(tmp) / "detector.pt"
        torch.save(detector, path)
        return mlflow.pyfunc.log_model(
            name=name,
            python_model=DetectorModel(),
            artifacts={"detector": str(path)},
            code_paths=[str(PACKAGE_DIR)],
            pip_requirements=pip_requirements() + ["scikit-learn", "scipy", "pillow"],
            signature=infer_signature(example, detector.score(example)),
        )


def register(model_uri: str, name: str, tags: dict | None = None) -> ModelVersion:
    """Create a new version of registered model `name` from a logged model; returns the version."""
    client = mlflow.MlflowClient()
    try:
        client.get_registered_model(name)
    except mlflow.exceptions.MlflowException:
        client.create_registered_model(name)
    run_id = mlflow.active_run().info.run_id if mlflow.active_run() else None
    return client.create_model_version(
        name, model_uri, run_id=run_id, tags={k: str(v) for k, v in (tags or {}).items()}
    )


def latest_version(name: str, where: Callable[[ModelVersion], bool] | None = None) -> ModelVersion | None:
    """The newest registered version of `name` (of those `where` accepts), or None."""
    try:
        versions = mlflow.MlflowClient().search_model_versions(f"name = '{name}'")
    except mlflow.exceptions.MlflowException:
        return None
    matching = [v for v in versions if where is None or where(v)]
    return max(matching, key=lambda v: int(v.version)) if matching else None


def latest_version_with_tag(name: str, key: str, value: str) -> ModelVersion | None:
    """The newest registered version of `name` whose tag `key` equals `value`, or None."""
    return latest_version(name, lambda v: v.tags.get(key) == value)


def latest_uri(name: str, hint: str) -> str:
    """models:/name/<newest version>; a clear error naming the command that makes one if none."""
    found = latest_version(name)
    if found is None:
        raise BadInputError(f"no registered {name}: run `gandefect {hint}` first")
    return f"models:/{name}/{found.version}"


def load_torch_model(uri: str) -> torch.nn.Module:
    """Load a logged module with the installed gandefect code.

    MLflow prepends the model's logged code directory to sys.path and leaves it there; a
    process started afterwards (a task runner's worker inherits sys.path) would then import
    that snapshot of gandefect instead of the installed one. The path is restored after the load."""
    saved = list(sys.path)
    try:
        return mlflow.pytorch.load_model(uri, map_location="cpu").eval()
    finally:
        sys.path[:] = saved


def load_detector(uri: str, device: torch.device = CPU) -> Detector:
    """A registered detector, computing on `device`."""
    return mlflow.pyfunc.load_model(uri).unwrap_python_model().detector.on(device)
