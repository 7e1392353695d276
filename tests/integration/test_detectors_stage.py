"""Fake sets, detector training, leave-one-out honesty and the registry, on the tiny profile."""

import json

import numpy as np
import pytest
from mlflow.tracking import MlflowClient
from PIL import Image

from gandefect.config import load_config
from gandefect.data.fakes import read_fakes, write_fake_set
from gandefect.data.snapshot import read_manifest
from gandefect.detect.model import load_detector
from gandefect.evaluate.detection import auc
from gandefect.stages.detectors import load_labeled
from tests.conftest import make_image_folder, run_cli

LOSSES = ["minimax", "nonsaturating", "lsgan", "wgan", "wgan-gp", "hinge"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One tiny project taken through ingest, train-gans and train-detectors (shared: it is slow)."""
    import shutil
    import subprocess
    import sys

    from tests.conftest import REPO, write_params

    root = tmp_path_factory.mktemp("detectors") / "project"
    root.mkdir()
    write_params(root)
    shutil.copy(REPO / "dvc.yaml", root / "dvc.yaml")
    shutil.copytree(REPO / "src" / "gandefect" / "data", root / "src" / "gandefect" / "data",
                    ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run(["git", "init", "-q"], cwd=root, check=True)
    subprocess.run([sys.executable, "-m", "dvc", "init", "-q"], cwd=root, check=True)
    run_cli(root, "ingest", check=True)
    run_cli(root, "train-gans", check=True)
    proc = run_cli(root, "train-detectors", check=True)
    return root, proc


def _client(root):
    return MlflowClient(tracking_uri=f"sqlite:///{root / 'mlflow.db'}")


def test_fake_sets_cover_every_generator_and_take_the_real_encoding_path(trained):
    root, _ = trained
    cfg = load_config(root / "params.yaml")
    fakes = read_fakes(cfg)
    expected = set(LOSSES) | {f"{loss}-epoch1" for loss in LOSSES}
    assert set(fakes["generator"]) == expected
    assert set(fakes["split"]) == {"train", "val", "test"}
    sample = Image.open(root / "data" / "fakes" / fakes["path"].iloc[0])
    real = Image.open(cfg.real_dir / read_manifest(cfg.real_dir)["path"].iloc[0])
    assert (sample.format, sample.mode, sample.size) == (real.format, real.mode, real.size)


def test_train_detectors_registers_winner_and_judge_and_writes_the_report(trained):
    root, proc = trained
    assert "auc_unseen_min" in proc.stdout and "registered gandefect-detector v1" in proc.stdout
    client = _client(root)
    detector = client.get_model_version("gandefect-detector", "1")
    judge = client.get_model_version("gandefect-judge", "1")
    assert {detector.tags["family"], judge.tags["family"]} == {"cnn", "spectral"}
    assert 0 < float(detector.tags["threshold"]) < 1
    report = root / "reports" / "detectors"
    for name in ["detectors.md", "robustness.png", "reliability.png", "roc-cnn.png", "roc-spectral.png",
                 "errors-cnn.png", "errors-spectral.png"]:
        assert (report / name).stat().st_size > 0, name
    text = (report / "detectors.md").read_text()
    assert "auc_unseen_min" in text and "auc_jpeg75" in text and "ece" in text
    run = client.get_run(detector.tags["run_id"])
    for key in ["auc_seen", "ap_seen", "auc_unseen_min", "auc_unseen_mean", "auc_jpeg90", "auc_jpeg75",
                "auc_jpeg50", "auc_blur0.5", "auc_blur1.0", "auc_resize", "ece", "acc_real", "acc_fake",
                *[f"auc_unseen_{loss}" for loss in LOSSES]]:
        assert key in run.data.metrics, key
    assert run.data.tags["data_version"].endswith(".dir") and run.data.tags["fakes_version"].endswith(".dir")


def test_leave_one_out_detectors_never_saw_the_held_out_loss(trained):
    root, _ = trained
    client = _client(root)
    for name in ("gandefect-detector", "gandefect-judge"):
        run_id = client.get_model_version(name, "1").tags["run_id"]
        path = client.download_artifacts(run_id, "training_manifest.json")
        manifest = json.loads(open(path).read())
        assert set(manifest["leave_one_out"]) == set(LOSSES)
        for loss, seen in manifest["leave_one_out"].items():
            assert seen and not any(g == loss or g.startswith(f"{loss}-epoch") for g in seen), (loss, seen)
        assert set(manifest["trained_on"]) == set(read_fakes(load_config(root / "params.yaml"))["generator"])


def test_no_detector_can_read_format_traces(trained, tmp_path):
    """Real test images re-written through the fake-writing path score like real images."""
    root, _ = trained
    cfg = load_config(root / "params.yaml")
    test = load_labeled(cfg, "test")
    real = test.images[test.labels == 0]
    cfg_tmp = cfg.model_copy(update={"root": tmp_path})
    written = write_fake_set(cfg_tmp, "reencoded-real", [Image.fromarray(a, "L") for a in real], "test")
    reencoded = np.stack([np.asarray(Image.open(p)) for p in sorted((written.path / "images").glob("*.png"))])
    for name in ("gandefect-detector", "gandefect-judge"):
        import mlflow

        mlflow.set_tracking_uri(f"sqlite:///{root / 'mlflow.db'}")
        det = load_detector(f"models:/{name}/1")
        p = np.r_[det.score(real), det.score(reencoded)]
        labels = np.r_[np.zeros(len(real)), np.ones(len(reencoded))]
        assert 0.4 <= auc(labels, p) <= 0.6


def test_evaluate_detector_and_external_fakes(trained, tmp_path):
    root, _ = trained
    proc = run_cli(root, "evaluate-detector", check=True)
    assert "auc_seen" in proc.stdout and "models:/gandefect-detector/1" in proc.stdout
    folder = make_image_folder(tmp_path / "external", n_good=12, n_corrupt=1)
    proc = run_cli(root, "ingest-fakes", str(folder), "--generator", "external-gan", check=True)
    assert "external-gan: 12 images" in proc.stdout and "1 unreadable" in proc.stdout
    bad = run_cli(root, "ingest-fakes", str(folder), "--generator", "bad/name")
    assert bad.returncode == 2 and "generator name" in bad.stderr


def test_spliced_benchmark_and_localization_metrics(trained):
    root, _ = trained
    proc = run_cli(root, "build-spliced", check=True)
    assert "spliced version:" in proc.stdout and ".dir" in proc.stdout
    cfg = load_config(root / "params.yaml")
    from gandefect.stages.localize import load_spliced

    images, masks, manifest = load_spliced(cfg, "test")
    assert len(images) == len(masks) == len(manifest) > 0
    assert manifest["area"].between(cfg.spliced.min_area, cfg.spliced.max_area).all()
    real = load_labeled(cfg, "test")
    first = manifest.iloc[0]
    original = real.images[: int((real.labels == 0).sum())]
    # outside its mask, a spliced image is exactly one of the real test images
    assert any(np.array_equal(images[0][~masks[0]], o[~masks[0]]) for o in original)
    proc = run_cli(root, "evaluate-localization", check=True)
    assert "pixel_ap" in proc.stdout and "iou" in proc.stdout
    metrics = json.loads((root / "reports" / "localization.json").read_text())
    assert 0 <= metrics["pixel_ap"] <= 1 and 0 <= metrics["iou"] <= 1 and first["kind"] in ("rect", "blob")
