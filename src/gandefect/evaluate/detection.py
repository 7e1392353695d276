"""Detection metrics of ../DESIGN.md on clean test images: AUC/AP seen and per generator, ECE,
accuracies (the conditions in the wild are gandefect.evaluate.wild)."""

from __future__ import annotations

import numpy as np
import torch
from sklearn.metrics import average_precision_score, roc_auc_score
from torchmetrics.classification import BinaryCalibrationError

from gandefect.detect.common import Detector, Labeled


def ece(p: np.ndarray, labels: np.ndarray, n_bins: int = 15) -> float:
    metric = BinaryCalibrationError(n_bins=n_bins, norm="l1")
    return float(metric(torch.from_numpy(p.astype(np.float32)), torch.from_numpy(labels.astype(np.int64))))


def auc(labels: np.ndarray, p: np.ndarray) -> float:
    return float(roc_auc_score(labels, p)) if len(set(labels.tolist())) == 2 else float("nan")


def per_generatorauc(p: np.ndarray, test: Labeled) -> dict[str, float]:
    real = test.generators == "real"
    return {g: auc(test.labels[real | (test.generators == g)], p[real | (test.generators == g)])
            for g in sorted(set(test.generators.tolist()) - {"real"})}


def evaluate(detector: Detector, test: Labeled) -> tuple[dict[str, float], np.ndarray]:
    """Seen-generator metrics on the clean test split; returns (metrics, p_fake)."""
    p = detector.score(test.images)
    pred = p >= detector.threshold
    metrics = {
        "auc_seen": auc(test.labels, p),
        "ap_seen": float(average_precision_score(test.labels, p)),
        "ece": ece(p, test.labels),
        "threshold": detector.threshold,
        "acc_real": float((~pred[test.labels == 0]).mean()),
        "acc_fake": float(pred[test.labels == 1].mean()),
    }
    metrics.update({f"auc_gen_{g}": v for g, v in per_generatorauc(p, test).items()})
    return metrics, p
