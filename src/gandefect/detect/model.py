"""Detectors as MLflow models: a pyfunc wrapper around the pickled detector object."""

from __future__ import annotations

import numpy as np
import torch
from mlflow.pyfunc import PythonModel

from gandefect.detect.common import Detector


class DetectorModel(PythonModel):
    """mlflow.pyfunc model: predict(uint8 images N,H,W[,3]) -> p_fake. `.detector` is the object.

    predict has no type hints on purpose: MLflow would then convert inputs itself; the
    signature logged with each model states the contract. `_skip_type_hint_validation` tells
    pyfunc so (else it warns, at every import of this module, that the hints are missing)."""

    _skip_type_hint_validation = True

    def load_context(self, context) -> None:
        self.detector: Detector = torch.load(context.artifacts["detector"], weights_only=False)

    def predict(self, context, model_input, params=None):
        return self.detector.score(np.asarray(model_input, dtype=np.uint8))
