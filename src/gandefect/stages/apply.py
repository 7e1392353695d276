"""The user-facing commands: repair image files, and generate (clean) samples of a registered generator."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from gandefect.config import Config
from gandefect.data.images import encode_png, open_image_file, to_model_image
from gandefect.errors import BadInputError
from gandefect.lifecycle.served import load_repairer, load_served_detector
from gandefect.lifecycle.zoo import sample_generator
from gandefect.repair.masks import mask_png, read_mask
from gandefect.repair.pipeline import repair


def read_images(cfg: Config, paths: list[str]) -> np.ndarray:
    """User images in the model's input form (as at ingest); clear errors for unreadable files."""
    arrays = []
    for p in paths:
        im = open_image_file(p)
        arrays.append(np.asarray(to_model_image(im, cfg.data.image_size, cfg.data.mode, cfg.data.resize)))
    if not arrays:
        raise BadInputError("no images given")
    return np.stack(arrays)


def save_pngs(images: np.ndarray, names: list[str], out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for img, name in zip(images, names):
        path = out / name
        path.write_bytes(encode_png(Image.fromarray(img, "L" if img.ndim == 2 else "RGB")))
        paths.append(path)
    return paths


def run_repair(
    cfg: Config, paths: list[str], mask: str | None = None, out: str = "repaired", iterations: int | None = None
) -> tuple[pd.DataFrame, Path]:
    """Repair image files; writes <stem>.png and <stem>.mask.png per image and repair.csv to `out`."""
    images = read_images(cfg, paths)
    masks = None
    if mask is not None:
        m = read_mask(mask, images.shape[1:3])
        masks = np.broadcast_to(m, images.shape[:3]).copy()
    detector, repairer = load_served_detector(cfg), load_repairer(cfg)
    result = repair(
        images,
        detector,
        repairer,
        iterations or cfg.repair.iterations,
        cfg.repair.max_area,
        cfg.spliced.dilate,
        masks,
        cfg.repair.local_max_area,
    )
    out_dir = Path(out)
    stems = _unique_stems(paths)
    save_pngs(result.images, [f"{s}.png" for s in stems], out_dir)
    for s, m in zip(stems, result.masks):
        (out_dir / f"{s}.mask.png").write_bytes(mask_png(m))
    table = pd.DataFrame(result.rows([str(p) for p in paths]))
    table["threshold"] = detector.threshold
    table.to_csv(out_dir / "repair.csv", index=False, lineterminator="\n")
    return table, out_dir


def _unique_stems(paths: list[str]) -> list[str]:
    seen: dict[str, int] = {}
    stems = []
    for p in paths:
        stem = Path(p).stem
        seen[stem] = seen.get(stem, 0) + 1
        stems.append(stem if seen[stem] == 1 else f"{stem}-{seen[stem]}")
    return stems


def run_generate(
    cfg: Config,
    loss: str,
    n: int,
    clean: bool = False,
    reject: bool = False,
    out: str = "generated",
    seed: int | None = None,
) -> tuple[pd.DataFrame, Path]:
    """Sample a registered generator; with `clean`, pass every sample through the repair pipeline
    (after keeping the n least suspicious of reject_factor * n draws when `reject`)."""
    if n < 1:
        raise BadInputError(f"--n must be at least 1, got {n}")
    seed = cfg.seed if seed is None else seed
    draws = n * (cfg.repair.reject_factor if reject else 1)
    images = sample_generator(cfg, loss, draws, seed)
    detector = load_served_detector(cfg) if (clean or reject) else None
    if reject:
        keep = np.sort(np.argsort(detector.score(images), kind="stable")[:n])
        images = images[keep]
    names = [f"{loss}-{i:05d}.png" for i in range(n)]
    if clean:
        result = repair(
            images,
            detector,
            load_repairer(cfg),
            cfg.repair.iterations,
            cfg.repair.max_area,
            cfg.spliced.dilate,
            local_area=cfg.repair.local_max_area,
        )
        images = result.images
        table = pd.DataFrame(result.rows(names))
    else:
        table = pd.DataFrame({"image": names})
    out_dir = Path(out)
    save_pngs(images, names, out_dir)
    table.to_csv(out_dir / "generate.csv", index=False, lineterminator="\n")
    return table, out_dir
