"""The served models: the champion (else the newest) detector and repairer, loaded from the registry."""

from __future__ import annotations

from gandefect import hardware
from gandefect.config import Config
from gandefect.detect.common import Detector
from gandefect.lifecycle import gates, registry, tracking
from gandefect.names import DETECTOR_MODEL, REPAIRER_MODEL
from gandefect.repair.pipeline import Repairer


def load_repairer(cfg: Config, uri: str | None = None) -> Repairer:
    tracking.setup(cfg)
    return Repairer(
        registry.load_torch_model(uri or gates.served_uri(REPAIRER_MODEL, "train-repairer")),
        hardware.resolve(cfg.device),
    )


def load_served_detector(cfg: Config, uri: str | None = None) -> Detector:
    tracking.setup(cfg)
    return registry.load_detector(
        uri or gates.served_uri(DETECTOR_MODEL, "train-detectors"), hardware.resolve(cfg.device)
    )
