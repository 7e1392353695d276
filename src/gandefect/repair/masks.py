"""Repair masks: reading, checking and writing binary masks (white = rewrite)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from gandefect.data.images import encode_png, open_image_file
from gandefect.errors import BadInputError


def check_mask(mask: np.ndarray, shape: tuple[int, int], name: str = "mask") -> np.ndarray:
    """A boolean (H, W) mask of the image's size that leaves something to keep and something to rewrite."""
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise BadInputError(f"{name}: a mask must be one 2-D plane, got shape {mask.shape}")
    if mask.shape != tuple(shape):
        raise BadInputError(f"{name}: mask is {mask.shape[1]}x{mask.shape[0]} but the image is {shape[1]}x{shape[0]}")
    mask = mask.astype(bool)
    if not mask.any():
        raise BadInputError(f"{name}: the mask is empty (no pixel to repair)")
    if mask.all():
        raise BadInputError(f"{name}: the mask covers the whole image; the repairer needs some pixels to keep")
    return mask


def mask_from_image(im: Image.Image) -> np.ndarray:
    """Any image as a mask: pixels brighter than mid-gray (after conversion to L) are True."""
    return np.asarray(im.convert("L")) > 127


def read_mask(path: str | Path, shape: tuple[int, int]) -> np.ndarray:
    """Load a mask image and check it against the image shape (no resizing: a mask must match)."""
    im = open_image_file(path, "mask")
    return check_mask(mask_from_image(im), shape, f"mask {Path(path).name}")


def mask_png(mask: np.ndarray) -> bytes:
    return encode_png(Image.fromarray(mask.astype(np.uint8) * 255, "L"))


def cap_area(mask: np.ndarray, scores: np.ndarray, max_area: float) -> np.ndarray:
    """Keep at most max_area of the image: the mask's pixels with the highest scores."""
    limit = int(np.floor(max_area * mask.size))
    if mask.sum() <= limit:
        return mask
    order = np.argsort(-np.where(mask, scores, -np.inf), axis=None, kind="stable")[:limit]
    capped = np.zeros(mask.size, bool)
    capped[order] = True
    return capped.reshape(mask.shape)
