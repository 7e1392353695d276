"""Classical signal-processing detector: frequency-domain features and a linear classifier.

Features (cf. Durall et al. 2020, Frank et al. 2020): the azimuthally averaged log power
spectrum of the 2-D FFT and the log-magnitude 2-D DCT coefficients of the gray image.
Up-sampling layers leave periodic peaks and a distorted high-frequency fall-off there.
The defect map applies a second classifier of the same features to sliding windows.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.fft import dctn
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from gandefect.config import SpectralDetectorConfig
from gandefect.data.conditions import augment
from gandefect.detect.common import Detector, Labeled, upgraded


@dataclass
class SpectralConfig:
    """The settings object of spectral detectors pickled before `detect.spectral` itself was their
    settings: kept so that registered champions still load (`SpectralDetector.__setstate__`)."""

    C: float = 0.05
    window: int = 12
    stride: int = 2
    windows_per_image: int = 4
    p_process: float = 0.6
    seed: int = 0


def _gray(images: np.ndarray) -> np.ndarray:
    x = images.astype(np.float64) / 255.0
    return x @ np.array([0.299, 0.587, 0.114]) if x.ndim == 4 else x


def spectrum_features(images: np.ndarray) -> np.ndarray:
    """(N, H, W[, 3]) uint8 -> azimuthal log-power profile ++ log |DCT| coefficients."""
    x = _gray(images)
    x = x - x.mean(axis=(1, 2), keepdims=True)
    n, h, w = x.shape
    power = np.log(np.abs(np.fft.fftshift(np.fft.fft2(x), axes=(1, 2))) ** 2 + 1e-8)
    yy, xx = np.indices((h, w))
    radius = np.hypot(yy - h // 2, xx - w // 2).astype(int).ravel()
    counts = np.bincount(radius)
    profile = np.stack([np.bincount(radius, p.ravel()) / counts for p in power])
    dct = np.log(np.abs(dctn(x, axes=(1, 2), norm="ortho")) + 1e-4).reshape(n, -1)
    return np.concatenate([profile, dct], axis=1)


def _classifier(C: float):
    return make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=3000))


class SpectralDetector(Detector):
    """Trained with the `detect.spectral` settings and the run's `seed`."""

    family = "spectral"

    def __init__(self, cfg: SpectralDetectorConfig | None = None, seed: int = 0):
        super().__init__()
        self.cfg, self.seed = cfg or SpectralDetectorConfig(), seed
        self.image_clf = _classifier(self.cfg.C)
        self.window_clf = _classifier(self.cfg.C)

    def _crops(self, images: np.ndarray, labels: np.ndarray, rng: np.random.Generator):
        k, w = self.cfg.windows_per_image, self.cfg.window
        h, wd = images.shape[1:3]
        ys = rng.integers(0, h - w + 1, (len(images), k))
        xs = rng.integers(0, wd - w + 1, (len(images), k))
        crops = np.stack([images[i, y : y + w, x : x + w] for i in range(len(images)) for y, x in zip(ys[i], xs[i])])
        return crops, np.repeat(labels, k)

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(upgraded(state, SpectralConfig, SpectralDetectorConfig, ("seed",)))

    def fit(self, train: Labeled, progress=None) -> SpectralDetector:
        c = self.cfg
        rng = np.random.default_rng(self.seed)
        images = augment(train.images, rng, c.p_process)
        weight = np.where(train.labels == 1, 0.5 / max(1, train.labels.sum()), 0.5 / max(1, (1 - train.labels).sum()))
        self.image_clf.fit(
            spectrum_features(images), train.labels, logisticregression__sample_weight=weight * len(weight)
        )
        if progress:
            progress("spectral detector", 1, 2)
        crops, crop_labels = self._crops(images, train.labels, rng)
        self.window_clf.fit(
            spectrum_features(crops),
            crop_labels,
            logisticregression__sample_weight=np.repeat(weight, c.windows_per_image) * len(weight),
        )
        if progress:
            progress("spectral detector", 2, 2)
        self.trained_on = sorted(set(train.generators) - {"real"})
        return self

    def raw_scores(self, images: np.ndarray) -> np.ndarray:
        return self.image_clf.decision_function(spectrum_features(images))

    def raw_maps(self, images: np.ndarray) -> np.ndarray:
        w, s = self.cfg.window, self.cfg.stride
        n, h, wd = images.shape[:3]
        positions = [(y, x) for y in range(0, h - w + 1, s) for x in range(0, wd - w + 1, s)]
        crops = np.stack([images[:, y : y + w, x : x + w] for y, x in positions], axis=1)
        probs = self.window_clf.predict_proba(spectrum_features(crops.reshape(-1, *crops.shape[2:])))[:, 1]
        probs = probs.reshape(n, len(positions))
        total, count = np.zeros((n, h, wd)), np.zeros((h, wd))
        for j, (y, x) in enumerate(positions):
            total[:, y : y + w, x : x + w] += probs[:, j, None, None]
            count[y : y + w, x : x + w] += 1
        return total / np.maximum(count, 1)
