"""Hypothesis strategies for a user's folder of images, of any shape: few or many files, tiny and
huge sides, extreme aspect ratios, every PIL mode and common format, single colours, one image
repeated, broken files and files that are no image at all, nested folders."""

from __future__ import annotations

import io
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from hypothesis import strategies as st
from PIL import Image


def examples(in_ci: int) -> int:
    """How many shapes a test draws: `in_ci` in CI, ten times as many with HYPOTHESIS_PROFILE=explore."""
    return in_ci * (10 if os.environ.get("HYPOTHESIS_PROFILE") == "explore" else 1)


FORMATS = {"png": "PNG", "jpg": "JPEG", "webp": "WEBP", "bmp": "BMP", "gif": "GIF", "tiff": "TIFF"}
MODES = ["L", "RGB", "RGBA", "LA", "P", "1", "I;16"]
CONTENT = ["noise", "noise", "gradient", "single-colour"]  # noise twice: most folders hold real signal


@dataclass(frozen=True)
class ImageSpec:
    width: int
    height: int
    mode: str
    ext: str
    content: str
    seed: int
    copies: int  # the same file saved this many times (under other names)
    nested: bool


@dataclass(frozen=True)
class FolderShape:
    images: tuple[ImageSpec, ...]
    broken: int  # truncated or fake image files
    other_files: int  # text files beside the images


def _side(draw) -> int:
    return draw(st.one_of(st.integers(1, 8), st.integers(9, 120), st.integers(121, 700)))


@st.composite
def image_specs(draw) -> ImageSpec:
    width = _side(draw)
    # a tenth of the images very elongated (up to 1:60), the rest anything up to 700 px a side
    height = (
        draw(st.integers(max(1, width // 60), max(1, width // 10))) if draw(st.integers(0, 9)) == 0 else _side(draw)
    )
    mode = draw(st.sampled_from(MODES))
    ext = draw(st.sampled_from(sorted(FORMATS)))
    return ImageSpec(
        width,
        height,
        mode,
        ext,
        draw(st.sampled_from(CONTENT)),
        draw(st.integers(0, 2**31 - 1)),
        draw(st.sampled_from([1, 1, 1, 2, 5])),
        draw(st.booleans()),
    )


def folder_shapes(max_images: int = 60) -> st.SearchStrategy[FolderShape]:
    """Folders of a handful of files, and folders of enough for a tiny flow (25 and more)."""
    images = st.one_of(st.lists(image_specs(), max_size=8), st.lists(image_specs(), min_size=25, max_size=max_images))
    return st.builds(FolderShape, images.map(tuple), st.integers(0, 3), st.integers(0, 2))


def render(spec: ImageSpec) -> Image.Image:
    rng = np.random.default_rng(spec.seed)
    h, w = spec.height, spec.width
    if spec.content == "single-colour":
        arr = np.broadcast_to(rng.integers(0, 256, 3, dtype=np.uint8), (h, w, 3))
    elif spec.content == "gradient":
        ramp = (
            np.linspace(0, 255, w, dtype=np.float32)[None, :, None]
            + np.linspace(0, 64, h, dtype=np.float32)[:, None, None]
        )
        arr = np.clip(ramp * rng.uniform(0.3, 1.0, 3), 0, 255).astype(np.uint8)
    else:
        arr = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    im = Image.fromarray(np.ascontiguousarray(arr), "RGB")
    if spec.mode == "I;16":
        return Image.fromarray(np.asarray(im.convert("L")).astype(np.uint16) * 257)
    if spec.mode == "P":
        return im.convert("P", palette=Image.Palette.ADAPTIVE)
    return im.convert(spec.mode)


def _saveable(im: Image.Image, ext: str) -> Image.Image:
    """What each format can hold: formats without a mode get the nearest one they take."""
    fmt = FORMATS[ext]
    if fmt == "JPEG" and im.mode not in ("L", "RGB"):
        return im.convert("RGB")
    if fmt in ("WEBP", "GIF") and im.mode in ("I;16", "LA", "1"):
        return im.convert("RGBA" if im.mode == "LA" else "L")
    if fmt == "BMP" and im.mode in ("I;16", "LA", "RGBA"):
        return im.convert("RGB")
    return im


def write(shape: FolderShape, folder: Path) -> Path:
    """The folder on disk."""
    folder.mkdir(parents=True, exist_ok=True)
    for i, spec in enumerate(shape.images):
        im = _saveable(render(spec), spec.ext)
        buf = io.BytesIO()
        im.save(buf, FORMATS[spec.ext])
        target = folder / "nested" / "deeper" if spec.nested else folder
        target.mkdir(parents=True, exist_ok=True)
        for copy in range(spec.copies):
            (target / f"img{i:03d}-{copy}.{spec.ext}").write_bytes(buf.getvalue())
    for i in range(shape.broken):
        buf = io.BytesIO()
        render(ImageSpec(30, 30, "RGB", "png", "noise", i, 1, False)).save(buf, "PNG")
        (folder / f"broken{i}.png").write_bytes(buf.getvalue()[: 40 + 20 * i])  # cut short
    for i in range(shape.other_files):
        (folder / f"notes{i}.jpg").write_text("not an image")
    return folder
