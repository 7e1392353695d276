"""A user's folder of unlabeled colour images, made from the built-in photo source: each crop
re-encoded as JPEG, PNG or WebP at its own size, some in subfolders (which carry no labels).

    .venv/bin/python -m tests.photo_folder DIR [--n 1000] [--seed 0]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image

from gandefect.data import sources

FORMATS = (("jpg", {"quality": 90}), ("png", {}), ("webp", {"quality": 85}), ("jpg", {"quality": 70}))


def make_photo_folder(folder: Path, n: int, seed: int = 0) -> Path:
    """`n` files of mixed format (JPEG, PNG, WebP) and size (40-200 px a side, not always square)."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for i, raw in enumerate(sources.iter_images(sources.resolve_source(sources.PHOTOS, n))):
        side = int(rng.integers(40, 201))
        size = (side, int(side * rng.uniform(0.8, 1.25)))  # some a little off square
        ext, options = FORMATS[i % len(FORMATS)]
        sub = folder / (f"batch{i % 3}" if i % 4 == 0 else "")
        sub.mkdir(exist_ok=True)
        raw.image.resize(size, Image.Resampling.LANCZOS).save(sub / f"photo{i:04d}.{ext}", **options)
    return folder


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("folder", type=Path)
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    make_photo_folder(args.folder, args.n, args.seed)
    print(f"{args.n} images in {args.folder}")
