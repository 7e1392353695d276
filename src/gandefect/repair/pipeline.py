"""The repair pipeline: detect -> mask -> inpaint -> composite -> re-score, up to k times.

Composite rule: every pixel outside the mask is the input's own byte (the composite is done
in uint8, after the network), so a repair can never change what was not flagged.
Stop rule: an image leaves the loop when its score falls below the detector's threshold,
when its defect map flags no pixel, when a pass does not lower its score (that pass is
undone), or after `iterations` passes.
Local rule: an image whose first defect map flags more than `local_area` of it is generated as
a whole; there is nothing local to repair, and painting over most of a picture is not a repair.
It comes back unchanged, stopped `whole-image`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from gandefect.data.datasets import to_tensor, to_uint8
from gandefect.evaluate.localization import binarize
from gandefect.hardware import CPU, placed
from gandefect.repair.masks import cap_area
from gandefect.repair.model import InpaintUNet, pull_push_fill


class Repairer:
    """uint8 images + boolean masks -> uint8 images rewritten inside the masks only."""

    def __init__(self, net: InpaintUNet, device: torch.device = CPU):
        self.net, self.device = net.eval(), device

    @torch.no_grad()
    def inpaint(self, images: np.ndarray, masks: np.ndarray, batch_size: int = 256) -> np.ndarray:
        if images.shape[:3] != masks.shape:
            raise ValueError(f"images {images.shape} and masks {masks.shape} differ in size")
        out = images.copy()
        with placed(self.net, self.device):
            for i in range(0, len(images), batch_size):
                x = to_tensor(images[i : i + batch_size]).to(self.device)
                m = torch.from_numpy(masks[i : i + batch_size, None].astype(np.float32)).to(self.device)
                pred = to_uint8(self.net.inpaint(x, m))
                out[i : i + batch_size] = composite_uint8(images[i : i + batch_size], pred, masks[i : i + batch_size])
        return out


@torch.no_grad()
def pull_push(images: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """The repairer's starting point without its net: the pull-push fill alone (reported beside
    the repairer, so that the net's own share of its figure is visible)."""
    pred = to_uint8(pull_push_fill(to_tensor(images), torch.from_numpy(masks[:, None].astype(np.float32))))
    return composite_uint8(images, pred, masks)


def composite_uint8(images: np.ndarray, predictions: np.ndarray, masks: np.ndarray) -> np.ndarray:
    m = masks if images.ndim == 3 else masks[..., None]
    return np.where(m, predictions, images).astype(np.uint8)


def marked_area(detector, maps: np.ndarray, dilate: int = 0) -> np.ndarray:
    """The share of each image the detector's defect map marks (at its map threshold): what the local rule judges."""
    return binarize(maps, getattr(detector, "map_threshold", 0.5), dilate).mean(axis=(1, 2))


def defect_masks(detector, images: np.ndarray, max_area: float, dilate: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The detector's defect maps and their binary masks (at its localization threshold, capped in area)."""
    maps = detector.defect_map(images)
    masks = binarize(maps, getattr(detector, "map_threshold", 0.5), dilate)
    return maps, np.stack([cap_area(m, s, max_area) for m, s in zip(masks, maps)]) if len(masks) else masks


@dataclass
class RepairResult:
    images: np.ndarray  # repaired uint8 images
    masks: np.ndarray  # union of every pass's mask per image (bool)
    first_maps: np.ndarray  # the defect maps of the input
    score_before: np.ndarray
    score_after: np.ndarray
    iterations: np.ndarray  # passes that changed the image
    # below-threshold | no-region | no-improvement | max-iterations | given-mask | whole-image
    stopped: list[str] = field(default_factory=list)

    def rows(self, names: list[str]) -> list[dict]:
        return [
            {
                "image": n,
                "score_before": float(b),
                "score_after": float(a),
                "mask_area": float(m.mean()),
                "iterations": int(it),
                "stopped": s,
            }
            for n, b, a, m, it, s in zip(
                names, self.score_before, self.score_after, self.masks, self.iterations, self.stopped
            )
        ]


WHOLE_IMAGE = "generated as a whole: nothing local to repair"  # the reason a `whole-image` stop gives


def repair(
    images: np.ndarray,
    detector,
    repairer: Repairer,
    iterations: int = 3,
    max_area: float = 0.5,
    dilate: int = 0,
    masks: np.ndarray | None = None,
    local_area: float = 1.0,
) -> RepairResult:
    """Repair a batch. With `masks`, inpaint exactly there once; otherwise loop on the detector's
    masks, leaving unchanged every flagged image whose defect mask covers more than `local_area`."""
    current = images.copy()
    score = detector.score(current)
    before = score.copy()
    maps = detector.defect_map(current)
    union = np.zeros(images.shape[:3], bool)
    passes = np.zeros(len(images), int)
    stopped = ["max-iterations"] * len(images)
    if masks is not None:
        current = repairer.inpaint(current, masks)
        after = detector.score(current)
        return RepairResult(
            current, masks.copy(), maps, before, after, np.ones(len(images), int), ["given-mask"] * len(images)
        )
    active = np.arange(len(images))
    flagged = before >= detector.threshold
    whole = flagged & (marked_area(detector, maps, dilate) > local_area)
    for i in np.flatnonzero(whole):
        stopped[i] = "whole-image"
    active = active[~whole]
    for _ in range(iterations):
        flagged = score[active] >= detector.threshold
        for i in active[~flagged]:
            stopped[i] = "below-threshold"
        active = active[flagged]
        if not len(active):
            break
        _, m = defect_masks(detector, current[active], max_area, dilate)
        empty = ~m.any(axis=(1, 2))
        for i in active[empty]:
            stopped[i] = "no-region"
        active, m = active[~empty], m[~empty]
        if not len(active):
            break
        candidate = repairer.inpaint(current[active], m)
        new_score = detector.score(candidate)
        # a pass that does not lower the score is undone and ends the loop for that image:
        # rewriting more of it would only replace content, not repair it
        better = new_score < score[active]
        for i in active[~better]:
            stopped[i] = "no-improvement"
        active, m, candidate, new_score = active[better], m[better], candidate[better], new_score[better]
        current[active] = candidate
        union[active] |= m
        passes[active] += 1
        score[active] = new_score
    for i in active:
        if score[i] < detector.threshold:
            stopped[i] = "below-threshold"
    return RepairResult(current, union, maps, before, score, passes, stopped)
