"""Detectors as MLflow models: a pyfunc wrapper around the pickled detector object."""

from __future__ import annotations

import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch
from mlflow.pyfunc import PythonModel

from gandefect.detect.common import Detector


class DetectorModel(PythonModel):
    """mlflow.pyfunc model: predict(uint8 images N,H,W[,3]) -> p_fake. `.detector` is the object.

    predict has no type hints on purpose: MLflow would then convert inputs itself; the
    signature logged with each model states the contract (pyfunc warns about this once).
    """

    def load_context(self, context) -> None:
        self.detector: Detector = torch.load(context.artifacts["detector"], weights_only=False)

    def predict(self, context, model_input, params=None):
        return self.detector.score(np.asarray(model_input, dtype=np.uint8))


def log_detector(detector: Detector, name: str, example: np.ndarray):
    """Log a detector with the pyfunc flavor (gandefect's code attached); returns the model info."""
    import mlflow
    from mlflow.models import infer_signature

    from gandefect.lifecycle.registry import PACKAGE_DIR, pip_requirements

    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        # pyfunc nags about type hints and input examples; the signature below states the contract.
        warnings.simplefilter("ignore", UserWarning)
        path = Path(tmp) / "detector.pt"
        torch.save(detector, path)
        return mlflow.pyfunc.log_model(
            name=name, python_model=DetectorModel(), artifacts={"detector": str(path)},
            code_paths=[str(PACKAGE_DIR)], pip_requirements=pip_requirements() + ["scikit-learn", "scipy", "pillow"],
            signature=infer_signature(example, detector.score(example)),
        )


def load_detector(uri: str) -> Detector:
    import mlflow

    return mlflow.pyfunc.load_model(uri).unwrap_python_model().detector
