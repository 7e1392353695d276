"""One detector family trained: fitted, calibrated on the validation mix, given its served
threshold and envelope; and what a family's training gives."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from gandefect.config import Config
from gandefect.data import conditions
from gandefect.data.history import Envelope
from gandefect.data.snapshot import Progress
from gandefect.detect import families as detector_families
from gandefect.detect.common import Detector, Labeled
from gandefect.evaluate.figures import Figures


@dataclass
class FamilyResult:
    family: str
    detector: Detector
    metrics: Figures
    p_test: np.ndarray
    train_seconds: float
    unseen: dict[str, float] = field(default_factory=dict)
    loo_trained_on: dict[str, list[str]] = field(default_factory=dict)


def envelope_for(gated: list[str]) -> Envelope:
    """The served envelope: what the gated conditions cover (a condition not gated is outside)."""
    validated = [conditions.get(c) for c in gated]
    qualities = [c.jpeg_quality for c in validated if c.jpeg_quality is not None]
    return Envelope(
        min_jpeg_quality=min(qualities, default=101),
        max_downscale=max((c.shrink for c in validated), default=1.0),
        max_upscale=1 / min((c.detail for c in validated), default=1.0),
    )


def fit_detector(
    cfg: Config,
    family: str,
    train: Labeled,
    val_mix: Labeled,
    groups: np.ndarray,
    progress: Progress | None = None,
    held_out: bool = False,
    start: Detector | None = None,
) -> Detector:
    """Train one detector (fine-tuned from `start` where its family can), calibrate it on the
    validation mix and set its served threshold and envelope."""
    det = detector_families.build(cfg, family, held_out, start).fit(train, progress)
    det.calibrate(val_mix, groups, cfg.detect.wild.fpr_target)
    det.envelope = envelope_for(cfg.detect.wild.gated)
    return det
