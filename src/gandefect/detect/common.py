"""The detector interface, Platt calibration and the validation-chosen threshold.

Every detector maps uint8 images (N, H, W) or (N, H, W, 3) to a raw score (higher = more
likely generated) and a raw per-pixel map in [0, 1]. `score` turns the raw score into a
calibrated probability with Platt scaling fitted on the validation split; `threshold` is
the decision threshold chosen on that split, never on test. Given a validation *mix* (the
split under each validated condition, `groups` naming the condition of each row), the
threshold is the lowest one at which no condition calls more than `fpr_target` of its real
images fake: real images that arrive processed must keep their verdict.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression

from gandefect.data.fakes import family_of
from gandefect.errors import BadInputError
from gandefect.hardware import CPU


@dataclass
class Labeled:
    """Images with labels (1 = generated) and, for fakes, the generator that made them and its
    family: how it is built, what leave-one-family-out holds out (default: the generator's own
    name, early checkpoints with their generator)."""

    images: np.ndarray  # uint8, N,H,W or N,H,W,3
    labels: np.ndarray  # int, 0 real / 1 fake
    generators: np.ndarray  # str, "real" for real images
    families: np.ndarray | None = None  # str, "real" for real images

    def __post_init__(self) -> None:
        if self.families is None:
            self.families = np.array(
                [g if g == "real" else family_of(g) for g in self.generators.tolist()], dtype=object
            )

    def subset(self, keep: np.ndarray) -> Labeled:
        """The rows where `keep` (a boolean mask or indices) holds, in order."""
        return Labeled(self.images[keep], self.labels[keep], self.generators[keep], self.families[keep])

    def tiled(self, times: int, images: np.ndarray) -> Labeled:
        """`times` copies of these rows (labels, generators, families) over `images`, e.g. the same
        set under several conditions, stacked."""
        return Labeled(
            images, np.tile(self.labels, times), np.tile(self.generators, times), np.tile(self.families, times)
        )

    def class_counts(self) -> np.ndarray:
        """(real images, generated images)."""
        return np.bincount(self.labels, minlength=2)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(x, -60, 60)))


def upgraded(state: dict, legacy: type, section: type, moved: tuple[str, ...]) -> dict:
    """A detector's pickled state whose settings are an earlier gandefect's `legacy` object: its
    fields go into the config `section`, the `moved` ones become the detector's attributes."""
    old = state.get("cfg")
    if not isinstance(old, legacy):
        return state
    kept = {k: v for k, v in vars(old).items() if k in section.model_fields}
    return {**state, **{k: getattr(old, k) for k in moved}, "cfg": section(**kept)}


class Detector(ABC):
    family: str = "base"
    device: torch.device = CPU  # where it trains and scores (`on`); never stored with it
    bf16: bool = False  # whether it trains under bf16 autocast (`on`; gandefect.hardware.use_bf16)

    def on(self, device: torch.device, bf16: bool = False) -> Detector:
        """Compute on `device` from now on, training in bf16 autocast when `bf16` (its weights are
        float32 and stored on the CPU all the same)."""
        self.device, self.bf16 = device, bf16
        return self

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        for machine in ("device", "bf16"):  # a model registered on a GPU machine loads anywhere
            state.pop(machine, None)
        return state

    def __init__(self) -> None:
        self.platt = (1.0, 0.0)  # p = sigmoid(a * raw + b); identity until calibrated
        self.threshold = 0.5
        self.map_threshold = 0.5  # defect-map level that marks a pixel defective (set on spliced val)
        self.trained_on: list[str] = []  # generator names seen in training
        self.envelope = None  # gandefect.data.history.Envelope the gate validated (set by the stage)

    @abstractmethod
    def fit(self, train: Labeled, progress=None) -> Detector: ...

    @abstractmethod
    def raw_scores(self, images: np.ndarray) -> np.ndarray: ...

    @abstractmethod
    def raw_maps(self, images: np.ndarray) -> np.ndarray: ...

    def score(self, images: np.ndarray) -> np.ndarray:
        """Calibrated probability that each image is generated (none for no images)."""
        if not len(images):
            return np.zeros(0)
        a, b = self.platt
        return _sigmoid(a * self.raw_scores(images) + b)

    def defect_map(self, images: np.ndarray) -> np.ndarray:
        """Per-pixel likelihood of generated content, (N, H, W) in [0, 1]."""
        if not len(images):
            return np.zeros(images.shape[:3])
        return np.clip(self.raw_maps(images), 0.0, 1.0)

    def predict(self, images: np.ndarray) -> np.ndarray:
        return (self.score(images) >= self.threshold).astype(int)

    def calibrate(self, val: Labeled, groups: np.ndarray | None = None, fpr_target: float | None = None) -> Detector:
        """Fit Platt scaling on validation raw scores, then pick the threshold there: balanced
        accuracy on one split, or the `fpr_target` rule on a mix with `groups`."""
        counts = val.class_counts()
        if counts.min() == 0:
            raise BadInputError(
                f"the validation split holds {counts[0]} real and {counts[1]} generated images: "
                "calibration needs both; ingest more images"
            )
        raw = self.raw_scores(val.images)
        lr = LogisticRegression(C=1e4).fit(raw[:, None], val.labels)
        self.platt = (float(lr.coef_[0, 0]), float(lr.intercept_[0]))
        p = _sigmoid(self.platt[0] * raw + self.platt[1])
        if groups is None or fpr_target is None:
            self.threshold = choose_threshold(p, val.labels)
        else:
            self.threshold = threshold_for_fpr(p, val.labels, groups, fpr_target)
        return self


def choose_threshold(p: np.ndarray, labels: np.ndarray) -> float:
    """The threshold maximizing balanced accuracy (Youden's J) on the given split."""
    candidates = np.unique(np.concatenate([p, [0.5]]))
    best, best_t = -1.0, 0.5
    real, fake = p[labels == 0], p[labels == 1]
    for t in candidates:
        bal = 0.5 * ((real < t).mean() + (fake >= t).mean())
        if bal > best:
            best, best_t = bal, float(t)
    return best_t


def threshold_for_fpr(p: np.ndarray, labels: np.ndarray, groups: np.ndarray, target: float) -> float:
    """The lowest threshold at which, in every group, at most `target` of the real images score at or above it."""
    worst = 0.0
    for g in np.unique(groups):
        real = np.sort(p[(groups == g) & (labels == 0)])
        if len(real):
            allowed = int(np.floor(target * len(real)))  # real images that may be called fake
            worst = max(worst, float(np.nextafter(real[len(real) - 1 - allowed], 1.0)))
    return min(worst, 1.0)
