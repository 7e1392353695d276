"""What can be read of an upload's history, and whether a verdict on it can be trusted.

- format and, for JPEG, the quality the quantization tables were scaled for (the IJG
  formula every common encoder uses; a table from another encoder gets the nearest quality);
- the original size and the factor the service scales it by to reach the model's input;
- whether the picture itself was up-scaled before it was saved (a 7x7 image blown up to
  28x28): the largest factor k for which the image is, to within a small residual, an
  interpolation (nearest, bilinear, bicubic or Lanczos) of an image k times smaller.

`Envelope` is the range of conditions the model gate validated (stored with the detector);
an input outside it gets the verdict `uncertain` with the reason, not a guess.
"""

from __future__ import annotations

import functools
from dataclasses import asdict, dataclass

import numpy as np
from PIL import Image

# The IJG (libjpeg) base luminance table, natural order (the quality is read from it alone).
_LUMA = np.array(
    [
        16,
        11,
        10,
        16,
        24,
        40,
        51,
        61,
        12,
        12,
        14,
        19,
        26,
        58,
        60,
        55,
        14,
        13,
        16,
        24,
        40,
        57,
        69,
        56,
        14,
        17,
        22,
        29,
        51,
        87,
        80,
        62,
        18,
        22,
        37,
        56,
        68,
        109,
        103,
        77,
        24,
        35,
        55,
        64,
        81,
        104,
        113,
        92,
        49,
        64,
        78,
        87,
        103,
        121,
        120,
        101,
        72,
        92,
        95,
        98,
        112,
        100,
        103,
        99,
    ],
    dtype=np.float64,
)
_KERNELS = ("NEAREST", "BILINEAR", "BICUBIC", "LANCZOS")
UPSCALE_FACTORS = (2, 3, 4, 5, 6, 8)
UPSCALE_RESIDUAL = 0.07  # residual / std below this: an interpolation (MNIST reals: >= 0.17 at k=2, blurred
# sigma 1 >= 0.08 at k=3; bicubic, bilinear, nearest, Lanczos up-scales: <= 0.06)
MAX_ANALYZED_SIDE = 1024  # larger uploads are not searched for up-scaling (cost), the field is null


def ijg_table(quality: int) -> np.ndarray:
    """The luminance quantization table libjpeg writes for `quality` (baseline, 1..255)."""
    q = min(max(int(quality), 1), 100)
    scale = 5000 // q if q < 50 else 200 - 2 * q  # libjpeg's integer arithmetic
    return np.clip((_LUMA.astype(np.int64) * scale + 50) // 100, 1, 255).astype(np.float64)


_TABLES = np.stack([ijg_table(q) for q in range(1, 101)])


def jpeg_quality(im: Image.Image) -> tuple[int | None, bool]:
    """(estimated quality, whether the table is exactly libjpeg's) of a JPEG image; (None, False) otherwise."""
    tables = getattr(im, "quantization", None)
    if im.format != "JPEG" or not tables:
        return None, False
    luma = np.asarray(tables[min(tables)], dtype=np.float64)[:64]
    errors = np.abs(np.log(_TABLES) - np.log(np.maximum(luma, 1))).sum(axis=1)
    best = int(np.argmin(errors))
    return best + 1, bool(np.array_equal(_TABLES[best], luma))


@functools.lru_cache(maxsize=512)
def _projector(n_small: int, n_big: int, kernel: str) -> np.ndarray:
    """U pinv(U) for U the (n_big x n_small) matrix of PIL's 1-D resize with `kernel`
    (PIL's resizes are separable and linear): the best up-scale from n_small samples."""
    cols = []
    for i in range(n_small):
        delta = np.zeros((1, n_small), np.float32)
        delta[0, i] = 1
        cols.append(np.asarray(Image.fromarray(delta, "F").resize((n_big, 1), getattr(Image.Resampling, kernel)))[0])
    u = np.array(cols, dtype=np.float64).T
    return u @ np.linalg.pinv(u)


def _residual(y: np.ndarray, k: int, kernel: str) -> float:
    h, w = y.shape
    ph, pw = _projector(max(1, round(h / k)), h, kernel), _projector(max(1, round(w / k)), w, kernel)
    r = y - np.clip(ph @ y @ pw.T, 0, 255)
    return float(np.sqrt((r**2).mean()) / (y.std() + 1e-6))


def upscale_factor(im: Image.Image) -> int | None:
    """The largest k such that the picture is an interpolated k-times up-scale (1: none found)."""
    if max(im.size) > MAX_ANALYZED_SIDE:
        return None
    y = np.asarray(im.convert("L"), dtype=np.float64)
    if y.std() < 1.0:  # a flat image has no history to read
        return 1
    found = 1
    for k in UPSCALE_FACTORS:
        if min(y.shape) / k < 2:
            break
        if min(_residual(y, k, kernel) for kernel in _KERNELS) < UPSCALE_RESIDUAL:
            found = k
    return found


@dataclass(frozen=True)
class Envelope:
    """The conditions the model gate validated: inputs outside them get `uncertain`."""

    min_jpeg_quality: int = 50
    max_downscale: float = 2.0  # original side / model side the service may shrink by
    max_upscale: float = 2.0  # how much the content may have been enlarged relative to the model's input

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class History:
    format: str
    mode: str
    original_size: tuple[int, int]
    scale: float  # model side / original side: < 1 shrinks the upload, > 1 enlarges it
    jpeg_quality: int | None
    jpeg_standard_table: bool
    upscaled_by: int | None  # the content's own enlargement before it was saved (1: none)
    inside: bool
    reasons: list[str]

    def to_dict(self) -> dict:
        d = asdict(self)
        d["original_size"] = list(self.original_size)
        return d


def read_history(im: Image.Image, model_size: int, envelope: Envelope) -> History:
    """The upload's readable history, and whether it lies inside the validated envelope."""
    quality, standard = jpeg_quality(im)
    width, height = im.size
    side = min(width, height)  # the short side is what crop (and pad) scale to the model size
    scale = model_size / side
    factor = upscale_factor(im)
    reasons = []
    if quality is not None and quality < envelope.min_jpeg_quality:
        reasons.append(
            f"JPEG quality about {quality}, below the {envelope.min_jpeg_quality} the detector was validated on"
        )
    if 1 / scale > envelope.max_downscale:
        reasons.append(
            f"the image ({width}x{height}) is shrunk x{1 / scale:.1f} to the model's "
            f"{model_size}x{model_size}; validated up to x{envelope.max_downscale:g}"
        )
    # the content's own resolution, in model pixels: an up-scaled picture holds less detail than its size
    content = side / (factor or 1)
    if content * envelope.max_upscale < model_size - 1e-9:
        if (factor or 1) > 1:
            reasons.append(
                f"the picture was enlarged about x{factor} before it was saved (its detail is that of a "
                f"{round(width / factor)}x{round(height / factor)} image); validated down to "
                f"{model_size / envelope.max_upscale:g} pixels across"
            )
        else:  # a small picture (or a thin strip too long to analyse): enlarged by the model's resize
            reasons.append(
                f"the picture ({width}x{height}) is {side} pixels across its short side and is enlarged "
                f"x{scale:.1f} to the model's {model_size}x{model_size}; validated down to "
                f"{model_size / envelope.max_upscale:g} pixels across"
            )
    return History(
        im.format or "unknown",
        im.mode,
        (width, height),
        round(scale, 4),
        quality,
        standard,
        factor,
        not reasons,
        reasons,
    )
