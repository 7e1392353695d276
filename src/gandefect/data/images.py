"""The one encoding path every image takes before a model sees it.

Real images, generated samples and uploads all become `size x size` 8-bit PNGs in the
configured mode here, so no detector can tell real from fake by format or resize traces.
"""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from gandefect.errors import BadInputError

# Errors Pillow raises for files that are not images, are truncated or are too large.
IMAGE_ERRORS = (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError)


def open_image(source: str | Path | bytes) -> Image.Image:
    """Decode an image fully (so truncation is caught now) and apply its EXIF orientation."""
    fp = io.BytesIO(source) if isinstance(source, bytes) else source
    with Image.open(fp) as im:
        im.load()
        return ImageOps.exif_transpose(im)


def open_image_file(path: str | Path, what: str = "") -> Image.Image:
    """`open_image` for a user's file: a missing or unreadable file is a BadInputError naming it."""
    label = f"{what} {path}".strip()
    if not Path(path).is_file():
        raise BadInputError(f"{label}: no such file")
    try:
        return open_image(path)
    except IMAGE_ERRORS as exc:
        raise BadInputError(f"{label}: not a readable image ({type(exc).__name__}: {exc})") from None


def _to_8bit(im: Image.Image) -> Image.Image:
    if im.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        arr = np.asarray(im, dtype=np.float64)
        scale = 257.0 if arr.max(initial=0) > 255 else 1.0
        return Image.fromarray(np.clip(np.round(arr / scale), 0, 255).astype(np.uint8), "L")
    if im.mode == "1":
        return im.convert("L")
    return im


def _drop_alpha(im: Image.Image) -> Image.Image:
    has_alpha = im.mode in ("RGBA", "LA", "PA", "La", "RGBa") or (im.mode == "P" and "transparency" in im.info)
    if not has_alpha:
        return im
    rgba = im.convert("RGBA")
    background = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
    return Image.alpha_composite(background, rgba).convert("RGB")


def to_model_image(im: Image.Image, size: int, mode: str, resize: str = "crop") -> Image.Image:
    """Convert any PIL image to `size x size` in `mode` (L or RGB), alpha over black."""
    im = _drop_alpha(_to_8bit(im))
    if im.mode != mode:
        im = im.convert(mode)
    if im.size != (size, size):
        if resize == "pad":
            im = ImageOps.pad(im, (size, size), method=Image.Resampling.LANCZOS, color=0)
        else:
            im = ImageOps.fit(im, (size, size), method=Image.Resampling.LANCZOS)
    return im


def encode_png(im: Image.Image) -> bytes:
    """Deterministic 8-bit PNG bytes (no metadata, fixed compression)."""
    buf = io.BytesIO()
    im.save(buf, format="PNG", optimize=False, compress_level=6)
    return buf.getvalue()


def pixel_sha256(im: Image.Image) -> str:
    """Hash of the pixels, size and mode: identical pictures hash equal whatever their file."""
    h = hashlib.sha256(f"{im.mode}:{im.size[0]}x{im.size[1]}:".encode())
    h.update(im.tobytes())
    return h.hexdigest()


SPLITS = ("train", "val", "test")


def _unit(sha256: str) -> float:
    return int(sha256[:16], 16) / float(1 << 64)


def split_for(sha256: str, splits: dict[str, float]) -> str:
    """Map a content hash to train/val/test; the same pixels always land in the same split."""
    u = _unit(sha256)
    edge = 0.0
    for name in SPLITS:
        edge += splits[name]
        if u < edge:
            return name
    return "test"


def splits_by_rank(sha256s: list[str], splits: dict[str, float]) -> list[str]:
    """Splits for a set written whole (a generator's samples): in the order of their hashes, the
    first share to train, then val, then test, in counts rounded to the fractions, and at least one
    image in every split with a share once there are enough images. A few hundred samples by
    `split_for` alone leave a split short by chance (40 samples: no test image one time in 70)."""
    n, wanted = len(sha256s), [s for s in SPLITS if splits[s] > 0]
    exact = {s: n * splits[s] for s in SPLITS}
    counts = {s: int(exact[s]) for s in SPLITS}
    for s in sorted(SPLITS, key=lambda s: exact[s] - counts[s], reverse=True)[: n - sum(counts.values())]:
        counts[s] += 1  # largest remainders first
    if n >= len(wanted):
        for s in wanted:
            if counts[s] == 0:
                counts[max(SPLITS, key=counts.get)] -= 1
                counts[s] = 1
    names = [s for s in SPLITS for _ in range(counts[s])]
    order = sorted(range(n), key=lambda i: sha256s[i])
    out = [""] * n
    for rank, i in enumerate(order):
        out[i] = names[rank]
    return out
