"""Spliced-defect benchmark stage and the localization evaluation of a detector."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pandas as pd
from PIL import Image

from gandefect.config import Config
from gandefect.data.datasets import load_pngs
from gandefect.data.fakes import fakes_root, read_fakes
from gandefect.data.images import encode_png
from gandefect.data.snapshot import read_manifest
from gandefect.data.spliced import MaskSpec, make_spliced
from gandefect.errors import BadInputError
from gandefect.evaluate.figures import Figures
from gandefect.evaluate.localization import binarize, choose_map_threshold, mean_iou, pixel_ap
from gandefect.lifecycle import versioning

SPLICED_DIR = "data/spliced"
SPLICED_STAGE = "spliced"


def _mode(arr: np.ndarray) -> str:
    return "L" if arr.ndim == 2 else "RGB"


def run_build_spliced(cfg: Config, version: bool = True) -> tuple[pd.DataFrame, str]:
    """Write data/spliced/{images,masks}/ and manifest.csv from real val/test images and fakes."""
    s = cfg.spliced
    spec = MaskSpec(s.min_area, s.max_area, tuple(s.kinds))
    real, fakes = read_manifest(cfg.real_dir), read_fakes(cfg)
    if fakes.empty:
        raise BadInputError("no fake sets in data/fakes: run `gandefect train-detectors` first")
    root = cfg.path(SPLICED_DIR)
    tmp = root.with_name(".spliced.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "images").mkdir(parents=True)
    (tmp / "masks").mkdir()
    rows = []
    for offset, split in enumerate(("val", "test")):
        r = real[real["split"] == split]
        f = fakes[fakes["split"] == split]
        images, masks, kinds, picks = make_spliced(
            load_pngs(r["path"], cfg.real_dir, cfg.data.shape),
            load_pngs(f["path"], fakes_root(cfg), cfg.data.shape),
            spec,
            cfg.seed + 101 + offset,
            f["generator"].to_numpy(),
        )
        for i, (img, mask, kind, j) in enumerate(zip(images, masks, kinds, picks)):
            name = f"{split}-{i:05d}.png"
            (tmp / "images" / name).write_bytes(encode_png(Image.fromarray(img, _mode(img))))
            (tmp / "masks" / name).write_bytes(encode_png(Image.fromarray(mask.astype(np.uint8) * 255, "L")))
            rows.append(
                {
                    "path": f"images/{name}",
                    "mask_path": f"masks/{name}",
                    "split": split,
                    "kind": kind,
                    "area": round(float(mask.mean()), 6),
                    "real_sha256": r["sha256"].iloc[i],
                    "generator": f["generator"].iloc[j],
                }
            )
    manifest = pd.DataFrame(rows, columns=["path", "mask_path", "split", "kind", "area", "real_sha256", "generator"])
    manifest.to_csv(tmp / "manifest.csv", index=False, lineterminator="\n")
    shutil.rmtree(root, ignore_errors=True)
    os.replace(tmp, root)
    data_version = versioning.UNVERSIONED
    if version and cfg.versioning.enabled and versioning.is_dvc_repo(cfg.root):
        data_version = versioning.version_stage(cfg, SPLICED_STAGE, SPLICED_DIR)
    return manifest, data_version


def load_spliced(cfg: Config, split: str) -> tuple[np.ndarray, np.ndarray, pd.DataFrame]:
    root = cfg.path(SPLICED_DIR)
    if not (root / "manifest.csv").exists():
        raise BadInputError("no spliced benchmark: run `gandefect build-spliced` first")
    m = pd.read_csv(root / "manifest.csv")
    m = m[m["split"] == split]
    return load_pngs(m["path"], root, cfg.data.shape), load_pngs(m["mask_path"], root, cfg.data.shape[:2]) > 127, m


def localize(cfg: Config, detector, choose: bool = True) -> Figures:
    """Choose the detector's defect-map threshold on the spliced val part (stored on the detector;
    `choose=False` keeps the one it is served with; an empty val part keeps it too); pixel AP and
    IoU on the test part, overall and per generator of the spliced-in region."""
    test_images, test_masks, manifest = load_spliced(cfg, "test")
    if choose:
        val_images, val_masks, _ = load_spliced(cfg, "val")
        if len(val_images):
            detector.map_threshold = choose_map_threshold(
                detector.defect_map(val_images), val_masks, cfg.spliced.dilate
            )
    metrics = Figures({"map_threshold": detector.map_threshold}, cfg.gates.min_samples)
    if not metrics.enough("pixel_ap", {"spliced test images": len(test_images)}):
        metrics.lack("iou", metrics.missing["pixel_ap"])
        return metrics
    maps = detector.defect_map(test_images)
    pred = binarize(maps, detector.map_threshold, cfg.spliced.dilate)
    metrics.update(pixel_ap=pixel_ap(maps, test_masks), iou=mean_iou(pred, test_masks))
    generators = manifest["generator"].to_numpy()
    for g in sorted(set(generators)):
        keep = generators == g
        if metrics.enough(f"pixel_ap_{g}", {f"spliced test images of {g}": int(keep.sum())}):
            metrics[f"pixel_ap_{g}"] = pixel_ap(maps[keep], test_masks[keep])
    return metrics


def evaluate_localization(cfg: Config, detector) -> Figures:
    """`localize`, with the figures (and why any is missing) written to reports/localization.json."""
    metrics = localize(cfg, detector)
    path = cfg.report_dir / "localization.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({**metrics.finite(), "missing": metrics.missing}, indent=2) + "\n")
    return metrics
