"""Localization metrics on the spliced benchmark: pixel AP and IoU at a threshold chosen on val."""

from __future__ import annotations

import numpy as np
from scipy import ndimage
from sklearn.metrics import average_precision_score

from gandefect.config import Config
from gandefect.data.spliced import load_spliced
from gandefect.evaluate.figures import Figures


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


def localize(cfg: Config, detector, choose: bool = True) -> Figures:
    """Choose the detector's defect-map threshold on the spliced val part (stored on the detector;
    `choose=False` keeps the one it is served with; an empty val part keeps it too); pixel AP and
    IoU on the test part, overall and per generator of the spliced-in region."""
    test_images, test_masks, manifest = load_spliced(cfg, "test")
    if choose:
        val_images, val_masks, _ = load_spliced(cfg, "val")
        if len(val_images):
            detector.map_threshold = choose_map_threshold(
                detector.defect_map(val_images), val_masks, cfg.spliced.dilate
            )
    metrics = Figures({"map_threshold": detector.map_threshold}, cfg.gates.min_samples)
    if not metrics.enough("pixel_ap", {"spliced test images": len(test_images)}):
        metrics.lack("iou", metrics.missing["pixel_ap"])
        return metrics
    maps = detector.defect_map(test_images)
    pred = binarize(maps, detector.map_threshold, cfg.spliced.dilate)
    metrics.update(pixel_ap=pixel_ap(maps, test_masks), iou=mean_iou(pred, test_masks))
    generators = manifest["generator"].to_numpy()
    for g in sorted(set(generators)):
        keep = generators == g
        if metrics.enough(f"pixel_ap_{g}", {f"spliced test images of {g}": int(keep.sum())}):
            metrics[f"pixel_ap_{g}"] = pixel_ap(maps[keep], test_masks[keep])
    return metrics
