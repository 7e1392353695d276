"""The Great Expectations data suite, run for real on snapshots."""

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from gandefect.config import load_config
from gandefect.data import snapshot, sources
from gandefect.lifecycle import validation
from tests.conftest import write_params


@pytest.fixture(scope="module")
def default_snapshot(tmp_path_factory):
    root = tmp_path_factory.mktemp("default")
    cfg = load_config(write_params(root, profile="default"))
    snapshot.ingest(cfg, [sources.resolve_source("mnist5k")])
    return cfg


def _copy(cfg, tmp_path: Path):
    """An independent copy of the snapshot to plant defects in."""
    root = tmp_path / "copy"
    shutil.copytree(cfg.real_dir, root / cfg.data.real_dir)
    return load_config(write_params(root, profile="default"))


def _validate(cfg):
    return validation.validate_table(cfg, snapshot.image_table(cfg.real_dir))


def _failed(report) -> set[str]:
    return {c.column for c in report.failures}


def test_data_suite_passes_on_the_default_snapshot(default_snapshot):
    report = _validate(default_snapshot)
    assert report.success, report.to_markdown("default")
    assert report.rows == 5000 and len(report.checks) >= 20


def test_data_suite_fails_on_a_planted_cross_split_duplicate(default_snapshot, tmp_path):
    cfg = _copy(default_snapshot, tmp_path)
    manifest = snapshot.read_manifest(cfg.real_dir)
    victim = manifest[manifest["split"] == "train"].iloc[0]
    planted = "images/planted-duplicate.png"
    shutil.copy(cfg.real_dir / victim["path"], cfg.real_dir / planted)
    row = {**victim.to_dict(), "path": planted, "split": "test"}
    pd.concat([manifest, pd.DataFrame([row])]).to_csv(cfg.real_dir / snapshot.MANIFEST, index=False)

    report = _validate(cfg)
    assert not report.success
    assert _failed(report) == {"splits_with_same_pixels"}
    check = report.failures[0]
    assert check.unexpected_count == 2
    assert {e["path"] for e in check.examples} == {victim["path"], planted}
    assert "splits_with_same_pixels" in report.to_markdown("t") and planted in report.to_markdown("t")


def test_data_suite_fails_on_a_wrong_size_image(default_snapshot, tmp_path):
    cfg = _copy(default_snapshot, tmp_path)
    manifest = snapshot.read_manifest(cfg.real_dir)
    target = manifest.iloc[3]
    arr = np.asarray(Image.open(cfg.real_dir / target["path"]))
    Image.fromarray(np.pad(arr, 2)).save(cfg.real_dir / target["path"])  # now 32x32

    report = _validate(cfg)
    assert not report.success
    assert {"width", "height"} <= _failed(report)
    width = next(c for c in report.failures if c.column == "width")
    assert width.unexpected_count == 1 and width.examples[0]["path"] == target["path"]


def test_data_suite_fails_on_constant_images_and_skewed_splits(default_snapshot, tmp_path):
    cfg = _copy(default_snapshot, tmp_path)
    manifest = snapshot.read_manifest(cfg.real_dir)
    Image.new("L", (28, 28), 0).save(cfg.real_dir / manifest.iloc[0]["path"])
    manifest.loc[manifest.index[:600], "split"] = "test"
    manifest.to_csv(cfg.real_dir / snapshot.MANIFEST, index=False)
    failed = _failed(_validate(cfg))
    assert {"pixel_range", "is_test"} <= failed


def test_data_suite_fails_when_labels_collapse_to_one_class(tmp_path):
    cfg = load_config(write_params(tmp_path, profile="default"))
    snapshot.ingest(cfg, [sources.resolve_source("mnist5k", 300)])
    manifest = snapshot.read_manifest(cfg.real_dir)
    assert manifest["label"].nunique() == 10  # a capped sample still spans every digit
    manifest["label"] = "7"
    manifest.to_csv(cfg.real_dir / snapshot.MANIFEST, index=False)
    assert "label" in _failed(_validate(cfg))
