"""Spliced-defect benchmark: real images whose masked region is replaced by the same region
of a generated image, with the exact binary mask beside each one (ground truth for
localization and for in-mask repair quality)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import ndimage

from gandefect.config import Config
from gandefect.data.datasets import load_pngs
from gandefect.errors import BadInputError
from gandefect.names import SPLICED_DIR


@dataclass
class MaskSpec:
    min_area: float = 0.05  # fraction of the image
    max_area: float = 0.40
    kinds: tuple[str, ...] = ("rect", "blob")


def _rect(rng: np.random.Generator, h: int, w: int, area: float) -> np.ndarray:
    aspect = rng.uniform(0.5, 2.0)
    rh = int(np.clip(round(np.sqrt(area * h * w * aspect)), 1, h))
    rw = int(np.clip(round(area * h * w / rh), 1, w))
    y, x = rng.integers(0, h - rh + 1), rng.integers(0, w - rw + 1)
    mask = np.zeros((h, w), bool)
    mask[y : y + rh, x : x + rw] = True
    return mask


def _blob(rng: np.random.Generator, h: int, w: int, area: float) -> np.ndarray:
    """A free-form region: smoothed noise thresholded at the quantile that gives `area`,
    keeping its largest connected part."""
    field = ndimage.gaussian_filter(rng.standard_normal((h, w)), sigma=max(h, w) / 7)
    mask = field >= np.quantile(field, 1 - area)
    labels, n = ndimage.label(mask)
    if n > 1:
        sizes = ndimage.sum(mask, labels, range(1, n + 1))
        mask = labels == (1 + int(np.argmax(sizes)))
    return mask


def random_mask(rng: np.random.Generator, h: int, w: int, spec: MaskSpec, tries: int = 50) -> tuple[np.ndarray, str]:
    """A boolean (h, w) mask of one of spec.kinds whose area lies in [min_area, max_area]."""
    for _ in range(tries):
        kind = spec.kinds[int(rng.integers(len(spec.kinds)))]
        target = rng.uniform(spec.min_area, spec.max_area)
        mask = (_rect if kind == "rect" else _blob)(rng, h, w, target)
        if spec.min_area <= mask.mean() <= spec.max_area:
            return mask, kind
    raise ValueError(f"could not draw a mask with area in [{spec.min_area}, {spec.max_area}] on {h}x{w}")


def mask_pool(rng: np.random.Generator, shape: tuple[int, int], spec: MaskSpec, n: int) -> np.ndarray:
    """n random masks (bool, n x H x W), drawn once so training loops only index into them."""
    return np.stack([random_mask(rng, *shape, spec)[0] for _ in range(n)])


def splice(real: np.ndarray, fake: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Real pixels outside the mask, generated pixels inside (uint8, gray or RGB)."""
    m = mask if real.ndim == 2 else mask[..., None]
    return np.where(m, fake, real).astype(np.uint8)


def make_spliced(real: np.ndarray, fakes: np.ndarray, spec: MaskSpec, seed: int, generators: np.ndarray | None = None):
    """One spliced image per real image, each with a random fake and mask; deterministic in seed.

    With `generators` (the generator of each fake), the generator is drawn uniformly first, so
    the benchmark's mix of generators does not follow how many samples each one has. No real or no
    fake image: no spliced image."""
    rng = np.random.default_rng(seed)
    h, w = real.shape[1:3]
    if not len(real) or not len(fakes):
        return np.zeros((0, *real.shape[1:]), np.uint8), np.zeros((0, h, w), bool), [], []
    by_generator = [np.flatnonzero(generators == g) for g in np.unique(generators)] if generators is not None else None
    out, masks, kinds, sources = [], [], [], []
    for img in real:
        if by_generator is None:
            j = int(rng.integers(len(fakes)))
        else:
            pool = by_generator[int(rng.integers(len(by_generator)))]
            j = int(pool[rng.integers(len(pool))])
        mask, kind = random_mask(rng, h, w, spec)
        out.append(splice(img, fakes[j], mask))
        masks.append(mask)
        kinds.append(kind)
        sources.append(j)
    return np.stack(out), np.stack(masks), kinds, sources


def load_spliced(cfg: Config, split: str) -> tuple[np.ndarray, np.ndarray, pd.DataFrame]:
    root = cfg.path(SPLICED_DIR)
    if not (root / "manifest.csv").exists():
        raise BadInputError("no spliced benchmark: run `gandefect build-spliced` first")
    m = pd.read_csv(root / "manifest.csv")
    m = m[m["split"] == split]
    return load_pngs(m["path"], root, cfg.data.shape), load_pngs(m["mask_path"], root, cfg.data.shape[:2]) > 127, m
