"""Repair metrics: in-mask PSNR, change outside the masks, and the classical fills the repairer must beat."""

from __future__ import annotations

import numpy as np
from skimage.restoration import inpaint_biharmonic


def psnr_in_mask(a: np.ndarray, b: np.ndarray, masks: np.ndarray) -> float:
    """PSNR over every masked pixel of the set (one pooled MSE: images whose hole is flat
    background would give infinite per-image PSNR)."""
    m = masks if a.ndim == 3 else np.repeat(masks[..., None], a.shape[-1], -1)
    mse = float(((a[m].astype(np.float64) - b[m]) ** 2).mean())
    return 10 * np.log10(255.0**2 / max(mse, 1e-12))


def mean_fill(images: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """The classical baseline: every hole filled with its image's mean outside the hole."""
    out = images.copy()
    for img, m in zip(out, masks):
        img[m] = np.round(img[~m].mean(axis=0)).astype(np.uint8)
    return out


def biharmonic(images: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """The classical baseline: skimage's biharmonic inpainting of every hole."""
    channel_axis = None if images.ndim == 3 else -1
    return np.stack(
        [
            np.clip(
                np.round(inpaint_biharmonic(img.astype(np.float64) / 255.0, m, channel_axis=channel_axis) * 255.0),
                0,
                255,
            ).astype(np.uint8)
            for img, m in zip(images, masks)
        ]
    )


def outside_change(before: np.ndarray, after: np.ndarray, masks: np.ndarray) -> int:
    """Largest byte difference outside the masks (the composite rule makes it 0)."""
    diff = np.abs(before.astype(np.int16) - after.astype(np.int16))
    diff = diff if diff.ndim == 3 else diff.max(-1)
    return int(diff[~masks].max(initial=0))
