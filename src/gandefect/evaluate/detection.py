"""Detection metrics of docs/architecture.md ("Detectors") on clean test images: AUC/AP seen and per generator, ECE,
accuracies (the conditions in the wild are gandefect.evaluate.wild)."""

from __future__ import annotations

import numpy as np
import torch
from sklearn.metrics import average_precision_score, roc_auc_score
from torchmetrics.classification import BinaryCalibrationError

from gandefect.detect.common import Detector, Labeled
from gandefect.evaluate.figures import Figures


def ece(p: np.ndarray, labels: np.ndarray, n_bins: int = 15) -> float:
    metric = BinaryCalibrationError(n_bins=n_bins, norm="l1")
    return float(metric(torch.from_numpy(p.astype(np.float32)), torch.from_numpy(labels.astype(np.int64))))


def auc(labels: np.ndarray, p: np.ndarray) -> float:
    return float(roc_auc_score(labels, p)) if len(set(labels.tolist())) == 2 else float("nan")


def evaluate(
    detector: Detector, test: Labeled, generators: list[str], min_samples: int = 1
) -> tuple[Figures, np.ndarray]:
    """Seen-generator metrics on the clean test split, `auc_gen_<g>` for each of `generators`
    (missing, with the reason, where the split holds too few of its samples); (metrics, p_fake)."""
    p = detector.score(test.images)
    pred = p >= detector.threshold
    real, fake = test.labels == 0, test.labels == 1
    metrics = Figures({"threshold": detector.threshold}, min_samples)
    metrics.auc("auc_seen", test.labels, p, "real test images", "generated test images")
    if "auc_seen" in metrics.missing:
        metrics.lack("ap_seen", metrics.missing["auc_seen"])
        metrics.lack("ece", metrics.missing["auc_seen"])
    else:
        metrics["ap_seen"] = float(average_precision_score(test.labels, p))
        metrics["ece"] = ece(p, test.labels)
    metrics.share("acc_real", ~pred[real], "real test images")
    metrics.share("acc_fake", pred[fake], "generated test images")
    for g in generators:
        mine = real | (test.generators == g)
        metrics.auc(f"auc_gen_{g}", test.labels[mine], p[mine], "real test images", f"test samples of {g}")
    return metrics, p
