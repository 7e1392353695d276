"""Conditions "in the wild": how a client's file may have been processed before it is uploaded.

Each condition turns one model-size image into the bytes a client would send (real JPEG bytes
for the JPEG conditions, a PNG of the blurred pixels for blur, ...). The evaluation decodes
those bytes through the service's own upload path (`to_model_input`), so an in-process figure
and the same figure measured over HTTP see identical pixels. Training uses the same chains
with random strengths (`random_chain`), for both classes alike, so processing carries no label.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageFilter

from gandefect.config import WildConfig, registered
from gandefect.data.images import open_image, to_model_image
from gandefect.errors import ConfigError

NOISE_SIGMA = 3.0  # "mild" Gaussian noise, in 8-bit levels


def pil(arr: np.ndarray) -> Image.Image:
    return Image.fromarray(arr, "L" if arr.ndim == 2 else "RGB")


def png_bytes(im: Image.Image) -> bytes:
    buf = io.BytesIO()
    im.save(buf, "PNG", compress_level=1)
    return buf.getvalue()


def jpeg_bytes(im: Image.Image, quality: int, subsampling: int | None = None) -> bytes:
    buf = io.BytesIO()
    kwargs = {} if subsampling is None else {"subsampling": subsampling}
    im.save(buf, "JPEG", quality=int(quality), **kwargs)
    return buf.getvalue()


def webp_bytes(im: Image.Image, quality: int) -> bytes:
    buf = io.BytesIO()
    im.save(buf, "WEBP", quality=int(quality), method=4)
    return buf.getvalue()


def blurred(im: Image.Image, sigma: float) -> Image.Image:
    return im.filter(ImageFilter.GaussianBlur(sigma)) if sigma > 0 else im


def rescaled(im: Image.Image, factor: float, back: bool) -> Image.Image:
    """Resize by `factor` (bicubic, antialiased when shrinking); `back` returns to the original size."""
    w, h = im.size
    small = im.resize((max(1, round(w * factor)), max(1, round(h * factor))), Image.Resampling.BICUBIC)
    return small.resize((w, h), Image.Resampling.BICUBIC) if back else small


def noisy(im: Image.Image, sigma: float, rng: np.random.Generator) -> Image.Image:
    arr = np.asarray(im, dtype=np.float64)
    return pil(np.clip(np.round(arr + rng.normal(0, sigma, arr.shape)), 0, 255).astype(np.uint8))


@dataclass(frozen=True)
class Condition:
    """One way a file reaches the service: `encode` gives the bytes a client sends. The last three
    fields say what validating it covers (the served envelope is made of them)."""

    name: str
    describe: str
    encode: Callable[[Image.Image, np.random.Generator], bytes]
    jpeg_quality: int | None = None  # the file's JPEG quality, if it is a JPEG
    shrink: float = 1.0  # how much the service shrinks the file to reach the model's size
    detail: float = 1.0  # the picture's detail as a share of the model's size


def _jpeg_at(quality: int) -> Callable[[Image.Image, np.random.Generator], bytes]:
    return lambda im, rng: jpeg_bytes(im, quality)


CONDITIONS: dict[str, Condition] = {
    c.name: c
    for c in [
        Condition("png", "PNG, as stored", lambda im, rng: png_bytes(im)),
        *[Condition(f"jpeg{q}", f"JPEG quality {q}", _jpeg_at(q), jpeg_quality=q) for q in (95, 90, 75, 60, 50)],
        Condition(
            "jpeg90x75",
            "JPEG quality 90, decoded, saved again at 75",
            lambda im, rng: jpeg_bytes(open_image(jpeg_bytes(im, 90)), 75),
            jpeg_quality=75,
        ),
        Condition("webp80", "WebP quality 80", lambda im, rng: webp_bytes(im, 80)),
        Condition("blur0.5", "Gaussian blur sigma 0.5, PNG", lambda im, rng: png_bytes(blurred(im, 0.5))),
        Condition("blur1.0", "Gaussian blur sigma 1.0, PNG", lambda im, rng: png_bytes(blurred(im, 1.0))),
        Condition(
            "resize",
            "down x0.5 and back (bicubic), PNG",
            lambda im, rng: png_bytes(rescaled(im, 0.5, back=True)),
            detail=0.5,
        ),
        Condition(
            "up2",
            "up x2 (bicubic), PNG of twice the size",
            lambda im, rng: png_bytes(rescaled(im, 2.0, back=False)),
            shrink=2.0,
        ),
        Condition(
            "rgbjpeg85",
            "gray saved as RGB JPEG quality 85 (4:2:0)",
            lambda im, rng: jpeg_bytes(im.convert("RGB"), 85, subsampling=2),
            jpeg_quality=85,
        ),
        Condition(
            "noise",
            f"Gaussian noise sigma {NOISE_SIGMA:g} levels, PNG",
            lambda im, rng: png_bytes(noisy(im, NOISE_SIGMA, rng)),
        ),
    ]
}


def evaluated(wild: WildConfig) -> list[str]:
    """The conditions `detect.wild.conditions` names (None: every registered one, in registry order),
    after checking that the gated ones are among them; a ConfigError naming the known ones."""
    names = registered(wild.conditions, CONDITIONS, "detect.wild.conditions", "condition")
    registered(wild.gated, CONDITIONS, "detect.wild.gated", "condition")
    outside = [c for c in wild.gated if c not in names]
    if outside:
        raise ConfigError(f"detect.wild.gated names {', '.join(outside)}, which detect.wild.conditions leaves out")
    return names


def get(name: str) -> Condition:
    if name not in CONDITIONS:
        raise KeyError(f"unknown condition {name!r}; known: {', '.join(CONDITIONS)}")
    return CONDITIONS[name]


def to_model_input(data: bytes, size: int, mode: str, resize: str) -> np.ndarray:
    """Uploaded bytes -> the model's uint8 input: the service's own decode and conversion."""
    return np.asarray(to_model_image(open_image(data), size, mode, resize))


def image_digest(im: np.ndarray) -> int:
    """A 64-bit digest of one image's pixels: what its encodings are cached under, and part of
    the seed of its random condition (so an image's bytes do not depend on its neighbours)."""
    return int.from_bytes(hashlib.blake2b(np.ascontiguousarray(im).tobytes(), digest_size=8).digest(), "little")


def client_bytes(images: np.ndarray, condition: str, seed: int = 0) -> list[bytes]:
    """The files a client would upload for these model-size images under `condition`. A random
    condition (noise) draws from (seed, the image's digest): each image's bytes are the same in
    any set it is part of, so an encoding made once stays valid when the set grows."""
    encode = get(condition).encode
    return [encode(pil(im), np.random.default_rng([seed, image_digest(im)])) for im in images]


def apply(images: np.ndarray, condition: str, resize: str = "crop", seed: int = 0) -> np.ndarray:
    """What the model sees of these images when a client sends them under `condition`."""
    size, mode = images.shape[1], "L" if images.ndim == 3 else "RGB"
    return np.stack([to_model_input(b, size, mode, resize) for b in client_bytes(images, condition, seed)])


# -- training chains ------------------------------------------------------------------------
def random_chain(im: Image.Image, rng: np.random.Generator) -> bytes:
    """One random processing chain (the kinds of CONDITIONS, at random strengths and in
    combination): what a file may have been through before it reached us."""
    # blur and down-and-up resizing are the hardest to learn invariance to (they remove the
    # finest traces from both classes): most chains carry them (measured: each step up from
    # 0.35 / 0.25 raised the worst generator's share caught under blur 1.0 and resizing)
    if rng.random() < 0.65:
        im = blurred(im, rng.uniform(0.3, 1.3))
    if rng.random() < 0.55:
        im = rescaled(im, rng.uniform(0.4, 0.9), back=True)
    if rng.random() < 0.15:
        im = noisy(im, rng.uniform(1.0, 5.0), rng)
    if rng.random() < 0.15:
        im = rescaled(im, rng.uniform(1.2, 2.5), back=False)
    kind = rng.random()
    if kind < 0.55:
        if rng.random() < 0.25:  # double compression
            im = open_image(jpeg_bytes(im, int(rng.integers(70, 100))))
        rgb = rng.random() < 0.25
        return jpeg_bytes(
            im.convert("RGB") if rgb else im,
            int(rng.integers(45, 100)),
            subsampling=int(rng.choice([0, 2])) if rgb else None,
        )
    if kind < 0.65:
        return webp_bytes(im, int(rng.integers(60, 100)))
    return png_bytes(im)


def augment(images: np.ndarray, rng: np.random.Generator, p: float, resize: str = "crop") -> np.ndarray:
    """Send a share `p` of the images through a random chain and back through the upload path."""
    out = images.copy()
    size, mode = images.shape[1], "L" if images.ndim == 3 else "RGB"
    for i in np.flatnonzero(rng.random(len(images)) < p):
        out[i] = to_model_input(random_chain(pil(images[i]), rng), size, mode, resize)
    return out
