"""The spliced-defect benchmark as the flow builds it: data/spliced/ written from the real and
fake sets (gandefect.data.spliced), and versioned with DVC."""

from __future__ import annotations

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
from gandefect.lifecycle import versioning
from gandefect.names import SPLICED_DIR, SPLICED_STAGE


def _mode(arr: np.ndarray) -> str:
    return "L" if arr.ndim == 2 else "RGB"


def build_spliced(cfg: Config, version: bool = True) -> tuple[pd.DataFrame, str]:
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
