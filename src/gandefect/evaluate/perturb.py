"""Image perturbations for robustness figures and detector augmentation (uint8 in, uint8 out)."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageFilter


def _pil(arr: np.ndarray) -> Image.Image:
    return Image.fromarray(arr, "L" if arr.ndim == 2 else "RGB")


def jpeg(images: np.ndarray, quality: int) -> np.ndarray:
    out = np.empty_like(images)
    for i, im in enumerate(images):
        buf = io.BytesIO()
        _pil(im).save(buf, "JPEG", quality=int(quality))
        out[i] = np.asarray(Image.open(buf))
    return out


def blur(images: np.ndarray, sigma: float) -> np.ndarray:
    if sigma <= 0:
        return images.copy()
    return np.stack([np.asarray(_pil(im).filter(ImageFilter.GaussianBlur(sigma))) for im in images])


def resize_half(images: np.ndarray) -> np.ndarray:
    """Down-sample x0.5 and back (bilinear): removes the highest frequencies."""
    h, w = images.shape[1:3]
    return np.stack([np.asarray(_pil(im).resize((w // 2, h // 2), Image.Resampling.BILINEAR)
                                .resize((w, h), Image.Resampling.BILINEAR)) for im in images])


PERTURBATIONS = {
    "jpeg90": lambda x: jpeg(x, 90), "jpeg75": lambda x: jpeg(x, 75), "jpeg50": lambda x: jpeg(x, 50),
    "blur0.5": lambda x: blur(x, 0.5), "blur1.0": lambda x: blur(x, 1.0), "resize": resize_half,
}


def augment(images: np.ndarray, rng: np.random.Generator, p_blur: float, p_jpeg: float) -> np.ndarray:
    """Training augmentation: random Gaussian blur (sigma 0.2-1.2) and JPEG (quality 50-95)."""
    out = images.copy()
    for i in range(len(out)):
        if rng.random() < p_blur:
            out[i] = blur(out[i:i + 1], rng.uniform(0.2, 1.2))[0]
        if rng.random() < p_jpeg:
            out[i] = jpeg(out[i:i + 1], int(rng.integers(50, 96)))[0]
    return out
