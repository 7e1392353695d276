"""Snapshot splits as tensors in [-1, 1], NCHW (the layout every model takes)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from gandefect.data.snapshot import read_manifest
from gandefect.errors import BadInputError


def to_tensor(images: list[Image.Image] | np.ndarray) -> torch.Tensor:
    """uint8 images (list of PIL, or array N,H,W[,C]) -> float tensor N,C,H,W in [-1, 1]."""
    arr = np.stack([np.asarray(im) for im in images]) if isinstance(images, list) else np.asarray(images)
    if arr.ndim == 3:
        arr = arr[:, None]
    else:
        arr = arr.transpose(0, 3, 1, 2)
    return torch.from_numpy(arr.astype(np.float32) / 127.5 - 1.0)


def load_pngs(paths, root: Path, shape: tuple[int, ...]) -> np.ndarray:
    """Stack the stored PNGs at root/path as one uint8 array (N, *shape), N = 0 for no paths."""
    arrays = [np.asarray(Image.open(root / p)) for p in paths]
    return np.stack(arrays) if arrays else np.zeros((0, *shape), np.uint8)


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """float tensor N,C,H,W in [-1, 1] -> uint8 array N,H,W (gray) or N,H,W,3."""
    arr = ((x.detach().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).cpu().numpy()
    return arr[:, 0] if arr.shape[1] == 1 else arr.transpose(0, 2, 3, 1)


@dataclass
class Split:
    images: torch.Tensor
    labels: torch.Tensor | None  # class indices where every image has a label
    classes: list[str]
    paths: list[str]


def load_split(real_dir: Path, split: str, limit: int | None = None) -> Split:
    manifest = read_manifest(real_dir)
    rows = manifest[manifest["split"] == split]
    if rows.empty:
        raise BadInputError(f"no {split} images in {real_dir}: run `gandefect ingest` first")
    if limit:
        rows = rows.head(limit)
    images = []
    for p in rows["path"]:
        with Image.open(real_dir / p) as im:
            images.append(im.copy())
    classes = sorted(manifest["label"].dropna().unique(), key=lambda c: (len(c), c))
    labels = None
    if rows["label"].notna().all() and classes:
        index = {c: i for i, c in enumerate(classes)}
        labels = torch.tensor([index[c] for c in rows["label"]], dtype=torch.long)
    return Split(to_tensor(images), labels, classes, list(rows["path"]))


def image_grid(x: torch.Tensor, ncols: int = 8) -> Image.Image:
    """A grid of images in [-1, 1] (N, C, H, W) as one PIL image, 2 px gaps."""
    arr = to_uint8(x)
    n, h, w = arr.shape[:3]
    rows = (n + ncols - 1) // ncols
    shape = (rows * (h + 2) + 2, ncols * (w + 2) + 2) + arr.shape[3:]
    grid = np.full(shape, 64, dtype=np.uint8)
    for i, im in enumerate(arr):
        r, c = divmod(i, ncols)
        grid[2 + r * (h + 2) : 2 + r * (h + 2) + h, 2 + c * (w + 2) : 2 + c * (w + 2) + w] = im
    return Image.fromarray(grid)
