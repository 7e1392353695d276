"""Localization metrics on the spliced benchmark: pixel AP and IoU at a threshold chosen on val."""

from __future__ import annotations

import numpy as np
from scipy import ndimage
from sklearn.metrics import average_precision_score


def binarize(maps: np.ndarray, threshold: float, dilate: int = 0) -> np.ndarray:
    masks = maps >= threshold
    if dilate:
        structure = np.ones((1, 2 * dilate + 1, 2 * dilate + 1), bool)
        masks = ndimage.binary_dilation(masks, structure=structure)
    return masks


def mean_iou(pred: np.ndarray, truth: np.ndarray) -> float:
    inter = (pred & truth).sum(axis=(1, 2))
    union = (pred | truth).sum(axis=(1, 2))
    return float(np.mean(np.where(union > 0, inter / np.maximum(union, 1), 1.0)))


def pixel_ap(maps: np.ndarray, truth: np.ndarray) -> float:
    return float(average_precision_score(truth.ravel(), maps.ravel()))


def choose_map_threshold(maps: np.ndarray, truth: np.ndarray, dilate: int = 0, n: int = 99) -> float:
    """The defect-map threshold with the best mean IoU on the validation part."""
    candidates = np.unique(np.quantile(maps, np.linspace(0.01, 0.99, n)))
    scores = [mean_iou(binarize(maps, t, dilate), truth) for t in candidates]
    return float(candidates[int(np.argmax(scores))])
